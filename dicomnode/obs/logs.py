"""Log set-up for the CLI: human-readable text or JSON lines, with the structured ``extra`` fields.

The package itself only adds a ``NullHandler`` (``dicomnode/__init__.py``). Log records carry UIDs, AE titles,
addresses, counts, durations and job ids; never patient names, IDs, birth dates or accession numbers.

Libraries are another matter: pydicom and highdicom warn with the offending value quoted ("The string
"Lung_Dx-A0002" is unlikely to represent ..."), and pydicom both logs and warns the same text. So
:func:`setup_logging` (and :func:`capture_warnings` for the other commands):

* routes Python warnings into logging (as :func:`logging.captureWarnings` does, under the library's logger name:
  ``pydicom``, ``highdicom``...), so they get our formatter: one JSON object per line with ``log_format = "json"``;
* scrubs every quoted value from the records of other libraries' loggers (:func:`scrub`): ``"<redacted>"``;
* prints each library warning once per process (:class:`OnceFilter`): the same scrubbed text from the same
  library, whether it came as a log record or as a warning, is dropped the second time;
* leaves out pynetdicom's ERROR lines about a failed outgoing connection (:class:`ConnectFailureFilter`): the
  node's own line for that send carries the reason, so a failed send is one line.

Job processes of the local pool send their records to the node (:class:`LogForwarder`): in a job process the one
handler is a :class:`ForwardHandler` (scrubbed and once-filtered there already, each record tagged with the running
job's ``job_id``: :func:`job_log_context`) that puts it on a multiprocessing queue; a thread of the node takes it off
and hands it to the node's own logger of the same name, so it goes through the node's handlers (stderr in the node's
format, the console's Jobs page) exactly as a record of the node would, and only there: a job process prints
nothing itself. Without a queue (``dicomnode process``; job processes of another parent) a job process inherits the
format through ``DICOMNODE_LOG_FORMAT`` (:func:`setup_job_process_logging`).
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import pickle
import queue as queue_mod
import re
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from logging.handlers import QueueHandler
from typing import Any, Iterator

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}

#: the environment variable that passes the log format to job processes
LOG_FORMAT_ENV = "DICOMNODE_LOG_FORMAT"
REDACTED = "<redacted>"
# a quoted value: a quote not inside a word ("doesn't" is not a quote), up to the same quote not followed by a letter
_QUOTED = re.compile(r"(?<![\w])([\"'])(?:(?!\1).){0,2000}?\1(?![\w])")
_ONCE_MAX = 4096


def scrub(text: str) -> str:
    """``text`` with every quoted value replaced by ``"<redacted>"`` (library messages quote the value they reject)."""
    return _QUOTED.sub(lambda m: f"{m.group(1)}{REDACTED}{m.group(1)}", text)


def _ours(name: str) -> bool:
    return name == "dicomnode" or name.startswith("dicomnode.")


def _extras(record: logging.LogRecord) -> dict:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class ScrubFilter(logging.Filter):
    """Redacts the quoted values of records that do not come from dicomnode's own loggers (in place)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _ours(record.name):
            try:
                msg = record.getMessage()
            except Exception:  # noqa: BLE001 - a malformed library record: keep its template only
                msg = str(record.msg)
            record.msg, record.args = scrub(msg), None
        return True


class OnceFilter(logging.Filter):
    """Drops a library warning already printed by this process (same library, same scrubbed text)."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: dict[tuple[str, str], None] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if _ours(record.name) or record.levelno != logging.WARNING:
            return True
        key = (record.name.split(".")[0], record.getMessage())
        if key in self._seen:
            return False
        if len(self._seen) >= _ONCE_MAX:
            self._seen.pop(next(iter(self._seen)))
        self._seen[key] = None
        return True


class ConnectFailureFilter(logging.Filter):
    """Drops pynetdicom's own ERROR lines about an outgoing connection that failed ("Association request failed",
    "TCP Initialisation Error"): :mod:`dicomnode.net.scu` puts that reason into the SendError, and the outbox logs
    one line per failed send with it."""

    _PREFIXES = ("Association request failed", "TCP Initialisation Error")

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name.startswith("pynetdicom") and record.levelno >= logging.ERROR
                    and str(record.msg).startswith(self._PREFIXES))


def _library_of(filename: str, category: type[Warning]) -> str:
    """The top-level package a warning was raised in (``pydicom``, ``highdicom``...), from its file path."""
    parts = re.split(r"[\\/]", filename)
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            i = parts.index(marker)
            if i + 1 < len(parts):
                return parts[i + 1].removesuffix(".py")
    return "py.warnings"


def _showwarning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """``warnings.showwarning`` replacement: the warning becomes a WARNING record of its library's logger."""
    if file is not None:  # an explicit file (warnings.showwarning called by hand): keep Python's behaviour
        _original_showwarning(message, category, filename, lineno, file, line)
        return
    logger = logging.getLogger(_library_of(str(filename), category))
    logger.warning(str(message), extra={"category": category.__name__})


_original_showwarning = warnings.showwarning


def capture_warnings() -> None:
    """Python warnings go to logging (scrubbed, once each) instead of raw text on stderr. Idempotent.

    Python's own filters still decide which warnings are shown (user warnings once per place they are raised;
    deprecation and resource warnings not); :class:`OnceFilter` then keeps one of each text.
    """
    warnings.showwarning = _showwarning
    root = logging.getLogger()
    if not root.handlers:  # commands without setup_logging: a plain handler for the warnings only, scrubbed, once
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler.addFilter(lambda record: hasattr(record, "category"))  # what the command says itself is enough
        _add_filters(handler)
        root.addHandler(handler)


def _add_filters(handler: logging.Handler) -> None:
    handler.addFilter(ConnectFailureFilter())
    handler.addFilter(ScrubFilter())
    handler.addFilter(OnceFilter())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name,
               "msg": record.getMessage(), "pid": record.process, **_extras(record)}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        extra = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        line = f"{ts} {record.levelname:<7} {record.name}: {record.getMessage()}" + (f" {extra}" if extra else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(fmt: str = "text", level: int = logging.INFO) -> None:
    """Log to stderr as text or JSON lines; library warnings captured, scrubbed and printed once.

    The format is passed on to job processes started from now on (``DICOMNODE_LOG_FORMAT``).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    _add_filters(handler)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # pynetdicom logs every PDU at INFO/DEBUG, identifiers included: keep it to warnings.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.getLogger("distributed").setLevel(logging.WARNING)  # a local Dask cluster is chatty at INFO
    os.environ[LOG_FORMAT_ENV] = fmt
    capture_warnings()


def setup_job_process_logging(log_queue: Any = None, level: int | None = None) -> None:
    """In a job process: its records go to the node (``log_queue``: :class:`LogForwarder`'s queue), or, without a
    queue, to stderr in the node's log format (JSON or text) if it set one; library warnings captured either way.

    With a queue, ``level`` is the node's level for dicomnode's own records (libraries: warnings and worse, as
    before), the node's handlers filter the forwarded records as they filter its own, and nothing is printed here.
    """
    if log_queue is not None:
        handler = ForwardHandler(log_queue)
        _add_filters(handler)  # scrubbed and once-filtered before the record leaves this process
        root = logging.getLogger()
        root.handlers[:] = [handler]
        # libraries: their warnings (highdicom's INFO lines about each module it copies are not the node's news);
        # dicomnode: what the node would log itself
        root.setLevel(max(logging.WARNING, logging.INFO if level is None else level))
        logging.getLogger("dicomnode").setLevel(logging.INFO if level is None else level)
        capture_warnings()
        return
    fmt = os.environ.get(LOG_FORMAT_ENV)
    if fmt in ("text", "json"):
        setup_logging(fmt, logging.WARNING)  # the node logs the jobs' progress; a job process only its warnings
    else:
        capture_warnings()  # e.g. `dicomnode batch`: plain lines on stderr, still scrubbed and once


# -- job processes -> the node ----------------------------------------------------------------------------------
_JOB_FIELDS: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("dicomnode_job_log",
                                                                                   default=None)


@contextmanager
def job_log_context(**fields: Any) -> Iterator[None]:
    """Within the block, every record a :class:`ForwardHandler` sends carries ``fields`` (``job_id=...``) unless it
    has them already: library warnings raised while the job runs name the job too."""
    token = _JOB_FIELDS.set(fields)
    try:
        yield
    finally:
        _JOB_FIELDS.reset(token)


def _picklable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    try:
        pickle.dumps(value)
        return value
    except Exception:  # noqa: BLE001 - an extra that cannot travel goes as its text
        return str(value)


class ForwardHandler(QueueHandler):
    """A job process's one handler: each record, with its message formatted (traceback included) and the running
    job's fields added, onto the node's queue (:class:`LogForwarder`)."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        fields = _JOB_FIELDS.get()
        record = super().prepare(record)  # a copy: msg = the formatted message, no args, no exc_info
        for key, value in (fields or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        for key, value in _extras(record).items():
            setattr(record, key, _picklable(value))
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except (ValueError, OSError, queue_mod.Full):  # the node is gone or closed the queue: nowhere to log to
            pass


class LogForwarder:
    """The node's end of a pool's log queue: a thread hands each record of the job processes to the node's logger
    of the same name (``logging.getLogger(record.name).handle(record)``), where the node's handlers format, filter
    and print it once.

    One forwarder per process pool: a job process killed while writing to the queue could leave the queue's writer
    lock taken, so a replaced pool gets a new queue. The thread only reads, and stops on :meth:`stop` (after
    draining what is left), without writing a sentinel into a queue whose lock may be held.
    """

    def __init__(self, ctx: Any) -> None:
        self.queue = ctx.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dicomnode-job-logs", daemon=True)
        self._thread.start()

    @staticmethod
    def dispatch(record: logging.LogRecord) -> None:
        logger = logging.getLogger() if record.name == "root" else logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)

    def _run(self) -> None:
        while True:
            try:
                record = self.queue.get(timeout=0.2)
            except queue_mod.Empty:
                if self._stop.is_set():
                    return
                continue
            except (EOFError, OSError, ValueError):  # closed
                return
            except Exception:  # noqa: BLE001 - a record cut short by a killed writer: this queue is done
                return
            try:
                self.dispatch(record)
            except Exception:  # noqa: BLE001 - a log line must never stop the node's log
                pass

    def stop(self, timeout_seconds: float = 5.0) -> None:
        """Stop after the records already queued (waits up to ``timeout_seconds``)."""
        self._stop.set()
        self._thread.join(timeout_seconds)
