"""Profiles: ordered lists of configured steps run over one volume.

A step is a function ``(ctx: Context, params: Mapping) -> None`` that reads and extends the :class:`Context`
(pure data: arrays, label maps, measurements). Steps are registered by name in :data:`STEPS`; a profile
(``[profiles.NAME]`` in the config, shipped ones in ``conf/profiles/``) lists step names and gives each a table of
parameters. The runner times each step and records its peak memory (through a meter passed in by the caller, so
that this module reads no files), and records a failing *optional* step (``optional = true`` in its table) without
losing the others; a failing required step raises :class:`~dicomnode.errors.AnalysisError` naming the step.

A step says which of the context's large intermediates (:data:`RELEASABLE`: the denoised working image and the
class posteriors, each as large as the series or larger) it reads (``@step(name, reads=...)``). Between steps the
runner lets go of an intermediate that no later step of the run reads: ``posteriors`` becomes None and ``volume``
the ``original`` again, so the later steps (features, scene...) run without them in memory. The posteriors leave
their per-class mean and SD behind (``ctx.class_stats``, :func:`class_statistics`: all that ``detect`` reads of
them), so detect runs without them too. A step that does not say what it reads is taken to read them all, so nothing
is released before it.
"""

from __future__ import annotations

import time
import traceback as tb
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Collection, Mapping

import numpy as np

from dicomnode.analysis.threads import pin_blas_threads
from dicomnode.analysis.volume import LabelMap, Measurement, Volume
from dicomnode.errors import AnalysisError

if TYPE_CHECKING:
    from dicomnode.analysis.scene_context import StudySibling


@dataclass
class Context:
    """What the steps of one run share. Mutable on purpose: each step adds what it made."""

    volume: Volume                       # the working image (enhanced/denoised steps replace it)
    original: Volume                     # as loaded: features are measured on it unless a step says otherwise
    header: Mapping[str, str] = field(default_factory=dict)  # plain strings: BodyPartExamined, SeriesDescription...
    labels: LabelMap = field(default_factory=LabelMap)
    measurements: dict[int, list[Measurement]] = field(default_factory=dict)  # per segment number
    posteriors: np.ndarray | None = None  # (K, Z, Y, X) class posteriors, uint8 steps of 1/255 (POSTERIOR_SCALE)
    classes: tuple[str, ...] = ()
    # mean and SD of each class's intensity, weighted by the posteriors (:func:`class_statistics`): kept when the
    # runner releases the posteriors, for the steps that need only these (detect)
    class_stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    feature_maps: dict[str, np.ndarray] = field(default_factory=dict)
    derived: dict[str, Volume] = field(default_factory=dict)   # synthesised series, by name
    findings: list[dict[str, Any]] = field(default_factory=list)
    scene: dict[str, Any] | None = None
    classifications: list[dict[str, Any]] = field(default_factory=list)
    similarities: list[dict[str, Any]] = field(default_factory=list)
    corrections: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    # other image series of the same study and frame of reference, CT first, loaded only when a step asks (the scene
    # step, for the stretches its own image leaves unknown: dicomnode.analysis.scene_context)
    siblings: "tuple[StudySibling, ...]" = ()
    # digests of the other series the results depend on (a sibling the scene borrowed regions from): the result
    # UIDs include them, so a re-run with another sibling makes new objects instead of reusing the UIDs
    inputs: list[str] = field(default_factory=list)
    # what the steps after the running one read of :data:`READABLE` (set by :func:`run_steps` before each step): a
    # step that is the last reader of the working image may let go of it as soon as it has taken what it needs
    # (the detect step on a PET keeps the body's box only). Outside the runner: everything, so nothing is let go.
    later_reads: frozenset[str] = field(default_factory=lambda: READABLE)


@dataclass(frozen=True, slots=True)
class StepRecord:
    name: str
    seconds: float
    peak_rss_mb: float
    ok: bool = True
    optional: bool = False
    error: str = ""


StepFn = Callable[[Context, Mapping[str, Any]], None]
STEPS: dict[str, StepFn] = {}

#: The large intermediates of a :class:`Context` that the runner releases once no later step reads them.
RELEASABLE: frozenset[str] = frozenset({"volume", "posteriors"})
#: What a step may say it reads: :data:`RELEASABLE`, and ``class_stats`` (the posteriors' per-class mean and SD,
#: which the runner computes when it releases the posteriors only if a later step reads them).
READABLE: frozenset[str] = RELEASABLE | {"class_stats"}
#: Per registered step, which of :data:`READABLE` it reads (all of them when the step did not say).
STEP_READS: dict[str, frozenset[str]] = {}


def step(name: str, *, reads: "Collection[str] | None" = None) -> Callable[[StepFn], StepFn]:
    """Register a step under ``name``; ``reads`` names the fields of :data:`READABLE` it reads (default: all)."""
    needed = READABLE if reads is None else frozenset(reads)
    if not needed <= READABLE:
        raise ValueError(f"step {name!r}: reads {sorted(needed - READABLE)}: only {sorted(READABLE)} are tracked")

    def register(fn: StepFn) -> StepFn:
        STEPS[name] = fn
        STEP_READS[name] = needed
        return fn
    return register


def class_statistics(image: np.ndarray, posteriors: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """Mean and SD of each intensity class of ``image``, weighted by its ``posteriors`` (K, Z, Y, X), on every 2nd
    voxel per axis; classes with no weight are left out; None when none has any."""
    img = image[::2, ::2, ::2]
    means, sds = [], []
    for k in range(posteriors.shape[0]):
        w = posteriors[k, ::2, ::2, ::2]
        s = float(w.sum())
        if s <= 0:
            continue
        m = float((w * img).sum() / s)
        means.append(m)
        sds.append(float(np.sqrt(max((w * (img - m) ** 2).sum() / s, 1e-12))))
    return (tuple(means), tuple(sds)) if means else None


def _reads(steps: "Collection[str]") -> frozenset[str]:
    """What ``steps`` read of :data:`READABLE` (a step not registered reads everything)."""
    needed: set[str] = set()
    for name in steps:
        needed |= STEP_READS.get(name, READABLE)
    return frozenset(needed)


def _release(ctx: Context, later_steps: "Collection[str]") -> None:
    """Drop the intermediates that none of ``later_steps`` reads (a step not registered reads everything). The
    posteriors leave their class statistics behind (``ctx.class_stats``, of the working volume at that moment) when
    a later step reads them."""
    needed = _reads(later_steps)
    if "posteriors" not in needed:
        if ctx.posteriors is not None and ctx.classes and "class_stats" in needed:
            ctx.class_stats = class_statistics(ctx.volume.array, ctx.posteriors)
        ctx.posteriors = None
    if "volume" not in needed:
        ctx.volume = ctx.original


MeterFactory = Callable[[], Any]  # a context manager with .peak_rss_mb after exit


def run_steps(ctx: Context, steps: list[str] | tuple[str, ...], params: Mapping[str, Mapping[str, Any]], *,
              meter: MeterFactory | None = None,
              progress: Callable[[str], None] | None = None,
              between_steps: Callable[[], Any] | None = None) -> list[StepRecord]:
    """Run ``steps`` in order over ``ctx``; return one record per step.

    Before each step after the first, the intermediates that neither it nor a later step reads are released
    (see the module's docstring); after the last step nothing more is released. ``between_steps`` (the job
    process gives the freed memory back to the system with it) is called before each step, after that release
    and before the step's meter starts. While a step runs, ``ctx.later_reads`` says what the steps after it read."""
    pin_blas_threads()  # the steps' threads are their own; the same values on any machine (threads.pin_blas_threads)
    records: list[StepRecord] = []
    for i, name in enumerate(steps):
        if i > 0:
            _release(ctx, steps[i:])
        if between_steps is not None:
            between_steps()
        fn = STEPS.get(name)  # registered by dicomnode.steps.registry()
        if fn is None:
            raise AnalysisError(f"unknown step {name!r}; known steps: {', '.join(sorted(STEPS))}")
        p = dict(params.get(name, {}))
        ctx.later_reads = _reads(steps[i + 1:])
        optional = bool(p.pop("optional", False))
        if progress is not None:
            progress(name)
        m = meter() if meter is not None else nullcontext()
        t0 = time.perf_counter()
        err = ""
        with m:
            try:
                fn(ctx, p)
            except Exception as e:  # noqa: BLE001 - recorded, then re-raised unless optional
                err = f"{type(e).__name__}: {e}"
                if not optional:
                    raise AnalysisError(f"step {name!r} failed: {err}") from e
                ctx.notes.append(f"optional step {name} failed: {err}")
                ctx.notes.append(tb.format_exc(limit=3))
            finally:
                ctx.later_reads = READABLE
        seconds = time.perf_counter() - t0
        peak = float(getattr(m, "peak_rss_mb", 0.0) or 0.0)
        records.append(StepRecord(name, round(seconds, 4), round(peak, 1), ok=not err, optional=optional, error=err))
    return records

