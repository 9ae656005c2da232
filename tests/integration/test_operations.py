"""An operator's first week, through the real CLI (issue 16, items 6, 11, 14, 15): when an open series will be
processed, destinations tested by C-ECHO, dead letters and failed jobs retried at once (per destination),
reprocessing a stored series with another profile, ISO 8601 times, one log line per failed send."""

from __future__ import annotations

import json
import re
import time

import tomli_w

from helpers import STS_CT, UserNode, free_port, storescu, wait_until

QUICK = {"quick": {"steps": ["foreground", "measure"], "outputs": ["seg", "sr"]},
         "quick2": {"steps": ["foreground"], "outputs": ["seg", "sr"]},
         # fails when it runs: its model file is not there (config check validates parameters, not model files)
         "broken": {"steps": ["foreground", "scene"], "scene": {"model": "/nonexistent/scene.skops"}}}
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?[+-]\d\d:\d\d")


def _status(node: UserNode) -> dict:
    p = node.cli("status", "--json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_operator_commands(tmp_path, storescp):
    dest = storescp()
    port = free_port()
    cfg = tmp_path / "node.toml"
    cfg.write_text(tomli_w.dumps({
        "node": {"bind": "127.0.0.1", "port": port, "data_dir": str(tmp_path / "data")},
        "series": {"quiet_seconds": 60,  # long enough for 2 CLI calls on a loaded machine
                    "check_interval_seconds": 0.2},
        "workers": {"count": 1, "max_attempts": 1},
        "export": {"max_attempts": 1, "retry_backoff_seconds": [1], "timeout_seconds": 5},
        "destinations": [{"name": "DEST", "ae_title": "DEST", "host": "127.0.0.1", "port": dest.port}],
        "profiles": QUICK,
        "rules": [{"name": "ct", "match": {"Modality": "CT"}, "profile": "quick", "destinations": ["DEST"]}]}))
    work = tmp_path / "work"
    work.mkdir()
    node = UserNode(cfg, work, port).start()
    try:
        ok = node.cli("destinations", "test")
        assert ok.returncode == 0 and "DEST" in ok.stdout and "OK" in ok.stdout, ok.stderr

        assert storescu(port, [STS_CT]).returncode == 0
        text = node.cli("status").stdout
        assert re.search(r"completes in \d+ s \(" + ISO.pattern + r"\) if nothing more arrives", text), text
        st = _status(node)
        (s,) = st["series"]
        assert s["state"] == "open" and 0 < s["completes_in_s"] <= 60 and s["completes_at"] > time.time() - 1

        dest.stop()  # the destination goes down: the results are dead-lettered (max_attempts 1)
        down = node.cli("destinations", "test", "DEST")
        assert down.returncode == 1 and "DEST" in down.stderr and "FAILED" in down.stderr
        wait_until(lambda: _status(node)["outbox"]["counts"].get("dead") == 2, timeout_s=240, what="2 dead letters")
        listed = node.cli("exports", "list", "--destination", "DEST").stdout
        assert listed.count("dead: dicomnode exports retry") == 2, listed

        dest.start()
        bad = node.cli("exports", "retry", "--dead", "--destination", "NOPE")
        assert bad.returncode == 2 and "no such destination" in bad.stderr
        again = node.cli("exports", "retry", "--dead", "--destination", "DEST")
        assert again.returncode == 0 and again.stdout.startswith("2 dead-lettered export(s) to DEST queued again")
        wait_until(lambda: _status(node)["outbox"]["counts"].get("sent") == 2, timeout_s=120, what="2 sent")
        assert len(dest.files()) == 2
        sent = node.cli("exports", "list", "--state", "sent").stdout
        assert len(re.findall("sent " + ISO.pattern, sent)) == 2, sent

        uid = s["series_uid"]
        first_job = _status(node)["jobs"]["recent"][0]
        shown = json.loads(node.cli("jobs", "show", str(first_job["id"])).stdout)
        assert ISO.fullmatch(shown["created_at"]) and ISO.fullmatch(shown["finished_at"])

        # reprocess with another profile: a new job; the same profile again: the job is requeued
        r = node.cli("reprocess", uid, "--profile", "quick2")
        assert r.returncode == 0 and "queued with profile quick2" in r.stdout, r.stderr
        wait_until(lambda: [j for j in _status(node)["jobs"]["recent"] if j["profile"] == "quick2"
                            and j["state"] == "done"], timeout_s=240, what="the reprocessed job")
        r = node.cli("reprocess", uid, "--profile", "broken")
        assert r.returncode == 0, r.stderr
        wait_until(lambda: _status(node)["failed_jobs"], timeout_s=240, what="a failed job")
        unknown = node.cli("reprocess", "1.2.3.4")
        assert unknown.returncode == 1 and "no series 1.2.3.4" in unknown.stderr
        noprof = node.cli("reprocess", uid, "--profile", "nope")
        assert noprof.returncode == 2 and "no such profile" in noprof.stderr

        retry = node.cli("jobs", "retry", "--failed")
        assert retry.returncode == 0 and retry.stdout.startswith("1 failed job(s) queued again"), retry.stdout
        wait_until(lambda: _status(node)["jobs"]["counts"].get("failed") == 1 and not [
            j for j in _status(node)["jobs"]["recent"] if j["state"] in ("pending", "running")],
            timeout_s=240, what="the retried job to fail again")
        # the same results are not sent twice (deterministic UIDs): still 2 files at the destination, + quick2's
        assert len(dest.files()) == 4
    finally:
        node.stop()
    # one log line per failed send: the node's own, not pynetdicom's as well
    log = node.log()
    assert "pynetdicom" not in "\n".join(ln for ln in log.splitlines() if " ERROR " in ln), log[-4000:]
