"""Features of the chain's own segments, following the IBSI-1 definitions, within the node's time budget.

The chain measures every segment it makes (body, lungs, tissue classes...), some of which span most of the volume.
It computes, per segment:

* volume (mL by voxel counting), mean and standard deviation (always);
* the IBSI intensity statistics and intensity-volume histogram on the native grid (exact, cheap);
* the IBSI intensity histogram after fixed-bin-size discretisation (``bin_width`` from ``bin_lower``) or
  fixed-bin-number (``n_bins``);
* IBSI morphology on the segment's mask; a mask with more than ``morphology_max_voxels`` voxels is block-averaged
  (partial-volume threshold 0.5) onto a coarser grid first, and the grid used is reported; the intensity-weighted
  morphology features (centre of mass shift, integrated intensity, Moran's I, Geary's C) are computed only for
  segments of at most ``moran_max_voxels`` voxels (their cost grows with the bounding box);
* IBSI local intensity peaks for segments of at most ``local_max_voxels`` voxels;
* optionally the six texture families (3D aggregations by default) on the discretised levels.

For IBSI-compliant radiomics with the standard image processing (interpolation, re-segmentation...) on one region
use :mod:`dicomnode.analysis.radiomics` (``dicomnode radiomics``) instead.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from dicomnode.analysis.features.base import FeatureValue
from dicomnode.analysis.features.discretise import discretise_fixed_bin_number, discretise_fixed_bin_size
from dicomnode.analysis.features.histogram import histogram_features, ivh_features
from dicomnode.analysis.features.intensity import local_intensity_features, statistics_features
from dicomnode.analysis.features.morphology import morphology_features
from dicomnode.analysis.features.processing import roi_bounding_box
from dicomnode.analysis.measure import measurements_of_values
from dicomnode.analysis.threads import thread_budget
from dicomnode.analysis.volume import Measurement, Segment, grow_box, mask_box

#: Segments of at least this many voxels have their morphology computed in a thread beside the intensity families.
_THREADED_MIN_VOXELS = 100_000

FAMILIES = ("morphology", "intensity statistics", "intensity histogram", "intensity-volume histogram",
            "local intensity", "texture")


@dataclass(frozen=True, slots=True)
class RegionFeatureSettings:
    """Which features the chain computes per segment, and how (all lengths in mm, intensities in image units)."""

    families: tuple[str, ...] = ("morphology", "intensity statistics", "intensity histogram",
                                 "intensity-volume histogram")
    bin_width: float | None = 25.0        # fixed bin size (image unit); None: use n_bins
    bin_lower: float | None = None        # lower bound of the first bin; None: the segment's minimum
    n_bins: int = 32                      # fixed bin number, when bin_width is None
    morphology_max_voxels: int = 1_000_000
    moran_max_voxels: int = 100_000
    local_max_voxels: int = 2_000_000
    texture_aggregations: tuple[str, ...] = ("3D",)

    def __post_init__(self) -> None:
        bad = [f for f in self.families if f not in FAMILIES]
        if bad:
            raise ValueError(f"features.families: unknown {bad}; choose from {list(FAMILIES)}")
        if self.bin_width is not None and not self.bin_width > 0:
            raise ValueError(f"features.bin_width must be > 0 (image units), got {self.bin_width}")
        if self.n_bins < 2:
            raise ValueError(f"features.n_bins must be >= 2, got {self.n_bins}")
        for name in ("morphology_max_voxels", "moran_max_voxels", "local_max_voxels"):
            if getattr(self, name) < 1:
                raise ValueError(f"features.{name} must be >= 1")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "RegionFeatureSettings":
        allowed = set(cls.__dataclass_fields__)  # type: ignore[attr-defined]
        unknown = set(params) - allowed
        if unknown:
            raise ValueError(f"step features: unknown parameter(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        kw = dict(params)
        for k in ("families", "texture_aggregations"):
            if k in kw:
                kw[k] = tuple(kw[k])
        if "bin_width" in kw and kw["bin_width"] in (0, "none", None):
            kw["bin_width"] = None
        return cls(**kw)


def _unit_of(family: str, feature: str, unit: str) -> str:
    """UCUM unit of an IBSI feature value, given the image's UCUM unit."""
    f = feature.lower()
    if family == "morphology":
        if "density" in f or f in ("compactness 1", "compactness 2", "spherical disproportion", "sphericity",
                                   "asphericity", "elongation", "flatness", "moran's i index", "geary's c measure"):
            return "1"
        if "volume" in f:
            return "mm3"
        if "area" in f:
            return "mm2"
        if "surface to volume" in f:
            return "/mm"
        if "integrated intensity" in f:
            return f"{unit}.mm3" if unit != "1" else "mm3"
        return "mm"
    if family in ("intensity statistics", "local intensity"):
        if f in ("variance", "energy"):
            return f"({unit})2" if unit != "1" else "1"
        if f in ("skewness", "(excess) kurtosis", "kurtosis", "coefficient of variation",
                 "quartile coefficient of dispersion"):
            return "1"
        return unit
    if family == "intensity-volume histogram":
        if f.startswith("volume") or "volume fraction" in f:
            return "1"
        return unit if "intensity" in f else "1"
    return "1"


def _ucum(unit: str) -> str:
    return {"HU": "[hnsf'U]", "SUV": "{SUVbw}g/ml"}.get(unit, "1")


def _name(fv: FeatureValue) -> str:
    return f"{fv.family}/{fv.feature}" + (f"/{fv.aggregation}" if fv.aggregation else "")


def _block_downsample(mask: np.ndarray, spacing_mm: tuple[float, float, float],
                      max_voxels: int, *, box: tuple[slice, ...] | None = None
                      ) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Average ``mask`` over integer blocks (threshold 0.5) until it has at most ``max_voxels`` set voxels.

    ``box``: ``roi_bounding_box(mask, margin_voxels=1)`` when the caller has it. A block is set when at least half
    of its voxels are: its count of set voxels ``c`` of ``P`` satisfies ``2 c >= P``, counted in integers (the same
    blocks as the float32 block mean >= 0.5: the mean of a block is ``c / P`` rounded to float32, which is >= 0.5
    exactly when ``c / P`` is, for blocks of fewer than 2**24 voxels), one strided add per voxel of a block."""
    if box is None:
        box = roi_bounding_box(mask, margin_voxels=1)
    m = mask[box]
    n = int(np.count_nonzero(m))
    target = min(spacing_mm) * 1.25
    factors = (1, 1, 1)
    while True:
        factors = tuple(max(1, int(round(target / s))) for s in spacing_mm)
        est = n / float(np.prod(factors))
        if est <= max_voxels:
            break
        target *= 1.25
    pad = [(0, (-m.shape[i]) % factors[i]) for i in range(3)]
    mp = np.pad(m, pad)
    z, y, x = (mp.shape[i] // factors[i] for i in range(3))
    size = int(np.prod(factors))
    counts = np.zeros((z, y, x), dtype=np.uint8 if size < 256 else np.uint16 if size < 65536 else np.uint32)
    for i in range(factors[0]):
        for j in range(factors[1]):
            for k in range(factors[2]):
                counts += mp[i::factors[0], j::factors[1], k::factors[2]]
    return counts >= (size + 1) // 2, tuple(spacing_mm[i] * factors[i] for i in range(3))  # type: ignore[return-value]


def feature_margin_voxels(spacing_mm: tuple[float, float, float]) -> tuple[int, int, int]:
    """The widest margin, in voxels per axis, that :func:`region_features` reads around a segment's bounding box:
    the local intensity sphere's (``ceil(6.3 mm / spacing) + 1``), at least the one voxel of the morphology and
    texture boxes."""
    return tuple(max(1, int(np.ceil(6.3 / s)) + 1) for s in spacing_mm)  # type: ignore[return-value]


def segment_features(image: np.ndarray, segment: Segment, spacing_mm: tuple[float, float, float], *,
                     unit: str = "", settings: RegionFeatureSettings = RegionFeatureSettings(),
                     workers: int | None = None) -> tuple[list[Measurement], list[str]]:
    """``region_features(image, segment.mask, ...)``, bit for bit, without the segment's whole-grid mask.

    :func:`region_features` reads the image and the mask only on the segment's bounding box grown by at most
    :func:`feature_margin_voxels` (clipped to the grid), and every value it makes is the same on any part of the
    grid that holds that grown box (the values in scan order, the boxes grown from the tight box and clipped to
    the part where the grid ends, coordinates relative to the boxes). So the segment is measured on that part
    only: the image's view of it and the segment's mask there (:meth:`Segment.in_box`), a small segment costing its
    box instead of passes over the whole grid."""
    shape = tuple(int(n) for n in image.shape)
    if tuple(segment.shape) != shape:
        raise ValueError(f"image shape {shape} and segment grid {tuple(segment.shape)} differ")
    inner = mask_box(segment.crop)
    if inner is None:  # an empty segment: no voxel, whatever the part
        part: tuple[slice, ...] = tuple(slice(0, 0) for _ in shape)
    else:
        tight = tuple(slice(b.start + i.start, b.start + i.stop) for b, i in zip(segment.box, inner))
        part = grow_box(tight, feature_margin_voxels(spacing_mm), shape)
    return region_features(image[part], segment.in_box(part), spacing_mm, unit=unit, settings=settings,
                           workers=workers)


def region_features(image: np.ndarray, mask: np.ndarray, spacing_mm: tuple[float, float, float], *,
                    unit: str = "", settings: RegionFeatureSettings = RegionFeatureSettings(),
                    workers: int | None = None) -> tuple[list[Measurement], list[str]]:
    """Measurements of one segment and notes on how they were made.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Intensities in the image's unit (HU for CT), never rescaled.
    mask : (Z, Y, X) bool ndarray
        The segment.
    spacing_mm : tuple of 3 float
        Voxel spacing (z, y, x), in mm.
    unit : str
        "HU", "SUV" or "" (arbitrary).
    settings : RegionFeatureSettings
        Which families, discretisation and size limits.
    workers : int, optional
        Above 1, a segment of at least 100 000 voxels has its morphology computed in a second thread beside the
        intensity families. Default :func:`~dicomnode.analysis.threads.thread_budget`. The values do not depend
        on it.

    Returns
    -------
    measurements : list of Measurement
        ``volume_ml``, ``mean``, ``sd`` first, then IBSI features named ``family/feature[/aggregation]``.
    notes : list of str
        What was approximated or left out, and why.
    """
    if image.shape != mask.shape:
        raise ValueError(f"image shape {image.shape} and mask shape {mask.shape} differ")
    # Everything below reads the mask's bounding box only: the values inside it in scan order are the whole grid's
    # (``image[mask]``), and every box grown by a margin is the one roi_bounding_box(mask, margin) gives
    tight = roi_bounding_box(mask) if mask.any() else None
    if tight is None:
        values = image[mask]
    else:
        values = image[tight][mask[tight]]  # in the image's dtype: no float64 copies of large ROIs
    meas = measurements_of_values(values, spacing_mm, unit=unit)
    notes: list[str] = []
    n = int(values.size)
    if n == 0 or tight is None:
        return meas, ["empty segment: no features"]
    ucum = _ucum(unit)
    fams = set(settings.families)
    feats: list[FeatureValue] = []

    def morphology_part() -> tuple[list[FeatureValue], list[str]]:
        box = grow_box(tight, 1, mask.shape)
        if n > settings.morphology_max_voxels:
            small, sp = _block_downsample(mask, spacing_mm, settings.morphology_max_voxels, box=box)
            return morphology_features(small, sp), [
                f"morphology on a {sp[0]:.2g}x{sp[1]:.2g}x{sp[2]:.2g} mm block-averaged grid "
                f"({n} voxels > morphology_max_voxels); intensity-weighted morphology left out"]
        if n > settings.moran_max_voxels:
            return morphology_features(mask[box], spacing_mm), [
                f"centre of mass shift, integrated intensity, Moran's I and Geary's C left out "
                f"({n} voxels > moran_max_voxels)"]
        return morphology_features(mask[box], spacing_mm, image=image[box]), []

    # The morphology (mask only) runs in a thread beside the intensity families (values only) when the thread
    # budget allows and the segment is large enough to pay for it; its features and notes keep their place.
    morph: Any = None
    pool = None
    workers = max(1, thread_budget() if workers is None else int(workers))
    if "morphology" in fams:
        if workers > 1 and n >= _THREADED_MIN_VOXELS:
            pool = ThreadPoolExecutor(1)
            morph = pool.submit(morphology_part)
            workers -= 1  # the intensity families share what is left of the budget
        else:
            morph = morphology_part
    try:
        return _region_features_rest(image, mask, spacing_mm, tight, values, meas, notes, feats, fams, settings,
                                     unit, ucum, morph, workers)
    finally:
        if pool is not None:
            pool.shutdown(wait=True)


def _region_features_rest(image: np.ndarray, mask: np.ndarray, spacing_mm: tuple[float, float, float],
                          tight: tuple[slice, ...], values: np.ndarray, meas: list[Measurement], notes: list[str],
                          feats: list[FeatureValue], fams: set[str], settings: RegionFeatureSettings, unit: str,
                          ucum: str, morph: Any, workers: int) -> tuple[list[Measurement], list[str]]:
    """The families of :func:`region_features` after its set-up, in their order; ``morph`` the morphology (a
    future, or a function to call), or None; ``workers`` the threads the intensity statistics may use."""
    n = int(values.size)
    if "intensity statistics" in fams:
        feats += statistics_features(values, workers=workers)
    constant = bool(values.min() == values.max())
    if "intensity-volume histogram" in fams and constant:
        notes.append("intensity-volume histogram left out: the segment's intensities are all equal")
    elif "intensity-volume histogram" in fams:
        if unit == "HU":  # calibrated and discrete: the HU themselves, interval 1 HU (IBSI configs A, B, D)
            feats += ivh_features(np.round(values))
        else:
            feats += ivh_features(values, n_bins=1000)
    levels_roi = None
    n_levels = 0
    if "intensity histogram" in fams or "texture" in fams:
        if settings.bin_width is not None:
            lower = settings.bin_lower if settings.bin_lower is not None else float(values.min())
            # values below the lower bound (e.g. -1024 HU air under a -1000 HU bound) fall into the first bin
            levels_roi = discretise_fixed_bin_size(np.maximum(values, lower), bin_size=settings.bin_width,
                                                   lower=lower)
        else:
            levels_roi = discretise_fixed_bin_number(values, n_bins=settings.n_bins)
        n_levels = int(levels_roi.max())
        if "intensity histogram" in fams:
            feats += histogram_features(levels_roi, n_levels)
    if morph is not None:
        m_feats, m_notes = morph.result() if isinstance(morph, Future) else morph()
        feats += m_feats
        notes += m_notes
    if "local intensity" in fams:
        if n <= settings.local_max_voxels:
            margin = tuple(int(np.ceil(6.3 / s)) + 1 for s in spacing_mm)
            box = grow_box(tight, margin, mask.shape)
            feats += local_intensity_features(image[box], mask[box], spacing_mm)
        else:
            notes.append(f"local intensity left out ({n} voxels > local_max_voxels)")
    if "texture" in fams and levels_roi is not None:
        from dicomnode.analysis.features.texture import texture_features
        box = grow_box(tight, 1, mask.shape)
        m = mask[box]
        lv = np.zeros(m.shape, dtype=np.int32)
        lv[m] = levels_roi
        feats += texture_features(lv, m, max(n_levels, 1), morph_mask=m,
                                  aggregations=settings.texture_aggregations)
    for fv in feats:
        meas.append(Measurement(_name(fv), float(fv.value), _unit_of(fv.family, fv.feature, ucum), None,
                                derivation="IBSI-1"))
    return meas, notes
