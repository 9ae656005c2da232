"""What a job is: its kind, what is queued for it, and what a worker runs.

Each kind of job is a :class:`JobKind` with two types:

* what the queue keeps (:class:`ChainJob`, :class:`RadiomicsJob`): the job's parameters, stored as JSON in the
  ``params`` column of the index next to the ``kind`` column, and a ``label`` (the profile or settings name) that
  listings and metrics show;
* what a worker runs (:class:`ChainSpec`, :class:`RadiomicsSpec`): the parameters resolved against the running
  config and the index (files, the profile itself, the output folder), built by :meth:`ChainJob.spec` /
  :meth:`RadiomicsJob.spec` when the dispatcher claims the job.

:mod:`dicomnode.jobs.kinds` maps each kind to these types and to the function that runs it. Adding a kind is one
enum member, two types here and one registry entry there.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, ClassVar, Mapping, Sequence

from dicomnode.config import NodeConfig, Profile
from dicomnode.errors import DicomnodeError
from dicomnode.store.db import NewJob

RESULTS_JSON = "results.json"


class JobKind(str, Enum):
    """What a job does; stored in the index's ``jobs.kind`` column."""

    CHAIN = "chain"            # the analysis chain of an analysis profile on an image series
    RADIOMICS = "radiomics"    # IBSI features of the regions of an RTSTRUCT/SEG, on the image series they reference


class JobSetupError(DicomnodeError):
    """The job cannot be started with the running config (e.g. its profile was removed by a reload).

    The job fails at once, without retries; fix the config (or ``dicomnode reprocess --profile``) and retry it.
    """


#: At most this many other series of a study are offered to a chain job as its anatomy (:class:`ContextSeries`).
MAX_CONTEXT_SERIES = 3


@dataclass(frozen=True, slots=True)
class ContextSeries:
    """Another image series of the job's study on the same frame of reference (its files and modality): the
    anatomy the ``scene`` step reads where the series' own image leaves a stretch unknown. Loaded only then, and
    checked when it is read (same study and frame of reference, an original image series, not a localizer)."""

    modality: str
    files: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ChainSpec:
    """What a worker needs to run the analysis chain: the series' files, the profile, where to write; ``context``:
    the study's other series on the same frame of reference (CT first, at most :data:`MAX_CONTEXT_SERIES`)."""

    kind: ClassVar[JobKind] = JobKind.CHAIN
    files: tuple[str, ...]
    profile: Profile
    out_dir: str
    uid_root: str
    job_id: int | None = None
    context: tuple[ContextSeries, ...] = ()


@dataclass(frozen=True, slots=True)
class RadiomicsSpec:
    """What a worker needs to measure regions: the image series' files, the region objects, the settings."""

    kind: ClassVar[JobKind] = JobKind.RADIOMICS
    files: tuple[str, ...]                # the image series the regions reference
    roi_files: tuple[str, ...]            # the RTSTRUCT/SEG files holding the regions
    settings: str                         # radiomics settings: a shipped name or a TOML path
    out_dir: str
    uid_root: str
    job_id: int | None = None
    roi_names: tuple[str, ...] = ()       # globs of the regions to measure; () = all


JobSpec = ChainSpec | RadiomicsSpec


@dataclass(frozen=True, slots=True)
class JobOutcome:
    series_uid: str
    files: tuple[str, ...]          # DICOM result files to send, in sending order
    sop_instance_uids: tuple[str, ...]  # of ``files``, same order
    results_json: str
    seconds: float


@dataclass(frozen=True, slots=True)
class JobSource:
    """What a queued job's spec is built from: the running config and the index's stored files of a series."""

    config: NodeConfig
    series_files: Callable[[str], Sequence[str]]   # series UID -> paths of its stored instances
    # series UID -> the study's other complete image series on its frame of reference: (modality, series UID), the
    # preferred anatomy first (None: no study context, e.g. a source without an index)
    study_context: Callable[[str], Sequence[tuple[str, str]]] | None = None


@dataclass(frozen=True, slots=True)
class ChainJob:
    """A queued analysis-chain job: the profile's name (resolved from the rule and modality once, at routing)."""

    kind: ClassVar[JobKind] = JobKind.CHAIN
    completed_message: ClassVar[str] = "series complete"
    profile: str

    @property
    def label(self) -> str:
        return self.profile

    def describe(self, depends_on: str | None) -> dict[str, Any]:
        """The job's fields in log lines and audit events."""
        return {"profile": self.profile}

    def params(self) -> dict[str, Any]:
        return {"profile": self.profile}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "ChainJob":
        return cls(str(params["profile"]))

    def spec(self, *, series_uid: str, depends_on: str | None, rule: str, source: JobSource, out_dir: str,
             job_id: int) -> ChainSpec:
        try:
            profile = source.config.profiles[self.profile]
        except KeyError:
            raise JobSetupError(f"profile {self.profile!r} is not in the config any more") from None
        context: tuple[ContextSeries, ...] = ()
        if source.study_context is not None and "scene" in profile.steps:
            siblings = [(m, uid) for m, uid in source.study_context(series_uid) if uid != series_uid]
            context = tuple(ContextSeries(m, tuple(source.series_files(uid)))
                            for m, uid in siblings[:MAX_CONTEXT_SERIES])
        return ChainSpec(files=tuple(source.series_files(series_uid)), profile=profile, out_dir=out_dir,
                         uid_root=source.config.node.uid_root, job_id=job_id,
                         context=tuple(c for c in context if c.files))


@dataclass(frozen=True, slots=True)
class RadiomicsJob:
    """A queued radiomics job: the settings of its rule. The job's series holds the regions; the images are the
    series it depends on (``depends_on`` in the index), and the rule's ``roi_names`` are read when it starts."""

    kind: ClassVar[JobKind] = JobKind.RADIOMICS
    completed_message: ClassVar[str] = "region series complete; radiomics job waits for its image series"
    settings: str

    @property
    def label(self) -> str:
        return self.settings

    def describe(self, depends_on: str | None) -> dict[str, Any]:
        """The job's fields in log lines and audit events."""
        return {"radiomics": self.settings, "image_series_uid": depends_on}

    def params(self) -> dict[str, Any]:
        return {"settings": self.settings}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "RadiomicsJob":
        return cls(str(params["settings"]))

    def spec(self, *, series_uid: str, depends_on: str | None, rule: str, source: JobSource, out_dir: str,
             job_id: int) -> RadiomicsSpec:
        cfg = source.config
        found = next((r for r in cfg.rules if r.name == rule), None)
        return RadiomicsSpec(files=tuple(source.series_files(depends_on or "")),
                             roi_files=tuple(source.series_files(series_uid)), settings=self.settings,
                             out_dir=out_dir, uid_root=cfg.node.uid_root, job_id=job_id,
                             roi_names=found.roi_names if found else ())


QueuedJob = ChainJob | RadiomicsJob


def new_job(job: QueuedJob, *, rule: str, destinations: Sequence[str] = (), depends_on: str | None = None) -> NewJob:
    """The index row of a job to queue: its kind, parameters and label in their own columns."""
    return NewJob(rule, job.kind.value, job.params(), job.label, tuple(destinations), depends_on)


def input_digest(sop_instance_uids: Sequence[str]) -> str:
    """A digest of the set of source instances: a series that received more instances gets new result UIDs."""
    return hashlib.sha256("\\".join(sorted(sop_instance_uids)).encode()).hexdigest()[:16]
