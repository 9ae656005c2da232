"""The console's pages (server-rendered, Jinja2 with autoescaping; templates in ``dicomnode/web/templates/``).

Pages: Overview ``/``, Series ``/series`` and ``/series/{uid}``, Jobs ``/jobs`` and ``/jobs/{id}``, Results
``/jobs/{id}/results`` (with the key-slice PNG ``/jobs/{id}/keyslices.png``), Outbox ``/outbox``, Rules ``/rules``,
Destinations ``/destinations``, Audit ``/audit``, Config ``/config``.

Reads need the viewer role (the router is mounted with it). Every action is a POST form carrying the session's CSRF
token (checked by :func:`dicomnode.web.auth.require` for every unsafe request) and calls the same function as the
REST API (:mod:`dicomnode.web.api`) and the CLI (:mod:`dicomnode.admin`): nothing is decided here. An action's
answer is a page saying what was done (or why not, with the HTTP status the API gives) and linking back.

No route takes a file path from the client: the only file served here is a job's key-slice PNG, found from the
job's id through the index and checked to lie in ``DATA/results/`` (:mod:`dicomnode.web.keyslices`). UIDs in paths
are checked against the UID pattern before they reach the index.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response

from dicomnode import __version__, admin
from dicomnode.errors import DicomnodeError
from dicomnode.store.db import ExportState, JobState, SeriesState
from dicomnode.web.auth import Admin, Operator, Viewer
from dicomnode.web.joblog import JOB_LOG
from dicomnode.web.templating import env, render

router = APIRouter(include_in_schema=False)

_UID = r"^[0-9]+(\.[0-9]+)*$"
SeriesUid = Annotated[str, PathParam(max_length=64, pattern=_UID)]
_MAX_UPLOAD_BYTES = 64 * 2**20


# -- template helpers ----------------------------------------------------------------------------------------------
def _ts(t: float | None) -> str:
    if not t:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(t)))


def _secs(v: float | None) -> str:
    if v is None:
        return ""
    v = float(v)
    return f"{v:.2f} s" if v < 60 else f"{v / 60:.1f} min"


def _sig(v: Any, digits: int = 6) -> str:
    """A feature value with ``digits`` significant digits ("" if none; the text itself if not a number)."""
    if v is None or v == "":
        return ""
    try:
        return f"{float(v):.{digits}g}"
    except (TypeError, ValueError):
        return str(v)


def _num(v: Any, digits: int = 2) -> str:
    if v is None:
        return ""
    try:
        return f"{float(v):.{digits}f}"
    except (TypeError, ValueError):
        return str(v)


env.filters.update(ts=_ts, secs=_secs, num=_num, sig=_sig)




# -- helpers -------------------------------------------------------------------------------------------------------
def _c(request: Request) -> Any:
    return request.app.state.console


def _done(request: Request, title: str, message: str, back: str, *, ok: bool = True, status: int = 200) -> Response:
    return render(request, "action.html", {"title": title, "message": message, "back": back, "ok": ok},
                  status_code=status)


def _failed(request: Request, title: str, e: DicomnodeError, back: str) -> Response:
    status = 404 if isinstance(e, admin.NotFoundError) else 409 if isinstance(e, admin.StateError) else 400
    return _done(request, title, str(e), back, ok=False, status=status)


def _series_header(request: Request, series_uid: str) -> dict[str, str]:
    """SeriesDescription, BodyPartExamined and the like from the first stored instance ({} if none is left).
    Only descriptive fields of the series: never the patient's."""
    paths = _c(request).db.instance_paths(series_uid)
    if not paths:
        return {}
    from dicomnode.io.headers import read_tags
    try:
        tags = read_tags(paths[0])
    except Exception:  # noqa: BLE001 - a header that does not parse: the page shows the index's fields only
        return {}
    return {k: tags[k] for k in ("SeriesDescription", "BodyPartExamined", "SeriesNumber", "Manufacturer",
                                 "ManufacturerModelName") if tags.get(k)}


def _job_or_404(request: Request, job_id: int) -> dict[str, Any]:
    try:
        return admin.job_view(_c(request).db, job_id)
    except DicomnodeError as e:
        raise HTTPException(404, str(e)) from None


# -- Overview ------------------------------------------------------------------------------------------------------
@router.get("/")
def overview(request: Request) -> Response:
    from dicomnode.obs.status import status_dict  # what `dicomnode status --json` prints
    c = _c(request)
    cfg = c.config()
    st = status_dict(cfg, c.db)
    summary = st["summary"]
    errors = [j for j in admin.jobs_view(c.db, state=JobState.FAILED, limit=10)]
    dead = admin.exports_view(c.db, state=ExportState.DEAD, limit=10)
    five = c.db.activity_since(time.time() - 300)
    return render(request, "overview.html", {
        "st": st, "summary": summary, "failed_jobs": errors, "dead": dead,
        "rate_per_min": round(float(five.get("instances", 0)) / 5.0, 1),
        "mb_per_min": round(float(five.get("bytes", 0)) / 2**20 / 5.0, 1),
        "workers": {"backend": cfg.workers.backend, "count": cfg.workers.count,
                    "scheduler": cfg.workers.scheduler},
        "cluster": st.get("cluster"), "node_version": __version__, "problems": JOB_LOG.last_problems()})


# -- Series --------------------------------------------------------------------------------------------------------
@router.get("/series")
def series_page(request: Request, state: Annotated[str | None, Query(max_length=16)] = None,
                limit: Annotated[int, Query(ge=1, le=10000)] = 200) -> Response:
    c = _c(request)
    chosen = next((s for s in SeriesState if s.value == state), None)
    rows = admin.series_list(c.db, c.config(), state=chosen, limit=limit)
    return render(request, "series.html", {"rows": rows, "state": chosen.value if chosen else "",
                                           "states": [s.value for s in SeriesState]})


@router.get("/series/{series_uid}")
def series_one(request: Request, series_uid: SeriesUid) -> Response:
    c = _c(request)
    try:
        s = admin.series_detail(c.db, c.config(), series_uid)
    except DicomnodeError as e:
        raise HTTPException(404, str(e)) from None
    return render(request, "series_one.html", {"s": s, "profiles": sorted(c.config().profiles),
                                               "header": _series_header(request, series_uid)})


@router.post("/series/{series_uid}/complete")
def series_complete(request: Request, series_uid: SeriesUid, user: Operator) -> Response:
    from dicomnode.web import api
    back = f"/series/{series_uid}"
    try:
        done = api.series_complete(request, series_uid, user)
    except HTTPException as e:
        return _done(request, "Force completion", str(e.detail), back, ok=False, status=e.status_code)
    return _done(request, "Force completion", done.message, back)


@router.post("/series/{series_uid}/reprocess")
def series_reprocess(request: Request, series_uid: SeriesUid, user: Operator,
                     profile: Annotated[str, Form(max_length=128)] = "") -> Response:
    c = _c(request)
    back = f"/series/{series_uid}"
    try:
        r = admin.reprocess(c.db, c.config(), series_uid, profile=profile or None, actor=user.name)
    except DicomnodeError as e:
        return _failed(request, "Reprocess", e, back)
    return _done(request, "Reprocess", f"job {r.job_id} {'queued again' if r.requeued else 'queued'} with profile "
                 f"{r.profile}", f"/jobs/{r.job_id}")


# -- Jobs ----------------------------------------------------------------------------------------------------------
@router.get("/jobs")
def jobs_page(request: Request, state: Annotated[str | None, Query(max_length=16)] = None,
              limit: Annotated[int, Query(ge=1, le=10000)] = 200) -> Response:
    chosen = next((s for s in JobState if s.value == state), None)
    rows = admin.jobs_view(_c(request).db, state=chosen, limit=limit)
    return render(request, "jobs.html", {"rows": rows, "state": chosen.value if chosen else "",
                                         "states": [s.value for s in JobState]})


def _results_doc(request: Request, job: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    from dicomnode.web.keyslices import KeySlicesError, load_results_json, result_folder
    try:
        return load_results_json(result_folder(_c(request).node.data_dir, job.get("result_dir"))), ""
    except KeySlicesError as e:
        return None, str(e)


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: int) -> Response:
    job = _job_or_404(request, job_id)
    results, why = _results_doc(request, job) if job["state"] == "done" else (None, "")
    return render(request, "job.html", {"job": job, "steps": (results or {}).get("steps", []),
                                        "log_lines": JOB_LOG.lines(job_id), "results_missing": why})


@router.post("/jobs/{job_id}/retry")
def job_retry(request: Request, job_id: int, user: Operator) -> Response:
    try:
        admin.requeue_job(_c(request).db, job_id, actor=user.name)
    except DicomnodeError as e:
        return _failed(request, "Retry", e, f"/jobs/{job_id}")
    return _done(request, "Retry", f"job {job_id} queued again", f"/jobs/{job_id}")


@router.post("/jobs/{job_id}/reprocess")
def job_reprocess(request: Request, job_id: int, user: Operator) -> Response:
    job = _job_or_404(request, job_id)
    return series_reprocess(request, job["series_uid"], user, profile=job["profile"])


# -- Results -------------------------------------------------------------------------------------------------------
@router.get("/jobs/{job_id}/results")
def results_page(request: Request, job_id: int) -> Response:
    c = _c(request)
    job = _job_or_404(request, job_id)
    results, why = _results_doc(request, job)
    series = c.db.get_series(job["series_uid"])
    findings = sorted((f for f in (results or {}).get("findings") or [] if isinstance(f, dict)),
                      key=lambda f: -float(f.get("probability") or 0.0))
    profile = c.config().profiles.get(job["profile"])
    threshold = float(((profile.params if profile else {}).get("detect", {}) or {}).get("probability_threshold",
                                                                                         0.5))
    features, features_why = _radiomics_rows(request, job) if (results or {}).get("kind") == "radiomics" else ([], "")
    return render(request, "results.html", {
        "job": job, "results": results or {}, "why": why, "findings": findings, "threshold": threshold,
        "features": features, "features_why": features_why, "features_max": RADIOMICS_ROWS_SHOWN,
        "study_uid": series.study_uid if series else "", "header": _series_header(request, job["series_uid"])})


RADIOMICS_ROWS_SHOWN = 5000  # feature rows of a radiomics job's Results page (IBSI: ~170 per region and setting)


def _radiomics_rows(request: Request, job: dict[str, Any]) -> tuple[list[dict[str, str]], str]:
    """The rows of a radiomics job's ``radiomics.csv`` (roi, roi_number, family, feature, aggregation, value), at
    most :data:`RADIOMICS_ROWS_SHOWN`; or no row and why."""
    import csv

    from dicomnode.jobs.radiomics import RADIOMICS_CSV
    from dicomnode.web.keyslices import KeySlicesError, result_folder
    try:
        path = result_folder(_c(request).node.data_dir, job.get("result_dir")) / RADIOMICS_CSV
        with open(path, newline="", encoding="utf-8") as f:
            rows = []
            for row in csv.DictReader(f):
                if len(rows) >= RADIOMICS_ROWS_SHOWN:
                    break
                rows.append({k: str(row.get(k) or "") for k in ("roi", "roi_number", "family", "feature",
                                                                 "aggregation", "value")})
        return rows, ""
    except KeySlicesError as e:
        return [], str(e)
    except FileNotFoundError:
        return [], f"{RADIOMICS_CSV} is missing from the job's result folder"
    except (OSError, ValueError, csv.Error) as e:
        return [], f"{RADIOMICS_CSV} cannot be read ({type(e).__name__})"


@router.get("/jobs/{job_id}/keyslices.png")
def keyslices(request: Request, job_id: int) -> Response:
    from dicomnode.web.keyslices import KeySlicesError, keyslices_png
    c = _c(request)
    job = _job_or_404(request, job_id)
    profile = c.config().profiles.get(job["profile"])
    try:
        png = keyslices_png(c.node.data_dir, job.get("result_dir"), c.db.instance_paths(job["series_uid"]),
                            job_id=job_id, profile_params=dict(profile.params) if profile else None)
    except KeySlicesError as e:
        raise HTTPException(404, str(e)) from None
    return FileResponse(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


# -- Outbox --------------------------------------------------------------------------------------------------------
@router.get("/outbox")
def outbox_page(request: Request, state: Annotated[str | None, Query(max_length=16)] = None,
                destination: Annotated[str | None, Query(max_length=128)] = None) -> Response:
    c = _c(request)
    chosen = next((s for s in ExportState if s.value == state), None)
    rows = admin.exports_view(c.db, state=chosen, destination=destination or None, limit=1000)
    dead = admin.exports_view(c.db, state=ExportState.DEAD, limit=100_000)
    dead_by_dest: dict[str, int] = {}
    for d in dead:
        dead_by_dest[d["destination"]] = dead_by_dest.get(d["destination"], 0) + 1
    return render(request, "outbox.html", {
        "rows": rows, "counts": c.db.count_exports(), "dead_by_dest": sorted(dead_by_dest.items()),
        "state": chosen.value if chosen else "", "states": [s.value for s in ExportState],
        "destination": destination or "", "destinations": [d.name for d in c.config().destinations]})


@router.post("/outbox/requeue")
def outbox_requeue(request: Request, user: Operator,
                   destination: Annotated[str, Form(max_length=128)] = "") -> Response:
    from dicomnode.web import api
    try:
        done = api.exports_requeue_dead(request, api.RequeueDeadRequest(destination=destination or None), user)
    except HTTPException as e:
        return _done(request, "Requeue dead letters", str(e.detail), "/outbox", ok=False, status=e.status_code)
    return _done(request, "Requeue dead letters", done.message, "/outbox")


@router.post("/outbox/{export_id}/retry")
def outbox_retry(request: Request, export_id: int, user: Operator) -> Response:
    try:
        admin.requeue_export(_c(request).db, export_id, actor=user.name)
    except DicomnodeError as e:
        return _failed(request, "Requeue", e, "/outbox")
    return _done(request, "Requeue", f"export {export_id} queued again", "/outbox")


# -- Rules ---------------------------------------------------------------------------------------------------------
def _rules(request: Request) -> list[dict[str, Any]]:
    from dicomnode.web import api
    return api.rules(request)


@router.get("/rules")
def rules_page(request: Request,
               series_uid: Annotated[str | None, Query(max_length=64, pattern=_UID)] = None) -> Response:
    c = _c(request)
    outcome, error = None, ""
    if series_uid:
        paths = c.db.instance_paths(series_uid)
        if not paths:
            error = f"no stored instance of series {series_uid}"
        else:
            try:
                outcome = admin.route_explanation(c.config(), paths[0])
            except DicomnodeError as e:
                error = f"the stored file cannot be read: {e}"
    stored = [s for s in admin.series_list(c.db, c.config(), limit=200)]
    return render(request, "rules.html", {"rules": _rules(request), "outcome": outcome, "error": error,
                                          "tested": f"stored series {series_uid}" if series_uid else "",
                                          "stored": stored, "series_uid": series_uid or ""},
                  status_code=404 if error and not outcome and series_uid and "no stored" in error else 200)


@router.post("/rules/test")
async def rules_test_upload(request: Request, _: Viewer, file: UploadFile = File(...)) -> Response:
    c = _c(request)
    data = await file.read(_MAX_UPLOAD_BYTES + 1)
    outcome, error, status = None, "", 200
    if len(data) > _MAX_UPLOAD_BYTES:
        error, status = f"a rule test reads one DICOM file of at most {_MAX_UPLOAD_BYTES // 2**20} MiB", 413
    else:
        with tempfile.TemporaryDirectory(prefix="dicomnode-rules-") as tmp:
            path = Path(tmp) / "upload.dcm"  # never the client's file name
            path.write_bytes(data)
            try:
                outcome = admin.route_explanation(c.config(), str(path))
            except Exception as e:  # noqa: BLE001 - any unreadable upload is the client's problem, named
                error, status = f"not a readable DICOM file ({type(e).__name__}: {e})", 422
    stored = admin.series_list(c.db, c.config(), limit=200)
    return render(request, "rules.html", {"rules": _rules(request), "outcome": outcome, "error": error,
                                          "tested": "the uploaded file", "stored": stored, "series_uid": ""},
                  status_code=status)


# -- Destinations --------------------------------------------------------------------------------------------------
@router.get("/destinations")
def destinations_page(request: Request) -> Response:
    from dicomnode.web import api
    return render(request, "destinations.html", {"destinations": api.destinations(request), "echo": None})


@router.post("/destinations/{name}/echo")
def destination_echo(request: Request, name: Annotated[str, PathParam(max_length=128)], user: Operator) -> Response:
    from dicomnode.web import api
    try:
        result = api.destination_echo(request, name, user)
    except HTTPException as e:
        return _done(request, "Echo", str(e.detail), "/destinations", ok=False, status=e.status_code)
    return render(request, "destinations.html", {"destinations": api.destinations(request), "echo": result})


# -- Audit ---------------------------------------------------------------------------------------------------------
@router.get("/audit")
def audit_page(request: Request, since: Annotated[str, Query(max_length=64)] = "24h",
               until: Annotated[str, Query(max_length=64)] = "",
               event: Annotated[str, Query(max_length=64)] = "",
               user: Annotated[str, Query(max_length=64)] = "",
               sender: Annotated[str, Query(max_length=16)] = "",
               series_uid: Annotated[str, Query(max_length=64)] = "") -> Response:
    from dicomnode.admin import parse_since
    error, rows = "", []
    try:
        t0 = parse_since(since or "24h")
        t1 = parse_since(until) if until else None
    except (ValueError, OverflowError, OSError) as e:
        error = str(e).replace("--since", "since")
    else:
        rows = admin.audit_events(_c(request).db, since=t0, until=t1, events=(event,) if event else (),
                                  series_uid=series_uid or None, actor=user or None, sender=sender or None,
                                  limit=1000)
    rows = list(reversed(rows))  # newest first on the page
    known = sorted({r["event"] for r in rows} | {event} - {""})
    return render(request, "audit.html", {"rows": rows, "error": error, "known_events": known,
                                          "f": {"since": since, "until": until, "event": event, "user": user,
                                                "sender": sender, "series_uid": series_uid}},
                  status_code=400 if error else 200)


# -- Config --------------------------------------------------------------------------------------------------------
@router.get("/config")
def config_page(request: Request) -> Response:
    from dicomnode.config import effective_config, to_toml
    c = _c(request)
    return render(request, "config.html", {"text": to_toml(effective_config(c.config())),
                                           "source": str(getattr(c.config(), "source", "") or "")})


@router.post("/config/reload")
def config_reload(request: Request, user: Admin) -> Response:
    from dicomnode.web import api
    try:
        done = api.config_reload(request, user)
    except HTTPException as e:
        return _done(request, "Reload configuration", str(e.detail), "/config", ok=False, status=e.status_code)
    return _done(request, "Reload configuration", done.message, "/config")


__all__ = ["router"]
