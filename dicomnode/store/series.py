"""Series completion: when an open series is complete, and what completing it does.

A series opens with its first instance and is routed once, then (:mod:`dicomnode.routing` decides; the node keeps
the decision with the series as a :class:`SeriesRoute` in ``series.route``). It completes when one of its
:class:`Trigger` s fires; completing it queues the job the route names in the same transaction
(:meth:`~dicomnode.store.db.Database.complete_series`), or closes it as unrouted / ignored.

Triggers today: :class:`QuietPeriod` (no instance for the series' quiet period: its rule's ``quiet_seconds``, else
``[series] quiet_seconds``), and :class:`Forced` (an operator's request for one series, not configured). A new trigger is a class here with ``name`` and ``due(db, now)``, listed by
:func:`triggers` from its ``[series]`` key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Sequence

from dicomnode.config import SeriesSection
from dicomnode.store.db import Database, NewJob, SeriesRow, SeriesState


class Trigger(Protocol):
    """Something that completes open series."""

    name: str

    def due(self, db: Database, now: float) -> list[SeriesRow]:
        """The open series this trigger completes at ``now``."""
        ...


@dataclass(frozen=True, slots=True)
class QuietPeriod:
    """Complete a series once no instance has arrived for its quiet period (its rule's, else ``default_seconds``)."""

    default_seconds: float
    name: ClassVar[str] = "quiet"

    def due(self, db: Database, now: float) -> list[SeriesRow]:
        return db.open_series_quiet_since(now, self.default_seconds)


@dataclass(frozen=True, slots=True)
class Forced:
    """An operator completes one open series now, before its quiet period ends (the console's "force completion")."""

    series_uid: str
    name: ClassVar[str] = "forced"

    def due(self, db: Database, now: float) -> list[SeriesRow]:
        s = db.get_series(self.series_uid)
        return [s] if s is not None and s.state is SeriesState.OPEN else []


def triggers(section: SeriesSection) -> tuple[Trigger, ...]:
    """The triggers the ``[series]`` section asks for."""
    return (QuietPeriod(section.quiet_seconds),)


@dataclass(frozen=True, slots=True)
class SeriesRoute:
    """The routing decision kept with a series: the job completing it queues, or the state it ends in, and why."""

    rule: str | None
    reason: str
    job: NewJob | None = None
    state: SeriesState = SeriesState.COMPLETE   # without a job: UNROUTED (no rule matched) or IGNORED

    def to_json(self) -> str:
        return json.dumps({"rule": self.rule, "reason": self.reason, "state": self.state.value,
                           "job": self.job.to_dict() if self.job else None}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "SeriesRoute":
        d: dict[str, Any] = json.loads(text)
        return cls(d["rule"], d["reason"], NewJob.from_dict(d["job"]) if d.get("job") else None,
                   SeriesState(d["state"]))


def stored_route(s: SeriesRow) -> SeriesRoute | None:
    """The decision the series was routed with when it opened; None when it was not routed (yet)."""
    return SeriesRoute.from_json(s.route) if s.route else None


def due(db: Database, now: float, active: Sequence[Trigger]) -> list[tuple[SeriesRow, Trigger]]:
    """Open series that some trigger completes at ``now``, each once (with the first trigger that fired)."""
    out: dict[str, tuple[SeriesRow, Trigger]] = {}
    for trigger in active:
        for s in trigger.due(db, now):
            out.setdefault(s.series_uid, (s, trigger))
    return list(out.values())


@dataclass(frozen=True, slots=True)
class Completed:
    series: SeriesRow
    route: SeriesRoute
    trigger: str
    job_id: int | None          # the job queued (None: no job, or it stayed open)
    closed: bool                # False: an instance arrived meanwhile, the series stays open


def complete(db: Database, s: SeriesRow, route: SeriesRoute, trigger: Trigger, now: float) -> Completed:
    """Close ``s`` as its route says (queueing its job atomically) unless an instance arrived since it was read."""
    if route.job is not None:
        job_id = db.complete_series(s.series_uid, SeriesState.COMPLETE, now, expected_last=s.last_received_at,
                                    note=route.reason, job=route.job)
        return Completed(s, route, trigger.name, job_id, job_id is not None)
    db.complete_series(s.series_uid, route.state, now, expected_last=s.last_received_at, note=route.reason)
    after = db.get_series(s.series_uid)
    return Completed(s, route, trigger.name, None, after is not None and after.state is not SeriesState.OPEN)
