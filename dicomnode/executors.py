"""Where jobs run: behind one interface, a local process pool (default) or, later, a Dask cluster.

An executor takes a :class:`~dicomnode.chain.JobSpec` and returns a future of a
:class:`~dicomnode.chain.JobOutcome`; it never touches the index. The dispatcher in :mod:`dicomnode.jobs` owns the
job's state.
"""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Protocol

from dicomnode.chain import JobOutcome, JobSpec, run_chain

log = logging.getLogger(__name__)


class Executor(Protocol):
    capacity: int

    def submit(self, spec: JobSpec) -> "Future[JobOutcome]": ...

    def shutdown(self, *, wait: bool) -> None: ...


def _init_worker() -> None:
    import signal
    # The node handles SIGINT/SIGTERM; workers finish or are stopped by the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class LocalExecutor:
    """A pool of ``count`` worker processes on this machine (forkserver: safe beside the node's threads)."""

    def __init__(self, count: int) -> None:
        self.capacity = count
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(["dicomnode.chain"])
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=self.capacity, mp_context=self._ctx, initializer=_init_worker)

    def submit(self, spec: JobSpec) -> "Future[JobOutcome]":
        try:
            return self._pool.submit(run_chain, spec)
        except (BrokenProcessPool, RuntimeError):
            log.warning("worker pool broken (a worker died); starting a new pool")
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            return self._pool.submit(run_chain, spec)

    def shutdown(self, *, wait: bool) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)


def make_executor(backend: str, count: int, scheduler: str = "") -> Executor:
    if backend == "local":
        return LocalExecutor(count)
    raise ValueError(f"workers.backend = {backend!r} is not available in this build; use \"local\"")
