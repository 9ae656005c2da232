"""The Orthanc recipe end to end, with Debian's Orthanc and `deploy/orthanc/autoroute.lua`.

Orthanc (REST upload) --Lua OnStableSeries--> node (modality `dicomnode`) --> job --> SEG + SR --> Orthanc, same
study. Then the workstation path: `dicomnode send` and DCMTK storescu to the node, results to Orthanc.
"""

from __future__ import annotations

import json
import os
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
FRAGMENT = REPO / "deploy" / "orthanc" / "orthanc.json"
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
        # the recipe's fragment, with this test's ports, folders and a short StableAge
        cfg = json.loads(FRAGMENT.read_text())
        assert cfg["DicomModalities"]["dicomnode"]["AET"] == "DICOMNODE"
        cfg["DicomModalities"]["dicomnode"].update(Host="127.0.0.1", Port=self.node_port)
        cfg.update({
            "Name": "dicomnode-test",
            "StorageDirectory": str(self.root / "storage"), "IndexDirectory": str(self.root / "index"),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port,
            "AuthenticationEnabled": False,  # loopback only (RemoteAccessAllowed false); no users in a test
            "Plugins": [], "LuaScripts": [str(AUTOROUTE)], "StableAge": 1,
        })
        (self.root / "orthanc.json").write_text(json.dumps(cfg, indent=2))
        env = dict(os.environ, TCP_NODELAY="1")  # Debian's Orthanc is DCMTK-based: deploy/orthanc/tcp-nodelay.conf
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


def _ours(series: list[dict]) -> list[dict]:
    return [x for x in series if x["MainDicomTags"].get("Manufacturer", "") == "dicomnode"]


def _results_in(orthanc: OrthancProcess, study_uid: str, expected: int | None = None) -> bool:
    """SEG and SR (and, with ``expected``, that many result instances in all) made by the node are in the study."""
    ours = _ours([x for v in orthanc.series_of_study(study_uid).values() for x in v])
    mods = {x["MainDicomTags"].get("Modality") for x in ours}
    return {"SEG", "SR"} <= mods and (expected is None or sum(len(x["Instances"]) for x in ours) >= expected)


def _check_results(orthanc: OrthancProcess, study_uid: str, tmp: Path) -> tuple[list[dict], list[dict]]:
    """Exactly one SEG series (one instance) and the SR series made by the node, plus any derived series; every
    result instance read back from Orthanc is valid for dciodvfy. Returns (the node's series, the other series)."""
    series = [x for v in orthanc.series_of_study(study_uid).values() for x in v]
    ours = _ours(series)
    mods = sorted(x["MainDicomTags"].get("Modality", "") for x in ours)
    # SR series: the main report with its evaluations (series 9002: 2 instances) and the per-segment feature
    # reports (series 9004), when the profile measures segments
    assert mods.count("SEG") == 1 and 1 <= mods.count("SR") <= 2, mods
    for x in ours:
        mod = x["MainDicomTags"].get("Modality", "")
        if mod == "SEG":
            assert len(x["Instances"]) == 1, (mod, x["Instances"])
        if mod == "SR" and x["MainDicomTags"].get("SeriesNumber") == "9002":
            assert len(x["Instances"]) == 2, (mod, x["Instances"])
        for inst in x["Instances"]:
            path = tmp / f"{mod}-{inst}.dcm"
            path.write_bytes(orthanc.get(f"/instances/{inst}/file"))
            n, out = dciodvfy(path)
            assert n == 0, f"dciodvfy reports {n} error(s) for a {mod} read back from Orthanc:\n{out}"
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            assert ds.StudyInstanceUID == study_uid and ds.Manufacturer == "dicomnode"
    return ours, [x for x in series if x not in ours]


def _job_results(node) -> int:  # noqa: ANN001
    done = [j for j in node.status()["jobs"]["recent"] if j["state"] == "done"]
    return sum(len(j["results"]) for j in done)


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
    wait_until(lambda: node.status()["jobs"]["counts"].get("done") == 1, timeout_s=120,
               what=f"the job done\n{node.log()[-3000:]}")
    n_results = _job_results(node)  # SEG, SR and the profile's derived instances, if any
    wait_until(lambda: _results_in(o, study, n_results), timeout_s=60,
               what=f"{n_results} results in Orthanc\n{node.log()[-3000:]}")
    ours, _ = _check_results(o, study, tmp_path)
    # 3. no loop: Orthanc does not route the results back; one set of results after a while longer
    wait_until(lambda: o.log().count("not sending series") >= len(ours), timeout_s=30,
               what="every result series skipped by the Lua")
    time.sleep(4.0)  # > StableAge + the node's quiet period: a loop would have shown by now
    ours, others = _check_results(o, study, tmp_path)
    assert sum(len(x["Instances"]) for x in ours) == n_results
    assert len(others) == 1 and len(others[0]["Instances"]) == len(files)  # the source series, untouched
    log = o.log()
    assert log.count("dicomnode-autoroute: sending series") == 1
    assert "modality SEG is not an imaging modality" in log and "modality SR is not an imaging modality" in log
    for x in ours:  # derived series (e.g. CT MIP) are images: skipped because the node made them
        if x["MainDicomTags"]["Modality"] not in ("SEG", "SR"):
            assert f"{x['MainDicomTags']['SeriesInstanceUID']} ({x['ID']}): made by dicomnode" in log
    st = node.status()
    assert st["instances"] == len(files), "the node received something back from Orthanc"
    assert st["jobs"]["counts"] == {"done": 1} and st["outbox"]["counts"] == {"sent": n_results}
    audit = json.loads(node.cli("audit", "--json").stdout)
    received = [e for e in audit if e["event"] == "received"]
    assert len(received) == 1 and received[0]["actor"] == "ORTHANC"
    assert received[0]["detail"]["senders"][0]["peer_host"] == "127.0.0.1"
    assert sum(e["event"] == "result sent" for e in audit) == n_results

    # 4. the workstation path: `dicomnode send` and DCMTK storescu to the node, results to Orthanc
    p = subprocess.run([sys.executable, "-m", "dicomnode", "send", str(STS2_CT), "--to",
                        f"DICOMNODE@127.0.0.1:{node.port}", "--aet", "WORKSTATION", "-q"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    sent = storescu(node.port, [STS3_CT], aet="WORKSTATION")
    assert sent.returncode == 0, sent.stderr
    wait_until(lambda: node.status()["jobs"]["counts"] == {"done": 3}, timeout_s=180,
               what=f"three jobs done\n{node.log()[-3000:]}")
    wait_until(lambda: node.status()["outbox"]["counts"] == {"sent": _job_results(node)}, timeout_s=60,
               what="every result sent")
    for folder in (STS2_CT, STS3_CT):
        ours, others = _check_results(o, _study_uid(folder), tmp_path)
        assert others == []  # only the results went to the PACS, not the workstation's images
