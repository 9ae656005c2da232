"""Peak resident memory of this process during a block of code (sampled from /proc/self/statm)."""

from __future__ import annotations

import os
import resource
import threading

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    """Current resident set size of this process in MiB."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class PeakRSS:
    """Context manager: ``peak_rss_mb`` is the highest RSS seen while the block ran (sampled every ``interval_s``).

    The kernel's lifetime maximum (``ru_maxrss``) is also consulted, so a short spike that the sampler missed is
    still counted when it set a new lifetime high.
    """

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.peak_rss_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_rss_mb = max(self.peak_rss_mb, rss_mb())

    def __enter__(self) -> "PeakRSS":
        self._max_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        self.peak_rss_mb = rss_mb()
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_rss_mb = max(self.peak_rss_mb, rss_mb())
        max_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        if max_after > self._max_before:
            self.peak_rss_mb = max(self.peak_rss_mb, max_after)
