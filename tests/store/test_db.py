import threading
import time

import pytest

from dicomnode.store.db import (Database, ExportState, IllegalTransition, InstanceRecord, JobState, SeriesState)


def rec(sop, series="1.2.3", t=0.0):
    return InstanceRecord(sop, series, "1.2", "1.2.840.10008.5.1.4.1.1.2", "CT", "1.2.840.10008.1.2.1",
                          f"/x/{series}/{sop}.dcm", 10, "SCU", "127.0.0.1", t)


def test_instances_are_indexed_once_and_open_their_series(tmp_path):
    db = Database(tmp_path / "i.sqlite")
    added, reopened = db.add_instances([rec("1.1", t=1), rec("1.2", t=2), rec("1.1", t=3)])
    assert added == 2 and not reopened
    s = db.get_series("1.2.3")
    assert s.state is SeriesState.OPEN and s.instance_count == 2 and s.last_received_at == 2


def test_series_completion_queues_a_job_atomically_and_reopens(tmp_path):
    db = Database(tmp_path / "i.sqlite")
    db.add_instances([rec("1.1", t=1)])
    assert db.open_series_quiet_since(now=5, default_quiet_s=10) == []
    due = db.open_series_quiet_since(now=20, default_quiet_s=10)
    assert [s.series_uid for s in due] == ["1.2.3"]
    job_id = db.complete_series("1.2.3", SeriesState.COMPLETE, 20, expected_last=1, job=("r", "ct", ["PACS"]))
    assert db.get_job(job_id).state is JobState.PENDING and db.get_job(job_id).destinations == ("PACS",)
    # a late instance re-opens it; completing again makes a second job (next generation)
    _, reopened = db.add_instances([rec("1.3", t=30)])
    assert reopened == {"1.2.3"}
    assert db.get_series("1.2.3").state is SeriesState.OPEN
    # an instance newer than the caller saw keeps it open
    assert db.complete_series("1.2.3", SeriesState.COMPLETE, 40, expected_last=1, job=("r", "ct", [])) is None
    job2 = db.complete_series("1.2.3", SeriesState.COMPLETE, 50, expected_last=30, job=("r", "ct", []))
    assert job2 != job_id and db.get_job(job2).generation == 2


def test_job_life_cycle_retry_and_illegal_transitions(tmp_path):
    db = Database(tmp_path / "i.sqlite")
    db.add_instances([rec("1.1", t=1)])
    jid = db.complete_series("1.2.3", SeriesState.COMPLETE, 20, expected_last=1, job=("r", "ct", ["A", "B"]))
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
    jid = db.complete_series("1.2.3", SeriesState.COMPLETE, 20, expected_last=1, job=("r", "ct", []))
    db.claim_job("w", 60, now=100)
    assert db.release_running_jobs(now=110) == [jid]
    assert db.get_job(jid).state is JobState.PENDING


def test_exports_dead_letter_requeue_and_already_sent_is_done(tmp_path):
    db = Database(tmp_path / "i.sqlite")
    db.add_instances([rec("1.1", t=1)])
    jid = db.complete_series("1.2.3", SeriesState.COMPLETE, 2, expected_last=1, job=("r", "ct", ["A"]))
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
