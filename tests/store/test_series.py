"""store/series.py: series completion behind a Trigger type, and the routing decision kept with the series."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from dicomnode.config import SeriesSection
from dicomnode.jobs.spec import ChainJob, new_job
from dicomnode.store import series
from dicomnode.store.db import Database, InstanceRecord, SeriesRow, SeriesState
from dicomnode.store.series import QuietPeriod, SeriesRoute

CT = "1.2.840.10008.5.1.4.1.1.2"


def _db(tmp_path, *uids: str, at: float = 100.0, quiet: float | None = None) -> Database:
    db = Database(tmp_path / "index.sqlite")
    db.add_instances([InstanceRecord(f"{u}.1", u, "1.2", CT, "CT", "1.2.840.10008.1.2.1", f"/x/{u}.dcm", 10, "PACS",
                                     "10.0.0.1", at) for u in uids], {u: ("r", quiet) for u in uids})
    return db


def test_the_quiet_period_is_todays_only_trigger_and_honours_the_rules_quiet_seconds(tmp_path):
    (trigger,) = series.triggers(SeriesSection(quiet_seconds=30.0))
    assert trigger == QuietPeriod(30.0) and trigger.name == "quiet"
    db = _db(tmp_path, "1.1", at=100.0)
    db2 = _db(tmp_path / "b", "2.1", at=100.0, quiet=5.0)
    assert trigger.due(db, 129.0) == [] and [s.series_uid for s in trigger.due(db, 130.0)] == ["1.1"]
    assert [s.series_uid for s in trigger.due(db2, 105.0)] == ["2.1"]   # its rule's 5 s, not the default 30 s


def test_complete_queues_the_routes_job_and_a_route_survives_the_index(tmp_path):
    db = _db(tmp_path, "1.1", "1.2", "1.3")
    job = new_job(ChainJob("ct"), rule="ct", destinations=["PACS"])
    routed = SeriesRoute("ct", "rule ct", job)
    assert SeriesRoute.from_json(routed.to_json()) == routed
    db.set_series_routing("1.1", "ct", None, routed.to_json())
    (s,) = [r for r in db.list_series() if r.series_uid == "1.1"]
    assert series.stored_route(s) == routed
    done = series.complete(db, s, routed, QuietPeriod(30.0), 200.0)
    assert done.closed and done.trigger == "quiet" and done.job_id is not None
    row = db.get_job(done.job_id)
    assert (row.kind, row.params, row.label, row.destinations) == ("chain", {"profile": "ct"}, "ct", ("PACS",))
    unrouted = SeriesRoute(None, "no rule matched", None, SeriesState.UNROUTED)
    done = series.complete(db, db.get_series("1.2"), unrouted, QuietPeriod(30.0), 200.0)
    assert done.closed and done.job_id is None and db.get_series("1.2").state is SeriesState.UNROUTED
    stale = db.get_series("1.3")
    db.add_instances([InstanceRecord("1.3.2", "1.3", "1.2", CT, "CT", "1.2.840.10008.1.2.1", "/x/b.dcm", 10, "PACS",
                                     "10.0.0.1", 150.0)])  # arrives after the monitor read the row
    done = series.complete(db, stale, routed, QuietPeriod(30.0), 200.0)
    assert not done.closed and done.job_id is None and db.get_series("1.3").state is SeriesState.OPEN


@dataclass(frozen=True)
class _ExpectedCount:
    """A trigger of another kind, written as a new trigger would be: complete at N instances."""

    count: int
    name: ClassVar[str] = "count"

    def due(self, db: Database, now: float) -> list[SeriesRow]:
        return [s for s in db.list_series(SeriesState.OPEN) if s.instance_count >= self.count]


def test_due_takes_any_trigger_and_names_the_first_that_fired(tmp_path):
    db = _db(tmp_path, "1.1", "1.2", at=100.0)
    db.add_instances([InstanceRecord("1.2.2", "1.2", "1.2", CT, "CT", "1.2.840.10008.1.2.1", "/x/c.dcm", 10, "PACS",
                                     "10.0.0.1", 100.0)])
    found = series.due(db, 110.0, (QuietPeriod(30.0), _ExpectedCount(2)))
    assert [(s.series_uid, t.name) for s, t in found] == [("1.2", "count")]
    found = series.due(db, 140.0, (QuietPeriod(30.0), _ExpectedCount(2)))
    assert sorted((s.series_uid, t.name) for s, t in found) == [("1.1", "quiet"), ("1.2", "quiet")]
