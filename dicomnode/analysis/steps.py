"""Adapters that run the analysis functions as profile steps over a :class:`~dicomnode.analysis.pipeline.Context`.

Each adapter reads its parameters (checked by the function it calls, unknown keys refused), calls pure functions
and stores what they return in the context. Step names are the entries of a profile's ``steps`` list and the names
of its per-step tables (``[profiles.NAME.STEP]``).

| step | what | parameters |
|---|---|---|
| ``enhance`` | replaces the working image | ``method`` = "background_blend" (alpha, background_sigma_mm) / "window" (center, width) / "clahe" (clip_limit, kernel_size_mm, value_range) |
| ``denoise`` | replaces the working image | ``method`` = "gaussian" (sigma_mm) / "box_mean" (size_mm or n) / "median" (size_mm) / "nl_means" (h_factor, patch_size, patch_distance) |
| ``segment`` | makes the label map | ``method`` = "auto" (CT: ``segment_ct``, others: ``segment_generic``) / "ct" / "generic" / "foreground" (threshold); plus the chosen function's keywords |
| ``foreground`` | the simple body/foreground segmentation | ``threshold`` |
| ``correct`` | cleans the label map | ``min_volume_ml``, ``fill_holes``, ``slice_wise``, ``posterior_sigma_mm``, ``posterior_iterations`` |
| ``features`` | measures every segment | see :class:`~dicomnode.analysis.region_features.RegionFeatureSettings` |
| ``measure`` | volume, mean, SD of every segment | none |
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from scipy import ndimage as ndi

from dicomnode.analysis import correct as _correct
from dicomnode.analysis import denoise as _denoise
from dicomnode.analysis import enhance as _enhance
from dicomnode.analysis import segment as _segment
from dicomnode.analysis.codes import ENTIRE_BODY
from dicomnode.analysis.measure import basic_measurements
from dicomnode.analysis.pipeline import Context, step
from dicomnode.analysis.region_features import RegionFeatureSettings, segment_features
from dicomnode.analysis.threads import thread_budget as _thread_budget
from dicomnode.analysis.threads import thread_map
from dicomnode.analysis.volume import CATEGORY_ANATOMICAL_STRUCTURE, LabelMap, Segment, SegmentInfo


def _check_keys(name: str, params: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = set(params) - allowed
    if unknown:
        raise ValueError(f"step {name}: unknown parameter(s) {sorted(unknown)}; allowed: {sorted(allowed)}")


def _method(name: str, params: Mapping[str, Any], choices: dict[str, Any], default: str) -> tuple[str, dict]:
    p = dict(params)
    method = str(p.pop("method", default))
    if method not in choices:
        raise ValueError(f"step {name}: method {method!r} is unknown; choose one of {sorted(choices)}")
    return method, p


def foreground(image: np.ndarray, *, threshold: float) -> np.ndarray:
    """Threshold, keep the largest 3-D component, fill holes slice by slice."""
    mask = image > threshold
    lab, n = ndi.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    mask = lab == int(np.argmax(sizes))
    for k in range(mask.shape[0]):
        mask[k] = ndi.binary_fill_holes(mask[k])
    return mask


@step("foreground", reads=("volume",))
def _foreground_step(ctx: Context, params: Mapping[str, Any]) -> None:
    """The node's first, simple segmentation: body/foreground by threshold + largest component + holes filled."""
    _check_keys("foreground", params, {"threshold"})
    img = ctx.volume.array
    if "threshold" in params:
        thr = float(params["threshold"])
    elif ctx.volume.modality == "CT":
        thr = -500.0
    else:
        from skimage.filters import threshold_otsu
        thr = float(threshold_otsu(img[:: max(1, img.shape[0] // 16)]))
    mask = foreground(img, threshold=thr)
    if not mask.any():
        ctx.labels = LabelMap(ctx.labels.segments, ctx.labels.not_found + ("foreground",))
        ctx.notes.append(f"foreground: nothing above {thr:g}")
        return
    info = SegmentInfo(ctx.labels.next_number(), "foreground", CATEGORY_ANATOMICAL_STRUCTURE, ENTIRE_BODY,
                       "foreground.threshold")
    ctx.labels = ctx.labels.add(info, mask)


@step("enhance", reads=("volume",))
def _enhance_step(ctx: Context, params: Mapping[str, Any]) -> None:
    v = ctx.volume
    method, p = _method("enhance", params, {"background_blend": 1, "window": 1, "clahe": 1}, "background_blend")
    if method == "background_blend":
        out = _enhance.background_blend(v.array, v.spacing_mm, **p)
    elif method == "window":
        out = _enhance.window(v.array, **p)
    else:
        if "value_range" in p:
            p["value_range"] = tuple(p["value_range"])
        out = _enhance.clahe(v.array, v.spacing_mm, **p)
        ctx.volume = v.with_array(out.astype(np.float32, copy=False), unit="")
        ctx.notes.append("enhance.clahe: working image mapped to [0, 1]")
        return
    ctx.volume = v.with_array(out.astype(np.float32, copy=False))


@step("denoise", reads=("volume",))
def _denoise_step(ctx: Context, params: Mapping[str, Any]) -> None:
    v = ctx.volume
    method, p = _method("denoise", params, {"gaussian": 1, "box_mean": 1, "median": 1, "nl_means": 1}, "gaussian")
    if method == "nl_means":
        res = _denoise.nl_means(v.array, v.spacing_mm, **p)
        out = res.denoised
        ctx.notes.append(f"denoise.nl_means: estimated noise sigma {float(res.sigma_estimated):.4g} {v.unit}".strip())
    else:
        out = getattr(_denoise, method)(v.array, v.spacing_mm, **p)
    mode = "3-D" if _denoise.is_volumetric(v.spacing_mm) else "slice-wise"
    ctx.notes.append(f"denoise.{method}: {mode}")
    ctx.volume = v.with_array(out.astype(np.float32, copy=False))


@step("segment", reads=("volume",))
def _segment_step(ctx: Context, params: Mapping[str, Any]) -> None:
    v = ctx.volume
    method, p = _method("segment", params, {"auto": 1, "ct": 1, "generic": 1, "foreground": 1}, "auto")
    if method == "foreground":
        _foreground_step(ctx, p)
        return
    if method == "auto":
        method = "ct" if v.modality == "CT" and v.unit == "HU" else "generic"
    for k in ("bone_range_hu", "adipose_range_hu", "soft_tissue_range_hu"):
        if k in p:
            p[k] = tuple(p[k])
    if method == "ct":
        res = _segment.segment_ct(v.array, v.spacing_mm, direction=np.asarray(v.direction), **p)
    else:
        res = _segment.segment_generic(v.array, v.spacing_mm, rng=ctx.rng, **p)
    # renumber after what earlier steps made
    base = ctx.labels.next_number() - 1
    labels = ctx.labels
    for s in res.labels.segments:
        info = SegmentInfo(base + s.info.number, s.info.label, s.info.category, s.info.type, s.info.algorithm)
        labels = LabelMap(labels.segments + (Segment(info, s.crop, box=s.box, shape=s.shape),), labels.not_found)
    ctx.labels = LabelMap(labels.segments, ctx.labels.not_found + tuple(res.labels.not_found))
    ctx.posteriors = res.posteriors
    ctx.classes = tuple(res.classes)
    ctx.notes.extend(res.notes)


@step("correct", reads=("volume", "posteriors"))
def _correct_step(ctx: Context, params: Mapping[str, Any]) -> None:
    p = dict(params)
    sigma = p.pop("posterior_sigma_mm", None)
    iterations = int(p.pop("posterior_iterations", 3))
    if "hole_filled_labels" in p:
        p["hole_filled_labels"] = tuple(p["hole_filled_labels"])
    sp = ctx.volume.spacing_mm
    if sigma is not None and ctx.posteriors is not None and ctx.classes:
        # in place: the posteriors before smoothing are read by nothing after this step (the context holds the
        # smoothed ones), so they are not kept beside them
        post = ctx.posteriors if ctx.posteriors.flags.writeable else None
        _correct._check_smoothing(ctx.posteriors, sp, sigma_mm=float(sigma), iterations=iterations, out=post)
        # the class masks are replaced whole by the smoothed classes: let go of them before smoothing (the class
        # index map and the slabs' work arrays are then not held beside them); the map is rebuilt at the end
        segs = list(ctx.labels.segments)
        not_found = ctx.labels.not_found
        is_class = [s.info.label in ctx.classes for s in segs]
        infos = [(s.info, type(s)) for s in segs]
        for i in range(len(segs)):
            if is_class[i]:
                segs[i] = None  # type: ignore[call-overload]
        ctx.labels = LabelMap((), not_found)
        try:
            sm = _correct.smooth_posteriors(ctx.posteriors, sp, sigma_mm=float(sigma), iterations=iterations,
                                            out=post)
        except Exception:  # the masks before smoothing are gone: say so, keep the other segments
            lost = tuple(info.label for (info, _), c in zip(infos, is_class) if c)
            ctx.labels = LabelMap(tuple(s for s in segs if s is not None), not_found + lost)
            ctx.notes.append(f"correct: posterior smoothing failed; class segments {', '.join(lost)} dropped")
            raise
        ctx.corrections["posterior_smoothing"] = int(sm.voxels_changed)
        ctx.posteriors = sm.posteriors
        classes = sm.labels
        del sm, post
        for i, ((info, kind), c) in enumerate(zip(infos, is_class)):
            if c:
                segs[i] = kind(info, classes == ctx.classes.index(info.label))
        ctx.labels = LabelMap(tuple(segs), not_found)
        del classes, segs  # the class index map: not held while cleaning
        owned = [i for i, c in enumerate(is_class) if c]  # the masks just made: nothing else holds them
    else:
        owned = []
    # the segments handed over one by one: each mask before correction is let go as soon as it is replaced (the
    # context holds none of them meanwhile; the options are checked before any is touched)
    segs = list(ctx.labels.segments)
    not_found = ctx.labels.not_found
    ctx.labels = LabelMap((), not_found)
    try:
        labels, changed = _correct.correct_segments(segs, not_found, sp, owned=owned, **p)
    except Exception:
        if all(s is not None for s in segs):  # refused before any was touched (bad options): the map as it was
            ctx.labels = LabelMap(tuple(segs), not_found)  # type: ignore[arg-type]
        raise
    del segs
    # a segment emptied by the correction is dropped and listed as not found
    kept = tuple(s for s in labels.segments if s.any())
    dropped = tuple(s.info.label for s in labels.segments if not s.any())
    ctx.labels = LabelMap(kept, labels.not_found + dropped)
    for k, n in changed.items():
        ctx.corrections[k] = ctx.corrections.get(k, 0) + int(n)


@step("features", reads=())
def _features_step(ctx: Context, params: Mapping[str, Any]) -> None:
    settings = RegionFeatureSettings.from_params(params)
    img = ctx.original
    segs = list(ctx.labels.segments)
    budget = _thread_budget()
    # with a budget of several threads the segments are measured side by side, one thread each (numpy, scipy and
    # the FFTs release the GIL), the largest first; their measurements and notes stay in the segments' order
    order = sorted(range(len(segs)), key=lambda i: -segs[i].count())
    inner = 1 if budget > 1 and len(segs) > 1 else None
    # each segment measured on its box (plus the margin the features read), not through a whole-grid mask
    made = dict(zip(order, thread_map(lambda i: segment_features(img.array, segs[i], img.spacing_mm,
                                                                   unit=img.unit, settings=settings, workers=inner),
                                          order, budget)))
    for seg, (meas, notes) in zip(segs, (made[i] for i in range(len(segs)))):
        ctx.measurements.setdefault(seg.info.number, []).extend(meas)
        ctx.notes.extend(f"{seg.info.label}: {n}" for n in notes)


@step("measure", reads=())
def _measure_step(ctx: Context, params: Mapping[str, Any]) -> None:
    """Volume (mL), mean and SD of every segment, on the original (not denoised) intensities."""
    _check_keys("measure", params, set())
    for seg in ctx.labels.segments:
        ctx.measurements.setdefault(seg.info.number, []).extend(
            basic_measurements(ctx.original.array, seg.mask, ctx.original.spacing_mm, unit=ctx.original.unit))
