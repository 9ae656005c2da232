"""Adapters that run the analysis functions as profile steps over a :class:`~dicomnode.analysis.pipeline.Context`.

Each adapter reads its parameters (checked by the function it calls), calls pure functions and stores what they
return in the context. Step names are the keys of ``[profiles.NAME]`` tables.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from scipy import ndimage as ndi

from dicomnode.analysis.measure import basic_measurements
from dicomnode.analysis.pipeline import Context, step
from dicomnode.analysis.volume import CATEGORY_ANATOMICAL_STRUCTURE, Code, LabelMap, SegmentInfo

_ENTIRE_BODY = Code("38266002", "SCT", "Entire body")


def _check_keys(name: str, params: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = set(params) - allowed
    if unknown:
        raise ValueError(f"step {name}: unknown parameter(s) {sorted(unknown)}; allowed: {sorted(allowed)}")


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


@step("foreground")
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
    info = SegmentInfo(ctx.labels.next_number(), "foreground", CATEGORY_ANATOMICAL_STRUCTURE, _ENTIRE_BODY,
                       "foreground.threshold")
    ctx.labels = ctx.labels.add(info, mask)


@step("measure")
def _measure_step(ctx: Context, params: Mapping[str, Any]) -> None:
    """Volume (mL), mean and SD of every segment, on the original (not denoised) intensities."""
    _check_keys("measure", params, set())
    for seg in ctx.labels.segments:
        ctx.measurements.setdefault(seg.info.number, []).extend(
            basic_measurements(ctx.original.array, seg.mask, ctx.original.spacing_mm, unit=ctx.original.unit))
