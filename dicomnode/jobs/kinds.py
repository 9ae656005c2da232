"""The registry of job kinds: for each :class:`~dicomnode.jobs.spec.JobKind`, what the queue keeps and what runs it.

:func:`run` is the one function every executor runs (a local job process, a Dask worker): it looks the runner up by
the spec's kind. :func:`queued` turns a row of the index (``kind`` + ``params`` columns) back into its typed job;
:func:`series_route` turns a routing decision into what completing the series queues.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from dicomnode.analysis.threads import pin_blas_threads
from dicomnode.jobs.chain import run_chain
from dicomnode.jobs.radiomics import run_radiomics
from dicomnode.jobs.spec import ChainJob, JobKind, JobOutcome, JobSpec, QueuedJob, RadiomicsJob, new_job
from dicomnode.jobs.workerproc import tune_malloc
from dicomnode.routing import NO_RULE_MATCHED, RouteDecision
from dicomnode.store.db import SeriesState
from dicomnode.store.series import SeriesRoute


@dataclass(frozen=True, slots=True)
class Kind:
    queued: type                              # ChainJob, RadiomicsJob: ``from_params(params)``
    run: Callable[[Any], JobOutcome]          # spec of this kind -> outcome (in the worker)


KINDS: dict[JobKind, Kind] = {
    JobKind.CHAIN: Kind(ChainJob, run_chain),
    JobKind.RADIOMICS: Kind(RadiomicsJob, run_radiomics),
}


def run(spec: JobSpec) -> JobOutcome:
    """Run a job of any kind (what executors submit). Raises a DicomnodeError on bad input."""
    tune_malloc()  # the same allocation policy in a pool worker, a Dask worker and `dicomnode process`
    pin_blas_threads()  # one BLAS thread: the same values in every executor and on any machine
    return KINDS[spec.kind].run(spec)


def queued(kind: str, params: Mapping[str, Any]) -> QueuedJob:
    """The typed job of an index row (its ``kind`` and ``params`` columns)."""
    return KINDS[JobKind(kind)].queued.from_params(params)


def series_route(decision: RouteDecision, *, image_series_uid: str | None = None) -> SeriesRoute:
    """What completing a series does, from its routing decision: the job to queue, or the state it ends in.

    A radiomics decision needs the image series the regions reference (``image_series_uid``); without one the
    series is ignored, saying so."""
    queued: QueuedJob | None = None
    if decision.radiomics is not None and image_series_uid is None:
        return SeriesRoute(decision.rule.name if decision.rule else None, "region object references no image series",
                           None, SeriesState.IGNORED)
    if decision.radiomics is not None:
        queued = RadiomicsJob(decision.radiomics)
    elif decision.profile is not None:
        queued = ChainJob(decision.profile.name)  # the profile is resolved here, once: rule, else modality default
    if queued is None or decision.rule is None:
        state = SeriesState.UNROUTED if decision.reason == NO_RULE_MATCHED else SeriesState.IGNORED
        return SeriesRoute(None, decision.reason, None, state)
    return SeriesRoute(decision.rule.name, decision.reason,
                       new_job(queued, rule=decision.rule.name, destinations=decision.destinations,
                               depends_on=image_series_uid if queued.kind is JobKind.RADIOMICS else None))
