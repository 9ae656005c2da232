"""The Orthanc recipe end to end, with Debian's Orthanc and `deploy/orthanc/autoroute.lua`.

Orthanc (REST upload) --Lua OnStableSeries--> node (modality `dicomnode`) --> job --> SEG + SR --> Orthanc, same
study. Then the workstation path: `dicomnode send` and DCMTK storescu to the node, results to Orthanc.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

from helpers import REPO, SHARED_DATA, STS_CT, dciodvfy, free_port, storescu, wait_for_port, wait_until

ORTHANC = Path("/usr/sbin/Orthanc")
AUTOROUTE = REPO / "deploy" / "orthanc" / "autoroute.lua"
STS2_CT = SHARED_DATA / "sts" / "STS_002" / "CT"
STS3_CT = SHARED_DATA / "sts" / "STS_003" / "CT"


@dataclass
class OrthancProcess:
    http_port: int
    dicom_port: int
    root: Path
    node_port: int
    proc: subprocess.Popen | None = None

    def start(self) -> "OrthancProcess":
        assert ORTHANC.exists(), "Orthanc is missing: apt-get install -y orthanc"
        self.root.mkdir(parents=True, exist_ok=True)
        cfg = {
            "Name": "dicomnode-test", "DicomAet": "ORTHANC",
            "StorageDirectory": str(self.root / "storage"), "IndexDirectory": str(self.root / "index"),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "HttpServerEnabled": True,
            "Plugins": [], "LuaScripts": [str(AUTOROUTE)], "StableAge": 1, "SyncStorageArea": True,
            "DicomModalities": {"dicomnode": ["DICOMNODE", "127.0.0.1", self.node_port]},
            "DicomScuTimeout": 30, "ConcurrentJobs": 2,
        }
        (self.root / "orthanc.json").write_text(json.dumps(cfg, indent=2))
        env = dict(os.environ, TCP_NODELAY="1")  # Debian's Orthanc is DCMTK-based: see shared/perf.md
        self._log = open(self.root / "orthanc.log", "ab")
        self.proc = subprocess.Popen([str(ORTHANC), str(self.root / "orthanc.json")], stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env)
        wait_for_port(self.http_port, timeout_s=60)
        wait_for_port(self.dicom_port, timeout_s=60)
        return self

    def log(self) -> str:
        return (self.root / "orthanc.log").read_text(errors="replace")

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=30) as r:
            return r.read()

    def json(self, path: str):
        return json.loads(self.get(path))

    def post(self, path: str, data: bytes) -> dict:
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data, method="POST")
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    def series_of_study(self, study_uid: str) -> dict[str, list[dict]]:
        """Modality -> series (expanded) of the study with this Study Instance UID."""
        ids = self.post("/tools/lookup", study_uid.encode())
        study = next((x["ID"] for x in ids if x["Type"] == "Study"), None)
        if study is None:
            return {}
        out: dict[str, list[dict]] = {}
        for s in self.json(f"/studies/{study}/series"):
            out.setdefault(s["MainDicomTags"].get("Modality", ""), []).append(s)
        return out

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def orthanc(tmp_path):
    started: list[OrthancProcess] = []

    def make(node_port: int, dicom_port: int | None = None) -> OrthancProcess:
        o = OrthancProcess(free_port(), dicom_port or free_port(), tmp_path / "orthanc", node_port)
        started.append(o)
        return o.start()

    yield make
    for o in started:
        o.stop()


def _study_uid(folder: Path) -> str:
    f = next(p for p in sorted(folder.iterdir()) if p.is_file())
    return str(pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID)


def _check_results(orthanc: OrthancProcess, study_uid: str, tmp: Path) -> dict[str, list[dict]]:
    """Exactly one SEG and one SR series, one instance each, valid for dciodvfy; returns the study's series."""
    by_mod = orthanc.series_of_study(study_uid)
    assert len(by_mod.get("SEG", [])) == 1 and len(by_mod.get("SR", [])) == 1, \
        {m: len(v) for m, v in by_mod.items()}
    for mod in ("SEG", "SR"):
        (series,) = by_mod[mod]
        assert len(series["Instances"]) == 1, (mod, series["Instances"])
        path = tmp / f"{mod}-{series['Instances'][0]}.dcm"
        path.write_bytes(orthanc.get(f"/instances/{series['Instances'][0]}/file"))
        n, out = dciodvfy(path)
        assert n == 0, f"dciodvfy reports {n} error(s) for the {mod} read back from Orthanc:\n{out}"
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.StudyInstanceUID == study_uid and ds.Manufacturer == "dicomnode"
    return by_mod


def _results_in(orthanc: OrthancProcess, study_uid: str) -> bool:
    by_mod = orthanc.series_of_study(study_uid)
    return bool(by_mod.get("SEG")) and bool(by_mod.get("SR"))


def test_orthanc_autoroutes_to_the_node_and_gets_seg_and_sr_back_without_loop(make_node, orthanc, tmp_path):
    orthanc_dicom_port = free_port()
    node = make_node({"series": {"quiet_seconds": 1},
                      "peers": [{"ae_title": "ORTHANC", "host": "127.0.0.1"}, {"ae_title": "WORKSTATION"}],
                      "destinations": [{"name": "ORTHANC", "ae_title": "ORTHANC", "host": "127.0.0.1",
                                        "port": orthanc_dicom_port}],
                      "rules": [{"name": "ct", "match": {"Modality": "CT"}, "destinations": ["ORTHANC"]}]})
    o = orthanc(node.port, orthanc_dicom_port)
    # 1. a series uploaded to Orthanc by REST
    files = sorted(p for p in STS_CT.iterdir() if p.is_file())
    for f in files:
        assert o.post("/instances", f.read_bytes())["Status"] in ("Success", "AlreadyStored")
    study = _study_uid(STS_CT)
    # 2. Orthanc's Lua script routes it to the node, the node processes it and sends SEG + SR back
    wait_until(lambda: _results_in(o, study), timeout_s=120, what=f"SEG and SR in Orthanc\n{node.log()[-3000:]}")
    time.sleep(1.0)
    _check_results(o, study, tmp_path)
    # 3. no loop: Orthanc does not route the results back; one set of results after a while longer
    wait_until(lambda: o.log().count("not sending series") >= 2, timeout_s=30, what="results skipped by the Lua")
    time.sleep(4.0)  # > StableAge + the node's quiet period: a loop would have shown by now
    by_mod = _check_results(o, study, tmp_path)
    assert len(by_mod["CT"][0]["Instances"]) == len(files)
    log = o.log()
    assert "dicomnode-autoroute: sending series" in log and log.count("dicomnode-autoroute: sending series") == 1
    assert "modality SEG is not an imaging modality" in log and "modality SR is not an imaging modality" in log
    st = node.status()
    assert st["instances"] == len(files), "the node received something back from Orthanc"
    assert st["jobs"]["counts"] == {"done": 1} and st["outbox"]["counts"] == {"sent": 2}
    audit = json.loads(node.cli("audit", "--json").stdout)
    received = [e for e in audit if e["event"] == "received"]
    assert len(received) == 1 and received[0]["actor"] == "ORTHANC"
    assert received[0]["detail"]["senders"][0]["peer_host"] == "127.0.0.1"
    assert sum(e["event"] == "result sent" for e in audit) == 2

    # 4. the workstation path: `dicomnode send` and DCMTK storescu to the node, results to Orthanc
    p = subprocess.run([sys.executable, "-m", "dicomnode", "send", str(STS2_CT), "--to",
                        f"DICOMNODE@127.0.0.1:{node.port}", "--aet", "WORKSTATION", "-q"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    sent = storescu(node.port, [STS3_CT], aet="WORKSTATION")
    assert sent.returncode == 0, sent.stderr
    for folder in (STS2_CT, STS3_CT):
        wait_until(lambda: _results_in(o, _study_uid(folder)), timeout_s=120,
                   what=f"results of {folder} in Orthanc\n{node.log()[-3000:]}")
    time.sleep(3.0)
    for folder in (STS2_CT, STS3_CT):
        by_mod = _check_results(o, _study_uid(folder), tmp_path)
        assert "CT" not in by_mod  # only the results went to the PACS
    assert node.status()["jobs"]["counts"] == {"done": 3}
