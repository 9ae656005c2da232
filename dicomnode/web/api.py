"""The REST API under ``/api/v1``: what ``dicomnode status|jobs|exports|audit|rules test|destinations test|
reprocess|config show`` give, and the actions an operator takes. Every handler calls the same function as the CLI
(:mod:`dicomnode.admin`, :func:`dicomnode.obs.status.status_dict`, :func:`dicomnode.config.effective_config`); nothing
here decides anything itself. Reads need the viewer role, actions operator, reloading the configuration admin;
every action goes to the audit trail with the account that did it.
"""

from __future__ import annotations

import tempfile
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from dicomnode import admin
from dicomnode.errors import DicomnodeError
from dicomnode.store.db import ExportState, JobState, SeriesState
from dicomnode.web.auth import Admin, Operator, Viewer
from dicomnode.web.joblog import JOB_LOG

router = APIRouter()

_UID = r"^[0-9]+(\.[0-9]+)*$"
SeriesUid = Annotated[str, PathParam(max_length=64, pattern=_UID, description="a Series Instance UID")]
_MAX_UPLOAD_BYTES = 64 * 2**20  # a rule test reads one header; a bigger upload is refused (413)

_ERRORS = {401: {"description": "not logged in / no or an invalid API token"},
           403: {"description": "the account's role does not allow this (or a form's CSRF token is wrong)"}}
_ACTION_ERRORS = {**_ERRORS, 400: {"description": "the request body is not valid JSON"},
                  404: {"description": "no such thing"}, 409: {"description": "its state does not allow this action"}}


def _console(request: Request) -> Any:
    return request.app.state.console


def _fail(e: DicomnodeError) -> HTTPException:
    if isinstance(e, admin.NotFoundError):
        return HTTPException(404, str(e))
    if isinstance(e, admin.StateError):
        return HTTPException(409, str(e))
    return HTTPException(400, str(e))


class SeriesStateName(str, Enum):
    open = "open"
    complete = "complete"
    unrouted = "unrouted"
    ignored = "ignored"


class JobStateName(str, Enum):
    pending = "pending"
    running = "running"
    done = "done"
    failed = "failed"


class ExportStateName(str, Enum):
    pending = "pending"
    sending = "sending"
    sent = "sent"
    dead = "dead"


class Done(BaseModel):
    """An action's outcome."""

    ok: bool = True
    message: str
    ids: list[int] = Field(default_factory=list)


class _Out(BaseModel):
    """A response object: the fields listed are always there; more may come in later versions."""

    model_config = ConfigDict(extra="allow")


class WhoAmI(_Out):
    name: str
    role: str
    via: str = Field(description="session or token")
    csrf_token: str | None = Field(None, description="with a session: send it as X-CSRF-Token on POST")


class Sender(_Out):
    calling_ae: str
    peer_host: str
    instances: int
    bytes: int


class JobSummary(_Out):
    id: int
    series_uid: str
    state: str
    kind: str
    profile: str = Field(description="what it runs: the profile, or the radiomics settings")
    label: str
    rule: str
    attempts: int
    error: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    seconds: float | None


class Job(JobSummary):
    """Every column of a job (epoch seconds): also its traceback, result folder and files, destinations."""

    traceback: str | None = None
    result_dir: str | None = None
    results: list[str] = Field(default_factory=list)
    destinations: list[str] = Field(default_factory=list)


class LogLine(_Out):
    """One log line of a job, as the Jobs page shows it (no patient data: the node's records are scrubbed)."""

    time: float = Field(description="epoch seconds")
    level: str
    text: str


class Series(_Out):
    series_uid: str
    study_uid: str
    modality: str
    state: str
    instances: int
    first_received_at: float
    last_received_at: float
    completed_at: float | None
    rule: str | None
    note: str
    calling_ae: str
    completes_at: float | None = Field(description="an open series: when it completes if nothing more arrives")
    completes_in_s: float | None


class SeriesDetail(Series):
    senders: list[Sender]
    jobs: list[JobSummary]


class Export(_Out):
    id: int
    job_id: int | None
    series_uid: str
    destination: str
    sop_instance_uid: str
    state: str
    attempts: int
    next_attempt_at: float | None
    last_error: str | None
    created_at: float
    sent_at: float | None


class AuditEvent(_Out):
    id: int
    at: float
    event: str
    actor: str = Field(description="who: a console account or token, cli:<OS user>, SIGHUP, a destination (sends)")
    series_uid: str
    detail: dict[str, Any]


class RuleCheckOut(_Out):
    index: int
    name: str
    fires: bool
    why: str


class RuleExplanation(_Out):
    rule: str | None
    runs_job: bool
    reason: str
    profile: str | None
    radiomics: str | None
    destinations: list[str]
    checks: list[RuleCheckOut] = Field(description="the rules tried, in order, up to the one that fires")


class DestinationOut(_Out):
    name: str
    ae_title: str
    host: str
    port: int
    tls: bool


class EchoResult(_Out):
    name: str
    address: str
    ok: bool
    status: int | None
    seconds: float
    error: str
    tls: bool


class RuleOut(_Out):
    index: int
    name: str
    match: dict[str, str | list[str]]
    profile: str | None
    radiomics: str | None
    destinations: list[str]


class ReprocessRequest(BaseModel):
    profile: str | None = Field(None, max_length=128, description="analysis profile; default: the last job's")


class RequeueDeadRequest(BaseModel):
    destination: str | None = Field(None, max_length=128, description="only this destination's dead letters")


# -- reads ------------------------------------------------------------------------------------------------------
@router.get("/whoami", responses=_ERRORS, summary="the account of this request")
def whoami(user: Viewer) -> WhoAmI:
    """The account; with a session, also its CSRF token (for the ``X-CSRF-Token`` header of a script's POST)."""
    return WhoAmI(name=user.name, role=user.role.value, via=user.via,
                  csrf_token=user.csrf_token if user.via == "session" else None)


@router.get("/status", responses=_ERRORS, summary="what `dicomnode status --json` prints")
def status(request: Request) -> dict[str, Any]:
    from dicomnode.obs.status import status_dict
    c = _console(request)
    return status_dict(c.config(), c.db)


@router.get("/series", responses=_ERRORS, summary="the most recent series, newest first")
def series(request: Request, state: SeriesStateName | None = None,
           limit: Annotated[int, Query(ge=1, le=10000)] = 100) -> list[Series]:
    c = _console(request)
    return admin.series_list(c.db, c.config(), state=SeriesState(state.value) if state else None, limit=limit)


@router.get("/series/{series_uid}", responses={**_ERRORS, 404: {"description": "no such series"}},
            summary="one series: state, senders, rule, completion time, jobs")
def series_one(request: Request, series_uid: SeriesUid) -> SeriesDetail:
    c = _console(request)
    try:
        return admin.series_detail(c.db, c.config(), series_uid)
    except DicomnodeError as e:
        raise _fail(e) from None


@router.get("/jobs", responses=_ERRORS, summary="jobs, newest first (`dicomnode jobs list`)")
def jobs(request: Request, state: JobStateName | None = None,
         limit: Annotated[int, Query(ge=1, le=100000)] = 1000) -> list[JobSummary]:
    return admin.jobs_view(_console(request).db, state=JobState(state.value) if state else None, limit=limit)


@router.get("/jobs/{job_id}", responses={**_ERRORS, 404: {"description": "no such job"}},
            summary="one job, every field (`dicomnode jobs show`)")
def job(request: Request, job_id: int) -> Job:
    try:
        return admin.job_view(_console(request).db, job_id)
    except DicomnodeError as e:
        raise _fail(e) from None


@router.get("/jobs/{job_id}/log", responses={**_ERRORS, 404: {"description": "no such job"}},
            summary="a job's log lines kept in memory since the node started, oldest first by when each was "
                    "logged (at most the last 200)")
def job_log(request: Request, job_id: int) -> list[LogLine]:
    try:
        admin.job_view(_console(request).db, job_id)  # 404 for a job that does not exist
    except DicomnodeError as e:
        raise _fail(e) from None
    return [LogLine(time=t, level=level, text=text) for t, level, text in JOB_LOG.lines(job_id)]


@router.get("/exports", responses=_ERRORS, summary="the outbox, newest first (`dicomnode exports list`)")
def exports(request: Request, state: ExportStateName | None = None,
            destination: Annotated[str | None, Query(max_length=128)] = None,
            limit: Annotated[int, Query(ge=1, le=100000)] = 1000) -> list[Export]:
    return admin.exports_view(_console(request).db, state=ExportState(state.value) if state else None,
                              destination=destination, limit=limit)


@router.get("/audit", responses={**_ERRORS, 400: {"description": "a bad `since`"}},
            summary="the audit trail, oldest first (`dicomnode audit`)")
def audit(request: Request, since: Annotated[str, Query(max_length=64, description="an age (90s, 15m, 1h, 7d) or "
                                                        "a local ISO date/time")] = "24h",
          event: Annotated[list[str] | None, Query(max_length=64)] = None,
          series_uid: Annotated[str | None, Query(max_length=64)] = None,
          user: Annotated[str | None, Query(max_length=64, description="the actor: an account, or cli:<OS user>")]
          = None,
          sender: Annotated[str | None, Query(max_length=16, description="a calling AE title")] = None,
          limit: Annotated[int, Query(ge=1, le=100000)] = 1000) -> list[AuditEvent]:
    try:
        t = admin.parse_since(since)
    except (ValueError, OverflowError, OSError) as e:
        raise HTTPException(400, str(e).replace("--since", "since")) from None
    return admin.audit_events(_console(request).db, since=t, events=tuple(event or ()), series_uid=series_uid,
                              actor=user, sender=sender, limit=limit)


@router.get("/config", responses=_ERRORS, summary="the configuration in force, secrets redacted (`config show`)")
def config(request: Request) -> dict[str, Any]:
    from dicomnode.config import effective_config
    return effective_config(_console(request).config())


@router.get("/destinations", responses=_ERRORS, summary="the configured destinations")
def destinations(request: Request) -> list[DestinationOut]:
    return [{"name": d.name, "ae_title": d.ae_title, "host": d.host, "port": d.port, "tls": d.tls}
            for d in _console(request).config().destinations]


@router.get("/rules", responses=_ERRORS, summary="the routing rules in order")
def rules(request: Request) -> list[RuleOut]:
    return [{"index": i, "name": r.name, "match": {k: list(v) if isinstance(v, tuple) else v
                                                   for k, v in r.match.items()},
             "profile": r.profile, "radiomics": r.radiomics, "destinations": list(r.destinations)}
            for i, r in enumerate(_console(request).config().rules)]


@router.get("/rules/test", responses={**_ERRORS, 404: {"description": "no such series"}},
            summary="which rule a stored series gets, and why the earlier rules did not fire (`rules test`)")
def rules_test_series(request: Request,
                      series_uid: Annotated[str, Query(max_length=64, pattern=_UID)]) -> RuleExplanation:
    c = _console(request)
    paths = c.db.instance_paths(series_uid)
    if not paths:
        raise HTTPException(404, f"no stored instance of series {series_uid}")
    try:
        return {"series_uid": series_uid, **admin.route_explanation(c.config(), paths[0])}
    except DicomnodeError as e:
        raise HTTPException(422, f"the stored file cannot be read: {e}") from None


@router.post("/rules/test", responses={**_ERRORS, 400: {"description": "a malformed multipart body (FastAPI's parser)"},
                                       413: {"description": "file too large"},
                                       422: {"description": "not a DICOM file"}},
             summary="which rule an uploaded DICOM file gets, and why the earlier rules did not fire (`rules test`)")
async def rules_test_file(request: Request, file: UploadFile = File(...)) -> RuleExplanation:
    c = _console(request)
    data = await file.read(_MAX_UPLOAD_BYTES + 1)
    if len(data) > _MAX_UPLOAD_BYTES:
        raise HTTPException(413, f"a rule test reads one DICOM file of at most {_MAX_UPLOAD_BYTES // 2**20} MiB")
    with tempfile.TemporaryDirectory(prefix="dicomnode-rules-") as tmp:
        path = Path(tmp) / "upload.dcm"  # never the client's file name
        path.write_bytes(data)
        try:
            return admin.route_explanation(c.config(), str(path))
        except Exception as e:  # noqa: BLE001 - any unreadable upload is the client's problem, named
            raise HTTPException(422, f"not a readable DICOM file ({type(e).__name__}: {e})") from None


# -- actions ----------------------------------------------------------------------------------------------------
@router.post("/jobs/{job_id}/retry", responses=_ACTION_ERRORS, summary="a failed or done job back to pending")
def job_retry(request: Request, job_id: int, user: Operator) -> Done:
    try:
        admin.requeue_job(_console(request).db, job_id, actor=user.name)
    except DicomnodeError as e:
        raise _fail(e) from None
    return Done(message=f"job {job_id} queued again", ids=[job_id])


@router.post("/jobs/retry-failed", responses=_ERRORS, summary="every failed job back to pending")
def jobs_retry_failed(request: Request, user: Operator) -> Done:
    ids = admin.retry_failed_jobs(_console(request).db, actor=user.name)
    return Done(message=f"{len(ids)} failed job(s) queued again", ids=ids)


@router.post("/exports/{export_id}/retry", responses=_ACTION_ERRORS, summary="a dead-lettered export back to pending")
def export_retry(request: Request, export_id: int, user: Operator) -> Done:
    try:
        admin.requeue_export(_console(request).db, export_id, actor=user.name)
    except DicomnodeError as e:
        raise _fail(e) from None
    return Done(message=f"export {export_id} queued again", ids=[export_id])


@router.post("/exports/requeue-dead", responses={**_ERRORS, 400: {"description": "the request body is not valid JSON"},
                                                 404: {"description": "no such destination"}},
             summary="every dead-lettered export (of one destination, if given) back to pending")
def exports_requeue_dead(request: Request, body: RequeueDeadRequest, user: Operator) -> Done:
    c = _console(request)
    if body.destination is not None and body.destination not in {d.name for d in c.config().destinations}:
        raise HTTPException(404, f"no [[destinations]] named {body.destination}")
    ids = admin.retry_dead_exports(c.db, destination=body.destination, actor=user.name)
    return Done(message=f"{len(ids)} dead-lettered export(s) queued again", ids=ids)


@router.post("/series/{series_uid}/reprocess", responses=_ACTION_ERRORS,
             summary="queue a stored series for analysis again (`dicomnode reprocess`)")
def series_reprocess(request: Request, series_uid: SeriesUid, body: ReprocessRequest, user: Operator) -> Done:
    c = _console(request)
    try:
        r = admin.reprocess(c.db, c.config(), series_uid, profile=body.profile, actor=user.name)
    except DicomnodeError as e:
        raise _fail(e) from None
    return Done(message=f"job {r.job_id} {'queued again' if r.requeued else 'queued'} with profile {r.profile}",
                ids=[r.job_id])


@router.post("/series/{series_uid}/complete", responses=_ACTION_ERRORS,
             summary="force completion of an open series now (routing and its job as if its quiet period ended)")
def series_complete(request: Request, series_uid: SeriesUid, user: Operator) -> Done:
    c = _console(request)
    try:
        ids = c.node.force_complete(series_uid, actor=user.name)
    except DicomnodeError as e:
        raise _fail(e) from None
    return Done(message=f"series {series_uid} completed" + (f"; job {ids[0]} queued" if ids else "; no job"),
                ids=ids)


@router.post("/destinations/{name}/echo", responses=_ACTION_ERRORS,
             summary="C-ECHO one destination as the outbox connects (`dicomnode destinations test NAME`)")
def destination_echo(request: Request, name: Annotated[str, PathParam(max_length=128)],
                     user: Operator) -> EchoResult:
    c = _console(request)
    try:
        checks = admin.check_destinations(c.config(), names=(name,))
    except DicomnodeError as e:
        raise _fail(e) from None
    result = checks[0].as_dict()
    c.audit("destination echoed", user, destination=name, ok=result["ok"])
    return result


@router.post("/config/reload", responses=_ACTION_ERRORS | {400: {"description": "the file is invalid; the running "
                                                                              "configuration is kept"}},
             summary="reload rules, peers, destinations, profiles and accounts from the config file (as SIGHUP)")
def config_reload(request: Request, user: Admin) -> Done:
    c = _console(request)
    try:
        cfg = c.node.reload_config(actor=user.name)
    except DicomnodeError as e:
        raise HTTPException(400, f"configuration reload refused; the running configuration is kept: {e}") from None
    return Done(message=f"configuration reloaded from {cfg.source} at {time.strftime('%H:%M:%S')}")
