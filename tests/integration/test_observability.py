"""Metrics, audit trail and retention of a running node (`dicomnode serve` subprocess, DCMTK peers)."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import urllib.request

import tomli_w

from helpers import STS_CT, dcmtk, dcmtk_env, free_port, storescu, wait_until


def scrape(port: int) -> dict[str, float]:
    """``/metrics`` -> {'name{labels}': value} (labels as written by prometheus_client)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def _all_sent(node):  # noqa: ANN001
    """The status once the one job is done and all its results (SEG, SR, derived...) were sent; else None."""
    s = node.status()
    done = [j for j in s["jobs"]["recent"] if j["state"] == "done"]
    return s if len(done) == 1 and s["outbox"]["counts"] == {"sent": len(done[0]["results"])} else None


def test_metrics_audit_and_retention(make_node, storescp):
    dest = storescp()
    mport = free_port()
    node = make_node({"metrics": {"port": mport, "bind": "127.0.0.1"},
                      "peers": [{"ae_title": "WORKSTATION", "host": "127.0.0.1"}],
                      "destinations": [{"name": "DEST", "ae_title": "DEST", "host": "127.0.0.1", "port": dest.port}],
                      "rules": [{"name": "ct", "match": {"Modality": "CT"}, "destinations": ["DEST"]}],
                      "series": {"quiet_seconds": 1}})
    before = scrape(mport)
    assert before["dicomnode_instances_received_total"] == 0
    files = sorted(p for p in STS_CT.iterdir() if p.is_file())
    sent = storescu(node.port, files)
    assert sent.returncode == 0, sent.stderr
    refused = subprocess.run([dcmtk("echoscu"), "-aet", "INTRUDER", "-aec", "DICOMNODE", "127.0.0.1", str(node.port)],
                             capture_output=True, text=True, env=dcmtk_env(), timeout=30)
    assert refused.returncode != 0
    st = wait_until(lambda: _all_sent(node), timeout_s=120, what="results sent")
    n_results = len(st["jobs"]["recent"][0]["results"])
    assert n_results >= 2

    m = scrape(mport)
    size = sum(f.stat().st_size for f in files)
    assert m["dicomnode_instances_received_total"] == len(files)
    assert size * 0.9 < m["dicomnode_received_bytes_total"] < size * 1.1  # as stored: file meta re-encoded
    assert m['dicomnode_associations_refused_total{kind="permanent"}'] == 1
    assert m['dicomnode_series_completed_total{outcome="job"}'] == 1
    assert m['dicomnode_exports_sent_total{destination="DEST"}'] == n_results
    assert m['dicomnode_jobs{state="done"}'] == 1
    assert m['dicomnode_exports{state="sent"}'] == n_results
    assert m['dicomnode_series{state="complete"}'] == 1
    assert m["dicomnode_instances"] == len(files)
    assert m['dicomnode_job_duration_seconds_count{profile="ct"}'] == 1
    assert m['dicomnode_job_duration_seconds_bucket{le="+Inf",profile="ct"}'] == 1
    assert m["dicomnode_disk_free_bytes"] > 0

    # the audit trail: who sent what, and where the results went
    events = json.loads(node.cli("audit", "--since", "1h", "--json").stdout)
    kinds = [e["event"] for e in events]
    assert kinds.count("received") == 1 and kinds.count("result sent") == n_results
    assert {"series complete", "job done"} <= set(kinds)
    rec = next(e for e in events if e["event"] == "received")
    assert rec["actor"] == "WORKSTATION" and rec["detail"]["instances"] == len(files)
    assert rec["detail"]["senders"] == [{"calling_ae": "WORKSTATION", "peer_host": "127.0.0.1",
                                         "instances": len(files), "bytes": rec["detail"]["bytes"]}]
    assert {e["actor"] for e in events if e["event"] == "result sent"} == {f"DEST@127.0.0.1:{dest.port}"}
    text = node.cli("audit", "--since", "10m").stdout
    assert re.search(r"received .* from WORKSTATION@127\.0\.0\.1 \(59\)", text), text
    assert f"-> DEST@127.0.0.1:{dest.port}" in text
    assert "no audit events" in node.cli("audit", "--since", "2099-01-01T00:00").stdout
    bad = node.cli("audit", "--since", "yesterday", check=False)
    assert bad.returncode == 2 and "1h" in bad.stderr

    # retention: pretend all this happened 10 days ago, restart with a 7-day policy
    assert node.stop() == 0
    day = 86400
    with sqlite3.connect(node.data_dir / "index.sqlite") as c:
        c.execute("UPDATE instances SET received_at = received_at - ?", (10 * day,))
        c.execute("UPDATE series SET first_received_at = first_received_at - ?, last_received_at = "
                  "last_received_at - ?, completed_at = completed_at - ?", (10 * day,) * 3)
        c.execute("UPDATE jobs SET created_at = created_at - ?, finished_at = finished_at - ?", (10 * day,) * 2)
        c.execute("UPDATE exports SET created_at = created_at - ?, sent_at = sent_at - ?", (10 * day,) * 2)
    import tomllib
    doc = tomllib.loads(node.config_path.read_text())
    doc["retention"] = {"delete_received_after_days": 7, "check_interval_seconds": 1}
    node.config_path.write_text(tomli_w.dumps(doc))
    node2 = make_node(reuse=node)
    wait_until(lambda: node2.status()["instances"] == 0, timeout_s=30, what=f"retention\n{node2.log()[-2000:]}")
    assert not any((node2.data_dir / "instances").iterdir())
    assert not any((node2.data_dir / "results").rglob("*.dcm"))
    st = node2.status()
    assert st["series"][0]["state"] == "complete" and "retention" in st["series"][0]["note"]
    deleted = json.loads(node2.cli("audit", "--event", "retention deleted", "--json").stdout)
    assert len(deleted) == 1 and deleted[0]["detail"]["instances"] == len(files)
    assert scrape(mport)["dicomnode_retention_deleted_instances_total"] == len(files)
    assert "retention deleted series" in node2.log()
