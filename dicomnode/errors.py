"""Exceptions raised by dicomnode.

Every exception says what went wrong and what to do about it.

::

    DicomnodeError
     +-- ConfigError          a config file or value is invalid (names the key, the value and the fix)
     +-- SpoolError           an instance could not be stored durably
     |    +-- SpoolFullError  the disk is full / out of resources (answered with 0xA700)
     |    +-- InvalidUIDError a UID from the network breaks the UID grammar (never becomes a path)
     +-- SeriesLoadError      files could not be turned into one volume (names the file and the field)
     |    +-- SeriesRefusedError  readable, but not a series the chain analyses (a multi-plane localizer)
     +-- AnalysisError        an analysis step could not run on its input
     +-- ResultError          a result object (SEG, SR, derived series) could not be built
     +-- SendError            a C-STORE to a destination failed (refused, timed out, failure status)
     +-- ModelError           a model file is missing, not ours or of another version
     +-- RequeueJob           not a failure: the job goes back to pending without counting an attempt (the
     |                        worker or the cluster connection was lost)
     +-- WorkerMemoryError    a job ran its worker out of memory (names the series and the limit)
     +-- WorkerStartError     a local job process cannot start (names the real error)
"""

from __future__ import annotations


class DicomnodeError(Exception):
    """Base class of all dicomnode errors."""


class ConfigError(DicomnodeError):
    """An invalid configuration value.

    Parameters
    ----------
    key : str
        Dotted path of the key, e.g. ``rules[2].destinations``.
    value : object
        The offending value (shown with ``repr``).
    fix : str
        What is expected instead, phrased as advice.
    """

    def __init__(self, key: str, value: object, fix: str) -> None:
        self.key = key
        self.value = value
        self.fix = fix
        super().__init__(f"{key} = {value!r}: {fix}")


class ConfigErrors(ConfigError):
    """Several config errors at once: a file is checked whole and every error is reported."""

    def __init__(self, errors: list[ConfigError], source: str = "") -> None:
        self.errors = list(errors)
        self.source = source
        head = f"{source}: " if source else ""
        lines = "\n".join(f"  - {e}" for e in self.errors)
        Exception.__init__(self, f"{head}{len(self.errors)} configuration error(s):\n{lines}")
        self.key = self.errors[0].key if self.errors else ""
        self.value = self.errors[0].value if self.errors else None
        self.fix = self.errors[0].fix if self.errors else ""


class SpoolError(DicomnodeError):
    """An instance could not be stored."""


class SpoolFullError(SpoolError):
    """The disk is full or an I/O error occurred; the sender should keep the instance and retry later."""


class InvalidUIDError(SpoolError):
    """A UID breaks the DICOM UID grammar (digits and dots, at most 64 characters)."""


class SeriesLoadError(DicomnodeError):
    """A series could not be loaded into one volume.

    A permanent failure: the same files fail the same way, so a job that raises it fails at once, without retries
    (``dicomnode.jobs.dispatcher.PERMANENT_ERRORS``); ``process`` exits 1 and ``batch`` lists it in failures.csv.
    """


class SeriesRefusedError(SeriesLoadError):
    """A readable series that is refused on purpose: it is not one volume (e.g. a 3-plane localizer).

    The message says what the series is and why it is not analysed; nothing can be retried. Route such series away
    (a rule on ImageType or SeriesDescription) instead.
    """


class AnalysisError(DicomnodeError):
    """An analysis step could not run on its input."""


class ResultError(DicomnodeError):
    """A result object could not be built."""


class SendError(DicomnodeError):
    """A C-STORE to a destination failed."""


class ModelError(DicomnodeError):
    """A model file is missing, was not written by dicomnode, or is of an incompatible version."""


class RequeueJob(DicomnodeError):
    """The job did not fail: the worker running it or the connection to the Dask scheduler was lost.

    The dispatcher puts the job back to pending, without counting an attempt, to be claimed again after
    ``delay_seconds``. Nothing to do unless it repeats: then check that the scheduler and workers are up
    (``dicomnode status`` shows the cluster).
    """

    def __init__(self, message: str, *, delay_seconds: float = 0.0) -> None:
        super().__init__(message)
        self.delay_seconds = delay_seconds


class WorkerMemoryError(DicomnodeError):
    """A job ran its worker out of memory. The message names the series and the memory limit per worker.

    Final (not retried): raise the workers' memory limit or choose a lighter profile, then ``dicomnode jobs retry``.
    """


class WorkerStartError(DicomnodeError):
    """A local job process died before it could run its job, usually because it cannot import the package.

    The message is the real error, found by starting a Python the way the pool's forkserver starts (same
    interpreter, flags, environment and working directory) and importing what a job process imports. Fix the
    environment (the message says what is wrong), then ``dicomnode jobs retry --failed``.
    """
