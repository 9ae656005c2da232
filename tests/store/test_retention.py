"""Retention over a real index and spool folder; ages are set through the index timestamps."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dicomnode.config import RetentionSection
from dicomnode.jobs.spec import ChainJob, RadiomicsJob, new_job
from dicomnode.store.db import Database, InstanceRecord, SeriesState
from dicomnode.store.retention import DAY_S, run_retention
from dicomnode.store.spool import Spool

CT = "1.2.840.10008.5.1.4.1.1.2"
NOW = time.time()
OLD = NOW - 30 * DAY_S


class Site:
    def __init__(self, tmp: Path) -> None:
        self.db = Database(tmp / "index.sqlite")
        self.spool = Spool(tmp / "instances")
        self.results = tmp / "results"

    def receive(self, uid: str, t: float, n: int = 3, first: int = 1) -> None:
        recs = []
        for i in range(first, first + n):
            p = self.spool.root / uid / f"{uid}.{i}.dcm"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"\0" * 100)
            recs.append(InstanceRecord(f"{uid}.{i}", uid, "1.2.9", CT, "CT", "1.2.840.10008.1.2", str(p), 100, "PACS",
                                       "10.0.0.1", t))
        self.db.add_instances(recs, {uid: ("r", 1.0)})

    def complete(self, uid: str, t: float, dests=("DEST",), state=SeriesState.COMPLETE) -> int | None:
        job = new_job(ChainJob("ct"), rule="r", destinations=dests) if state is SeriesState.COMPLETE else None
        last = self.db.get_series(uid).last_received_at
        return self.db.complete_series(uid, state, t, expected_last=last, job=job)

    def finish(self, uid: str, job_id: int, t: float, *, send: bool = True, fail: bool = False) -> Path:
        job = self.db.claim_job("w", 3600, t)
        assert job is not None and job.id == job_id
        out = self.results / uid / str(job_id)
        out.mkdir(parents=True)
        (out / "seg.dcm").write_bytes(b"seg")
        if fail:
            self.db.fail_job(job_id, t, error="boom", traceback="", retry_at=None)
            return out
        self.db.finish_job(job_id, t, result_dir=str(out), results=[str(out / "seg.dcm")], seconds=1.0,
                           exports=[(d, str(out / "seg.dcm"), f"9.{uid}") for d in job.destinations])
        if send and job.destinations:
            e = self.db.claim_export(t)
            self.db.export_sent(e.id, t)
        return out


def policy(days=7, keep_failed=True) -> RetentionSection:
    return RetentionSection(delete_received_after_days=days, keep_failed=keep_failed)


def test_delivered_old_series_are_deleted_and_everything_else_kept(tmp_path):
    s = Site(tmp_path)
    s.receive("1.1", OLD)                                          # delivered 30 days ago: goes
    delivered = s.finish("1.1", s.complete("1.1", OLD), OLD)
    s.receive("1.2", OLD)                                          # result not sent yet: stays
    s.finish("1.2", s.complete("1.2", OLD), OLD, send=False)
    s.receive("1.3", OLD)                                          # failed job: stays (keep_failed)
    s.finish("1.3", s.complete("1.3", OLD), OLD, fail=True)
    s.receive("1.4", NOW - DAY_S)                                  # delivered yesterday: stays
    s.finish("1.4", s.complete("1.4", NOW - DAY_S), NOW - DAY_S)
    s.receive("1.5", OLD)                                          # still open: stays
    s.receive("1.6", OLD)                                          # unrouted (no rule): handled, goes
    s.complete("1.6", OLD, state=SeriesState.UNROUTED)
    s.receive("1.7", OLD)                                          # no destination: instances go, results stay
    local = s.finish("1.7", s.complete("1.7", OLD, dests=()), OLD)
    s.receive("1.8", OLD)                                          # sent long ago, but a job is pending now
    s.finish("1.8", s.complete("1.8", OLD), OLD)
    s.receive("1.8", NOW - 40 * DAY_S, n=1, first=9)               # late instance (old clock): re-opened...
    s.complete("1.8", OLD + 1)                                     # ... and queued again: pending

    report = run_retention(s.db, s.spool, policy(), now=NOW, results_root=s.results)

    gone = {"1.1", "1.6", "1.7"}
    assert report.series == 3 and report.instances == 9 and report.bytes == 900 and report.result_dirs == 1
    for uid in ("1.1", "1.2", "1.3", "1.4", "1.5", "1.6", "1.7", "1.8"):
        kept = uid not in gone
        assert s.db.count_instances(uid) == (4 if uid == "1.8" else 3) * kept, uid
        assert (s.spool.root / uid).exists() == kept, uid
        row = s.db.get_series(uid)
        assert row is not None  # the series row stays as history
        assert (row.instance_count == 0) == (not kept)
    assert not delivered.exists() and local.exists()  # sent results go; results kept only here stay
    audit = [e for e in s.db.list_audit() if e["event"] == "retention deleted"]
    assert sorted(e["series_uid"] for e in audit) == sorted(gone)
    # a second pass finds nothing more
    assert run_retention(s.db, s.spool, policy(), now=NOW, results_root=s.results).series == 0


def test_keep_failed_false_deletes_failed_series_too(tmp_path):
    s = Site(tmp_path)
    s.receive("2.1", OLD)
    s.finish("2.1", s.complete("2.1", OLD), OLD, fail=True)
    assert run_retention(s.db, s.spool, policy(), now=NOW).series == 0
    assert run_retention(s.db, s.spool, policy(keep_failed=False), now=NOW).series == 1
    assert s.db.count_instances("2.1") == 0


def test_zero_days_keeps_everything(tmp_path):
    s = Site(tmp_path)
    s.receive("3.1", OLD)
    s.finish("3.1", s.complete("3.1", OLD), OLD)
    assert run_retention(s.db, s.spool, policy(days=0), now=NOW).series == 0
    assert s.db.count_instances("3.1") == 3


def test_a_late_instance_after_retention_reopens_the_series_and_gets_a_new_job(tmp_path):
    s = Site(tmp_path)
    s.receive("4.1", OLD)
    s.finish("4.1", s.complete("4.1", OLD), OLD)
    assert run_retention(s.db, s.spool, policy(), now=NOW).series == 1
    s.receive("4.1", NOW, n=1, first=7)
    row = s.db.get_series("4.1")
    assert row.state is SeriesState.OPEN and row.instance_count == 1
    assert s.complete("4.1", NOW + 60) is not None  # generation 2: not swallowed by the old job row


def test_an_instance_arriving_during_the_pass_keeps_the_series(tmp_path):
    s = Site(tmp_path)
    s.receive("5.1", OLD)
    s.finish("5.1", s.complete("5.1", OLD), OLD)
    before = NOW - 7 * DAY_S
    assert s.db.retention_candidates(before, keep_failed=True) == ["5.1"]
    s.receive("5.1", NOW, n=1, first=4)  # re-opens it between the listing and the deletion
    with s.db.purging("5.1", before, keep_failed=True) as plan:
        assert plan is None
    assert s.db.count_instances("5.1") == 4


def test_a_failure_while_removing_files_leaves_the_index_unchanged(tmp_path, monkeypatch):
    s = Site(tmp_path)
    s.receive("6.1", OLD)
    s.finish("6.1", s.complete("6.1", OLD), OLD)

    def broken(path):  # noqa: ANN001
        raise OSError("disk on fire")

    monkeypatch.setattr(s.spool, "remove", broken)
    assert run_retention(s.db, s.spool, policy(), now=NOW).series == 0
    assert s.db.count_instances("6.1") == 3
    monkeypatch.undo()
    assert run_retention(s.db, s.spool, policy(), now=NOW).series == 1


@pytest.mark.parametrize("bad", [-1, "7"])
def test_retention_config_is_checked(bad):
    from dicomnode.config import parse_config
    from dicomnode.errors import ConfigErrors
    with pytest.raises(ConfigErrors, match="retention.delete_received_after_days"):
        parse_config({"retention": {"delete_received_after_days": bad}})


def test_an_image_series_a_pending_job_still_reads_is_kept(tmp_path):
    s = Site(tmp_path)
    s.receive("7.1", OLD)                                           # images: delivered long ago
    s.finish("7.1", s.complete("7.1", OLD), OLD)
    s.receive("7.2", OLD)                                           # a region series whose job reads 7.1
    last = s.db.get_series("7.2").last_received_at
    s.db.complete_series("7.2", SeriesState.COMPLETE, OLD, expected_last=last,
                         job=new_job(RadiomicsJob("default"), rule="r", destinations=["DEST"], depends_on="7.1"))
    assert run_retention(s.db, s.spool, policy(), now=NOW).series == 0
    assert s.db.count_instances("7.1") == 3
