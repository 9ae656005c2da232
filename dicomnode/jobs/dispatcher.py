"""The job dispatcher: claims pending jobs from the index, runs them on an executor, records the outcome.

Life cycle (see :data:`dicomnode.store.db.JOB_TRANSITIONS`): ``pending -> running -> done | failed``. A failure
keeps its message and traceback; it is retried with backoff (``workers.retry_backoff_seconds``) until
``workers.max_attempts``, then stays ``failed`` and visible until an operator runs ``dicomnode jobs retry ID``.
Input that can never be processed (a :class:`~dicomnode.errors.SeriesLoadError`: one slice, broken geometry,
empty UIDs...; or its :class:`~dicomnode.errors.SeriesRefusedError`: a multi-plane localizer) fails at once, without
retries; so does a job that ran its worker out of memory
(:class:`~dicomnode.jobs.executors.WorkerMemoryError`). Jobs that were running when the node died are queued again on
start (:meth:`Database.release_running_jobs`), their attempt given back: a run cut short by a node kill is not a
failed attempt. A job whose worker or cluster connection was lost
(:class:`~dicomnode.jobs.executors.RequeueJob`) is not a failure: it goes back to pending without counting an attempt.

Leases: a job is claimed for ``workers.lease_seconds``. The dispatcher sweeps the index periodically (every quarter
lease, at least every 30 s): a running job whose lease has expired is taken for lost. If its worker is this node's,
the worker is stopped (:meth:`~dicomnode.jobs.executors.LocalExecutor.abandon`: a hung job process is killed) and
whatever it still returns is ignored. The job then counts a failed attempt: back to pending with backoff, or to
``failed`` after ``workers.max_attempts``, with an error naming ``workers.lease_seconds``.

When a job is done its result files are queued in the outbox, one row per destination and file, in the same
transaction.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from concurrent.futures import CancelledError, Future
from pathlib import Path
from typing import Callable

from dicomnode.config import NodeConfig
from dicomnode.errors import RequeueJob, SeriesLoadError, WorkerMemoryError
from dicomnode.jobs.executors import Executor
from dicomnode.jobs.kinds import queued
from dicomnode.jobs.spec import JobOutcome, JobSetupError, JobSource
from dicomnode.store.db import Database, IllegalTransition, JobRow, JobState

log = logging.getLogger("dicomnode.jobs")  # its name before jobs/ (log filters use it)

PERMANENT_ERRORS = (SeriesLoadError, WorkerMemoryError)


def results_dir(data_dir: Path, series_uid: str, job_id: int) -> Path:
    """Where a job writes: ``DATA/results/<series UID>/<job id>`` (the UID was checked when it was received)."""
    return data_dir / "results" / series_uid / str(job_id)


class Dispatcher:
    def __init__(self, db: Database, config: Callable[[], NodeConfig], executor: Executor, *,
                 on_done: Callable[[], None] | None = None, poll_s: float = 0.5) -> None:
        self.db = db
        self._config = config
        self.executor = executor
        self._on_done = on_done
        self._poll_s = poll_s
        self._running: dict[int, Future[JobOutcome]] = {}
        self._abandoned: set[Future[JobOutcome]] = set()  # futures of jobs the lease sweep took away
        self._last_sweep = float("-inf")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dispatcher", daemon=True)
        self.worker_name = f"{os.uname().nodename}:{os.getpid()}"

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._running)

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop claiming; wait up to ``timeout_s`` for running jobs, then put the rest back to pending."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_s)
        deadline = time.monotonic() + timeout_s
        while self.running and time.monotonic() < deadline:
            time.sleep(0.1)
        with self._lock:
            left = list(self._running)
        if left:
            self.db.release_running_jobs(now=time.time())
            log.warning("jobs still running at shutdown were queued again", extra={"job_ids": left})
        self.executor.shutdown(wait=False)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                lease = self._config().workers.lease_seconds
                if time.monotonic() - self._last_sweep >= min(max(lease / 4, 0.25), 30.0):
                    self._last_sweep = time.monotonic()
                    self.sweep_leases()
            except Exception:  # noqa: BLE001 - the dispatcher must keep running
                log.exception("lease sweep failed")
            try:
                started = self.dispatch_due()
            except Exception:  # noqa: BLE001 - the dispatcher must keep running
                log.exception("dispatch pass failed")
                started = 0
            if not started:
                self._wake.wait(self._poll_s)
                self._wake.clear()

    def sweep_leases(self, now: float | None = None) -> list[int]:
        """Running jobs whose lease expired: stop their worker if it is ours, count a failed attempt.

        Returns the ids of the jobs taken back (pending again, or failed after ``workers.max_attempts``).
        """
        now = time.time() if now is None else now
        cfg = self._config()
        taken = []
        for job in self.db.expired_running_jobs(now):
            lease = cfg.workers.lease_seconds
            error = (f"lease expired: the job ran longer than workers.lease_seconds = {lease:g} s and its worker was "
                     "taken for lost (hung or gone); raise workers.lease_seconds if such a series needs longer")
            with self._lock:
                fut = self._running.pop(job.id, None)
                if fut is not None:
                    self._abandoned.add(fut)
            if fut is not None:
                abandon = getattr(self.executor, "abandon", None)
                if abandon is not None:
                    abandon(job.id, f"workers.lease_seconds = {lease:g} s")
            try:
                self._record_failure(job, cfg, error, "", final=False)
            except IllegalTransition:
                continue  # it finished (or was requeued) just now: nothing to take back
            taken.append(job.id)
            self.db.audit("job lease expired", series_uid=job.series_uid,
                          detail={"job_id": job.id, "worker": job.worker, "lease_seconds": lease,
                                  "attempt": job.attempts})
            log.warning("job lease expired", extra={"job_id": job.id, "series_uid": job.series_uid,
                                                    "worker": job.worker, "lease_seconds": lease,
                                                    "attempt": job.attempts, "ours": fut is not None})
        if taken:
            self._wake.set()
        return taken

    def dispatch_due(self) -> int:
        started = 0
        cfg = self._config()
        while self.running < self.executor.capacity and not self._stop.is_set():
            job = self.db.claim_job(self.worker_name, cfg.workers.lease_seconds, time.time())
            if job is None:
                break
            self._submit(job, cfg)
            started += 1
        return started

    def _submit(self, job: JobRow, cfg: NodeConfig) -> None:
        out_dir = str(results_dir(cfg.node.data_dir, job.series_uid, job.id))
        source = JobSource(cfg, self.db.instance_paths, self.db.study_context)  # files and study context, now
        try:
            spec = queued(job.kind, job.params).spec(series_uid=job.series_uid, depends_on=job.depends_on,
                                                     rule=job.rule, source=source, out_dir=out_dir, job_id=job.id)
        except JobSetupError as e:
            self._record_failure(job, cfg, str(e), "", final=True)
            return
        log.info("job started", extra={"job_id": job.id, "series_uid": job.series_uid, "profile": job.label,
                                       "attempt": job.attempts, "instances": len(spec.files),
                                       "context_series": len(getattr(spec, "context", ()))})
        try:
            fut = self.executor.submit(spec)
        except RequeueJob as e:
            self._requeue(job, e)
            return
        with self._lock:
            self._running[job.id] = fut
        fut.add_done_callback(lambda f, j=job: self._done(j, f))

    def _done(self, job: JobRow, fut: "Future[JobOutcome]") -> None:
        with self._lock:
            if fut in self._abandoned:  # the lease sweep has dealt with this run; what it returns is ignored
                self._abandoned.discard(fut)
                self._wake.set()
                return
        cfg = self._config()
        try:
            try:
                outcome = fut.result()
            except (RequeueJob, CancelledError) as e:
                if self._stop.is_set():
                    return  # stop() has put the jobs still out back to pending
                if isinstance(e, RequeueJob):
                    self._requeue(job, e)
                    return
                self._record_failure(job, cfg, f"{type(e).__name__}: {e}", "", final=False)
                return
            except BaseException as e:  # noqa: BLE001 - any failure is recorded on the job
                tb_text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
                remote_tb = getattr(getattr(e, "__cause__", None), "tb", "")
                self._record_failure(job, cfg, f"{type(e).__name__}: {e}", remote_tb or tb_text,
                                     final=isinstance(e, PERMANENT_ERRORS))
                return
            exports = [(d, path, sop) for d in job.destinations
                       for path, sop in zip(outcome.files, outcome.sop_instance_uids)]
            self.db.finish_job(job.id, time.time(), result_dir=str(Path(outcome.results_json).parent),
                               results=outcome.files, seconds=outcome.seconds, exports=exports)
            self.db.audit("job done", series_uid=job.series_uid,
                          detail={"job_id": job.id, "profile": job.label, "results": len(outcome.files),
                                  "destinations": list(job.destinations)})
            log.info("job done", extra={"job_id": job.id, "series_uid": job.series_uid,
                                        "seconds": round(outcome.seconds, 3), "results": len(outcome.files),
                                        "exports": len(exports)})
        except Exception:  # noqa: BLE001
            log.exception("recording the outcome of job %s failed", job.id)
        finally:
            with self._lock:
                if self._running.get(job.id) is fut:
                    del self._running[job.id]
            self._wake.set()
            if self._on_done:
                self._on_done()

    def _requeue(self, job: JobRow, e: RequeueJob) -> None:
        """Running -> pending, not counted as an attempt: the job did not fail, its worker or cluster was lost."""
        now = time.time()
        self.db.release_job(job.id, now, not_before=now + e.delay_seconds, note=str(e))
        self.db.audit("job requeued", series_uid=job.series_uid, detail={"job_id": job.id, "reason": str(e)})
        log.warning("job requeued: not a failure", extra={"job_id": job.id, "series_uid": job.series_uid,
                                                          "reason": str(e),
                                                          "retry_in_s": round(e.delay_seconds, 1)})

    def _record_failure(self, job: JobRow, cfg: NodeConfig, error: str, tb_text: str, *, final: bool) -> None:
        now = time.time()
        retry_at = None
        if not final and job.attempts < cfg.workers.max_attempts:
            sched = cfg.workers.retry_backoff_seconds
            retry_at = now + sched[min(job.attempts, len(sched)) - 1]
        state = self.db.fail_job(job.id, now, error=error, traceback=tb_text, retry_at=retry_at)
        if state is JobState.FAILED:
            self.db.audit("job failed", series_uid=job.series_uid, detail={"job_id": job.id, "error": error})
            log.error("job failed", extra={"job_id": job.id, "series_uid": job.series_uid, "error": error,
                                           "attempts": job.attempts})
        else:
            log.warning("job failed; will retry", extra={"job_id": job.id, "series_uid": job.series_uid,
                                                         "error": error, "attempt": job.attempts,
                                                         "retry_in_s": round((retry_at or now) - now, 1)})
