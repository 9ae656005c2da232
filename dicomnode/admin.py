"""Operations on a node's index, for the CLI now and a web console later: every function takes the config and the
:class:`~dicomnode.store.db.Database` and returns plain values; none prints or exits.

* :func:`series_completion`: when an open series will be processed (its quiet period, the rule's override);
* :func:`retry_failed_jobs`, :func:`retry_dead_exports`: requeue after an outage, all at once;
* :func:`reprocess`: queue a stored series again, with its profile or another;
* :func:`check_destinations`: C-ECHO every configured destination, as the outbox would connect;
* :func:`series_view`, :func:`jobs_view`, :func:`job_view`, :func:`exports_view`, :func:`audit_events`: what
  ``dicomnode status|jobs|exports|audit`` show (and ``/api/v1/...`` serves), as JSON-ready dicts;
* :func:`requeue_job`, :func:`requeue_export`: one job or export back to pending.

The CLI and the console's REST API (:mod:`dicomnode.web.api`) both call these functions. ``actor`` names who asked,
for the audit trail: ``cli:<OS user>`` from the command line (:func:`cli_actor`), the account's name from the web.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

from dicomnode.config import NodeConfig
from dicomnode.errors import DicomnodeError
from dicomnode.jobs.spec import ChainJob, JobKind, new_job
from dicomnode.store.db import Database, ExportState, JobState, SeriesRow, SeriesState


class AdminError(DicomnodeError):
    """An operator's request that cannot be done as asked; the message says why and what to do instead."""


class NotFoundError(AdminError):
    """The job, export, series or destination asked for does not exist (HTTP 404)."""


class StateError(AdminError):
    """The thing exists but its state does not allow the action (e.g. retrying a running job; HTTP 409)."""


def cli_actor() -> str:
    """Who runs a CLI command, for the audit trail: ``cli:<OS user name>``."""
    import getpass
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # noqa: BLE001 - no user name in a bare container
        return "cli"


_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, *, now: float | None = None) -> float:
    """``1h``, ``7d``... (an age) or an ISO date/time in local time -> a Unix time; ValueError saying what to use."""
    now = time.time() if now is None else now
    m = _AGE.match(text)
    if m:
        return now - float(m.group(1)) * _UNIT_S[m.group(2)]
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise ValueError(f"--since {text!r}: use an age such as 90s, 15m, 1h or 7d, or a local date and time "
                         f"such as 2026-11-25T10:00") from None


def iso(t: float | None, *, milliseconds: bool = False) -> str | None:
    """An epoch time as ISO 8601 with the local UTC offset (``2026-12-06T12:00:05+00:00``); None stays None."""
    if not t:
        return None
    return datetime.fromtimestamp(t, tz=timezone.utc).astimezone().isoformat(
        timespec="milliseconds" if milliseconds else "seconds")


def series_completion(series: SeriesRow, config: NodeConfig, now: float) -> tuple[float, float] | None:
    """(epoch time, seconds from ``now``) when an open series completes if nothing more arrives; None if not open.

    The series' own quiet period (the rule's ``quiet_seconds`` when it set one) else ``series.quiet_seconds``; the
    monitor checks every ``series.check_interval_seconds``, so it may come that much later.
    """
    if series.state is not SeriesState.OPEN:
        return None
    quiet = series.quiet_seconds if series.quiet_seconds is not None else config.series.quiet_seconds
    at = series.last_received_at + quiet
    return at, max(0.0, at - now)


def retry_failed_jobs(db: Database, now: float | None = None, *, actor: str = "cli") -> list[int]:
    """Every failed job back to pending (attempts reset); the ids requeued."""
    now = time.time() if now is None else now
    ids = [j.id for j in db.list_jobs(JobState.FAILED, limit=1_000_000)]
    for i in ids:
        db.requeue_job(i, now)
    if ids:
        db.audit("jobs requeued", actor=actor, detail={"job_ids": ids})
    return sorted(ids)


def retry_dead_exports(db: Database, now: float | None = None, *, destination: str | None = None,
                       actor: str = "cli") -> list[int]:
    """Every dead-lettered export (of ``destination`` only, if given) back to pending; the ids requeued."""
    now = time.time() if now is None else now
    ids = [e.id for e in db.list_exports(ExportState.DEAD, limit=1_000_000)
           if destination is None or e.destination == destination]
    for i in ids:
        db.requeue_export(i, now)
    if ids:
        db.audit("exports requeued", actor=actor, detail={"export_ids": ids, "destination": destination})
    return sorted(ids)


@dataclass(frozen=True, slots=True)
class Reprocessed:
    job_id: int
    profile: str
    destinations: tuple[str, ...]
    requeued: bool  # True: the series' job with this profile ran before and was queued again; False: a new job


def reprocess(db: Database, config: NodeConfig, series_uid: str, *, profile: str | None = None,
              now: float | None = None, actor: str = "cli") -> Reprocessed:
    """Queue a stored, complete series for analysis again (a running node picks it up within a second).

    The profile defaults to the one of the series' last job, else the one its rule or modality gives; the
    destinations are those of the series' last job, else of its rule. Results keep deterministic UIDs, so
    destinations that have them already are not sent them twice. Raises :class:`AdminError`.
    """
    now = time.time() if now is None else now
    s = db.get_series(series_uid)
    if s is None:
        raise NotFoundError(f"no series {series_uid} in this node's index; `dicomnode status` lists the stored "
                            "ones")
    if s.state is SeriesState.OPEN:
        eta = series_completion(s, config, now)
        raise StateError(f"series {series_uid} is still open (receiving); it is processed by itself in "
                         f"{eta[1]:.0f} s if nothing more arrives" if eta else f"series {series_uid} is open")
    if not db.instance_paths(series_uid):
        raise AdminError(f"series {series_uid} has no stored instances any more (retention deleted them)")
    jobs = [j for j in db.list_jobs(limit=1_000_000)
            if j.series_uid == series_uid and JobKind(j.kind) is JobKind.CHAIN]
    last = jobs[0] if jobs else None
    rule = next((r for r in config.rules if r.name == (last.rule if last else s.rule)), None)
    if profile is None:
        profile = last.label if last else config.profile_for(rule.profile if rule else None, s.modality).name
    if profile not in config.profiles:
        raise AdminError(f"--profile {profile}: no such profile; use one of {', '.join(sorted(config.profiles))}")
    dests = tuple(last.destinations if last else (rule.destinations if rule else ()))
    same = next((j for j in jobs if j.generation == s.generation and j.label == profile), None)
    if same is not None:
        if same.state in (JobState.PENDING, JobState.RUNNING):
            raise StateError(f"series {series_uid} already has job {same.id} {same.state.value} with profile "
                             f"{profile}")
        db.requeue_job(same.id, now)
        job_id, requeued = same.id, True
    else:
        job = new_job(ChainJob(profile), rule=rule.name if rule else "reprocess", destinations=dests)
        job_id = db.add_job(series_uid, s.generation, job, now=now)
        requeued = False
    db.audit("series reprocess", actor=actor, series_uid=series_uid,
             detail={"job_id": job_id, "profile": profile, "destinations": list(dests)})
    return Reprocessed(job_id, profile, dests, requeued)


@dataclass(frozen=True, slots=True)
class DestinationCheck:
    name: str
    address: str
    ok: bool
    status: int | None
    seconds: float
    error: str = ""
    tls: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "address": self.address, "ok": self.ok, "status": self.status,
                "seconds": round(self.seconds, 3), "error": self.error, "tls": self.tls}


def check_destinations(config: NodeConfig, *, names: tuple[str, ...] = (), timeout_seconds: float | None = None
                       ) -> list[DestinationCheck]:
    """C-ECHO each destination (all, or those named) with the node's AE title and TLS settings."""
    from dicomnode.export.outbox import tls_context
    from dicomnode.net.scu import echo

    unknown = [n for n in names if n not in {d.name for d in config.destinations}]
    if unknown:
        raise NotFoundError(f"no [[destinations]] named {', '.join(unknown)}; configured: "
                         f"{', '.join(d.name for d in config.destinations) or 'none'}")
    out = []
    for d in config.destinations:
        if names and d.name not in names:
            continue
        t0 = time.perf_counter()
        try:
            status = echo(d.host, d.port, ae_title=d.ae_title, calling_ae=config.node.ae_title,
                          timeout_s=timeout_seconds or config.export.timeout_seconds,
                          ssl_context=tls_context(config, d))
            out.append(DestinationCheck(d.name, d.address, status == 0, status, time.perf_counter() - t0,
                                        "" if status == 0 else f"C-ECHO status 0x{status:04X}", d.tls))
        except (DicomnodeError, OSError) as e:
            out.append(DestinationCheck(d.name, d.address, False, None, time.perf_counter() - t0, str(e), d.tls))
    return out


@dataclass(frozen=True, slots=True)
class RuleCheck:
    index: int
    name: str
    fires: bool
    why: str  # for a rule that does not fire: the first keyword that does not match, with the value seen


def _mismatch(rule: Any, tags: Mapping[str, str]) -> str | None:
    import fnmatch
    for keyword, want in rule.match.items():
        have = str(tags.get(keyword, "") or "").strip()
        options = want if isinstance(want, tuple) else (want,)
        if not any(fnmatch.fnmatchcase(have, str(o)) for o in options):
            wanted = options[0] if len(options) == 1 else f"one of {', '.join(options)}"
            return f"{keyword} is {have!r}{' (absent)' if keyword not in tags else ''}, not {wanted}"
    return None


def explain_route(config: NodeConfig, path: str) -> tuple[Any, list[RuleCheck]]:
    """Which rule a file's series gets (the node's own decision, :func:`dicomnode.routing.route`) and, for each rule
    tried before, why it did not match. Returns (RouteDecision, checks of the rules of the file's kind in order)."""
    from dicomnode.io.headers import is_image_storage, is_region_storage, read_tags
    from dicomnode.routing import route

    tags = read_tags(path)
    sop_class = tags.get("SOPClassUID", "")
    region = is_region_storage(sop_class)
    decision = route(config, tags, is_image=is_image_storage(sop_class), is_region=region)
    checks = []
    for i, rule in enumerate(config.rules):
        if (rule.radiomics is not None) != region:
            continue
        fires = decision.rule is rule
        checks.append(RuleCheck(i, rule.name, fires, "" if fires else (_mismatch(rule, tags) or "matches, but an "
                                                                           "earlier rule fired")))
        if fires:
            break
    return decision, checks


# ---------------------------------------------------------------------------------------------------------------
# Views: what status / jobs / exports / audit show, as JSON-ready dicts (epoch seconds)
# ---------------------------------------------------------------------------------------------------------------

def series_view(s: SeriesRow, config: NodeConfig, now: float, *, senders: list[dict[str, Any]] | None = None
                ) -> dict[str, Any]:
    """One series: state, instances, its rule, when an open one completes; with ``senders`` (calling AE, address,
    counts) when given."""
    eta = series_completion(s, config, now)
    d = {"series_uid": s.series_uid, "study_uid": s.study_uid, "modality": s.modality, "state": s.state.value,
         "instances": s.instance_count, "first_received_at": s.first_received_at,
         "last_received_at": s.last_received_at, "completed_at": s.completed_at, "rule": s.rule, "note": s.note,
         "calling_ae": s.calling_ae, "completes_at": eta[0] if eta else None,
         "completes_in_s": round(eta[1], 1) if eta else None}
    if senders is not None:
        d["senders"] = senders
    return d


def series_list(db: Database, config: NodeConfig, *, state: SeriesState | None = None, limit: int = 100,
                now: float | None = None) -> list[dict[str, Any]]:
    """The most recent series (newest first), each with :func:`series_view`."""
    now = time.time() if now is None else now
    return [series_view(s, config, now) for s in db.list_series(state, limit=limit)]


def series_detail(db: Database, config: NodeConfig, series_uid: str, *, now: float | None = None
                  ) -> dict[str, Any]:
    """One series with its senders and its jobs; :class:`NotFoundError` if unknown."""
    now = time.time() if now is None else now
    s = db.get_series(series_uid)
    if s is None:
        raise NotFoundError(f"no series {series_uid} in this node's index; `dicomnode status` lists the stored ones")
    d = series_view(s, config, now, senders=db.series_senders(series_uid))
    d["jobs"] = [job_summary(j) for j in db.list_jobs(limit=1_000_000) if j.series_uid == series_uid]
    return d


def job_summary(j: Any) -> dict[str, Any]:
    """A job in a list (what ``dicomnode jobs list --json`` prints, plus its timings)."""
    return {"id": j.id, "series_uid": j.series_uid, "state": j.state.value, "kind": j.kind, "profile": j.label,
            "label": j.label, "rule": j.rule, "attempts": j.attempts, "error": j.error, "created_at": j.created_at,
            "started_at": j.started_at, "finished_at": j.finished_at, "seconds": j.seconds}


def jobs_view(db: Database, *, state: JobState | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    """Jobs, newest first, as :func:`job_summary` dicts."""
    return [job_summary(j) for j in db.list_jobs(state, limit=limit)]


def job_view(db: Database, job_id: int) -> dict[str, Any]:
    """Every column of one job (``dicomnode jobs show``), epoch seconds; :class:`NotFoundError` if unknown."""
    job = db.get_job(job_id)
    if job is None:
        raise NotFoundError(f"no job {job_id}; `dicomnode jobs list` lists them")
    d = {k: getattr(job, k) for k in job.__slots__}
    d["state"] = job.state.value
    d["destinations"] = list(job.destinations)
    d["results"] = list(job.results)
    d["profile"] = job.label  # the profile (or radiomics settings) it runs, as `jobs list` names it
    return d


def requeue_job(db: Database, job_id: int, *, actor: str = "cli", now: float | None = None) -> None:
    """A failed or done job back to pending (attempts reset); audited with ``actor``."""
    now = time.time() if now is None else now
    job = db.get_job(job_id)
    if job is None:
        raise NotFoundError(f"no job {job_id}; `dicomnode jobs list` lists them")
    if job.state not in (JobState.FAILED, JobState.DONE):
        raise StateError(f"job {job_id} is {job.state.value}; only failed or done jobs can be retried")
    db.requeue_job(job_id, now)
    db.audit("job requeued", actor=actor, series_uid=job.series_uid,
             detail={"job_id": job_id, "was": job.state.value})


def export_view(e: Any, now: float) -> dict[str, Any]:
    """One outbox row; ``next_attempt_at`` for a pending one."""
    return {"id": e.id, "job_id": e.job_id, "series_uid": e.series_uid, "destination": e.destination,
            "sop_instance_uid": e.sop_instance_uid, "state": e.state.value, "attempts": e.attempts,
            "next_attempt_at": (max(e.not_before, now) if e.state is ExportState.PENDING else None),
            "last_error": e.last_error, "created_at": e.created_at, "sent_at": e.sent_at}


def exports_view(db: Database, *, state: ExportState | None = None, destination: str | None = None,
                 limit: int = 1000, now: float | None = None) -> list[dict[str, Any]]:
    """The outbox, newest first (of ``destination`` only, if given)."""
    now = time.time() if now is None else now
    return [export_view(e, now) for e in db.list_exports(state, limit=limit)
            if destination is None or e.destination == destination]


def requeue_export(db: Database, export_id: int, *, actor: str = "cli", now: float | None = None) -> None:
    """A dead-lettered export back to pending (attempts reset); audited with ``actor``."""
    now = time.time() if now is None else now
    rows = [e for e in db.list_exports(limit=1_000_000) if e.id == export_id]
    if not rows:
        raise NotFoundError(f"no export {export_id}; `dicomnode exports list` lists them")
    if rows[0].state is not ExportState.DEAD:
        raise StateError(f"export {export_id} is {rows[0].state.value}; only dead-lettered exports can be retried")
    db.requeue_export(export_id, now)
    db.audit("export requeued", actor=actor, series_uid=rows[0].series_uid,
             detail={"export_id": export_id, "destination": rows[0].destination})


def audit_events(db: Database, *, since: float = 0.0, until: float | None = None, events: tuple[str, ...] = (),
                 series_uid: str | None = None, actor: str | None = None, sender: str | None = None,
                 limit: int = 100_000) -> list[dict[str, Any]]:
    """Audit events (oldest first) filtered by time, event names, series, actor (user, or destination for
    sends) and sender (a calling AE title of a "received" event)."""
    out = []
    for e in db.list_audit(since, limit=limit if not (events or series_uid or actor or sender or until) else 10**7):
        if until is not None and e["at"] > until:
            continue
        if events and e["event"] not in events:
            continue
        if series_uid and e["series_uid"] != series_uid:
            continue
        if actor and e["actor"] != actor:
            continue
        if sender and sender not in {s.get("calling_ae") for s in e["detail"].get("senders", [])}:
            continue
        out.append(e)
        if len(out) >= limit:
            break
    return out


def route_explanation(config: NodeConfig, path: str) -> dict[str, Any]:
    """:func:`explain_route` as a JSON-ready dict (``rules test`` and the console's rule test)."""
    decision, checks = explain_route(config, path)
    return {"rule": decision.rule.name if decision.rule else None, "runs_job": decision.runs_job,
            "reason": decision.reason,
            "profile": decision.profile.name if getattr(decision, "profile", None) else None,
            "radiomics": decision.radiomics, "destinations": list(decision.destinations),
            "checks": [{"index": c.index, "name": c.name, "fires": c.fires, "why": c.why} for c in checks]}
