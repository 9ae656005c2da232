"""Where jobs run: behind one interface, a local process pool (default) or a Dask distributed cluster.

An executor takes a job spec of any kind (:mod:`dicomnode.jobs.spec`) and returns a future of a
:class:`~dicomnode.jobs.spec.JobOutcome`; it never touches the index. The dispatcher in
:mod:`dicomnode.jobs.dispatcher` owns the job's state. Both back ends run the same function,
:func:`dicomnode.jobs.kinds.run` (on Dask wrapped by :mod:`dicomnode.jobs.remote` for log context and memory
errors). The exceptions below live in :mod:`dicomnode.errors`.

A future may end in one of these, besides the chain's own errors::

    DicomnodeError
     +-- RequeueJob          not a failure: the worker or the scheduler connection was lost; the dispatcher puts
     |                       the job back to pending without counting an attempt
     +-- WorkerMemoryError   the job ran its worker out of memory (names the series and the memory limit); final
     +-- WorkerStartError    a local job process could not start (e.g. the package does not import there); the
                             message is the start-up error itself, reproduced in a Python started the same way

Local back end: job processes are forked from a forkserver, which Python starts as ``python -c ...``; such a
process puts the working directory first on ``sys.path``, so a folder named ``dicomnode`` where the node was started
(the parent of a clone, say) would hide the installed package. :func:`start_forkserver` starts it with
``PYTHONSAFEPATH`` set, so job processes import what the node itself imported. A job process prints no log line
itself: its records go to the node through its pool's queue (:class:`dicomnode.obs.logs.LogForwarder`), tagged with
the job's id (:func:`run_in_pool`), and the node prints them once and shows them on the console's Jobs page.

Dask back end (``[workers] backend = "dask"``): ``scheduler = "tcp://HOST:PORT"`` connects to a running cluster
(``dask scheduler`` + ``dask worker``, or any deployment: SSH, Kubernetes, HPC); without it an in-process
``LocalCluster`` of ``count`` single-threaded worker processes starts with the node. ``transfer = "shared"`` passes
file paths (the data folder is mounted at the same path on every worker); ``transfer = "bytes"`` ships the series'
files with the task and gets the result files back as bytes, which are written into the job's output folder here.
A worker lost in the middle of a job is handled by Dask itself: the task runs again on another worker (up to
``distributed.scheduler.allowed-failures`` times; then it is taken for a job that kills its workers, i.e. runs them
out of memory). Result UIDs are deterministic and the outbox never queues a (destination, SOP Instance UID) twice,
so a job that runs twice still sends its results once.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import subprocess
import sys
import threading
import time
import uuid
import weakref
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Protocol

from dicomnode.config import WorkersSection
from dicomnode.errors import RequeueJob, WorkerMemoryError, WorkerStartError
from dicomnode.fsio import atomic_write_bytes
from dicomnode.jobs.kinds import run
from dicomnode.jobs.spec import RESULTS_JSON, JobOutcome, JobSpec

log = logging.getLogger("dicomnode.executors")  # its name before jobs/ (log filters use it)

#: how long a job waits before it is claimed again when the cluster cannot be reached
REQUEUE_DELAY_SECONDS = 5.0


#: what a job process imports before it runs a job (the forkserver's preload, then the job function's module)
_JOB_PROCESS_IMPORTS = ("dicomnode.jobs.chain", "dicomnode.results.seg", "dicomnode.results.sr",
                        "dicomnode.jobs.executors")


def start_forkserver() -> None:
    """Start the forkserver of the local pool (if not running yet) so that it imports the installed package.

    ``PYTHONSAFEPATH=1`` (Python 3.11+) keeps the working directory off the front of the ``sys.path`` of the
    ``python -c`` process the forkserver is; it is set for that start only (this process's environment is left as
    it was), and the job processes forked from it inherit it.
    """
    from multiprocessing import forkserver

    old = os.environ.get("PYTHONSAFEPATH")
    os.environ["PYTHONSAFEPATH"] = "1"
    try:
        forkserver.ensure_running()
    finally:
        if old is None:
            os.environ.pop("PYTHONSAFEPATH", None)
        else:
            os.environ["PYTHONSAFEPATH"] = old


_PROBE = """\
import json, sys
preload, data = json.loads(sys.argv[1])
for name in preload:  # as the forkserver does, an ImportError here is not yet fatal
    try:
        __import__(name)
    except ImportError:
        pass
from multiprocessing import spawn
spawn.prepare(data)  # as each job process does: the node's sys.path, its main module re-run as __mp_main__
import dicomnode.jobs.executors, dicomnode.jobs.chain
"""


def diagnose_job_process_start(timeout_seconds: float = 120.0) -> str | None:
    """Start a Python as the forkserver does, prepare it as a job process; its error, or None if that works.

    The probe imports the forkserver's preload, then runs :func:`multiprocessing.spawn.prepare` with this process's
    preparation data (``sys.path``, the main module) and imports the job function's module, i.e. what a job process
    goes through before its first job. Returns the last line of the error (``ImportError: cannot import name
    ...``), a newline and the whole traceback.
    """
    import json
    from multiprocessing import spawn, util

    prep = spawn.get_preparation_data("probe")
    data = {k: v for k, v in prep.items()
            if k in ("sys_path", "sys_argv", "dir", "init_main_from_name", "init_main_from_path")}
    cmd = [sys.executable, *util._args_from_interpreter_flags(), "-c", _PROBE,
           json.dumps([list(_JOB_PROCESS_IMPORTS[:3]), data])]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_seconds, stdin=subprocess.DEVNULL,
                           env=dict(os.environ, PYTHONSAFEPATH="1"))  # as the forkserver was started
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{type(e).__name__}: {e}"
    if p.returncode == 0:
        return None
    lines = [x for x in p.stderr.strip().splitlines() if x.strip()]
    last = lines[-1].strip() if lines else f"exit status {p.returncode}"
    return f"{last}\n{p.stderr.strip()}"


class Executor(Protocol):
    """Runs jobs. An executor may also have ``abandon(job_id, reason)``, which stops the worker of a job whose
    lease expired (the dispatcher's lease sweep calls it when present; both back ends here have it)."""

    @property
    def capacity(self) -> int: ...

    def submit(self, spec: JobSpec) -> "Future[JobOutcome]": ...

    def shutdown(self, *, wait: bool) -> None: ...


def _init_worker(threads: int = 0, node_pid: int = 0, log_queue: Any = None, log_level: int | None = None) -> None:
    import signal

    from dicomnode.obs.logs import setup_job_process_logging
    from dicomnode.jobs.workerproc import exit_with
    # records go to the node (log_queue), which prints them once in its format and shows them on the Jobs page
    setup_job_process_logging(log_queue, log_level)
    # The node handles SIGINT/SIGTERM; workers finish or are stopped by the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if node_pid:
        exit_with(node_pid)  # a SIGKILLed node leaves no worker (nor, once they are gone, a forkserver) behind
    if threads > 0 and not os.environ.get("DICOMNODE_THREADS"):  # an explicit setting wins
        os.environ["DICOMNODE_THREADS"] = str(threads)  # this worker's share of the cores, for threaded filters


def run_in_pool(spec: JobSpec) -> JobOutcome:
    """What a local job process runs: :func:`~dicomnode.jobs.kinds.run`, with every record it logs meanwhile tagged
    with the job's id; a line as each step of a chain starts, and when the job is done a line per step with its time
    and peak memory (from the job's ``results.json``, where the chain measured them)."""
    import json

    from dicomnode.jobs.chain import run_chain
    from dicomnode.jobs.spec import JobKind
    from dicomnode.obs.logs import job_log_context

    with job_log_context(job_id=spec.job_id):
        log.info("job running in worker process", extra={"kind": spec.kind.value, "instances": len(spec.files)})
        t0 = time.perf_counter()
        if spec.kind is JobKind.CHAIN:  # what kinds.run runs for a chain, with the steps said as they start
            outcome = run_chain(spec, progress=lambda name: log.info("step started", extra={"step": name}))
        else:
            outcome = run(spec)
        try:
            steps = json.loads(Path(outcome.results_json).read_text()).get("steps") or []
        except (OSError, ValueError, AttributeError):
            steps = []
        for st in steps:
            if isinstance(st, dict):
                log.info("step done", extra={"step": st.get("name"), "seconds": st.get("seconds"),
                                             "peak_rss_mb": st.get("peak_rss_mb"), "ok": st.get("ok", True)})
        log.info("job finished in worker process", extra={"series_uid": outcome.series_uid,
                                                          "seconds": round(time.perf_counter() - t0, 3),
                                                          "results": len(outcome.files)})
        return outcome


class LocalExecutor:
    """A pool of ``count`` worker processes on this machine (forkserver: safe beside the node's threads).

    :meth:`abandon` stops a hung job's worker. A process pool cannot stop one worker alone, so the pool is replaced:
    its processes are killed and every other job it held ends with :class:`RequeueJob` (queued again, no attempt
    counted).
    """

    def __init__(self, count: int) -> None:
        self.capacity = count
        self._ctx = multiprocessing.get_context("forkserver")
        # workers start with the result builders imported, so a job does not pay highdicom's first-use cost
        self._ctx.set_forkserver_preload(list(_JOB_PROCESS_IMPORTS[:3]))
        start_forkserver()  # now, with the installed package first on its path
        self._start_error: tuple[float, str | None] | None = None  # (when, diagnosis) of the last broken pool
        self._diag_lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._retired: "weakref.WeakKeyDictionary[ProcessPoolExecutor, str]" = weakref.WeakKeyDictionary()
        self._forwarders: dict[ProcessPoolExecutor, Any] = {}
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        """A new pool, with its own log queue (the records of its job processes, handled by this process's
        loggers: :class:`~dicomnode.obs.logs.LogForwarder`)."""
        from dicomnode.obs.logs import LogForwarder

        threads = max(1, (os.cpu_count() or 1) // self.capacity)
        forwarder = LogForwarder(self._ctx)
        pool = ProcessPoolExecutor(max_workers=self.capacity, mp_context=self._ctx, initializer=_init_worker,
                                   initargs=(threads, os.getpid(), forwarder.queue,
                                             logging.getLogger().getEffectiveLevel()))
        self._forwarders[pool] = forwarder
        return pool

    def _retire_forwarder(self, pool: ProcessPoolExecutor) -> None:
        """Stop the log thread of a pool that was replaced, once its processes are gone (in the background)."""
        forwarder = self._forwarders.pop(pool, None)
        if forwarder is None:
            return

        def stop() -> None:
            manager = getattr(pool, "_executor_manager_thread", None)
            if manager is not None:
                manager.join(timeout=60.0)
            forwarder.stop()

        threading.Thread(target=stop, name="dicomnode-job-logs-retire", daemon=True).start()

    def submit(self, spec: JobSpec) -> "Future[JobOutcome]":
        with self._pool_lock:
            pool = self._pool
            try:
                inner = pool.submit(run_in_pool, spec)
            except (BrokenProcessPool, RuntimeError):
                log.warning("worker pool broken (a worker died); starting a new pool")
                pool.shutdown(wait=False, cancel_futures=True)
                self._retire_forwarder(pool)
                pool = self._pool = self._new_pool()
                inner = pool.submit(run_in_pool, spec)
        out: Future[JobOutcome] = Future()
        inner.add_done_callback(lambda f: self._resolve(f, out, spec, pool))
        return out

    def abandon(self, job_id: int, reason: str) -> None:
        """Stop the worker that holds job ``job_id`` (its lease expired): kill the pool's processes, start a new pool.

        The abandoned job's future ends with :class:`RequeueJob` (its dispatcher has already dealt with it); so does
        every other job of the old pool, which did nothing wrong and is queued again without counting an attempt.
        """
        with self._pool_lock:
            old = self._pool
            self._retired[old] = (f"its worker pool was replaced because job {job_id} overran its lease "
                                      f"({reason})")
            self._pool = self._new_pool()
        pids = list((getattr(old, "_processes", None) or {}).keys())  # ProcessPoolExecutor has no public kill
        import signal
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        old.shutdown(wait=False, cancel_futures=True)
        self._retire_forwarder(old)
        log.warning("worker pool replaced: a job overran its lease", extra={"job_id": job_id, "killed_pids": pids})

    def _resolve(self, inner: "Future[JobOutcome]", out: "Future[JobOutcome]", spec: JobSpec,
                 pool: ProcessPoolExecutor | None = None) -> None:
        retired = self._retired.get(pool) if pool is not None else None  # replaced by abandon(): why
        try:
            out.set_result(inner.result())
        except (BrokenProcessPool, CancelledError) as e:
            if retired is not None:
                out.set_exception(RequeueJob(f"job {spec.job_id}: {retired}"))
                return
            if isinstance(e, CancelledError):
                out.set_exception(e)
                return
            cause = self._diagnose()
            if cause is None:
                out.set_exception(e)
                return
            first, _, detail = cause.partition("\n")
            err = WorkerStartError(f"job processes cannot start: {first} (a Python started like the worker pool "
                                   "fails the same way; fix that environment, then retry the job)")
            err.__cause__ = _StartTraceback(detail)
            log.error("job processes cannot start", extra={"job_id": spec.job_id, "error": first})
            out.set_exception(err)
        except BaseException as e:  # noqa: BLE001 - the caller sees every error through the future
            out.set_exception(e)

    def _diagnose(self) -> str | None:
        """Why the pool broke, if a job process cannot start at all (one probe per minute at most)."""
        with self._diag_lock:
            now = time.monotonic()
            if self._start_error is None or now - self._start_error[0] > 60.0:
                self._start_error = (now, diagnose_job_process_start())
            return self._start_error[1]

    def cluster_status(self) -> dict[str, Any]:
        return {"backend": "local", "workers": self.capacity, "tasks_in_flight": None, "dashboard": None}

    def shutdown(self, *, wait: bool) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)
        # Let the pool's manager thread finish closing its wake-up pipe now: at interpreter exit, CPython 3.11's
        # atexit hook writes to that pipe and, racing with the close, printed "Exception ignored in: <module
        # 'threading'> ... OSError: [Errno 9] Bad file descriptor" on stderr (a non-JSON line in a JSON log).
        manager = getattr(self._pool, "_executor_manager_thread", None)
        if manager is not None:
            manager.join(timeout=10.0)
        forwarder = self._forwarders.pop(self._pool, None)
        if forwarder is not None:  # the job processes' last records (their exit flushes them), then the thread ends
            forwarder.stop()


class _StartTraceback(Exception):
    """The start-up traceback of a job process, kept as ``tb`` the way concurrent.futures keeps remote ones."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb


# ---------------------------------------------------------------------------------------------------------------
# Dask
# ---------------------------------------------------------------------------------------------------------------

def _series_uid_of(spec: JobSpec) -> str:
    """The Series Instance UID of a job's first file (a header read), for logs and messages; "" if unreadable."""
    if not spec.files:
        return ""
    try:
        from dicomnode.io.load import read_header
        return str(read_header(spec.files[0]).get("SeriesInstanceUID", "") or "")
    except Exception:  # noqa: BLE001 - the chain reports bad input properly; this is for messages only
        return ""


def write_remote_result(result: Any, out_dir: str) -> JobOutcome:
    """Write a :class:`dicomnode.jobs.remote.RemoteResult` into ``out_dir`` (atomically, file by file).

    Returns the :class:`JobOutcome` with the paths on this machine, as if the chain had run here.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for f in result.files:
        if Path(f.name).name != f.name or f.name in ("", ".", ".."):
            raise ValueError(f"a worker returned a result file named {f.name!r}; expected a bare file name")
        atomic_write_bytes(out / f.name, f.data)
        paths.append(str(out / f.name))
    rj = out / RESULTS_JSON
    atomic_write_bytes(rj, result.results_json)
    return JobOutcome(result.series_uid, tuple(paths), tuple(f.sop_instance_uid for f in result.files), str(rj),
                      result.seconds)


def _mb(n_bytes: float | None) -> float | None:
    return None if not n_bytes else round(n_bytes / 2**20, 1)


def _status_from_info(info: Mapping[str, Any], processing: Mapping[str, Any], dashboard: str | None,
                      scheduler: str) -> dict[str, Any]:
    workers = []
    for addr, w in sorted(info.get("workers", {}).items()):
        workers.append({"address": addr, "name": str(w.get("name", "")), "host": w.get("host", ""),
                        "nthreads": w.get("nthreads", 0), "memory_limit_mb": _mb(w.get("memory_limit")),
                        "memory_mb": _mb((w.get("metrics") or {}).get("memory")),
                        "tasks": len(processing.get(addr, ())), "resources": w.get("resources", {})})
    return {"backend": "dask", "scheduler": scheduler, "dashboard": dashboard,
            "workers": workers, "n_workers": len(workers), "threads": int(info.get("total_threads", 0)),
            "tasks_processing": sum(len(v) for v in processing.values())}


def cluster_status(scheduler: str, *, timeout_seconds: float = 5.0) -> dict[str, Any]:
    """The state of a Dask cluster seen from outside the node (``dicomnode status``).

    Connects a short-lived client to ``scheduler`` (``tcp://HOST:PORT``). Returns ``{"backend": "dask",
    "scheduler", "dashboard", "workers": [{address, name, host, nthreads, memory_limit_mb, memory_mb, tasks,
    resources}], "n_workers", "threads", "tasks_processing"}``, or ``{"backend": "dask", "scheduler", "error"}``
    when the scheduler cannot be reached.
    """
    from distributed import Client
    try:
        with Client(scheduler, timeout=timeout_seconds, set_as_default=False) as client:
            return _status_from_info(client.scheduler_info(n_workers=-1), client.processing(),
                                     client.dashboard_link, scheduler)
    except (OSError, TimeoutError) as e:
        return {"backend": "dask", "scheduler": scheduler,
                "error": f"cannot reach the Dask scheduler at {scheduler}: {e}"}


class DaskExecutor:
    """Jobs as tasks on a Dask distributed cluster; one task per job, one job per worker thread.

    Parameters
    ----------
    count : int
        Without ``scheduler``: the number of worker processes of the in-process ``LocalCluster`` (one thread each).
        With ``scheduler``: the least number of jobs kept on the cluster; :attr:`capacity` grows to the cluster's
        total threads as workers join.
    scheduler : str, optional
        ``tcp://HOST:PORT`` of a running ``dask scheduler``; empty: start a ``LocalCluster``.
    transfer : {"shared", "bytes"}
        How series reach workers: paths on a shared mount, or bytes with the task (results come back as bytes).
    memory_limit_mb : int, optional
        Memory limit of each ``LocalCluster`` worker in MB; 0: Dask's default (the host's memory / ``count``).
        A worker of an external cluster has the limit it was started with (``dask worker --memory-limit``).
    resources : mapping of str to float, optional
        Dask resources each job needs (``client.submit(..., resources=...)``), e.g. ``{"MEMORY": 4e9}``; only
        workers started with them (``dask worker --resources "MEMORY=16e9"``) run jobs. ``LocalCluster``
        workers get exactly one job's worth.
    dashboard_address : str, optional
        Where a ``LocalCluster`` serves its dashboard, e.g. ``":8787"`` (``":0"``: any free port; ``""``: none).
    connect_timeout_seconds : float, optional
        How long to wait for the scheduler when connecting (and reconnecting after the connection was lost).
    """

    def __init__(self, count: int, scheduler: str = "", *, transfer: str = "shared", memory_limit_mb: int = 0,
                 resources: Mapping[str, float] | None = None, dashboard_address: str = ":8787",
                 connect_timeout_seconds: float = 10.0) -> None:
        from distributed import Client, LocalCluster

        from dicomnode.jobs import remote as remote_env

        if transfer not in ("shared", "bytes"):
            raise ValueError(f"transfer = {transfer!r}: use \"shared\" or \"bytes\"")
        self.transfer = transfer
        self.resources = dict(resources or {})
        self._count = count
        self._scheduler = scheduler
        self._timeout_s = connect_timeout_seconds
        self._lock = threading.Lock()
        self._inflight: dict[str, tuple[Any, "Future[JobOutcome]", JobSpec, str]] = {}
        self._closed = False
        self._threads = count
        self._threads_checked = 0.0
        self._cluster = None
        if scheduler:
            self._client = Client(scheduler, timeout=connect_timeout_seconds, set_as_default=False)
        else:
            self._cluster = LocalCluster(
                n_workers=count, threads_per_worker=1, processes=True,
                memory_limit=f"{memory_limit_mb}MiB" if memory_limit_mb else "auto",
                dashboard_address=dashboard_address or None, resources=self.resources or None,
                host="127.0.0.1",
                # the workers' stderr is the node's: their records reach it once, forwarded (remote.py)
                env={remote_env.LOCAL_WORKER_ENV: "1"})
            self._client = Client(self._cluster, set_as_default=False)
        self._forward_logs()
        info = self._client.scheduler_info(n_workers=-1)
        self.scheduler_address = str(self._client.scheduler.address)
        self.dashboard_link = self._dashboard()
        limits = sorted({_mb(w.get("memory_limit")) for w in info.get("workers", {}).values()} - {None})
        log.info("dask cluster ready", extra={"scheduler": self.scheduler_address, "dashboard": self.dashboard_link,
                                              "workers": info.get("n_workers", 0),
                                              "threads": info.get("total_threads", 0), "transfer": transfer,
                                              "memory_limit_mb": limits, "local_cluster": not scheduler})

    # -- helpers --------------------------------------------------------------------------------------------------
    def _dashboard(self) -> str | None:
        try:
            info = self._client.scheduler_info(n_workers=0)
            return self._client.dashboard_link if "dashboard" in info.get("services", {}) else None
        except Exception:  # noqa: BLE001 - the dashboard is optional (it needs bokeh)
            return None

    def _forward_logs(self) -> None:
        """Worker-side ``dicomnode`` records (with job id and series UID) are re-emitted in the node's log."""
        try:
            self._client.forward_logging("dicomnode", level=logging.INFO)
        except Exception as e:  # noqa: BLE001 - logs are not worth failing the start for
            log.warning("worker logs are not forwarded to the node", extra={"error": str(e)})

    def _ensure_client(self) -> Any:
        """The client, reconnected if the scheduler connection was lost for good; else :class:`RequeueJob`."""
        from distributed import Client

        status = self._client.status
        if status == "running":
            return self._client
        if status in ("connecting", "newly-created"):
            raise RequeueJob(f"the connection to the Dask scheduler {self.scheduler_address} is being restored",
                             delay_seconds=REQUEUE_DELAY_SECONDS)
        if not self._scheduler:
            raise RequeueJob("the local Dask cluster is closed", delay_seconds=REQUEUE_DELAY_SECONDS)
        try:
            client = Client(self._scheduler, timeout=self._timeout_s, set_as_default=False)
        except (OSError, TimeoutError) as e:
            raise RequeueJob(f"cannot reach the Dask scheduler at {self._scheduler}: {e}",
                             delay_seconds=REQUEUE_DELAY_SECONDS) from e
        old, self._client = self._client, client
        try:
            old.close(timeout=1)
        except Exception:  # noqa: BLE001
            pass
        self._forward_logs()
        log.info("reconnected to the Dask scheduler", extra={"scheduler": self._scheduler})
        return client

    # -- the Executor interface -------------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        """Jobs to keep on the cluster: ``count``, or the cluster's total threads when that is more."""
        if not self._scheduler:
            return self._count
        now = time.monotonic()
        if now - self._threads_checked > 5.0 and self._client.status == "running":
            self._threads_checked = now
            try:
                self._threads = int(self._client.scheduler_info(n_workers=0).get("total_threads", 0))
            except Exception:  # noqa: BLE001 - keep the last known figure
                pass
        return max(self._count, self._threads)

    @property
    def tasks_in_flight(self) -> int:
        with self._lock:
            return len(self._inflight)

    def submit(self, spec: JobSpec) -> "Future[JobOutcome]":
        """Submit one job as one task; the returned future ends with the outcome or the error, never blocks."""
        out: Future[JobOutcome] = Future()
        from dicomnode.jobs import remote

        series_uid = _series_uid_of(spec)
        key = f"dicomnode-job-{spec.job_id if spec.job_id is not None else 'x'}-{uuid.uuid4().hex[:12]}"
        try:
            if self._closed:
                raise RequeueJob("the Dask executor is shut down")
            client = self._ensure_client()
            opts: dict[str, Any] = {"key": key, "pure": False, "resources": self.resources or None}
            if self.transfer == "bytes":
                payload = tuple(Path(f).read_bytes() for f in spec.files)
                shipped = replace(spec, files=())
                if getattr(spec, "context", ()):  # the study's other series are not shipped: no anatomy borrowed
                    shipped = replace(shipped, context=())
                    log.info("study context not shipped with transfer = bytes", extra={
                        "job_id": spec.job_id, "series_uid": series_uid, "context_series": len(spec.context)})
                dfut = client.submit(remote.run_job_bytes, shipped, payload, series_uid,
                                     remote.side_files(spec), **opts)
            else:
                dfut = client.submit(remote.run_job, spec, series_uid, **opts)
        except BaseException as e:  # noqa: BLE001 - the dispatcher sees every error through the future
            out.set_exception(e)
            return out
        with self._lock:
            self._inflight[key] = (dfut, out, spec, series_uid)
        log.info("job submitted to dask", extra={"job_id": spec.job_id, "series_uid": series_uid, "key": key,
                                                 "transfer": self.transfer})
        dfut.add_done_callback(lambda f, k=key: self._resolve(k, f))
        return out

    def abandon(self, job_id: int, reason: str) -> None:
        """Cancel the Dask task of job ``job_id`` (its lease expired); its future ends with :class:`RequeueJob`.

        A task already running on a worker thread cannot be interrupted by Dask; cancelling it releases its result
        and lets the scheduler forget it.
        """
        with self._lock:
            keys = [k for k, entry in self._inflight.items() if entry[2].job_id == job_id]
            entries = [self._inflight.pop(k) for k in keys]
        for dfut, out, spec, series_uid in entries:
            try:
                self._client.cancel([dfut], force=True)
            except Exception:  # noqa: BLE001 - the scheduler may be gone; the job is requeued all the same
                pass
            if not out.done():
                out.set_exception(RequeueJob(f"job {job_id} (series {series_uid}) was abandoned: {reason}"))
        log.warning("dask task cancelled: a job overran its lease", extra={"job_id": job_id, "keys": keys})

    def _resolve(self, key: str, dfut: Any) -> None:
        with self._lock:
            entry = self._inflight.pop(key, None)
        if entry is None:
            return
        _, out, spec, series_uid = entry
        if out.done():
            return
        try:
            out.set_result(self._outcome(dfut, spec, series_uid))
        except BaseException as e:  # noqa: BLE001
            out.set_exception(e)

    def _outcome(self, dfut: Any, spec: JobSpec, series_uid: str) -> JobOutcome:
        from distributed.scheduler import KilledWorker

        try:
            result = dfut.result()
        except CancelledError as e:  # distributed's FutureCancelledError; ours never cancels a running job
            reason = getattr(e, "reason", "") or "unknown"
            raise RequeueJob(f"the Dask task of job {spec.job_id} (series {series_uid}) was cancelled "
                             f"({reason}); the job is queued again",
                             delay_seconds=REQUEUE_DELAY_SECONDS if "connection" in reason else 0.0) from None
        except KilledWorker as e:
            from dicomnode.jobs.remote import format_memory_limit
            ws = e.last_worker
            raise WorkerMemoryError(
                f"series {series_uid} (job {spec.job_id}): {e.allowed_failures + 1} worker(s) died while running "
                f"it, the last {getattr(ws, 'address', '?')}; the usual cause is running out of memory "
                f"(limit {format_memory_limit(getattr(ws, 'memory_limit', None))}); give the workers more memory "
                "(workers.memory_limit_mb, or `dask worker --memory-limit`) or use a lighter profile, "
                "then `dicomnode jobs retry`") from None
        if self.transfer == "bytes":
            return write_remote_result(result, spec.out_dir)
        return result

    def cluster_status(self) -> dict[str, Any]:
        """Workers, tasks in flight and the dashboard link, from the node's own client (no new connection)."""
        try:
            st = _status_from_info(self._client.scheduler_info(n_workers=-1), self._client.processing(),
                                   self.dashboard_link, self.scheduler_address)
        except Exception as e:  # noqa: BLE001
            st = {"backend": "dask", "scheduler": self.scheduler_address, "dashboard": self.dashboard_link,
                  "error": f"cannot reach the Dask scheduler: {e}"}
        st["tasks_in_flight"] = self.tasks_in_flight
        st["transfer"] = self.transfer
        st["local_cluster"] = self._cluster is not None
        return st

    def shutdown(self, *, wait: bool) -> None:
        """Close the client (and the local cluster). Jobs still out end with :class:`RequeueJob`."""
        self._closed = True
        with self._lock:
            left = list(self._inflight.values())
            self._inflight.clear()
        for _, out, spec, series_uid in left:
            if not out.done():
                out.set_exception(RequeueJob(f"the node stopped while job {spec.job_id} (series {series_uid}) "
                                             "was on the cluster"))
        try:
            self._client.close(timeout=10)
        except Exception:  # noqa: BLE001
            pass
        if self._cluster is not None:
            try:
                self._cluster.close(timeout=30)
            except Exception:  # noqa: BLE001
                pass


def make_executor(backend: str, count: int, scheduler: str = "", **options: Any) -> Executor:
    """``"local"``: :class:`LocalExecutor`; ``"dask"``: :class:`DaskExecutor` (``options`` go to it)."""
    if backend == "local":
        return LocalExecutor(count)
    if backend == "dask":
        return DaskExecutor(count, scheduler, **options)
    raise ValueError(f"workers.backend = {backend!r}: use \"local\" or \"dask\"")


def executor_for(workers: WorkersSection) -> Executor:
    """The executor the ``[workers]`` section asks for."""
    if workers.backend != "dask":
        return LocalExecutor(workers.count)
    return DaskExecutor(workers.count, workers.scheduler, transfer=workers.transfer,
                        memory_limit_mb=workers.memory_limit_mb, resources=workers.resources,
                        dashboard_address=workers.dashboard_address,
                        connect_timeout_seconds=workers.connect_timeout_seconds)
