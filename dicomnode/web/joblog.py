"""The node's log records kept in memory for the console: the lines of each job (the Jobs page and
``GET /api/v1/jobs/{job_id}/log``) and the last warnings and errors (the Overview).

Installed once, on the ``dicomnode`` logger, when the console is imported.
"""

from __future__ import annotations

import logging
from collections import deque

__all__ = ["JOB_LOG", "JobLogBuffer", "LAST_PROBLEMS_KEPT", "LOG_LINES_KEPT", "LOG_LINES_SHOWN"]

LOG_LINES_KEPT = 5000   # log records kept in memory for the Jobs page (all jobs together)
LOG_LINES_SHOWN = 200   # per job
LAST_PROBLEMS_KEPT = 50  # the node's last warnings and errors, for the Overview


class JobLogBuffer(logging.Handler):
    """In memory, from the node's own (``dicomnode``) loggers: the last :data:`LOG_LINES_KEPT` records that carry a
    ``job_id`` (the Jobs page), and the last :data:`LAST_PROBLEMS_KEPT` warnings and errors (the Overview). The
    records of local job processes reach these loggers too (:class:`dicomnode.obs.logs.LogForwarder`), tagged with
    their job's id; so do a Dask worker's (``Client.forward_logging``). The node's records hold no patient data
    (``dicomnode.obs.logs``); the scrub filter runs on them all the same."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: deque[tuple[int, float, str, str]] = deque(maxlen=LOG_LINES_KEPT)
        self.problems: deque[tuple[float, str, str, str]] = deque(maxlen=LAST_PROBLEMS_KEPT)
        from dicomnode.obs.logs import ScrubFilter
        self.addFilter(ScrubFilter())

    def emit(self, record: logging.LogRecord) -> None:
        job = getattr(record, "job_id", None)
        if job is None and record.levelno < logging.WARNING:
            return
        try:
            extras = {k: v for k, v in vars(record).items()
                      if k in ("step", "series_uid", "attempt", "error", "seconds", "peak_rss_mb", "profile", "kind",
                               "instances", "results", "worker", "destination", "calling_ae", "peer", "reason")}
            text = (record.getMessage() + "".join(f" {k}={v}" for k, v in extras.items()))[:2000]
            if job is not None:
                self.records.append((int(job), record.created, record.levelname, text))
            if record.levelno >= logging.WARNING:
                self.problems.append((record.created, record.levelname, record.name, text))
        except Exception:  # noqa: BLE001 - a log line must never break the node
            self.handleError(record)

    def last_problems(self, n: int = 20) -> list[tuple[float, str, str, str]]:
        return list(reversed(list(self.problems)))[:n]

    def lines(self, job_id: int) -> list[tuple[float, str, str]]:
        """The job's last :data:`LOG_LINES_SHOWN` lines, oldest first by the time each was logged (a job process's
        records reach the node through a queue, so they may arrive after the node's own later lines)."""
        mine = [(t, level, text) for j, t, level, text in list(self.records) if j == job_id][-LOG_LINES_SHOWN:]
        return sorted(mine, key=lambda line: line[0])  # stable: lines logged at the same instant keep their order


def _install_log_buffer() -> JobLogBuffer:
    root = logging.getLogger("dicomnode")
    for h in root.handlers:
        if isinstance(h, JobLogBuffer):
            return h
    h = JobLogBuffer()
    root.addHandler(h)
    return h


JOB_LOG = _install_log_buffer()
