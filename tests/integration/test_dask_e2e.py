"""The node on a real Dask cluster over loopback: `dask scheduler` and two `dask worker` processes.

storescu -> `dicomnode serve` (workers.backend = "dask") -> jobs on the cluster -> SEG + SR -> DCMTK storescp;
a worker SIGKILLed in the middle of a job; the node SIGKILLed while its job is on the cluster; and
`dicomnode batch` with the local pool and with the cluster giving the same table.
"""

from __future__ import annotations

import csv
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pydicom
import pytest

from helpers import SHARED_DATA, STS_CT, free_port, storescu, wait_for_port, wait_until

DASK = str(Path(sys.executable).with_name("dask"))
STS_UID = "1.3.6.1.4.1.14519.5.2.1.5168.1900.449841255123215696894565592289"
CHEST_B40F_UID = "1.3.6.1.4.1.14519.5.2.1.6655.2359.207154000096236603057216610983"
CHEST_B70F_UID = "1.3.6.1.4.1.14519.5.2.1.6655.2359.241981550240354690198744362919"
# "slow" runs long enough on the STS CT (segmentation + features) to be caught in the middle
PROFILES = {"quick": {"steps": ["foreground", "measure"]},
            "slow": {"steps": ["segment", "features"], "features": {"families": ["morphology", "intensity statistics",
                                                                              "intensity histogram"]}}}


class DaskCluster:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen] = {}
        self._spawn("scheduler", [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(self.port),
                                  "--no-dashboard"])
        wait_for_port(self.port)
        from distributed import Client
        self.client = Client(self.address, timeout=30, set_as_default=False)

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.work / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                            env={**os.environ, "OMP_NUM_THREADS": "1"})

    def start_worker(self, name: str) -> None:
        self._spawn(name, [DASK, "worker", self.address, "--nworkers", "1", "--nthreads", "1", "--name", name,
                           "--host", "127.0.0.1", "--no-dashboard"])

    def ensure_workers(self, names=("w1", "w2")) -> None:
        for n in names:
            if n not in self.procs or self.procs[n].poll() is not None:
                self.start_worker(n)
        wait_until(lambda: sorted(w["name"] for w in self.client.scheduler_info(n_workers=-1)["workers"].values())
                   == sorted(names), timeout_s=90, what="dask workers")

    def job_worker(self) -> str | None:
        """The name of a worker running a dicomnode job now, if any."""
        info = self.client.scheduler_info(n_workers=-1)["workers"]
        for addr, keys in self.client.processing().items():
            if any(str(k).startswith("dicomnode-job-") for k in keys):
                return str(info[addr]["name"])
        return None

    def kill(self, name: str) -> None:
        p = self.procs.pop(name)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)

    def close(self) -> None:
        self.client.close()
        for name in list(self.procs):
            if name != "scheduler":
                self.kill(name)
        self.kill("scheduler")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = DaskCluster(tmp_path_factory.mktemp("dask"))
    try:
        c.ensure_workers()
        yield c
    finally:
        c.close()


def _node_config(cluster: DaskCluster, dest_port: int, profile: str) -> dict:
    return {"workers": {"backend": "dask", "scheduler": cluster.address, "count": 1},
            "profiles": PROFILES,
            "destinations": [{"name": "DEST", "ae_title": "DEST", "host": "127.0.0.1", "port": dest_port}],
            "rules": [{"name": "ct", "match": {"Modality": "CT"}, "profile": profile, "destinations": ["DEST"]}]}


def _sent_exports(node) -> list[tuple]:
    con = sqlite3.connect(node.data_dir / "index.sqlite")
    try:
        return con.execute("SELECT destination, sop_instance_uid, state FROM exports ORDER BY id").fetchall()
    finally:
        con.close()


def _jobs(node) -> list[tuple]:
    con = sqlite3.connect(node.data_dir / "index.sqlite")
    try:
        return con.execute("SELECT id, state, attempts FROM jobs ORDER BY id").fetchall()
    finally:
        con.close()


def _assert_sent_once(node, dest) -> None:
    """Every result of the job at DEST exactly once: one SEG, the SRs (main report, its evaluations and the
    per-segment feature reports the profile makes), each export sent once."""
    wait_until(lambda: len(dest.files()) >= 2 and dest.files(), timeout_s=150, what="SEG and SR at DEST")
    wait_until(lambda: (ex := _sent_exports(node)) and all(e[2] == "sent" for e in ex), timeout_s=120,
               what="exports sent")
    time.sleep(3)  # a duplicate would come now
    exports = _sent_exports(node)
    files = dest.files()
    assert len(files) == len(exports), [f.name for f in files]
    assert len({e[1] for e in exports}) == len(exports)
    mods = sorted(pydicom.dcmread(f, stop_before_pixels=True).Modality for f in files)
    assert mods.count("SEG") == 1 and mods.count("SR") >= 1 and set(mods) == {"SEG", "SR"}, mods


def test_node_runs_its_jobs_on_the_dask_cluster(cluster, make_node, storescp):
    cluster.ensure_workers()
    dest = storescp()
    node = make_node(_node_config(cluster, dest.port, "quick"))
    assert storescu(node.port, [STS_CT]).returncode == 0
    _assert_sent_once(node, dest)
    assert [(j[1], j[2]) for j in _jobs(node)] == [("done", 1)]
    log = node.log()
    assert "dask cluster ready" in log and cluster.address in log
    # worker-side records came back to the node's log with the job id and series UID
    assert any("job running on worker" in line and "job_id=1" in line and "series_uid=1.3.6." in line
               for line in log.splitlines()), log[-3000:]


def test_worker_killed_mid_job_the_job_completes_on_the_other_and_results_go_once(cluster, make_node, storescp):
    cluster.ensure_workers()
    dest = storescp()
    node = make_node(_node_config(cluster, dest.port, "slow"))
    assert storescu(node.port, [STS_CT]).returncode == 0
    victim = wait_until(cluster.job_worker, timeout_s=90, interval_s=0.1, what="the job on a worker")
    time.sleep(0.5)
    cluster.kill(victim)  # SIGKILL: nanny and worker, no goodbye to the scheduler
    assert _jobs(node)[0][1] == "running", "the job ended before its worker was killed: make 'slow' slower"
    _assert_sent_once(node, dest)
    assert [(j[1], j[2]) for j in _jobs(node)] == [("done", 1)]  # Dask re-ran the task: no attempt counted
    cluster.ensure_workers()


def test_node_killed_while_its_job_is_on_the_cluster_results_still_go_once(cluster, make_node, storescp):
    cluster.ensure_workers()
    dest = storescp()
    node = make_node(_node_config(cluster, dest.port, "slow"))
    assert storescu(node.port, [STS_CT]).returncode == 0
    wait_until(cluster.job_worker, timeout_s=90, interval_s=0.1, what="the job on a worker")
    node.kill()  # SIGKILL
    assert _jobs(node)[0][1] == "running"
    node2 = make_node(reuse=node)  # recovery puts the job back to pending; it runs again on the cluster
    _assert_sent_once(node2, dest)
    assert _jobs(node2)[0][1] == "done"


def _batch(root: Path, out: Path, cfg: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dicomnode", "batch", str(root), "--out", str(out), "--profile",
                           "quick", "--config", str(cfg), "--quiet", *extra],
                          capture_output=True, text=True, timeout=300)


def test_batch_with_the_local_pool_and_with_dask_gives_the_same_table(cluster, tmp_path):
    import tomli_w

    cluster.ensure_workers()
    root = tmp_path / "archive"
    for name, src in (("sts", STS_CT), ("chest", SHARED_DATA / "chest-ct" / "A0002_B40f")):
        (root / name).mkdir(parents=True)
        for f in sorted(src.iterdir()):
            os.symlink(f, root / name / f.name)
    (root / "one").mkdir()  # a one-slice series (its other slices are not in the archive)
    os.symlink(sorted((SHARED_DATA / "chest-ct" / "A0002_B70f").glob("*.dcm"))[0], root / "one" / "x.dcm")
    (root / "abdomen").mkdir()  # empty UIDs
    for f in sorted((SHARED_DATA / "abdomen-ct" / "upper_abdomen_j2k").glob("CT.*"))[:4]:
        os.symlink(f, root / "abdomen" / f.name)
    cfg = tmp_path / "c.toml"
    cfg.write_text(tomli_w.dumps({"profiles": {"quick": PROFILES["quick"]}}))

    local = _batch(root, tmp_path / "local", cfg, "--executor", "local", "--workers", "1")
    dask = _batch(root, tmp_path / "dask", cfg, "--scheduler", cluster.address)
    for run in (local, dask):
        assert run.returncode == 1, run.stderr  # ran, with failures
        assert "2 failure(s)" in run.stderr and "only one slice" in run.stderr
        assert "empty Series Instance UID" in run.stderr
        assert "3 series under" in run.stdout and "2 done, 0 done before, 2 failed" in run.stdout

    def table(out: Path) -> list[dict]:
        rows = pq.read_table(out / "results.parquet").to_pylist()
        return [{k: v for k, v in r.items() if not k.startswith("seconds_")} for r in rows]
    a, b = table(tmp_path / "local"), table(tmp_path / "dask")
    assert len(a) >= 2 and [r.keys() for r in a] == [r.keys() for r in b]
    for ra, rb in zip(a, b):  # floats to 1e-9 relative: numpy's SIMD sums may differ in the last bit by process
        for k in ra:
            if isinstance(ra[k], float) and isinstance(rb[k], float):
                assert math.isclose(ra[k], rb[k], rel_tol=1e-9), (k, ra[k], rb[k])
            else:
                assert ra[k] == rb[k], (k, ra[k], rb[k])
    assert {r["series_uid"] for r in a} == {STS_UID, CHEST_B40F_UID}

    def failures(out: Path) -> list[tuple[str, str]]:
        with open(out / "failures.csv", newline="") as f:
            return sorted((r["series_uid"], r["reason"].split(":")[0]) for r in csv.DictReader(f))
    assert failures(tmp_path / "local") == failures(tmp_path / "dask")
    assert [uid for uid, _ in failures(tmp_path / "local")] == ["", CHEST_B70F_UID]
    # resumed: a second run does nothing again
    again = _batch(root, tmp_path / "dask", cfg, "--scheduler", cluster.address)
    assert "0 done, 2 done before, 2 failed" in again.stdout, again.stdout
