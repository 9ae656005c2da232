"""Batch runs over an archive: every series under a folder through the chain, one table of all measurements.

``dicomnode batch ROOT --out OUT`` (:mod:`dicomnode.commands.batch`) calls :func:`run_batch`:

1. :func:`find_series` reads every file's header under ROOT and groups the files by Series Instance UID (not by
   folder: a folder may hold several series, a series may span folders);
2. each series runs :func:`dicomnode.jobs.chain.run_chain` on the chosen executor (the local process pool or a Dask
   cluster) into ``OUT/<series UID>/`` (SEG, SR, ``results.json``); a series whose ``results.json`` exists already
   is skipped, so an interrupted run resumes where it stopped;
3. a series that cannot be processed is listed with the reason in ``OUT/failures.csv`` (and on stderr) and the run
   goes on;
4. :func:`write_table` collects every series' ``results.json`` into ``OUT/results.parquet`` and ``OUT/results.csv``,
   one row per series x segment (:func:`result_rows`).

The table's columns: ``series_uid, modality, profile, profile_version, segment_number, segment_label, volume_ml``,
every feature of the segments (by its name, in the order first seen), ``scene_label, scene_probability`` (the
probability of the chosen scene label), ``n_findings, max_finding_probability, seconds_total``, ``seconds_<step>``
for each step (load, the profile's steps, results), then where each row came from: ``source_folder`` (the folder
holding the series' files: their common parent), ``patient_id``, ``study_id`` (DICOM Study ID) and
``study_instance_uid``. A series without any segment gives one row with empty segment columns. The table is for the
researcher who ran the batch: it names patients by their ID, as the source files do.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from dicomnode.jobs.spec import RESULTS_JSON, ChainSpec, JobOutcome
from dicomnode.config import Profile
from dicomnode.errors import RequeueJob
from dicomnode.jobs.executors import Executor

log = logging.getLogger("dicomnode.batch")  # its name before jobs/ (log filters use it)

FAILURES_CSV = "failures.csv"
TABLE_PARQUET = "results.parquet"
TABLE_CSV = "results.csv"
#: a series whose job was requeued (worker or scheduler lost) is submitted again at most this many times
MAX_REQUEUES = 3

FIXED_COLUMNS = ("series_uid", "modality", "profile", "profile_version", "segment_number", "segment_label",
                 "volume_ml")
SUMMARY_COLUMNS = ("scene_label", "scene_probability", "n_findings", "max_finding_probability", "seconds_total")
SOURCE_COLUMNS = ("source_folder", "patient_id", "study_id", "study_instance_uid")


@dataclass(frozen=True, slots=True)
class BatchFailure:
    """A series (or a group of files) that gave no results, and why."""

    series_uid: str
    reason: str
    files: int
    first_file: str


@dataclass(frozen=True, slots=True)
class FoundSeries:
    series: dict[str, list[Path]]            # Series Instance UID -> files
    failures: list[BatchFailure]             # files without a Series Instance UID, unreadable DICOM files
    not_dicom: int                           # files skipped because they are not DICOM
    not_images: int = 0                      # DICOM files skipped because they are not images (SEG, SR, ...)


@dataclass
class BatchReport:
    found: int = 0
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)   # results.json was there already
    failed: list[BatchFailure] = field(default_factory=list)
    not_dicom: int = 0
    not_images: int = 0
    rows: int = 0
    seconds: float = 0.0
    table_parquet: str = ""
    table_csv: str = ""
    failures_csv: str = ""


def _candidate_files(root: Path) -> Iterable[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def find_series(root: Path | str) -> FoundSeries:
    """Group every DICOM file under ``root`` by Series Instance UID (header reads only).

    Files that are not DICOM (no ``DICM`` preamble and not readable as DICOM) and DICOM objects that are not images
    (SEG, SR, RT, presentation states...: what the node would not analyse either) are counted and skipped. DICOM files
    whose header cannot be read, and files with an empty Series Instance UID (grouped per folder), become
    :class:`BatchFailure` entries with the reason.
    """
    from dicomnode.errors import SeriesLoadError
    from dicomnode.io.headers import is_dicom_file, is_image_storage
    from dicomnode.io.load import read_header

    series: dict[str, list[Path]] = {}
    no_uid: dict[Path, list[Path]] = {}
    failures: list[BatchFailure] = []
    not_dicom = 0
    not_images = 0
    for path in _candidate_files(Path(root)):
        try:
            ds = read_header(path)
        except SeriesLoadError as e:
            if is_dicom_file(path):
                failures.append(BatchFailure("", f"unreadable DICOM header: {e}", 1, str(path)))
            else:
                not_dicom += 1
            continue
        meta = getattr(ds, "file_meta", None)
        sop_class = str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else "") or "")
        if sop_class and not is_image_storage(sop_class):
            not_images += 1  # SEG, SR, RT, presentation states...: nothing for the chain
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
        if uid:
            series.setdefault(uid, []).append(path)
        else:
            no_uid.setdefault(path.parent, []).append(path)
    for folder, files in sorted(no_uid.items()):
        failures.append(BatchFailure(
            "", f"{len(files)} file(s) in {folder} have an empty Series Instance UID: series are found by their "
            "UIDs, so these cannot be grouped or given results; repair the headers (e.g. with dcmodify) and run "
            "again", len(files), str(files[0])))
    return FoundSeries(series, failures, not_dicom, not_images)


def _done_marker(out: Path, series_uid: str) -> Path:
    return out / series_uid / RESULTS_JSON


def _safe_dir_name(series_uid: str) -> bool:
    from dicomnode.uids import is_valid_uid
    return is_valid_uid(series_uid)


def run_batch(root: Path | str, out: Path | str, profile: Profile | Callable[[str], Profile], executor: Executor,
              *, uid_root: str, on_start: Callable[[int], None] | None = None,
              on_progress: Callable[[str, str], None] | None = None) -> BatchReport:
    """Run every series under ``root`` through the chain on ``executor``; write results and the table into ``out``.

    Parameters
    ----------
    root, out : path
        The archive to read, and the folder to write (``out/<series UID>/``, ``results.parquet``, ``results.csv``,
        ``failures.csv``).
    profile : Profile or callable
        The profile for every series, or a function of the series' modality that picks one.
    executor : Executor
        Where the chain runs (:class:`~dicomnode.jobs.executors.LocalExecutor` or
        :class:`~dicomnode.jobs.executors.DaskExecutor`); it is not shut down here.
    uid_root : str
        UID root of the result objects.
    on_start : callable, optional
        Called once the archive is read, with the number of series plus file groups that failed already.
    on_progress : callable, optional
        Called for each of those as ``on_progress(series_uid, status)`` with status ``"done"``, ``"skipped"`` or ``"failed"``.
    """
    t0 = time.perf_counter()
    root, out = Path(root), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    found = find_series(root)
    report = BatchReport(found=len(found.series), not_dicom=found.not_dicom, not_images=found.not_images)
    report.failed.extend(found.failures)
    if on_start is not None:
        on_start(len(found.series) + len(found.failures))
    for f in found.failures:
        _progress(on_progress, f.series_uid, "failed", f)

    todo: list[tuple[str, list[Path]]] = []
    for uid, files in sorted(found.series.items()):
        if not _safe_dir_name(uid):
            f = BatchFailure(uid, "the Series Instance UID breaks the UID grammar (digits and dots, at most 64); "
                             "it cannot name an output folder; repair the headers", len(files), str(files[0]))
            report.failed.append(f)
            _progress(on_progress, uid, "failed", f)
        elif _done_marker(out, uid).exists():
            report.skipped.append(uid)
            _progress(on_progress, uid, "skipped", None)
        else:
            todo.append((uid, files))

    def spec_for(uid: str, files: list[Path]) -> ChainSpec:
        prof = profile if isinstance(profile, Profile) else profile(_modality_of(files[0]))
        return ChainSpec(files=tuple(str(p) for p in files), profile=prof, out_dir=str(out / uid),
                         uid_root=uid_root)

    window = max(1, int(executor.capacity)) + 2
    pending: dict[Future[JobOutcome], tuple[str, list[Path], int]] = {}
    queue = list(reversed(todo))
    while queue or pending:
        while queue and len(pending) < window:
            uid, files = queue.pop()
            pending[executor.submit(spec_for(uid, files))] = (uid, files, 0)
        done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
        for fut in done:
            uid, files, requeues = pending.pop(fut)
            try:
                fut.result()
            except RequeueJob as e:
                if requeues < MAX_REQUEUES:
                    log.warning("series requeued", extra={"series_uid": uid, "reason": str(e)})
                    if e.delay_seconds:
                        time.sleep(min(e.delay_seconds, 5.0))
                    pending[executor.submit(spec_for(uid, files))] = (uid, files, requeues + 1)
                    continue
                f = BatchFailure(uid, f"RequeueJob: {e} (gave up after {MAX_REQUEUES} requeues)", len(files),
                                 str(files[0]))
                report.failed.append(f)
                _progress(on_progress, uid, "failed", f)
            except Exception as e:  # noqa: BLE001 - a bad series is listed, the run goes on
                f = BatchFailure(uid, f"{type(e).__name__}: {e}", len(files), str(files[0]))
                report.failed.append(f)
                _progress(on_progress, uid, "failed", f)
            else:
                report.done.append(uid)
                _progress(on_progress, uid, "done", None)

    rows = write_table(out, sorted(report.done + report.skipped),
                       sources={uid: source_of(found.series[uid]) for uid in report.done + report.skipped})
    report.rows = rows
    report.table_parquet = str(out / TABLE_PARQUET)
    report.table_csv = str(out / TABLE_CSV)
    report.failures_csv = str(write_failures(out, report.failed))
    report.seconds = time.perf_counter() - t0
    log.info("batch done", extra={"series": report.found, "done": len(report.done), "skipped": len(report.skipped),
                                  "failed": len(report.failed), "rows": rows,
                                  "seconds": round(report.seconds, 2)})
    return report


def _progress(cb: Callable[[str, str], None] | None, uid: str, status: str, failure: BatchFailure | None) -> None:
    if failure is not None:
        log.warning("series failed", extra={"series_uid": uid, "reason": failure.reason,
                                            "first_file": failure.first_file})
    if cb is not None:
        cb(uid, status)


def source_of(files: Sequence[Path]) -> dict[str, str]:
    """Where a series came from: its folder (the files' common parent), patient ID, study ID and Study UID."""
    from dicomnode.io.load import read_header
    folder = os.path.commonpath([str(Path(f).parent) for f in files]) if files else ""
    try:
        ds = read_header(files[0])
    except Exception:  # noqa: BLE001 - it was read when the series was found; the folder is still worth having
        return {"source_folder": folder}
    return {"source_folder": folder, "patient_id": str(ds.get("PatientID", "") or ""),
            "study_id": str(ds.get("StudyID", "") or ""),
            "study_instance_uid": str(ds.get("StudyInstanceUID", "") or "")}


def _modality_of(path: Path) -> str:
    from dicomnode.io.load import read_header
    return str(read_header(path).get("Modality", "") or "")


def write_failures(out: Path, failures: Sequence[BatchFailure]) -> Path:
    """``OUT/failures.csv``: series_uid, files, first_file, reason (header only when nothing failed)."""
    path = out / FAILURES_CSV
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["series_uid", "files", "first_file", "reason"])
        for x in failures:
            w.writerow([x.series_uid, x.files, x.first_file, x.reason])
    os.replace(tmp, path)
    return path


def result_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The table rows of one ``results.json``: one per segment (one with empty segment columns if none)."""
    scene = results.get("scene") or {}
    findings = results.get("findings") or []
    probs = [float(f["probability"]) for f in findings if isinstance(f, Mapping) and f.get("probability") is not None]
    steps = results.get("steps") or []
    common: dict[str, Any] = {
        "series_uid": results.get("series_instance_uid"),
        "modality": results.get("modality"),
        "profile": results.get("profile"),
        "profile_version": results.get("profile_version"),
    }
    scene = scene if isinstance(scene, Mapping) else {}
    label = scene.get("label")
    probs_by_label = scene.get("probabilities") if isinstance(scene.get("probabilities"), Mapping) else {}
    summary: dict[str, Any] = {
        "scene_label": label,
        "scene_probability": _float(probs_by_label.get(label, scene.get("probability"))),
        "n_findings": len(findings),
        "max_finding_probability": max(probs) if probs else None,
        "seconds_total": round(sum(float(s.get("seconds") or 0.0) for s in steps), 4),
    }
    timing = {f"seconds_{s.get('name')}": _float(s.get("seconds")) for s in steps}
    segments = results.get("segments") or []
    if not segments:
        return [{**common, "segment_number": None, "segment_label": None, "volume_ml": None, **summary, **timing}]
    rows = []
    for seg in segments:
        feats = {}
        for name, value in (seg.get("features") or {}).items():
            col = name if name not in FIXED_COLUMNS and name not in SUMMARY_COLUMNS else f"feature_{name}"
            if name == "volume_ml":
                continue  # the same number as the segment's volume_ml column
            feats[col] = _float(value)
        rows.append({**common, "segment_number": seg.get("number"), "segment_label": seg.get("label"),
                     "volume_ml": _float(seg.get("volume_ml")), **feats, **summary, **timing})
    return rows


def _float(v: Any) -> float | None:
    return None if v is None else float(v)


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    features: list[str] = []
    timing: list[str] = []
    seen = set(FIXED_COLUMNS) | set(SUMMARY_COLUMNS) | set(SOURCE_COLUMNS)
    for r in rows:
        for k in r:
            if k in seen:
                continue
            seen.add(k)
            (timing if k.startswith("seconds_") else features).append(k)
    return [*FIXED_COLUMNS, *features, *SUMMARY_COLUMNS, *timing, *SOURCE_COLUMNS]


def write_table(out: Path, series_uids: Sequence[str],
                sources: Mapping[str, Mapping[str, str]] | None = None) -> int:
    """Collect ``OUT/<uid>/results.json`` of ``series_uids`` into ``results.parquet`` and ``results.csv``.

    ``sources`` gives each series' source columns (:func:`source_of`). Returns the number of rows. Both files are
    replaced atomically; written even when empty (columns only).
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    for uid in series_uids:
        rj = _done_marker(out, uid)
        try:
            src = dict((sources or {}).get(uid, {}))
            source = {c: src.get(c) for c in SOURCE_COLUMNS}
            rows.extend({**r, **source} for r in result_rows(json.loads(rj.read_text())))
        except (OSError, ValueError) as e:
            log.warning("results.json unreadable; series left out of the table",
                        extra={"series_uid": uid, "error": str(e)})
    cols = _columns(rows)
    text_cols = {"series_uid", "modality", "profile", "profile_version", "segment_label", "scene_label",
                 *SOURCE_COLUMNS}
    int_cols = {"segment_number", "n_findings"}
    fields = [pa.field(c, pa.string() if c in text_cols else pa.int64() if c in int_cols else pa.float64())
              for c in cols]
    schema = pa.schema(fields)
    table = pa.Table.from_pylist([{c: r.get(c) for c in cols} for r in rows], schema=schema)
    for name, write in ((TABLE_PARQUET, lambda p: pq.write_table(table, p)),
                        (TABLE_CSV, lambda p: pacsv.write_csv(table, p))):
        tmp = out / f".{name}.tmp"
        write(str(tmp))
        os.replace(tmp, out / name)
    return len(rows)
