"""IBSI-1 radiomics of one region: the image processing chain and every feature family, driven by one settings object.

:func:`extract_features` runs the IBSI processing order on an image and its ROI mask:

1. crop to the ROI's bounding box plus the margin the later steps need (the local intensity sphere, the
   interpolation kernel): the rest of the image never enters a feature, and cropping first is most of the speed;
2. interpolation (optional) to a new spacing on the IBSI-aligned grid ("align grid centres"), in 3D or in-plane only,
   linear or cubic spline; the mask is interpolated too and thresholded at the partial-volume fraction; intensities
   are rounded to integers if asked (calibrated, discrete CT);
3. the morphological mask is the (interpolated) ROI; the intensity mask is it re-segmented by an intensity range
   and/or outlier filtering (mean +/- n SD);
4. discretisation for the intensity histogram and texture: fixed bin size from a lower bound (the re-segmentation's
   lower bound unless given), fixed bin number over the ROI's min..max, or none (integer grey levels as they are);
   the intensity-volume histogram has its own discretisation (none: the values with interval 1; fixed bin size; fixed
   bin number);
5. filtering (IBSI-2, optional ``[filter]``): the image is replaced by the response map of one convolutional filter
   (:mod:`dicomnode.analysis.filters`), computed on the crop, whose margin includes the kernel's reach; the masks
   come from step 3, on the unfiltered intensities (IBSI order: interpolation, re-segmentation, filtering);
6. the families the settings name, on the response map when filtered, texture with the aggregations they name.

The settings are :class:`RadiomicsSettings`, a frozen dataclass valid from birth; ``dicomnode.config.radiomics``
loads one from TOML. ``conf/radiomics/ibsi-config-A.toml`` ... ``-E.toml`` are the five IBSI-1 configurations.

References
----------
Zwanenburg A. et al., The Image Biomarker Standardization Initiative, Radiology 2020;295:328-338; IBSI reference
manual (theibsi/ibsi-doc), ``docs/Image_processing.rst`` and ``docs/05_Reference_data_sets.rst`` (configurations
A-E).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numpy as np

from dicomnode.analysis.features.base import FeatureValue
from dicomnode.analysis.features.discretise import (
    discretise_fixed_bin_number,
    discretise_fixed_bin_size,
    discretise_none,
)
from dicomnode.analysis.features.histogram import histogram_features, ivh_features
from dicomnode.analysis.features.intensity import PEAK_RADIUS_MM, local_intensity_features, statistics_features
from dicomnode.analysis.features.morphology import morphology_features
from dicomnode.analysis.features.processing import check_spacing, crop_to_roi, resample, resegment
from dicomnode.analysis.features.texture import FAMILIES as TEXTURE_FAMILIES
from dicomnode.analysis.features.texture import texture_features
from dicomnode.analysis.filters import FilterSpec, apply_filter, filter_margin_voxels
from dicomnode.errors import ConfigError, ConfigErrors

__all__ = [
    "ALL_FAMILIES",
    "DIMENSIONS",
    "Discretisation",
    "Interpolation",
    "NO_PROCESSING",
    "RadiomicsSettings",
    "extract_features",
    "feature_unit",
    "image_unit_ucum",
]

#: Every family, named as in the IBSI reference table (the ``family`` column).
ALL_FAMILIES = (
    "morphology", "local intensity", "intensity statistics", "intensity histogram", "intensity-volume histogram",
    *TEXTURE_FAMILIES,
)
#: Texture dimensionalities: each selects the IBSI aggregations starting with it ("2D" -> "2D, averaged", ...).
DIMENSIONS = ("2D", "2.5D", "3D")


class Interpolation(str, Enum):
    """Image or mask interpolation method (spline order)."""

    NONE = "none"
    NEAREST = "nearest"
    LINEAR = "linear"
    CUBIC = "cubic"

    @property
    def order(self) -> int:
        return {"none": 0, "nearest": 0, "linear": 1, "cubic": 3}[self.value]


class Discretisation(str, Enum):
    """Intensity discretisation method (IBSI-1, "Intensity discretisation")."""

    NONE = "none"
    FIXED_BIN_SIZE = "fixed_bin_size"
    FIXED_BIN_NUMBER = "fixed_bin_number"


@dataclass(frozen=True, slots=True)
class RadiomicsSettings:
    """Image processing and feature settings; every value checked at construction.

    Field names follow the TOML keys (``[section] key`` -> ``section_key`` where a section is needed to tell them
    apart); intensities are in the image's own unit (HU for CT).

    Parameters
    ----------
    name : str
        Name of the settings, e.g. "ibsi-config-C" (reported with the results).
    interpolation : Interpolation
        ``[interpolation] method``: none (native grid), nearest, linear (bi/trilinear) or cubic (spline).
    spacing_mm : tuple of 3 float or None
        ``[interpolation] spacing_mm``: new voxel spacing (z, y, x), in mm; required unless ``interpolation`` is none.
        With ``in_plane_only`` the z value is ignored (the slices are kept).
    in_plane_only : bool
        ``[interpolation] in_plane_only``: interpolate within the slices only (IBSI config B).
    round_intensities : bool
        ``[interpolation] round_intensities``: round interpolated intensities to integers (calibrated discrete CT).
    mask_interpolation : Interpolation
        ``[interpolation] mask_method``: how the ROI mask is interpolated (IBSI: linear); not "none".
    mask_pv_threshold : float
        ``[interpolation] mask_partial_volume_threshold``: a new voxel is in the ROI when the interpolated mask is >=
        this fraction, in (0, 1]. IBSI: 0.5.
    range_lower, range_upper : float or None
        ``[resegmentation] range``: intensity range kept in the intensity mask (inclusive); None leaves a side open.
    outlier_sd : float or None
        ``[resegmentation] outlier_sd``: keep mean +/- this many standard deviations (IBSI: 3); None: no filtering.
    discretisation : Discretisation
        ``[discretisation] method`` for the intensity histogram and texture.
    bin_size : float or None
        ``[discretisation] bin_size``: fixed bin width, in the image's unit.
    bin_lower : float or None
        ``[discretisation] lower``: lower bound of the first fixed-size bin; default ``range_lower``, else the ROI
        minimum.
    n_bins : int or None
        ``[discretisation] n_bins``: fixed bin number.
    ivh_discretisation : Discretisation
        ``[ivh] method``: none (discrete intensities, interval 1; range = the re-segmentation range or the ROI
        min..max), fixed_bin_size (from ``range_lower`` or the ROI minimum, bin centres) or fixed_bin_number
        (arbitrary units over the ROI min..max).
    ivh_bin_size : float or None
        ``[ivh] bin_size``, in the image's unit.
    ivh_n_bins : int or None
        ``[ivh] n_bins``.
    families : tuple of str
        ``[features] families``: any of :data:`ALL_FAMILIES`.
    dimensions : tuple of str
        ``[texture] dimensions``: texture aggregations by dimensionality, any of "2D", "2.5D", "3D".
    filter : FilterSpec or None
        ``[filter]``: an IBSI-2 filter applied after interpolation and re-segmentation; the features are those of
        its response map. None: no filter.
    """

    name: str = "custom"
    interpolation: Interpolation = Interpolation.NONE
    spacing_mm: tuple[float, float, float] | None = None
    in_plane_only: bool = False
    round_intensities: bool = False
    mask_interpolation: Interpolation = Interpolation.LINEAR
    mask_pv_threshold: float = 0.5
    range_lower: float | None = None
    range_upper: float | None = None
    outlier_sd: float | None = None
    discretisation: Discretisation = Discretisation.FIXED_BIN_NUMBER
    bin_size: float | None = None
    bin_lower: float | None = None
    n_bins: int | None = 32
    ivh_discretisation: Discretisation = Discretisation.FIXED_BIN_NUMBER
    ivh_bin_size: float | None = None
    ivh_n_bins: int | None = 1000
    families: tuple[str, ...] = ALL_FAMILIES
    dimensions: tuple[str, ...] = ("3D",)
    filter: FilterSpec | None = None

    def __post_init__(self) -> None:
        errors = self.problems()
        if errors:
            raise errors[0] if len(errors) == 1 else ConfigErrors(errors, f"radiomics settings {self.name!r}")

    def problems(self) -> list[ConfigError]:
        """Every invalid value, as ConfigErrors named by their TOML key (empty when valid)."""
        errs: list[ConfigError] = []

        def bad(key: str, value: object, fix: str) -> None:
            errs.append(ConfigError(key, value, fix))

        def positive(x: object) -> bool:
            return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0

        if not isinstance(self.interpolation, Interpolation):
            bad("interpolation.method", self.interpolation, f"use one of {[m.value for m in Interpolation]}")
        elif self.interpolation is not Interpolation.NONE:
            sp = self.spacing_mm
            if sp is None or len(sp) != 3 or not all(positive(s) for s in sp):
                bad("interpolation.spacing_mm", sp, "give the new voxel spacing in mm: one number > 0 (isotropic) "
                    "or [z, y, x], e.g. 2.0")
        elif self.spacing_mm is not None or self.in_plane_only or self.round_intensities:
            bad("interpolation.method", "none", "spacing_mm, in_plane_only and round_intensities need an "
                "interpolation method; use method = \"linear\" (or remove those keys)")
        if not isinstance(self.mask_interpolation, Interpolation) or self.mask_interpolation is Interpolation.NONE:
            bad("interpolation.mask_method", self.mask_interpolation, "use \"linear\" (IBSI), \"nearest\" or \"cubic\"")
        if not (isinstance(self.mask_pv_threshold, (int, float)) and 0 < self.mask_pv_threshold <= 1):
            bad("interpolation.mask_partial_volume_threshold", self.mask_pv_threshold, "use a fraction in (0, 1], "
                "e.g. 0.5")
        for key, v in (("resegmentation.range", self.range_lower), ("resegmentation.range", self.range_upper)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                bad(key, v, "use [lower, upper] numbers in the image's unit, e.g. [-1000, 400] for CT in HU")
        if (self.range_lower is not None and self.range_upper is not None
                and isinstance(self.range_lower, (int, float)) and isinstance(self.range_upper, (int, float))
                and self.range_upper < self.range_lower):
            bad("resegmentation.range", [self.range_lower, self.range_upper], "the upper bound must be >= the lower")
        if self.outlier_sd is not None and not positive(self.outlier_sd):
            bad("resegmentation.outlier_sd", self.outlier_sd, "use a number of standard deviations > 0, e.g. 3, or "
                "remove the key")
        self._check_discretisation("discretisation", self.discretisation, self.bin_size, self.n_bins, bad)
        if self.bin_lower is not None and (not isinstance(self.bin_lower, (int, float))
                                           or isinstance(self.bin_lower, bool) or not math.isfinite(self.bin_lower)):
            bad("discretisation.lower", self.bin_lower, "use a number in the image's unit, e.g. -500")
        self._check_discretisation("ivh", self.ivh_discretisation, self.ivh_bin_size, self.ivh_n_bins, bad)
        if isinstance(self.families, str) or not all(f in ALL_FAMILIES for f in self.families) or not self.families:
            bad("features.families", self.families, f"use a non-empty list of {list(ALL_FAMILIES)}")
        if isinstance(self.dimensions, str) or not self.dimensions or not all(d in DIMENSIONS for d in self.dimensions):
            bad("texture.dimensions", self.dimensions, "use a non-empty list of \"2D\", \"2.5D\", \"3D\"")
        if self.filter is not None and not isinstance(self.filter, FilterSpec):
            bad("filter", self.filter, "give a [filter] table (kind = \"laplacian_of_gaussian\", ...) or none")
        return errs

    @staticmethod
    def _check_discretisation(section: str, method: object, bin_size: object, n_bins: object, bad) -> None:
        if not isinstance(method, Discretisation):
            bad(f"{section}.method", method, f"use one of {[m.value for m in Discretisation]}")
            return
        if method is Discretisation.FIXED_BIN_SIZE:
            if bin_size is None or isinstance(bin_size, bool) or not isinstance(bin_size, (int, float)) \
                    or not (math.isfinite(bin_size) and bin_size > 0):
                bad(f"{section}.bin_size", bin_size, "fixed_bin_size needs bin_size > 0 in the image's unit, e.g. 25")
        if method is Discretisation.FIXED_BIN_NUMBER:
            if n_bins is None or isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
                bad(f"{section}.n_bins", n_bins, "fixed_bin_number needs an integer n_bins >= 1, e.g. 32")

    @property
    def aggregations(self) -> tuple[str, ...]:
        """The texture aggregation prefixes for :func:`texture_features` (same as ``dimensions``)."""
        return self.dimensions


#: The IBSI digital phantom settings: no processing, grey levels used as they are, every family and aggregation.
NO_PROCESSING = RadiomicsSettings(
    name="no-processing", discretisation=Discretisation.NONE, n_bins=None,
    ivh_discretisation=Discretisation.NONE, ivh_n_bins=None, dimensions=DIMENSIONS,
)


def extract_features(
    image: np.ndarray,
    morph_mask: np.ndarray,
    spacing_mm: tuple[float, float, float],
    settings: RadiomicsSettings,
) -> list[FeatureValue]:
    """IBSI-1 features of one region, after the image processing the settings describe.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Intensities in the series' unit (HU for CT; never rescaled). The whole image or any part that holds the ROI
        plus 7 mm around it (the local intensity sphere reads beyond the ROI).
    morph_mask : (Z, Y, X) ndarray of bool
        The ROI (segmentation) on the same grid.
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x), in mm.
    settings : RadiomicsSettings
        Processing and feature settings.

    Returns
    -------
    list of FeatureValue
        In the order of ``settings.families`` (texture families in their own order, by aggregation); family, feature
        and aggregation named as in the IBSI reference table. Units: see :func:`feature_unit`. A texture feature
        undefined for the region is NaN.

    Raises
    ------
    ValueError
        On shape mismatch or invalid spacing; when the ROI is empty, vanishes after interpolation, or the intensity
        mask is empty after re-segmentation; when discretisation "none" meets non-integer intensities or a fixed bin
        size lower bound above ROI intensities.

    References
    ----------
    IBSI reference manual, ``docs/Image_processing.rst``; ``docs/05_Reference_data_sets.rst`` (configurations).
    """
    spacing = check_spacing(spacing_mm)
    image = np.asarray(image)
    mask = np.asarray(morph_mask, dtype=bool)
    if image.ndim != 3 or image.shape != mask.shape:
        raise ValueError(f"image {image.shape} and morph_mask {mask.shape} must be the same 3-D shape")
    if not mask.any():
        raise ValueError("the ROI mask is empty: no voxel to compute features of")
    s = settings
    # 1-2. crop (+ interpolate): only the ROI's bounding box plus the sphere radius and a kernel margin is needed.
    # a filtered image reads beyond the ROI only for the local intensity sphere: drop that margin when not asked
    peak_mm = PEAK_RADIUS_MM if s.filter is None or "local intensity" in s.families else 0.0
    if s.interpolation is Interpolation.NONE:
        margin = tuple(int(math.ceil(peak_mm / d)) + 1 for d in spacing)
        if s.filter is not None:  # the response must be exact over the ROI (plus the local intensity sphere)
            margin = tuple(m + f for m, f in zip(margin, filter_margin_voxels(s.filter, spacing)))
        img, morph, _ = crop_to_roi(image, mask, margin_voxels=margin)
        img = np.asarray(img, dtype=np.float64)
        morph = np.array(morph, dtype=bool)
    else:
        new = s.spacing_mm
        margin_mm = peak_mm + 2.0 * max(max(new), max(spacing))
        if s.filter is not None:
            coarse = tuple(max(a, b) for a, b in zip(new, spacing))  # in-plane-only keeps the original z spacing
            margin_mm += max(f * d for f, d in zip(filter_margin_voxels(s.filter, coarse), coarse))
        img, morph, grid = resample(
            image, mask, spacing, new_spacing_mm=new, order=s.interpolation.order, in_plane_only=s.in_plane_only,
            pv_threshold=s.mask_pv_threshold, round_intensities=s.round_intensities,
            mask_order=s.mask_interpolation.order, crop_margin_mm=margin_mm,
        )
        spacing = grid.spacing_mm
        img = img.astype(np.float64)
        if not morph.any():
            raise ValueError(f"the ROI vanishes after interpolation to {spacing} mm (partial-volume threshold "
                             f"{s.mask_pv_threshold}): it is smaller than one new voxel; use a finer spacing")
    # 3. re-segmentation: changes the intensity mask only.
    imask = morph
    if s.range_lower is not None or s.range_upper is not None or s.outlier_sd is not None:
        imask = resegment(img, morph, lower=s.range_lower, upper=s.range_upper, n_sd=s.outlier_sd)
    if not imask.any():
        raise ValueError(f"the intensity mask is empty after re-segmentation (range [{s.range_lower}, "
                         f"{s.range_upper}], outliers {s.outlier_sd} SD): no ROI intensity lies in the range")
    # 4. filtering (IBSI-2): the masks stay those of the unfiltered image
    if s.filter is not None:
        img = apply_filter(img, spacing, s.filter).astype(np.float64)
    values = img[imask]
    families = set(s.families)
    texture = [f for f in TEXTURE_FAMILIES if f in families]
    # 5. discretisation (intensity histogram and texture)
    levels = n_levels = None
    if "intensity histogram" in families or texture:
        levels, n_levels = _discretise(values, s)
    out: list[FeatureValue] = []
    for family in s.families:
        if family == "morphology":
            out += morphology_features(morph, spacing, image=img, intensity_mask=imask)
        elif family == "local intensity":
            out += local_intensity_features(img, imask, spacing)
        elif family == "intensity statistics":
            out += statistics_features(values)
        elif family == "intensity histogram":
            out += histogram_features(levels, n_levels)
        elif family == "intensity-volume histogram":
            out += ivh_features(values, **_ivh_kwargs(s))
    if texture:
        volume = np.zeros(img.shape, dtype=np.int32)
        volume[imask] = levels
        out += texture_features(volume, imask, n_levels, morph_mask=morph, families=texture,
                                aggregations=s.dimensions)
    return out


def _discretise(values: np.ndarray, s: RadiomicsSettings) -> tuple[np.ndarray, int]:
    """Grey levels of the ROI voxels and N_g. Fixed bin size keeps the bins anchored at the lower bound (no
    re-indexing), N_g being the highest level present, as MIRP does."""
    if s.discretisation is Discretisation.FIXED_BIN_NUMBER:
        return discretise_fixed_bin_number(values, n_bins=s.n_bins), int(s.n_bins)
    if s.discretisation is Discretisation.FIXED_BIN_SIZE:
        lower = s.bin_lower if s.bin_lower is not None else s.range_lower
        lower = float(values.min()) if lower is None else float(lower)
        levels = discretise_fixed_bin_size(values, bin_size=s.bin_size, lower=lower)
        if levels.min() < 1:
            raise ValueError(f"fixed bin size: ROI intensities down to {values.min()} lie below the lower bound "
                             f"{lower}; lower [discretisation] lower or re-segment from it")
        return levels, int(levels.max())
    levels = discretise_none(values)
    return levels, int(levels.max())


def _ivh_kwargs(s: RadiomicsSettings) -> dict:
    if s.ivh_discretisation is Discretisation.FIXED_BIN_NUMBER:
        return {"n_bins": s.ivh_n_bins}
    if s.ivh_discretisation is Discretisation.FIXED_BIN_SIZE:
        return {"bin_width": s.ivh_bin_size, "lower": s.range_lower, "upper": s.range_upper}
    return {"lower": s.range_lower, "upper": s.range_upper}


# ------------------------------------------------------------------------------------------------------ units
#: A Volume's unit (``dicomnode.io.load``: "HU", "SUV", "Bq/mL", "{counts}", "%", "" when arbitrary) as UCUM.
_IMAGE_UNITS = {"HU": "[hnsf'U]", "SUV": "{SUVbw}g/ml", "Bq/mL": "Bq/ml", "": "1"}
_MORPH_UNITS = {
    "volume (mesh)": "mm3", "volume (voxel counting)": "mm3", "surface area (mesh)": "mm2",
    "surface to volume ratio": "/mm", "centre of mass shift": "mm", "maximum 3D diameter": "mm",
    "major axis length": "mm", "minor axis length": "mm", "least axis length": "mm",
    "integrated intensity": "{unit}.mm3",
}
_DIMENSIONLESS_STATS = {"skewness", "(excess) kurtosis", "coefficient of variation",
                        "quartile coefficient of dispersion"}
_SQUARED_STATS = {"variance", "energy"}


def image_unit_ucum(unit: str) -> str:
    """A Volume's unit ("HU", "SUV", "" ...) as UCUM: "[hnsf'U]", "{SUVbw}g/ml", "1" (arbitrary, e.g. MR) ..."""
    return _IMAGE_UNITS.get(unit, unit or "1")


def feature_unit(feature: FeatureValue, image_unit: str, settings: RadiomicsSettings | None = None) -> str:
    """The unit of a feature value, as a UCUM string.

    Parameters
    ----------
    feature : FeatureValue
        A value from :func:`extract_features`.
    image_unit : str
        The image's unit in UCUM ("[hnsf'U]" for CT) or "" when arbitrary (MR).
    settings : RadiomicsSettings, optional
        Needed only for the IVH intensities, which are bin numbers (unit "1") with fixed bin number.

    Returns
    -------
    str
        "mm3", "mm2", "mm", "/mm", the image unit, its square (``"<unit>2"``), the image unit times mm3, or "1" for
        dimensionless values (ratios, counts, grey levels, texture).
    """
    u = image_unit or "1"

    def squared() -> str:
        if u == "1":
            return "1"
        return f"{u}2" if u.replace("[", "").replace("]", "").replace("'", "").isalpha() else f"({u})2"

    fam, name = feature.family, feature.feature
    if fam == "morphology":
        unit = _MORPH_UNITS.get(name, "1")
        return unit.replace("{unit}", u) if u != "1" else unit.replace("{unit}.", "")
    if fam == "local intensity":
        return u
    if fam == "intensity statistics":
        if name in _DIMENSIONLESS_STATS:
            return "1"
        return squared() if name in _SQUARED_STATS else u
    if fam == "intensity-volume histogram" and name.startswith("intensity"):
        if settings is not None and settings.ivh_discretisation is Discretisation.FIXED_BIN_NUMBER:
            return "1"
        return u
    return "1"
