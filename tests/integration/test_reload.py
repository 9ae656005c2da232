"""SIGHUP reload (peers, rules, destinations) without dropping associations in flight; bad files keep the old
configuration; the free-disk watermark refuses associations and lifts after a reload."""

from __future__ import annotations

import signal
import subprocess
import tomllib

import pydicom
import tomli_w
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from helpers import STS_CT, dcmtk, dcmtk_env, storescu, wait_until


def _edit(node, change) -> None:  # noqa: ANN001
    doc = tomllib.loads(node.config_path.read_text())
    change(doc)
    node.config_path.write_text(tomli_w.dumps(doc))


def _hup_and_wait(node, what: str, count_before: int) -> None:  # noqa: ANN001
    node.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: node.log().count(what) > count_before, timeout_s=15, what=f"{what!r} in the log")


def _echo(port: int, aet: str) -> int:
    return subprocess.run([dcmtk("echoscu"), "-aet", aet, "-aec", "DICOMNODE", "127.0.0.1", str(port)],
                          capture_output=True, text=True, env=dcmtk_env(), timeout=30).returncode


def _all_sent(node):  # noqa: ANN001
    """The status once the one job is done and all its results (SEG, SR, derived...) were sent; else None."""
    s = node.status()
    done = [j for j in s["jobs"]["recent"] if j["state"] == "done"]
    return s if len(done) == 1 and s["outbox"]["counts"] == {"sent": len(done[0]["results"])} else None


def test_sighup_changes_peers_rules_and_destinations_without_dropping_an_association(make_node, storescp):
    dest = storescp()
    node = make_node({"peers": [{"ae_title": "WORKSTATION", "host": "127.0.0.1"}], "series": {"quiet_seconds": 2}})
    files = sorted(p for p in STS_CT.iterdir() if p.is_file())
    half = len(files) // 2
    ae = AE(ae_title="WORKSTATION")
    ae.add_requested_context(CTImageStorage, [pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID])
    assoc = ae.associate("127.0.0.1", node.port, ae_title="DICOMNODE")
    assert assoc.is_established
    try:
        for f in files[:half]:
            assert assoc.send_c_store(pydicom.dcmread(f)).Status == 0
        # reload in the middle of the association: WORKSTATION is no longer a peer, NEWPEER is; a rule now
        # sends CT results to DEST
        _edit(node, lambda d: d.update(
            peers=[{"ae_title": "NEWPEER", "host": "127.0.0.1"}],
            destinations=[{"name": "DEST", "ae_title": "DEST", "host": "127.0.0.1", "port": dest.port}],
            rules=[{"name": "ct", "match": {"Modality": "CT"}, "destinations": ["DEST"]}]))
        _hup_and_wait(node, "configuration reloaded", 0)
        for f in files[half:]:  # the association admitted before the reload goes on
            assert assoc.send_c_store(pydicom.dcmread(f)).Status == 0
    finally:
        assoc.release()
    assert not assoc.is_aborted
    assert _echo(node.port, "WORKSTATION") != 0  # new associations follow the new peer list
    assert _echo(node.port, "NEWPEER") == 0
    # the new rule and destination apply to the series completed after the reload
    st = wait_until(lambda: _all_sent(node), timeout_s=120, what=f"results at DEST\n{node.log()[-2000:]}")
    got = [pydicom.dcmread(f, stop_before_pixels=True).Modality for f in dest.files()]
    assert len(got) == len(st["jobs"]["recent"][0]["results"]) and {"SEG", "SR"} <= set(got)
    assert node.status()["instances"] == len(files)


def test_a_bad_new_file_keeps_the_running_configuration(make_node):
    node = make_node({"peers": [{"ae_title": "WORKSTATION"}]})
    good = node.config_path.read_text()
    _edit(node, lambda d: d.update(peers=[{"ae_title": "OTHER"}],
                                   rules=[{"name": "x", "match": {"Modality": "CT"}, "destinations": ["NOPE"]}]))
    _hup_and_wait(node, "configuration reload refused", 0)
    log = node.log()
    assert "rules[0].destinations[0]" in log and "NOPE" in log  # says why
    assert _echo(node.port, "WORKSTATION") == 0 and _echo(node.port, "OTHER") != 0  # old peers still apply
    node.config_path.write_text("this is [not toml")
    _hup_and_wait(node, "configuration reload refused", 1)
    assert "not valid TOML" in node.log()
    assert _echo(node.port, "WORKSTATION") == 0
    node.config_path.write_text(good)
    _hup_and_wait(node, "configuration reloaded", 0)
    assert node.proc.poll() is None


def test_disk_watermark_refuses_associations_until_lowered_and_reloaded(make_node):
    node = make_node({"node": {"min_free_disk_mb": 2**40}})  # 1 EiB: above any real free space
    files = sorted(p for p in STS_CT.iterdir() if p.is_file())[:3]
    refused = storescu(node.port, files)
    assert refused.returncode != 0
    log = node.log()
    assert "association rejected" in log and "below node.min_free_disk_mb" in log, log[-2000:]
    assert node.status()["instances"] == 0
    _edit(node, lambda d: d["node"].update(min_free_disk_mb=1))
    _hup_and_wait(node, "configuration reloaded", 0)
    accepted = storescu(node.port, files)
    assert accepted.returncode == 0, accepted.stderr
    wait_until(lambda: node.status()["instances"] == len(files), timeout_s=30, what="instances indexed")
