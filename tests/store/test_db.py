import threading
import time

import sqlite3

import pytest

from dicomnode.jobs.spec import ChainJob, new_job
from dicomnode.store.db import (Database, ExportState, IllegalTransition, InstanceRecord, JobState, SeriesState)


def rec(sop, series="1.2.3", t=0.0):
    return InstanceRecord(sop, series, "1.2", "1.2.840.10008.5.1.4.1.1.2", "CT", "1.2.840.10008.1.2.1",
                          f"/x/{series}/{sop}.dcm", 10, "SCU", "127.0.0.1", t)


def test_instances_are_indexed_once_and_open_their_series(tmp_path):
    db = Database(tmp_path / "i.sqlite")
    added, reopened = db.add_instances([rec("1.1", t=1), rec("1.2", t=2), rec("1.1", t=3)])
    assert added == 2 and not reopened
    s = db.get_series("1.2.3")
    assert s.state is SeriesState.OPEN and s.instance_count == 2 and s.last_received_at == 3  # a resend counts


def test_a_resend_refreshes_the_quiet_period_of_an_open_series_only(tmp_path):
    db = Database(tmp_path / "i.sqlite")
    db.add_instances([rec("1.1", t=1), rec("1.2", t=2)])
    assert db.add_instances([rec("1.1", t=50)]) == (0, set())
    assert db.get_series("1.2.3").last_received_at == 50
    assert db.open_series_quiet_since(now=55, default_quiet_s=10) == []   # the sender is still at it
    db.complete_series("1.2.3", SeriesState.COMPLETE, 70, expected_last=50, job=new_job(ChainJob("ct"), rule="r", destinations=[]))
    assert db.add_instances([rec("1.2", t=80)]) == (0, set())              # nothing new: stays complete
    s = db.get_series("1.2.3")
    assert s.state is SeriesState.COMPLETE and s.last_received_at == 50 and s.instance_count == 2


def test_a_full_database_fails_the_write_and_leaves_the_index_usable(tmp_path):
    db = Database(tmp_path / "i.sqlite")
    db.add_instances([rec("1.0", t=1)])
    conn = db._conn()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own "database or disk is full"
    with pytest.raises(sqlite3.OperationalError, match="full"):
        db.add_instances([rec(f"1.{i}", t=2) for i in range(1, 2000)])
    assert not conn.in_transaction and db.count_instances() == 1     # rolled back as a whole
    conn.execute("PRAGMA max_page_count = 1073741823")
    assert db.add_instances([rec(f"1.{i}", t=2) for i in range(1, 2000)])[0] == 1999


def test_series_completion_queues_a_job_atomically_and_reopens(tmp_path):
    db = Database(tmp_path / "i.sqlite")
    db.add_instances([rec("1.1", t=1)])
    assert db.open_series_quiet_since(now=5, default_quiet_s=10) == []
    due = db.open_series_quiet_since(now=20, default_quiet_s=10)
    assert [s.series_uid for s in due] == ["1.2.3"]
    job_id = db.complete_series("1.2.3", SeriesState.COMPLETE, 20, expected_last=1, job=new_job(ChainJob("ct"), rule="r", destinations=["PACS"]))
    assert db.get_job(job_id).state is JobState.PENDING and db.get_job(job_id).destinations == ("PACS",)
    # a late instance re-opens it; completing again makes a second job (next generation)
    _, reopened = db.add_instances([rec("1.3", t=30)])
    assert reopened == {"1.2.3"}
    assert db.get_series("1.2.3").state is SeriesState.OPEN
    # an instance newer than the caller saw keeps it open
    assert db.complete_series("1.2.3", SeriesState.COMPLETE, 40, expected_last=1, job=new_job(ChainJob("ct"), rule="r", destinations=[])) is None
    job2 = db.complete_series("1.2.3", SeriesState.COMPLETE, 50, expected_last=30, job=new_job(ChainJob("ct"), rule="r", destinations=[]))
    assert job2 != job_id and db.get_job(job2).generation == 2


def test_job_life_cycle_retry_and_illegal_transitions(tmp_path):
    db = Database(tmp_path / "i.sqlite")
    db.add_instances([rec("1.1", t=1)])
    jid = db.complete_series("1.2.3", SeriesState.COMPLETE, 20, expected_last=1, job=new_job(ChainJob("ct"), rule="r", destinations=["A", "B"]))
    j = db.claim_job("w", 60, now=100)
    assert j.id == jid and j.state is JobState.RUNNING and j.attempts == 1
    assert db.claim_job("w", 60, now=100) is None
    assert db.fail_job(jid, 101, error="boom", traceback="tb", retry_at=200) is JobState.PENDING
    assert db.claim_job("w", 60, now=150) is None          # backoff respected
    j = db.claim_job("w", 60, now=200)
    assert j.attempts == 2
    assert db.fail_job(jid, 201, error="boom", traceback="tb", retry_at=None) is JobState.FAILED
    assert db.get_job(jid).traceback == "tb"
    with pytest.raises(IllegalTransition):
        db.finish_job(jid, 1, result_dir="", results=[], seconds=0, exports=[])
    db.requeue_job(jid, 300)
    j = db.claim_job("w", 60, now=300)
    assert j.attempts == 1
    ids = db.finish_job(jid, 301, result_dir="/r", results=["/r/seg.dcm"], seconds=1.0,
                        exports=[("A", "/r/seg.dcm", "9.1"), ("B", "/r/seg.dcm", "9.1")])
    assert len(ids) == 2
    assert db.get_job(jid).state is JobState.DONE


def test_running_jobs_are_released_at_start(tmp_path):
    db = Database(tmp_path / "i.sqlite")
    db.add_instances([rec("1.1", t=1)])
    jid = db.complete_series("1.2.3", SeriesState.COMPLETE, 20, expected_last=1, job=new_job(ChainJob("ct"), rule="r", destinations=[]))
    db.claim_job("w", 60, now=100)
    assert db.release_running_jobs(now=110) == [jid]
    j = db.get_job(jid)
    assert j.state is JobState.PENDING and j.attempts == 0   # cut short by the node's death: not a failed attempt
    db.claim_job("w", 60, now=120)
    assert [j.id for j in db.expired_running_jobs(200)] == [jid]  # the lease sweep's (an attempt that counts)
    assert db.get_job(jid).attempts == 1


def test_exports_in_flight_at_a_kill_go_back_without_an_attempt(tmp_path):
    db = Database(tmp_path / "i.sqlite")
    db.add_instances([rec("1.1", t=1)])
    jid = db.complete_series("1.2.3", SeriesState.COMPLETE, 2, expected_last=1, job=new_job(ChainJob("ct"), rule="r", destinations=["A"]))
    db.claim_job("w", 60, now=3)
    db.finish_job(jid, 4, result_dir="/r", results=["/r/a.dcm", "/r/b.dcm"], seconds=1,
                  exports=[("A", "/r/a.dcm", "9.1"), ("A", "/r/b.dcm", "9.2")])
    first = db.claim_export(5)
    rest = db.claim_exports_for("A", 5, 10)
    db.export_sent(first.id, 6)                              # its response came before the kill
    assert db.release_sending_exports(7) == [rest[0].id]
    e = {x.id: x for x in db.list_exports()}
    assert e[first.id].state is ExportState.SENT
    assert e[rest[0].id].state is ExportState.PENDING and e[rest[0].id].attempts == 0


def test_exports_dead_letter_requeue_and_already_sent_is_done(tmp_path):
    db = Database(tmp_path / "i.sqlite")
    db.add_instances([rec("1.1", t=1)])
    jid = db.complete_series("1.2.3", SeriesState.COMPLETE, 2, expected_last=1, job=new_job(ChainJob("ct"), rule="r", destinations=["A"]))
    db.claim_job("w", 60, now=3)
    db.finish_job(jid, 4, result_dir="/r", results=["/r/sr.dcm"], seconds=1, exports=[("A", "/r/sr.dcm", "9.2")])
    e = db.claim_export(5)
    assert e.state is ExportState.SENDING and e.attempts == 1
    assert db.export_failed(e.id, 6, error="down", retry_at=None) is ExportState.DEAD
    db.requeue_export(e.id, 7)
    e = db.claim_export(7)
    db.export_sent(e.id, 8)
    # a re-run of the job queues the same (destination, UID): already sent, not queued again
    db.requeue_job(jid, 9)
    db.claim_job("w", 60, now=9)
    assert db.finish_job(jid, 10, result_dir="/r", results=["/r/sr.dcm"], seconds=1,
                         exports=[("A", "/r/sr.dcm", "9.2")]) == []
    assert db.count_exports() == {"sent": 1}


def test_concurrent_writers(tmp_path):
    db = Database(tmp_path / "i.sqlite")

    def writer(k):
        for i in range(50):
            db.add_instances([rec(f"{k}.{i}", series=f"1.{k}", t=time.time())])

    ts = [threading.Thread(target=writer, args=(k,)) for k in range(1, 9)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert db.count_instances() == 400
    assert len(db.list_series()) == 8


def test_completion_scan_and_status_queries_use_indexes(tmp_path):
    """Their cost follows the open series and the recent rows, not the size of the index (bench index measures)."""
    db = Database(tmp_path / "i.sqlite")
    db.add_instances([rec(f"1.{i}", t=i) for i in range(50)])
    conn = db._conn()
    for sql, args in (("SELECT * FROM series WHERE state = ? AND last_received_at <= ? - COALESCE(quiet_seconds, ?)",
                       ("open", 1, 30)),
                      ("SELECT path FROM instances WHERE series_uid = ? ORDER BY path", ("1.2.3",)),
                      ("SELECT COUNT(*) AS n, COALESCE(SUM(size_bytes), 0) AS b, COUNT(DISTINCT series_uid) AS s"
                       " FROM instances WHERE received_at >= ?", (1,)),
                      ("SELECT * FROM series ORDER BY last_received_at DESC LIMIT ?", (20,))):
        plan = " ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, args))
        assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, (sql, plan)


def test_expired_running_jobs_are_the_lease_sweeps_candidates(tmp_path):
    db = Database(tmp_path / "i.sqlite")
    db.add_instances([rec("1.1", t=1)])
    jid = db.complete_series("1.2.3", SeriesState.COMPLETE, 20, expected_last=1,
                             job=new_job(ChainJob("ct"), rule="r", destinations=[]))
    assert db.expired_running_jobs(1000) == []            # pending: no lease
    db.claim_job("w", 60, now=100)
    assert db.expired_running_jobs(160) == []             # lease ends at 160: not yet expired
    (job,) = db.expired_running_jobs(160.5)
    assert job.id == jid and job.worker == "w" and job.attempts == 1
    assert db.fail_job(jid, 161, error="lease expired", traceback="", retry_at=None) is JobState.FAILED
    assert db.expired_running_jobs(1000) == []


def test_study_context_orders_siblings_as_the_scene_step_prefers_them(tmp_path):
    # the SQL ranks modalities itself (for its LIMIT); it must agree with scene_context.modality_rank
    from dicomnode.analysis.scene_context import modality_rank
    db = Database(tmp_path / "i.sqlite")
    kinds = {"9.1": ("PT", 5), "9.2": ("OT", 9), "9.3": ("MR", 2), "9.4": ("CT", 1), "9.5": ("MR", 7), "9.6": ("CT", 3)}
    for uid, (modality, n) in kinds.items():
        db.add_instances([InstanceRecord(f"{uid}.{i}", uid, "1.2", "1.2.840.10008.5.1.4.1.1.2", modality,
                                         "1.2.840.10008.1.2.1", f"/x/{uid}/{i}.dcm", 10, "SCU", "127.0.0.1", 1.0)
                          for i in range(n)])
        db.set_series_routing(uid, "r", 30.0, None, frame_of_reference_uid="1.2.99")
        db.complete_series(uid, SeriesState.UNROUTED, 100.0, expected_last=1.0)
    got = db.study_context("9.1")
    assert [m for m, _ in got] == sorted((m for m, _ in got), key=modality_rank)
    assert got == [("CT", "9.6"), ("CT", "9.4"), ("MR", "9.5"), ("MR", "9.3"), ("OT", "9.2")]  # larger series first
    assert db.study_context("9.1", limit=2) == [("CT", "9.6"), ("CT", "9.4")]   # the limit keeps the preferred
