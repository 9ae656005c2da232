"""The Jobs page (and `GET /api/v1/jobs/{id}/log`) shows what a job logged inside its local job process, and the node's log has it once (issue 17).

A real node (`dicomnode serve`, JSON log, one local worker) with the console; a real CT series sent by DCMTK
storescu, completed by hand; the job runs in the worker pool. The worker's records (its "step done" timing lines)
travel to the node through the pool's log queue: the job's page lists them, and the node's stderr holds each one
exactly once, tagged with the job's id and the worker's pid, with no patient data.
"""

from __future__ import annotations

import html
import json
from collections import Counter

import pydicom

from console_helpers import complete_by_hand, start_console
from helpers import STS_CT, storescu, wait_until


def _phi() -> set[str]:
    ds = pydicom.dcmread(sorted(p for p in STS_CT.iterdir() if p.is_file())[0], stop_before_pixels=True)
    values = {str(ds.get(k, "") or "") for k in ("PatientName", "PatientID", "AccessionNumber", "PatientBirthDate")}
    return {v for v in values if len(v) >= 4}


def test_worker_log_lines_reach_the_jobs_page_and_the_node_log_once(tmp_path):
    c = start_console(tmp_path, extra_node={"log_format": "json"})
    try:
        files = sorted(p for p in STS_CT.iterdir() if p.is_file())
        assert storescu(c.dicom_port, files).returncode == 0
        with c.client("operator") as op:
            (s,) = wait_until(lambda: op.get("/api/v1/series").json(), timeout_s=60, what="series indexed")
            done = complete_by_hand(op, s["series_uid"])
            assert done.status_code == 200, done.text
            (job_id,) = done.json()["ids"]
            wait_until(lambda: op.get(f"/api/v1/jobs/{job_id}").json()["state"] in ("done", "failed"),
                       timeout_s=300, what="job finished")
            job = op.get(f"/api/v1/jobs/{job_id}").json()
            assert job["state"] == "done", job
            page = html.unescape(op.get(f"/jobs/{job_id}").text)
            api_lines = op.get(f"/api/v1/jobs/{job_id}/log")
            missing = op.get(f"/api/v1/jobs/{job_id + 1000}/log")
        node_pid = c.node.proc.pid
    finally:
        c.node.stop()
        c.dest.stop()

    records = []
    for line in c.node.log().splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"not a JSON line in the node's log: {line!r}") from None
    steps = [r for r in records if r["msg"] == "step done"]
    # the profile's steps (foreground, measure) and the chain's load and results, each timed in the worker
    assert {r["step"] for r in steps} >= {"load", "foreground", "measure", "results"}, steps
    assert all(r["job_id"] == job_id and r["pid"] != node_pid and r["logger"] == "dicomnode.executors"
               and isinstance(r["seconds"], (int, float)) for r in steps), steps
    # once each: one record per step, and no worker record printed twice (not by the worker, not by the node)
    assert Counter(r["step"] for r in steps) == Counter({r["step"]: 1 for r in steps})
    worker = [r for r in records if r["pid"] != node_pid]
    dup = [k for k, n in Counter((r["pid"], r["logger"], r["msg"], r.get("step"), r["ts"])
                                 for r in worker).items() if n > 1]
    assert not dup, dup
    assert any(r["msg"] == "chain done" and r["job_id"] == job_id and r["pid"] != node_pid for r in records)
    # the job's page: the worker's lines, the node's own ones beside them
    for st in ("load", "foreground", "measure", "results"):
        assert f"step done step={st} " in page, page
    assert "job running in worker process" in page and "chain done" in page and "job started" in page
    # as each of the profile's steps starts (live), before its timing line (when the job is done)
    started = [r for r in records if r["msg"] == "step started"]
    assert [r["step"] for r in started] == ["foreground", "measure"] and all(r["job_id"] == job_id for r in started)
    assert page.index("step started step=foreground\n") < page.index("step started step=measure\n") < \
        page.index("step done step=load ")
    # the same lines by the REST API, oldest first; a job that does not exist is a 404
    assert api_lines.status_code == 200, api_lines.text
    lines = api_lines.json()
    assert [x["time"] for x in lines] == sorted(x["time"] for x in lines)
    texts = [x["text"] for x in lines]
    assert any(t.startswith("step started step=foreground") for t in texts), texts
    assert sum(t.startswith("step done step=measure ") for t in texts) == 1, texts
    assert all(x["text"] in page for x in lines)
    assert missing.status_code == 404, missing.text
    text = "\n".join(json.dumps(r) for r in records) + page + api_lines.text
    for value in _phi():
        assert value not in text, f"patient data {value!r} in the log or the job's page"
