"""Operations on a node's index, for the CLI now and a web console later: every function takes the config and the
:class:`~dicomnode.store.db.Database` and returns plain values; none prints or exits.

* :func:`series_completion`: when an open series will be processed (its quiet period, the rule's override);
* :func:`retry_failed_jobs`, :func:`retry_dead_exports`: requeue after an outage, all at once;
* :func:`reprocess`: queue a stored series again, with its profile or another;
* :func:`check_destinations`: C-ECHO every configured destination, as the outbox would connect.
"""

from __future__ import annotations

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


def retry_failed_jobs(db: Database, now: float | None = None) -> list[int]:
    """Every failed job back to pending (attempts reset); the ids requeued."""
    now = time.time() if now is None else now
    ids = [j.id for j in db.list_jobs(JobState.FAILED, limit=1_000_000)]
    for i in ids:
        db.requeue_job(i, now)
    if ids:
        db.audit("jobs requeued", actor="operator", detail={"job_ids": ids})
    return sorted(ids)


def retry_dead_exports(db: Database, now: float | None = None, *, destination: str | None = None) -> list[int]:
    """Every dead-lettered export (of ``destination`` only, if given) back to pending; the ids requeued."""
    now = time.time() if now is None else now
    ids = [e.id for e in db.list_exports(ExportState.DEAD, limit=1_000_000)
           if destination is None or e.destination == destination]
    for i in ids:
        db.requeue_export(i, now)
    if ids:
        db.audit("exports requeued", actor="operator", detail={"export_ids": ids, "destination": destination})
    return sorted(ids)


@dataclass(frozen=True, slots=True)
class Reprocessed:
    job_id: int
    profile: str
    destinations: tuple[str, ...]
    requeued: bool  # True: the series' job with this profile ran before and was queued again; False: a new job


def reprocess(db: Database, config: NodeConfig, series_uid: str, *, profile: str | None = None,
              now: float | None = None) -> Reprocessed:
    """Queue a stored, complete series for analysis again (a running node picks it up within a second).

    The profile defaults to the one of the series' last job, else the one its rule or modality gives; the
    destinations are those of the series' last job, else of its rule. Results keep deterministic UIDs, so
    destinations that have them already are not sent them twice. Raises :class:`AdminError`.
    """
    now = time.time() if now is None else now
    s = db.get_series(series_uid)
    if s is None:
        raise AdminError(f"no series {series_uid} in this node's index; `dicomnode status` lists the stored ones")
    if s.state is SeriesState.OPEN:
        eta = series_completion(s, config, now)
        raise AdminError(f"series {series_uid} is still open (receiving); it is processed by itself in "
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
            raise AdminError(f"series {series_uid} already has job {same.id} {same.state.value} with profile "
                             f"{profile}")
        db.requeue_job(same.id, now)
        job_id, requeued = same.id, True
    else:
        job = new_job(ChainJob(profile), rule=rule.name if rule else "reprocess", destinations=dests)
        job_id = db.add_job(series_uid, s.generation, job, now=now)
        requeued = False
    db.audit("series reprocess", actor="operator", series_uid=series_uid,
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
        raise AdminError(f"no [[destinations]] named {', '.join(unknown)}; configured: "
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
