"""The worker side of the Dask executor: the task a Dask worker runs for one job.

:func:`run_job` runs :func:`dicomnode.jobs.kinds.run` unchanged on the series' files where they are (``transfer =
"shared"``: the node's data folder is mounted at the same path on every worker). :func:`run_job_bytes` gets the
series' files as bytes with the task (``transfer = "bytes"``), runs the chain in a private temporary folder and
returns the result files as bytes; the node writes them into the job's output folder
(:meth:`dicomnode.jobs.executors.DaskExecutor`), so nothing of the job stays on the worker. A radiomics job's region
objects (RTSTRUCT/SEG) and its settings file, when it names one, travel with it (:func:`side_files`).

Both wrap the chain the same way:

* every ``dicomnode`` log record emitted while the job runs carries ``job_id`` and ``series_uid`` (a filter on the
  handlers of the ``dicomnode`` logger, including the one :meth:`distributed.Client.forward_logging` installs to
  send worker records to the node), and the worker's own stderr shows dicomnode warnings with the same fields;
* a :class:`MemoryError` becomes :class:`~dicomnode.errors.WorkerMemoryError`, naming the series and the
  worker's memory limit.

This module is imported on the workers; it needs the same dicomnode version there as on the node.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

from dicomnode.errors import WorkerMemoryError
from dicomnode.jobs.kinds import run
from dicomnode.jobs.spec import JobOutcome, JobSpec, RadiomicsSpec

log = logging.getLogger("dicomnode.remote")  # its name before jobs/ (log filters use it)

#: Set in the environment of the node's own LocalCluster workers (their stderr is the node's).
LOCAL_WORKER_ENV = "DICOMNODE_LOCAL_DASK_WORKER"

_JOB_CONTEXT: contextvars.ContextVar[dict[str, object] | None] = contextvars.ContextVar("dicomnode_job",
                                                                                      default=None)


@dataclass(frozen=True, slots=True)
class ResultFile:
    """One result file made on a worker: its name in the job's output folder, its SOP Instance UID and content."""

    name: str
    sop_instance_uid: str
    data: bytes


@dataclass(frozen=True, slots=True)
class SideFile:
    """A file a job reads besides its series, shipped with a ``transfer = "bytes"`` task.

    ``role`` is ``"roi"`` (a region object) or ``"settings"`` (a radiomics settings TOML); ``name`` is the file's
    name on the node (the spool names a region object by its SOP Instance UID, which the SR's UIDs are made from), a
    plain file name, never a path.
    """

    role: str
    name: str
    data: bytes


@dataclass(frozen=True, slots=True)
class RemoteResult:
    """What :func:`run_job_bytes` sends back: the result files in sending order, ``results.json`` and the time."""

    series_uid: str
    files: tuple[ResultFile, ...]
    results_json: bytes
    seconds: float


class _JobContextFilter(logging.Filter):
    """Adds ``job_id`` and ``series_uid`` of the job running in this thread to records that do not carry them."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = _JOB_CONTEXT.get()
        if ctx:
            for key, value in ctx.items():
                if not hasattr(record, key):
                    setattr(record, key, value)
        return True


_FILTER = _JobContextFilter()


def _worker_address() -> str:
    try:
        from distributed import get_worker
        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"pid {os.getpid()}"


def _memory_limit_bytes() -> int | None:
    try:
        from distributed import get_worker
        limit = get_worker().memory_manager.memory_limit
        return int(limit) if limit else None
    except (ImportError, ValueError, AttributeError):
        return None


def format_memory_limit(limit_bytes: int | None) -> str:
    """``"1536 MB per worker"``, or a sentence saying that no limit is set."""
    if not limit_bytes:
        return "no memory limit set on the worker (it ran out of the host's memory)"
    return f"{limit_bytes / 2**20:.0f} MB per worker"


def _install_log_plumbing() -> None:
    """Once per worker process: job context on every dicomnode handler, warnings to the worker's stderr."""
    pkg = logging.getLogger("dicomnode")
    if pkg.level == logging.NOTSET:
        pkg.setLevel(logging.INFO)  # INFO records must exist to be forwarded to the node
    # A worker of the node's own LocalCluster writes to the node's stderr: its records reach it forwarded, once.
    if os.environ.get(LOCAL_WORKER_ENV) != "1" and not any(getattr(h, "_dicomnode_worker", False)
                                                          for h in pkg.handlers):
        from dicomnode.obs.logs import TextFormatter
        handler = logging.StreamHandler(sys.stderr)
        handler.setLevel(logging.WARNING)
        handler.setFormatter(TextFormatter())
        handler._dicomnode_worker = True  # type: ignore[attr-defined]
        pkg.addHandler(handler)
    for h in pkg.handlers:  # the forwarding handler of Client.forward_logging is added after start: check each job
        if _FILTER not in h.filters:
            h.addFilter(_FILTER)


@contextmanager
def job_context(job_id: int | None, series_uid: str) -> Iterator[logging.LoggerAdapter]:
    """Run a block as job ``job_id`` of ``series_uid``: log records carry both; out-of-memory names them."""
    _install_log_plumbing()
    token = _JOB_CONTEXT.set({"job_id": job_id, "series_uid": series_uid})
    adapter = logging.LoggerAdapter(log, {"job_id": job_id, "series_uid": series_uid,
                                          "worker": _worker_address()})
    try:
        yield adapter
    except MemoryError as e:
        limit = format_memory_limit(_memory_limit_bytes())
        adapter.error("job ran out of memory", extra={"memory_limit": limit})
        raise WorkerMemoryError(
            f"series {series_uid} (job {job_id}) ran out of memory on worker {_worker_address()}: {limit}; "
            "give the workers more memory (workers.memory_limit_mb, or `dask worker --memory-limit`) or use a "
            "lighter profile, then retry the job") from e
    finally:
        _JOB_CONTEXT.reset(token)


def run_job(spec: JobSpec, series_uid: str = "") -> JobOutcome:
    """Run the chain on files the worker reads where the node stored them (``transfer = "shared"``)."""
    with job_context(spec.job_id, series_uid) as jlog:
        jlog.info("job running on worker", extra={"instances": len(spec.files), "transfer": "shared"})
        t0 = time.perf_counter()
        outcome = run(spec)
        jlog.info("job finished on worker", extra={"seconds": round(time.perf_counter() - t0, 3),
                                                   "results": len(outcome.files)})
        return outcome


def side_files(spec: JobSpec) -> tuple[SideFile, ...]:
    """On the node: the files besides the series that ``spec`` reads, as bytes for a ``transfer = "bytes"`` task.

    A radiomics job reads its region objects and, unless it names shipped settings, its settings file; a chain job
    reads nothing else (its profile travels in the spec).
    """
    if not isinstance(spec, RadiomicsSpec):
        return ()
    from dicomnode.config.radiomics import builtin_settings
    out = [SideFile("roi", Path(f).name, Path(f).read_bytes()) for f in spec.roi_files]
    if spec.settings and spec.settings not in builtin_settings() and Path(spec.settings).is_file():
        out.append(SideFile("settings", Path(spec.settings).name, Path(spec.settings).read_bytes()))
    return tuple(out)


def _unpack_side_files(spec: JobSpec, side: tuple[SideFile, ...], folder: Path) -> JobSpec:
    """On the worker: write ``side`` under ``folder`` and point ``spec`` at the copies (same names, same bytes)."""
    if not side:
        return spec
    rois: list[str] = []
    settings = getattr(spec, "settings", None)
    for f in side:
        if f.role not in ("roi", "settings") or Path(f.name).name != f.name or f.name in ("", ".", ".."):
            raise ValueError(f"side file {f.name!r} ({f.role}): expected a plain file name of a region object or "
                             "settings file; the node and the worker run different dicomnode versions?")
        d = folder / f.role
        d.mkdir(parents=True, exist_ok=True)
        (d / f.name).write_bytes(f.data)
        if f.role == "roi":
            rois.append(str(d / f.name))
        else:
            settings = str(d / f.name)
    if isinstance(spec, RadiomicsSpec):
        return replace(spec, roi_files=tuple(rois), settings=settings or spec.settings)
    return spec


def run_job_bytes(spec: JobSpec, payload: tuple[bytes, ...], series_uid: str = "",
                  side: tuple[SideFile, ...] = ()) -> RemoteResult:
    """Run the job on files shipped as bytes (``transfer = "bytes"``); return the result files as bytes.

    ``spec.files`` is ignored (it names the files on the node); ``side`` (:func:`side_files`) replaces the region
    objects and settings file a radiomics spec names on the node; ``spec.out_dir`` is replaced by a temporary folder
    that is removed before returning.
    """
    with job_context(spec.job_id, series_uid) as jlog:
        jlog.info("job running on worker", extra={"instances": len(payload), "transfer": "bytes",
                                                  "bytes_in": sum(len(b) for b in payload)})
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="dicomnode-job-") as tmp:
            src = Path(tmp) / "in"
            src.mkdir()
            paths = []
            for i, data in enumerate(payload):
                p = src / f"{i:06d}.dcm"
                p.write_bytes(data)
                paths.append(str(p))
            del payload
            spec = _unpack_side_files(spec, side, Path(tmp) / "side")
            out = Path(tmp) / "out"
            outcome = run(replace(spec, files=tuple(paths), out_dir=str(out)))
            files = tuple(ResultFile(Path(f).name, sop, Path(f).read_bytes())
                          for f, sop in zip(outcome.files, outcome.sop_instance_uids))
            result = RemoteResult(outcome.series_uid, files, Path(outcome.results_json).read_bytes(),
                                  outcome.seconds)
        jlog.info("job finished on worker", extra={"seconds": round(time.perf_counter() - t0, 3),
                                                   "results": len(files),
                                                   "bytes_out": sum(len(f.data) for f in files)})
        return result
