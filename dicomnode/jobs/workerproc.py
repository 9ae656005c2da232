"""Process settings for the processes that run jobs (local pool workers, Dask workers, ``dicomnode process``).

* :func:`tune_malloc`: a fixed glibc allocation policy for the chain's large numpy temporaries. Dask's nanny starts
  every worker with ``MALLOC_TRIM_THRESHOLD_=65536`` (``distributed.nanny.pre-spawn-environ``). Setting it turns
  off glibc's dynamic mmap threshold: every array above 128 KiB is then mmap'd fresh and zero-filled by the
  kernel on first touch, and the same job ran 13-14 % slower (5.0 s -> 5.7 s for a 256x256x100 CT with the
  ``ct`` profile; ``dicomnode bench scale``). Arrays up to 32 MiB are served from the heap, and the heap is
  trimmed above 64 MiB of free space at its top. That is the steady state glibc's dynamic policy reaches by
  itself, set from the start, in every job process the same way.
* :func:`release_free_memory`: between the steps of a chain, the heap's free pages go back to the system
  (``malloc_trim(0)``). Under the policy above an array of up to 32 MiB that a step let go stays in the heap, and
  one below a live array stays there whatever the trim threshold: without it, what a step freed (the
  posteriors, the working image, its temporaries) counted in every later step's peak memory (about 100 MB of a
  whole-body PET's, ``dicomnode bench analysis``).
* :func:`exit_with`: a pool worker ends when its node ends, so a node that is killed does not leave its workers
  (and, through them, the forkserver) behind (Linux 5.3+: a pidfd).

All three do nothing where the platform does not offer them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import select
import threading

__all__ = ["tune_malloc", "release_free_memory", "exit_with", "MMAP_THRESHOLD_BYTES", "TRIM_THRESHOLD_BYTES"]

log = logging.getLogger("dicomnode.workerproc")  # its name before jobs/ (log filters use it)

MMAP_THRESHOLD_BYTES = 32 * 2**20
TRIM_THRESHOLD_BYTES = 2 * MMAP_THRESHOLD_BYTES
_M_TRIM_THRESHOLD = -1  # <malloc.h>
_M_MMAP_THRESHOLD = -3
_EXIT_PARENT_GONE = 70

_tuned = False


_LIBC: list[ctypes.CDLL | None] = []  # looked up once per process (find_library may run ldconfig)


def _libc() -> ctypes.CDLL | None:
    if not _LIBC:
        name = ctypes.util.find_library("c")
        try:
            _LIBC.append(ctypes.CDLL(name or "libc.so.6", use_errno=True))
        except OSError:
            _LIBC.append(None)
    return _LIBC[0]


def tune_malloc() -> bool:
    """Set the allocation policy above, once per process; True if glibc accepted it."""
    global _tuned
    if _tuned:
        return True
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None) if libc is not None else None
    if mallopt is None:
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD,
                                                                            TRIM_THRESHOLD_BYTES))
    _tuned = ok
    if not ok:
        log.debug("mallopt refused the job allocation policy; running with the C library's defaults")
    return ok


def release_free_memory() -> bool:
    """Return the C heap's free pages to the system (glibc ``malloc_trim(0)``); True if any were released.

    Cheap (a walk over the heap's free chunks, a few ms after a step): the chain calls it before each step."""
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    if trim is None:
        return False
    return bool(trim(0))


def exit_with(pid: int) -> bool:
    """End this process (exit status 70) as soon as process ``pid`` ends; True if it is being watched (Linux).

    A pool worker is a child of the forkserver, not of the node, and it holds the forkserver's and its own queue's
    pipes open, so neither notices a SIGKILLed node: they would wait for ever, each holding its memory. A daemon
    thread waits on a pidfd of the node instead.
    """
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return False
    try:
        fd = pidfd_open(pid)
    except ProcessLookupError:
        os._exit(_EXIT_PARENT_GONE)  # it already ended
    except OSError:
        return False

    def watch() -> None:
        select.select([fd], [], [])  # readable when the process has ended
        os._exit(_EXIT_PARENT_GONE)

    threading.Thread(target=watch, name=f"dicomnode-exit-with-{pid}", daemon=True).start()
    return True
