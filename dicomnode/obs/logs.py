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

Job processes inherit the format through ``DICOMNODE_LOG_FORMAT`` (:func:`setup_job_process_logging`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
import warnings

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


def setup_job_process_logging() -> None:
    """In a job process: the node's log format (JSON or text) if it set one, and library warnings captured."""
    fmt = os.environ.get(LOG_FORMAT_ENV)
    if fmt in ("text", "json"):
        setup_logging(fmt, logging.WARNING)  # the node logs the jobs' progress; a job process only its warnings
    else:
        capture_warnings()  # e.g. `dicomnode batch`: plain lines on stderr, still scrubbed and once
