"""No patient data in any log line, library warnings included; JSON lines only; each warning once (issue 16, 2).

Real data whose patient names make highdicom warn with the name quoted ("The string "Lung_Dx-A0002" is unlikely to
represent ..."; the result builders withhold that one since issue 13) and pydicom warn (and log) about over-long
values, through the real CLI from an unrelated folder.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pydicom
import tomli_w

from helpers import SHARED_DATA, STS_CT, UserNode, free_port, run_cli, storescu, wait_until

CHEST = SHARED_DATA / "chest-ct" / "A0002_B40f"
QUICK = {"quick": {"steps": ["foreground", "measure"], "outputs": ["seg", "sr"]}}
PERSON_NAME_WARNING = "is unlikely to represent the intended person name"


def _phi(folder: Path) -> set[str]:
    ds = pydicom.dcmread(next(p for p in sorted(folder.iterdir()) if p.suffix == ".dcm" or not p.suffix),
                         stop_before_pixels=True)
    values = {str(ds.get(k, "") or "") for k in ("PatientName", "PatientID", "AccessionNumber", "PatientBirthDate")}
    return {v for v in values if len(v) >= 4}


def test_node_json_log_has_no_patient_data_and_every_line_is_json(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    port = free_port()
    cfg = tmp_path / "node.toml"
    cfg.write_text(tomli_w.dumps({
        "node": {"bind": "127.0.0.1", "port": port, "data_dir": str(tmp_path / "data"), "log_format": "json"},
        "series": {"quiet_seconds": 1, "check_interval_seconds": 0.2},
        "workers": {"count": 1, "max_attempts": 1}, "profiles": QUICK,
        "rules": [{"name": "ct", "match": {"Modality": "CT"}, "profile": "quick"}]}))
    node = UserNode(cfg, work, port).start()
    try:
        for files in (sorted(CHEST.glob("*.dcm")), [STS_CT]):  # the chest folder holds a README.md too
            sent = storescu(port, files)
            assert sent.returncode == 0, sent.stderr

        def two_done():
            st = json.loads(node.cli("status", "--json").stdout)
            return [j for j in st["jobs"]["recent"] if j["state"] in ("done", "failed")][1:]
        wait_until(two_done, timeout_s=300, what="two finished jobs")
    finally:
        node.stop()
    lines = [ln for ln in node.log().splitlines() if ln.strip()]
    records = []
    for ln in lines:
        try:
            records.append(json.loads(ln))
        except ValueError:
            raise AssertionError(f"not a JSON line in the node's log: {ln!r}") from None
    text = "\n".join(lines)
    phi = _phi(CHEST) | _phi(STS_CT)
    assert "Lung_Dx-A0002" in phi
    for value in phi:
        assert value not in text, f"patient data {value!r} in the node's log"
    # highdicom's person name warning is withheld where we call highdicom (results._common.warnings_without_phi,
    # issue 13); should a library still quote a name, it is scrubbed
    warned = [r for r in records if PERSON_NAME_WARNING in r["msg"]]
    assert all(r["logger"] == "highdicom" and '"<redacted>"' in r["msg"] for r in warned)
    # each warning once per process (pydicom logs and warns the same text; the same name warning for 2 patients)
    dup = [k for k, n in Counter((r["pid"], r["logger"], r["msg"]) for r in records
                                 if r["level"] == "warning").items() if n > 1]
    assert not dup, dup
    assert any(r["logger"] == "pydicom" and "exceeds the maximum length" in r["msg"] for r in records)
    assert all(r["state"] == "done" for r in json.loads(node.cli("status", "--json").stdout)["jobs"]["recent"])


def test_process_prints_library_warnings_scrubbed_and_once(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(tomli_w.dumps({"profiles": QUICK}))
    p = run_cli("process", CHEST, "--out", tmp_path / "out", "--profile", "quick", "-q", "--config", cfg,
                cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "Lung_Dx-A0002" not in p.stderr + p.stdout
    # withheld at our call of highdicom (results._common.warnings_without_phi), not only scrubbed (issue 13)
    assert p.stderr.count(PERSON_NAME_WARNING) == 0, p.stderr
