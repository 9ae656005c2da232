"""A job process's records on their way to the node (dicomnode.obs.logs): through a real multiprocessing queue, the
node's loggers get each once, tagged with the job, scrubbed, with what cannot be pickled as text.

The whole way through a node and its worker pool is tested in tests/web/test_job_logs.py."""

from __future__ import annotations

import logging
import multiprocessing
import sys
import time

from dicomnode.obs.logs import ForwardHandler, LogForwarder, _add_filters, job_log_context


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _record(name: str, level: int, msg: str, *args, exc_info=None, **extra) -> logging.LogRecord:
    r = logging.getLogger(name).makeRecord(name, level, __file__, 1, msg, args, exc_info, extra=extra)
    return r


def test_records_reach_the_node_loggers_once_tagged_and_scrubbed():
    forwarder = LogForwarder(multiprocessing.get_context("forkserver"))
    keep = _Keep()
    node_logger = logging.getLogger("dicomnode.fwdtest")
    lib_logger = logging.getLogger("highdicom")
    old = node_logger.level, lib_logger.level
    node_logger.setLevel(logging.INFO)
    node_logger.addHandler(keep)
    lib_logger.addHandler(keep)
    try:
        handler = ForwardHandler(forwarder.queue)  # what a job process has as its one handler
        _add_filters(handler)
        warning = 'The string "DOE^JANE" is unlikely to represent the intended person name'
        with job_log_context(job_id=7):
            handler.handle(_record("highdicom", logging.WARNING, warning))
            handler.handle(_record("highdicom", logging.WARNING, warning))  # the same text again: once
            handler.handle(_record("dicomnode.fwdtest", logging.INFO, "step done", step="load", seconds=0.5,
                                   lock=multiprocessing.Lock()))  # not picklable outside spawning
            try:
                raise ValueError("bad slice")
            except ValueError:
                handler.handle(_record("dicomnode.fwdtest", logging.ERROR, "job failed in %s", "load",
                                       exc_info=sys.exc_info(), job_id=8))
        handler.handle(_record("dicomnode.fwdtest", logging.DEBUG, "below the node's level"))
        deadline = time.monotonic() + 30
        while len(keep.records) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # anything more would have arrived by now
    finally:
        forwarder.stop()
        node_logger.removeHandler(keep)
        lib_logger.removeHandler(keep)
        node_logger.setLevel(old[0])
        lib_logger.setLevel(old[1])
    assert [(r.name, r.levelname) for r in keep.records] == [
        ("highdicom", "WARNING"), ("dicomnode.fwdtest", "INFO"), ("dicomnode.fwdtest", "ERROR")]
    lib, step, failed = keep.records
    assert lib.getMessage() == 'The string "<redacted>" is unlikely to represent the intended person name'
    assert lib.job_id == 7 and step.job_id == 7 and failed.job_id == 8  # a record's own job id wins
    assert step.step == "load" and step.seconds == 0.5 and isinstance(step.lock, str)
    assert failed.getMessage().startswith("job failed in load\nTraceback") and "ValueError: bad slice" in \
        failed.getMessage()
    assert not forwarder._thread.is_alive()
