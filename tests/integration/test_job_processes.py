"""Job processes import the installed package whatever the working directory (issue 16, item 1).

A user starts the node (and ``dicomnode batch``) from a folder that holds a folder named ``dicomnode`` (the parent
of a clone, an old checkout): jobs must still run. A job process that cannot start at all shows the real error in
``jobs show`` and ``status``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import tomli_w

from helpers import STS_CT, UserNode, free_port, run_cli, storescu, wait_until

QUICK = {"quick": {"steps": ["foreground", "measure"], "outputs": ["seg", "sr"]}}


@pytest.fixture
def user_dir(tmp_path) -> Path:
    """A working folder with a package-like folder named dicomnode in it (an __init__.py: it shadows for real)."""
    work = tmp_path / "work"
    (work / "dicomnode").mkdir(parents=True)
    (work / "dicomnode" / "__init__.py").write_text("")  # an old checkout, say; not our package
    return work


def _config(tmp_path: Path, port: int) -> Path:
    cfg = tmp_path / "node.toml"
    cfg.write_text(tomli_w.dumps({
        "node": {"bind": "127.0.0.1", "port": port, "data_dir": str(tmp_path / "data")},
        "series": {"quiet_seconds": 1, "check_interval_seconds": 0.2},
        "workers": {"count": 1, "max_attempts": 1},
        "profiles": QUICK,
        "rules": [{"name": "ct", "match": {"Modality": "CT"}, "profile": "quick"}]}))
    return cfg


def _job(node: UserNode) -> dict:
    def done():
        st = json.loads(node.cli("status", "--json").stdout)
        jobs = [j for j in st["jobs"]["recent"] if j["state"] in ("done", "failed")]
        return jobs[0] if jobs else None
    return wait_until(done, timeout_s=240, what="a finished job")


def test_jobs_run_from_a_folder_holding_a_dicomnode_folder(tmp_path, user_dir):
    port = free_port()
    node = UserNode(_config(tmp_path, port), user_dir, port).start()
    try:
        assert storescu(port, [STS_CT]).returncode == 0
        job = _job(node)
        assert job["state"] == "done", (job, node.log()[-3000:])
        assert Path(job["result_dir"], "results.json").exists()
    finally:
        node.stop()


def test_batch_from_a_folder_holding_a_dicomnode_folder(tmp_path, user_dir):
    out = tmp_path / "out"
    cfg = tmp_path / "batch.toml"
    cfg.write_text(tomli_w.dumps({"workers": {"count": 1}, "profiles": QUICK}))
    p = run_cli("batch", STS_CT, "--out", out, "--profile", "quick", "--config", cfg, "-q", cwd=user_dir)
    assert p.returncode == 0, p.stderr
    assert len(list(out.glob("*/results.json"))) == 1


def test_a_job_process_that_cannot_start_shows_its_real_error(tmp_path, user_dir):
    """Stand-in for any broken job environment: a sitecustomize that hides the package from `python -c` processes
    (how the forkserver starts) only; the node itself starts normally."""
    site = tmp_path / "site"
    (site / "shadow" / "dicomnode").mkdir(parents=True)
    (site / "sitecustomize.py").write_text(
        "import sys\nif sys.argv[:1] == ['-c']:\n    sys.path.insert(0, %r)\n" % str(site / "shadow"))
    (site / "shadow" / "dicomnode" / "__init__.py").write_text("")
    # no empty entry: an empty PYTHONPATH component means the working folder, which holds a `dicomnode` folder here
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in [str(site), os.environ.get("PYTHONPATH", "")] if p))
    port = free_port()
    node = UserNode(_config(tmp_path, port), user_dir, port, env=env).start()
    try:
        assert storescu(port, [STS_CT]).returncode == 0
        job = _job(node)
        assert job["state"] == "failed"
        assert job["error"].startswith("WorkerStartError: job processes cannot start: ImportError: cannot import "
                                       "name '__version__' from 'dicomnode'"), job["error"]
        shown = node.cli("jobs", "show", str(job["id"]))
        assert shown.returncode == 0, shown.stderr
        d = json.loads(shown.stdout)
        assert "cannot import name '__version__'" in d["error"] and "Traceback" in d["traceback"]
        text = node.cli("status")
        assert "WorkerStartError: job processes cannot start" in text.stdout
    finally:
        node.stop()
