"""workers.lease_seconds takes effect: a job whose worker hangs past its lease is taken back by the node's sweep.

The worker really hangs: its process is stopped (SIGSTOP) before the job reaches it, as a process stuck in a driver
or swapped to death would be. The node must notice (lease expired), kill that worker, and run the job again on a new
one, or give up after workers.max_attempts with an error naming workers.lease_seconds.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pydicom

from helpers import STS_CT, storescu, wait_until

from dicomnode.store.db import Database, JobState

QUICK = {"quick": {"steps": ["foreground", "measure"], "outputs": ["seg", "sr"]}}
LEASE_S = 15


def _procs_in_group(pgid: int) -> dict[int, int]:
    """pid -> parent pid of every process in a process group (from /proc)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after "(comm)": state, ppid, pgrp, ...
            out[int(entry.name)] = int(fields[1])
    return out


def _job_workers(node_pid: int) -> list[int]:
    """The node's job processes: children of its forkserver (which is the node's child)."""
    procs = _procs_in_group(node_pid)
    return [pid for pid, ppid in procs.items() if pid != node_pid and ppid != node_pid and ppid in procs]


def _node(make_node, max_attempts: int):
    return make_node({"workers": {"count": 1, "lease_seconds": LEASE_S, "max_attempts": max_attempts,
                                  "retry_backoff_seconds": [1]},
                      "series": {"quiet_seconds": 1},
                      "profiles": QUICK,
                      "rules": [{"name": "ct", "match": {"Modality": "CT"}, "profile": "quick"}]})


def _first_job_done(node) -> tuple[Database, str]:
    assert storescu(node.port, [STS_CT]).returncode == 0
    db = Database(node.data_dir / "index.sqlite")
    wait_until(lambda: [j for j in db.list_jobs() if j.state is JobState.DONE], timeout_s=240, what="the first job")
    series_uid = str(pydicom.dcmread(next(p for p in sorted(STS_CT.iterdir()) if p.is_file()),
                                     stop_before_pixels=True).SeriesInstanceUID)
    return db, series_uid


def _hang_the_worker_and_reprocess(node, series_uid: str) -> list[int]:
    workers = wait_until(lambda: _job_workers(node.proc.pid), timeout_s=30, what="the job process")
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)  # hung: it will never take the next job from the pool's queue
    node.cli("reprocess", series_uid)
    return workers


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _job1(db: Database):
    return db.get_job(1)  # `reprocess` queues the series' job again: the same job, attempts from 0


def test_a_job_whose_worker_hangs_past_its_lease_runs_again_on_a_new_worker(make_node):
    node = _node(make_node, max_attempts=3)
    db, series_uid = _first_job_done(node)
    hung = _hang_the_worker_and_reprocess(node, series_uid)
    audit = wait_until(lambda: [e for e in db.list_audit() if e["event"] == "job lease expired"],
                       timeout_s=LEASE_S * 6, what="the lease sweep")
    assert audit[0]["series_uid"] == series_uid and audit[0]["detail"]["job_id"] == 1
    assert audit[0]["detail"]["attempt"] == 1
    assert "workers.lease_seconds = 15 s" in (_job1(db).error or "")
    done = wait_until(lambda: (j := _job1(db)).state is JobState.DONE and j, timeout_s=240,
                      what="the job done on a new worker")
    assert done.attempts >= 2  # the hung run counted as one attempt
    assert all(_gone(pid) for pid in hung), "the hung worker was not stopped"
    log = node.log()
    assert "job lease expired" in log and "worker pool replaced" in log


def test_a_job_that_overruns_its_lease_on_its_last_attempt_fails_naming_the_setting(make_node):
    node = _node(make_node, max_attempts=1)
    db, series_uid = _first_job_done(node)
    _hang_the_worker_and_reprocess(node, series_uid)
    job = wait_until(lambda: (j := _job1(db)).state is JobState.FAILED and j, timeout_s=LEASE_S * 6,
                     what="the job failed by the lease sweep")
    assert job.attempts == 1
    assert "lease expired" in job.error and "workers.lease_seconds = 15 s" in job.error
    # the node keeps working: retried by the operator, the job runs on the new worker
    node.cli("jobs", "retry", "1")
    wait_until(lambda: _job1(db).state is JobState.DONE, timeout_s=240, what="the job retried and done")
