"""Target recognition: candidate focal findings (nodules, masses, tumours), each with a mask, a size and a probability.

Two detectors share one pipeline, *blob search -> region growing -> features -> Bayes posterior*:

* :func:`detect_lung` (CT of the chest): bright blobs inside the lungs. The search region is each lung closed in
  plane by ``closing_mm`` (an EDT closing per slice) with its holes filled, so that a mass that touches the chest wall
  or the mediastinum, which the lung threshold leaves out as a bite or a hole, is still inside it; the broad
  concavity around the heart is wider than the closing and stays out. Outside the region the image is set to lung
  parenchyma (``parenchyma_hu``): the chest wall and the mediastinum then cast no blob, and a mass that touches them
  becomes an isolated blob. Candidates grow at full resolution over soft-tissue density (``tissue_range_hu``) inside
  the region, limited to a ball around the blob, after an opening that detaches vessels.
* :func:`detect_tissue` (any other series): blobs of either polarity that depart from their surroundings, on the
  image normalised by the foreground's median and the within-tissue spread (the median local SD; clipped), with
  everything outside the foreground set to the median so that the body outline casts no blob. Candidates grow from
  the blob's core level to half-way to its surroundings' level (a half-maximum contour, as for PET lesions), inside
  the foreground, limited to a ball. When the tissue model of ``segment_generic`` is given (class means and
  spreads), a feature says how far the region's mean lies from every class. With ``hot_threshold`` (the detect
  step sets SUV 2.5 for PET) every connected region above that level is a candidate too, its holes filled: a large
  lesion with a necrotic centre (STS_001's PET) is a dark blob in a bright ring to the blob search.
  On a PET in SUV with the liver in view, each candidate's SUVpeak (the hottest 1 mL sphere) is compared with
  PERCIST's threshold ``1.5 x liver mean + 2 SD`` (``log2_peak_to_percist``, a feature of the hand-set model), and
  physiological uptake is told by organ context with the liver as landmark (``physiological``: heart on the
  diaphragm above the liver's dome, brain far above it, bladder far below it on the midline, paired kidneys, mirror
  twins such as salivary glands, the axial ends of the field of view, the head and neck midline, ureters, urine
  beside the bladder, genitals), down-weighted like symmetric regions. A whole-body PET (the liver in view) is
  searched on log2 SUV and scored by :data:`PET_MODEL` against each focus's own surroundings (``background``,
  ``log2_peak_to_background``, ``log10_peak_cnr``); its sensitivity is measured by lesion insertion
  (``dicomnode bench pet_lesions``, docs/evaluation.md).

Blob search: a scale-normalised Laplacian of Gaussian in mm, ``-sigma^2 * sum_i d2/dx_i^2`` with
``sigma = r / sqrt(3)`` (the scale at which a ball of radius ``r`` responds most) over geometric radii, on a grid
block-averaged to about ``coarse_mm``; candidates are the local maxima over space and scale ([1]_, [2]_).

Probability: a naive Bayes model with two classes (target, other) and hand-set Gaussian class-conditional
densities of some of the features below (:data:`LUNG_MODEL`, :data:`TISSUE_MODEL`; not fitted to data: the
densities encode textbook shape knowledge, e.g. nodules are compact and round, vessels elongated, pieces of chest
wall touch little lung). Posterior ``P(target | x) = p(x | target) P(target) / sum_c p(x | c) P(c)``. Naive Bayes over
correlated features is overconfident: the value is a *ranking score*. ``calibration`` (a :class:`ScoreCalibration`,
fitted on candidates scored against physicians' truths by :mod:`dicomnode.findings_training`; the shipped profiles'
``model = "calibrated"``) maps it monotonically to a probability: the score's logit (clipped) and whether the
candidate is the series' top one, capped at 0.9.

Features of a region (mm, mL or the image's unit):

* shape: ``volume_ml`` (and ``log10_volume_ml``), ``diameter_mm`` (largest 3-D extent between voxel centres, plus
  one voxel), ``equivalent_diameter_mm``, ``compactness`` (volume / volume of the ball of diameter ``diameter_mm``:
  1 for a ball, small for a tube), ``elongation`` (sqrt of the smallest / largest principal variance, voxel extent
  included: 1 for a ball, ~0 for a tube);
* intensity: ``mean``, ``surround_mean`` (3 mm shell), ``contrast`` (mean - surround), ``cnr`` (tissue method:
  abs(contrast) / within-tissue spread, and ``log10_cnr``);
* context: ``truncation`` (fraction of the region's boundary on the growth limit: 0 for an isolated blob, large for
  a piece cut out of a larger structure), ``enclosure`` (tissue method: fraction of the shell on the other side of
  the region's threshold), ``lung_contact`` (lung method: fraction of the shell below -400 HU, air or lung),
  ``mirror_tissue`` (lung method, when an index axis runs left-right: fraction of the region whose mirror image
  across the mid-sagittal plane of the lungs is tissue too; hilar vessels come in left-right pairs, a tumour mostly
  does not), ``tissue_outlier`` (tissue method with a tissue model: how many class SDs the region's mean lies from
  the nearest class mean; a region of a normal tissue class is no lesion);
* search: ``blob_radius_mm``, ``blob_response``, ``polarity`` (tissue method: 1 bright, -1 dark);
* MR normal anatomy (:func:`air_voids`, :func:`gas_capped`; x 0.1 when set): ``core_to_reference``, ``air_void``
  (air inside the body: a sinus, bowel gas), ``gas_cap``, ``bowel_content`` (fluid under a lumen's gas cap);
* CT air (:func:`ct_air_voids`; x 0.1 when set): ``core_hu``, ``air_void`` (a dark core below any fat's density);
* PET with the liver in view: ``peak`` (SUVpeak, 1 mL sphere), ``log2_peak_to_percist``, ``log2_to_liver``,
  ``above_percist`` (PERCIST's measurable disease), ``physiological`` (organ context, 0/1); ``blob_snr`` on a
  candidate of the small-focus search (its blob response over the local noise of the filter output).

References
----------
.. [1] T. Lindeberg, "Feature detection with automatic scale selection", IJCV 30(2), 1998.
.. [2] S. Diciotti et al., "Automated segmentation refinement of small lung nodules in CT scans by local shape
   analysis", IEEE TBME 58(12), 2011 (LoG nodule candidates, vessel detachment by opening).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi

from dicomnode.analysis.blocks import block_centres, block_mean
from dicomnode.analysis.denoise import _check_image, _check_spacing
from dicomnode.analysis.threads import gaussian_filter as _gaussian
from dicomnode.analysis.volume import Volume, grow_box, mask_box

__all__ = [
    "DetectionResult",
    "DetectionSettings",
    "Finding",
    "LUNG_MODEL",
    "PET_MODEL",
    "TISSUE_MODEL",
    "FEATURE_CLIP",
    "FittedModel",
    "NaiveBayes",
    "air_voids",
    "blob_candidates",
    "ct_air_voids",
    "gas_capped",
    "liver_reference",
    "ScoreCalibration",
    "platt",
    "detect",
    "detect_lung",
    "detect_tissue",
    "max_diameter_mm",
]

_SQRT3 = math.sqrt(3.0)


# ------------------------------------------------------------------------------------------------ results


@dataclass(frozen=True, eq=False, slots=True)
class Finding:
    """One candidate focal finding.

    Attributes
    ----------
    label : str
        "nodule" (largest diameter <= 30 mm), "mass" (> 30 mm) for the lung method; "lesion" for the tissue method.
    mask : (z, y, x) bool ndarray
        The region inside ``box`` (a crop of the full grid: a finding costs memory for its box only). Use
        :meth:`full_mask` for the mask on the whole grid.
    box : tuple of 3 slice
        Where ``mask`` lies on the full grid.
    centroid_zyx : tuple of 3 float
        Centroid in (fractional) voxel indices (z, y, x) of the full grid.
    volume_ml : float
        Region volume, mL.
    diameter_mm : float
        Largest 3-D diameter, mm.
    probability : float
        Posterior probability of the target class, in [0, 1].
    features : mapping of str to float
        The features listed in the module docstring.
    centroid_mm : tuple of 3 float or None
        Centroid in DICOM patient coordinates (x, y, z), mm; set by :func:`detect` from the volume's geometry.
    """

    label: str
    mask: np.ndarray
    box: tuple[slice, slice, slice]
    centroid_zyx: tuple[float, float, float]
    volume_ml: float
    diameter_mm: float
    probability: float
    features: Mapping[str, float] = field(default_factory=dict)
    centroid_mm: tuple[float, float, float] | None = None

    def full_mask(self, shape: Sequence[int]) -> np.ndarray:
        """The region as a bool mask of ``shape`` (the grid the finding was detected on)."""
        out = np.zeros(tuple(shape), dtype=bool)
        out[self.box] = self.mask
        return out


@dataclass(frozen=True, eq=False, slots=True)
class DetectionResult:
    """What a detector found.

    Attributes
    ----------
    findings : tuple of Finding
        Accepted findings (size limits and probability threshold passed), most probable first, at most
        ``max_findings``.
    rejected : tuple of Finding
        Grown candidates that failed a limit (for inspection and tests), most probable first.
    n_candidates : int
        Blob candidates searched.
    notes : tuple of str
    """

    findings: tuple[Finding, ...]
    rejected: tuple[Finding, ...]
    n_candidates: int
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DetectionSettings:
    """Limits shared by the detectors.

    Parameters
    ----------
    min_diameter_mm : float
        Smallest largest-diameter of a finding, mm. Default 4.
    min_volume_ml : float
        Smallest volume of a finding, mL. Default 0.03.
    max_findings : int
        At most this many findings, most probable first. Default 10.
    probability_threshold : float
        Findings need at least this posterior probability. Default 0.5.
    """

    min_diameter_mm: float = 4.0
    min_volume_ml: float = 0.03
    max_findings: int = 10
    probability_threshold: float = 0.5

    def __post_init__(self) -> None:
        if not self.min_diameter_mm >= 0:
            raise ValueError(f"min_diameter_mm must be >= 0 mm, got {self.min_diameter_mm}")
        if not self.min_volume_ml >= 0:
            raise ValueError(f"min_volume_ml must be >= 0 mL, got {self.min_volume_ml}")
        if int(self.max_findings) != self.max_findings or self.max_findings < 0:
            raise ValueError(f"max_findings must be an integer >= 0, got {self.max_findings}")
        if not 0 <= self.probability_threshold <= 1:
            raise ValueError(f"probability_threshold must be in [0, 1], got {self.probability_threshold}")


# ------------------------------------------------------------------------------------------------ Bayes model


@dataclass(frozen=True, slots=True)
class NaiveBayes:
    """Two-class naive Bayes over named features with Gaussian class-conditional densities.

    Parameters
    ----------
    prior : float
        P(target) before the features are seen, in (0, 1).
    target, other : mapping of str to (mean, sd)
        Per feature, the Gaussian density under each class. Features missing from a candidate are skipped.
    clip : mapping of str to (low, high), optional
        Features are clipped to these ranges before evaluation (keeps one extreme value from dominating).
    """

    prior: float
    target: Mapping[str, tuple[float, float]]
    other: Mapping[str, tuple[float, float]]
    clip: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.prior < 1:
            raise ValueError(f"prior must be in (0, 1), got {self.prior}")
        if set(self.target) != set(self.other):
            raise ValueError("target and other must name the same features")
        for name, (_, sd) in (*self.target.items(), *self.other.items()):
            if not sd > 0:
                raise ValueError(f"feature {name}: sd must be > 0, got {sd}")

    def posterior(self, features: Mapping[str, float]) -> float:
        """P(target | features)."""
        log_odds = math.log(self.prior) - math.log1p(-self.prior)
        for name, (mt, st) in self.target.items():
            if name not in features or not np.isfinite(features[name]):
                continue
            x = float(features[name])
            if name in self.clip:
                x = min(max(x, self.clip[name][0]), self.clip[name][1])
            mo, so = self.other[name]
            log_odds += (-0.5 * ((x - mt) / st) ** 2 - math.log(st)) - (-0.5 * ((x - mo) / so) ** 2 - math.log(so))
        return float(1.0 / (1.0 + math.exp(-min(max(log_odds, -700.0), 700.0))))


#: Lung nodules and masses vs. vessels, airway walls and pieces of chest wall or mediastinum.
LUNG_MODEL = NaiveBayes(
    prior=0.1,
    target={"log10_volume_ml": (0.5, 1.0), "compactness": (0.45, 0.15), "elongation": (0.7, 0.15),
            "contrast": (650.0, 200.0), "lung_contact": (0.75, 0.25), "mirror_tissue": (0.15, 0.25)},
    other={"log10_volume_ml": (-1.2, 0.7), "compactness": (0.15, 0.12), "elongation": (0.3, 0.15),
           "contrast": (300.0, 250.0), "lung_contact": (0.3, 0.25), "mirror_tissue": (0.6, 0.3)},
    clip={"log10_volume_ml": (-2.0, 2.5), "compactness": (0.0, 1.0), "elongation": (0.0, 1.0),
          "contrast": (0.0, 1000.0), "lung_contact": (0.0, 1.0), "mirror_tissue": (0.0, 1.0)},
)

#: Focal lesions (tumours, hot spots) vs. pieces of normal anatomy and noise.
TISSUE_MODEL = NaiveBayes(
    prior=0.1,
    target={"log10_volume_ml": (1.3, 0.9), "compactness": (0.45, 0.15), "elongation": (0.7, 0.15),
            "log10_cnr": (0.9, 0.45), "truncation": (0.05, 0.12), "tissue_outlier": (3.0, 2.0),
            "log2_peak_to_percist": (0.7, 0.6)},
    other={"log10_volume_ml": (0.0, 0.9), "compactness": (0.2, 0.15), "elongation": (0.35, 0.2),
           "log10_cnr": (0.5, 0.3), "truncation": (0.45, 0.15), "tissue_outlier": (0.5, 0.7),
           "log2_peak_to_percist": (-0.6, 0.6)},
    clip={"log10_volume_ml": (-2.0, 3.5), "compactness": (0.0, 1.0), "elongation": (0.0, 1.0),
          "log10_cnr": (-1.0, 2.5), "truncation": (0.0, 1.0), "tissue_outlier": (0.0, 8.0),
          "log2_peak_to_percist": (-3.0, 3.0)},
)


#: PET in SUV with the liver in view (whole-body FDG): hot foci against their own surroundings vs. noise, texture
#: and pieces of normal organs. Hand-set from imaging physics, not fitted: a lesion of >= 1 mL at >= 3 times its
#: background, blurred to 6-7 mm FWHM, keeps a 1 mL SUVpeak of about 2 times the background and more
#: (``log2_peak_to_background`` about 1 and more; Soret et al. 2007), and stands 5-10 local noise SDs and more above
#: it (``log10_peak_cnr``); noise and texture make peaks of 1.1-1.5 times the background at 1-4 noise SDs. PERCIST's
#: level (``log2_peak_to_percist``) weighs little: a lung nodule at 4 times lung background is under the liver.
PET_MODEL = NaiveBayes(
    prior=0.1,
    target={"log2_peak_to_background": (1.4, 0.6), "log10_peak_cnr": (1.0, 0.35), "compactness": (0.45, 0.15),
            "elongation": (0.7, 0.15), "truncation": (0.05, 0.12), "log2_peak_to_percist": (0.3, 1.2)},
    other={"log2_peak_to_background": (0.3, 0.35), "log10_peak_cnr": (0.4, 0.3), "compactness": (0.2, 0.15),
           "elongation": (0.35, 0.2), "truncation": (0.45, 0.15), "log2_peak_to_percist": (-1.0, 1.0)},
    clip={"log2_peak_to_background": (-1.0, 3.0), "log10_peak_cnr": (-1.0, 2.0), "compactness": (0.0, 1.0),
          "elongation": (0.0, 1.0), "truncation": (0.0, 1.0), "log2_peak_to_percist": (-3.0, 3.0)},
)


@dataclass(frozen=True, eq=False, slots=True)
class FittedModel:
    """A probability model fitted to scored candidates (``scripts/evaluate_findings.py``): a scikit-learn
    classifier with ``predict_proba`` over ``feature_names``, target class 1.

    Parameters
    ----------
    estimator : object
        Fitted, e.g. a ``Pipeline(StandardScaler, LogisticRegression)``.
    feature_names : tuple of str
        Its inputs, in order.
    fill : mapping of str to float
        The value a candidate without the feature gets (e.g. ``mirror_uptake`` when the body's midline is not in
        view); features are clipped as :data:`FEATURE_CLIP` says first.
    """

    estimator: object
    feature_names: tuple[str, ...]
    fill: Mapping[str, float]

    def vector(self, features: Mapping[str, float]) -> list[float]:
        out = []
        for name in self.feature_names:
            x = features.get(name, float("nan"))
            x = float(self.fill.get(name, 0.0)) if x is None or not np.isfinite(x) else float(x)
            lo, hi = FEATURE_CLIP.get(name, (-np.inf, np.inf))
            out.append(min(max(x, lo), hi))
        return out

    def posterior(self, features: Mapping[str, float]) -> float:
        """P(target | features)."""
        return float(self.estimator.predict_proba(np.asarray([self.vector(features)]))[0, 1])


#: Ranges features are clipped to before a fitted model sees them.
FEATURE_CLIP: dict[str, tuple[float, float]] = {
    "log10_volume_ml": (-2.0, 3.5), "compactness": (0.0, 1.0), "elongation": (0.0, 1.0), "log10_cnr": (-1.0, 2.5),
    "truncation": (0.0, 1.0), "enclosure": (0.0, 1.0), "mirror_uptake": (0.0, 1.0), "midline_offset": (0.0, 1.5),
    "log2_to_reference": (-4.0, 6.0), "tissue_outlier": (0.0, 8.0), "log2_peak_to_percist": (-3.0, 3.0),
    "physiological": (0.0, 1.0),
}


# ------------------------------------------------------------------------------------------------ helpers


def _factors(spacing_mm: Sequence[float], coarse_mm: float) -> tuple[int, int, int]:
    return tuple(max(1, int(round(coarse_mm / s))) for s in spacing_mm)  # type: ignore[return-value]


def _second_derivative(a: np.ndarray, axis: int, out: np.ndarray | None = None) -> np.ndarray:
    """Central second difference along ``axis`` (in voxel units), edges copied from their neighbours; into ``out``
    (not ``a``) when given."""
    out = np.empty_like(a) if out is None else out
    n = a.shape[axis]
    if n < 3:
        out[...] = 0
        return out
    sl = [slice(None)] * 3

    def take(start, stop):
        sl[axis] = slice(start, stop)
        return a[tuple(sl)]

    sl_out = [slice(None)] * 3
    sl_out[axis] = slice(1, n - 1)
    inner = out[tuple(sl_out)]
    np.add(take(2, n), take(0, n - 2), out=inner)  # in place: no temporaries of the array's size
    mid = take(1, n - 1)
    inner -= mid
    inner -= mid
    for edge, src in ((0, 1), (n - 1, n - 2)):
        sl_out[axis] = slice(edge, edge + 1)
        sl2 = [slice(None)] * 3
        sl2[axis] = slice(src, src + 1)
        out[tuple(sl_out)] = out[tuple(sl2)]
    return out


def blob_candidates(image: np.ndarray, spacing_mm: Sequence[float], radii_mm: Sequence[float], *,
                    polarity: int = 1, min_response: float = 0.0, allowed: np.ndarray | None = None,
                    max_candidates: int = 50, in_view: bool = False) -> list[tuple[tuple[int, int, int], float, float]]:
    """Local maxima of the scale-normalised Laplacian of Gaussian over space and scale.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Intensities (any unit).
    spacing_mm : tuple of 3 float
        Voxel spacing (dz, dy, dx), mm.
    radii_mm : sequence of float
        Blob radii to search, mm (increasing); the Gaussian scale of radius ``r`` is ``r / sqrt(3)``.
    polarity : {1, -1}, optional
        1 finds bright blobs, -1 dark ones. Default 1.
    min_response : float, optional
        Smallest normalised response kept, in image units (a ball of contrast C responds with about 0.4 C).
    allowed : (Z, Y, X) bool ndarray, optional
        Blob centres must lie here.
    max_candidates : int, optional
        Keep at most this many, strongest first. Default 50.
    in_view : bool, optional
        Keep only blobs whose ball (centre +- radius) lies inside the array: a blob cut by the edge of the field
        of view cannot be told from a cut-off structure. Default False.

    Returns
    -------
    list of ((z, y, x), radius_mm, response)
        Strongest first.
    """
    if polarity not in (1, -1):
        raise ValueError(f"polarity must be 1 (bright) or -1 (dark), got {polarity}")
    stack, radii = _log_stack(image, spacing_mm, radii_mm)
    return _stack_peaks(stack, radii, spacing_mm, polarity=polarity, min_response=min_response, allowed=allowed,
                        max_candidates=max_candidates, in_view=in_view)


def _log_stack(image: np.ndarray, spacing_mm: Sequence[float],
               radii_mm: Sequence[float]) -> tuple[np.ndarray, list[float]]:
    """The scale-normalised LoG response ``-sigma^2 * Laplacian`` (bright blobs positive) per radius: (R, Z, Y, X)."""
    radii, img, sp = _log_inputs(image, spacing_mm, radii_mm)
    stack = np.empty((len(radii),) + img.shape, dtype=np.float32)
    for i, r in enumerate(radii):
        _log_at(img, sp, r, out=stack[i])
    return stack, radii


def _log_inputs(image: np.ndarray, spacing_mm: Sequence[float],
                radii_mm: Sequence[float]) -> tuple[list[float], np.ndarray, np.ndarray]:
    radii = [float(r) for r in radii_mm]
    if not radii or any(not r > 0 for r in radii):
        raise ValueError(f"radii_mm must be positive mm, got {radii_mm}")
    return radii, image.astype(np.float32, copy=False), np.asarray(spacing_mm, dtype=float)


#: Slices per slab of :func:`_log_at`'s second differences (a slab's work buffer stays in the CPU's cache).
_LOG_SLAB = 8


def _log_at(img: np.ndarray, sp: np.ndarray, r: float, *, out: np.ndarray, workers: int | None = None) -> np.ndarray:
    """The scale-normalised LoG response at radius ``r`` into ``out`` (float32, the image's shape; not ``img``).

    The Gaussian goes into ``out`` itself (threaded: :func:`dicomnode.analysis.threads.gaussian_filter`); then the
    second differences along the three axes are summed slab by slab (:data:`_LOG_SLAB` slices, in buffers of that
    size, not a work array of the image's size) and each slab's sum overwrites the slab's Gaussian. Along z a slab
    is taken with a neighbouring slice on each side; the Gaussian of the slices below the slab, already overwritten,
    is kept from the slab before (two slices). The slabs are shared among up to ``workers`` threads (default: the
    thread budget) in runs of whole slabs; the Gaussian of the slices around where one run meets the next is kept
    before any is overwritten. Every value is the whole array's :func:`_second_derivative` of the whole Gaussian,
    with the same operations in the same order (bit for bit)."""
    from dicomnode.analysis.threads import slab_runs, thread_map

    s_mm = r / _SQRT3
    _gaussian(img, s_mm / sp, mode="nearest", output=out)  # the Gaussian, in place of the result
    n = out.shape[0]
    cuts = slab_runs(n, _LOG_SLAB, workers)
    parts = len(cuts) - 1
    # the Gaussian of slices c - 2, c - 1 and c at each inner cut c: read by the runs on both sides of it
    kept = {c: out[c - 2:c + 1].copy() for c in cuts[1:-1]}
    scale = [np.float32(1.0 / sp[ax] ** 2) for ax in range(3)]
    norm = np.float32(-(s_mm ** 2))
    thread_map(lambda i: _log_slabs(out, cuts[i], cuts[i + 1], scale, norm,
                                    below=kept[cuts[i]][:2] if i > 0 else None,
                                    above=kept[cuts[i + 1]][2] if i < parts - 1 else None), range(parts), parts)
    return out


def _log_slabs(out: np.ndarray, a: int, b: int, scale: list, norm: np.float32, *, below: np.ndarray | None,
               above: np.ndarray | None) -> None:
    """:func:`_log_at`'s second differences for slices ``a`` to ``b`` (``a`` a multiple of :data:`_LOG_SLAB`) of the
    Gaussian in ``out``, written over it. ``below``: the Gaussian of slices a - 2 and a - 1 (when a > 0), ``above``:
    of slice b (when b < n), kept before another run overwrote them."""
    n = out.shape[0]
    m = min(n, _LOG_SLAB)
    src = np.empty((m + 3,) + out.shape[1:], dtype=np.float32)  # a slab's Gaussian with its neighbours along z
    buf = np.empty((m + 3,) + out.shape[1:], dtype=np.float32)
    acc = np.empty((m,) + out.shape[1:], dtype=np.float32)
    carry = np.empty((2,) + out.shape[1:], dtype=np.float32)  # the Gaussian of slices z0 - 2 and z0 - 1
    if below is not None:
        carry[...] = below
    for z0 in range(a, b, _LOG_SLAB):
        z1 = min(b, z0 + _LOG_SLAB)
        lo, hi = max(0, z0 - 1), min(n, z1 + 1)
        if hi - lo < 3 <= n:  # a last slab of one slice: three slices, so that the array's edge rule applies
            lo = max(0, hi - 3)
            hi = min(n, lo + 3)
        s = src[: hi - lo]
        for z in range(lo, z0):  # overwritten by the slab before (or another run): its Gaussian, kept
            s[z - lo] = carry[z - (z0 - 2)]
        if hi > b:  # slice b: the next run's, perhaps overwritten by it already: its Gaussian, kept
            s[z0 - lo: hi - lo - 1] = out[z0:b]
            s[hi - lo - 1] = above
        else:
            s[z0 - lo:] = out[z0:hi]
        o = acc[: z1 - z0]
        o[...] = 0
        t = _second_derivative(s, 0, out=buf[: hi - lo])[z0 - lo: z1 - lo]
        t *= scale[0]
        o += t
        for ax in (1, 2):
            t = _second_derivative(s[z0 - lo: z1 - lo], ax, out=buf[: z1 - z0])
            t *= scale[ax]
            o += t
        o *= norm
        if z1 < b:  # every slab but a run's last has at least two slices (_LOG_SLAB >= 2)
            carry[...] = s[z1 - 2 - lo: z1 - lo]
        out[z0:z1] = o


def _log_peaks(image: np.ndarray, spacing_mm: Sequence[float], radii_mm: Sequence[float], *,
               polarities: Sequence[int], min_response: float, allowed: np.ndarray | None, max_candidates: int,
               in_view: bool, keep: int = 0, overwrite: bool = False
               ) -> tuple[dict[int, list[tuple[tuple[int, int, int], float, float]]], list[float], np.ndarray]:
    """:func:`_stack_peaks` of :func:`_log_stack` for each polarity (the same candidates, in the same order), with
    the LoG responses made scale by scale: three of them in memory at a time (a scale's peaks need its two
    neighbours), not the whole stack, and no work array of the image's size (:func:`_log_at` works in place).

    The responses of the first ``keep`` scales are handed back as a (keep, Z, Y, X) stack, equal to the first
    ``keep`` planes of :func:`_log_stack` (they are made into it, not copied): a later search at the small scales
    (:func:`_pet_snr_blobs`) need not make them again. ``overwrite``: the caller lets go of ``image`` (float32),
    whose memory then takes the last scale's response (made after every other scale's: one work array of the
    image's size less; the same values). Returns (peaks per polarity, radii, that stack)."""
    radii, img, sp = _log_inputs(image, spacing_mm, radii_mm)
    n = len(radii)
    keep = max(0, min(int(keep), n))
    last = n - 1 if overwrite and img is image and n - 1 >= keep else None  # the scale made in the image itself
    kept = np.empty((keep,) + img.shape, dtype=np.float32)
    ring = [np.empty(img.shape, dtype=np.float32) for _ in range(min(n - keep - (last is not None), 3))]
    hits: dict[int, list[tuple[np.ndarray, int, np.ndarray]]] = {int(p): [] for p in polarities}
    have: dict[int, np.ndarray] = {}

    def response(i: int) -> np.ndarray:
        if i not in have:
            if i < keep:
                buf = kept[i]
            elif i == last:  # the last to be made: the image is read by no later scale
                buf = img
            else:
                buf = ring[(i - keep) % len(ring)]
                have.pop(next((k for k in have if have[k] is buf), -1), None)
            have[i] = _log_at(img, sp, radii[i], out=buf)
        return have[i]

    for i in range(n):
        below, above = max(0, i - 1), min(n - 1, i + 1)
        response(below)
        response(i)
        response(above)
        for pol in hits:
            hit = _scale_peaks(have[i], have[below], have[above], i, radii[i], sp, polarity=pol,
                               min_response=min_response, allowed=allowed, in_view=in_view)
            if hit is not None:
                hits[pol].append(hit)
    return {pol: _ranked(h, radii, max_candidates) for pol, h in hits.items()}, radii, kept


def _max3(a: np.ndarray, axis: int, out: np.ndarray | None = None) -> np.ndarray:
    """Maximum over each voxel and its two neighbours along ``axis`` (edges: nearest), with numpy (several times
    faster than ``scipy.ndimage.maximum_filter1d`` for a width of 3); into ``out`` (not ``a``) when given."""
    n = a.shape[axis]
    if n < 2:
        if out is None:
            return a.copy()
        out[...] = a
        return out
    out = np.empty_like(a) if out is None else out
    lo = [slice(None)] * a.ndim
    hi = [slice(None)] * a.ndim
    last = [slice(None)] * a.ndim
    lo[axis], hi[axis], last[axis] = slice(0, n - 1), slice(1, n), slice(n - 1, n)
    np.maximum(a[tuple(lo)], a[tuple(hi)], out=out[tuple(lo)])  # each voxel and its successor
    out[tuple(last)] = a[tuple(last)]
    np.maximum(out[tuple(hi)], a[tuple(lo)], out=out[tuple(hi)])  # ... and its predecessor
    return out


def _stack_peaks(stack: np.ndarray, radii: list[float], spacing_mm: Sequence[float], *, polarity: int,
                 min_response: float, allowed: np.ndarray | None, max_candidates: int,
                 in_view: bool) -> list[tuple[tuple[int, int, int], float, float]]:
    """Local maxima over space and scale of ``polarity * stack`` above ``min_response``, strongest first.

    Scale by scale (:func:`_scale_peaks`): the maximum over the neighbouring scales, then over space (the
    3 x 3 x 3 x 3 maximum is separable), slab by slab: no copy of the stack, no work volume."""
    sp = np.asarray(spacing_mm, dtype=float)
    n_scales = stack.shape[0]
    hits: list[tuple[np.ndarray, int, np.ndarray]] = []
    for i in range(n_scales):
        hit = _scale_peaks(stack[i], stack[max(0, i - 1)], stack[min(n_scales - 1, i + 1)], i, radii[i], sp,
                           polarity=polarity, min_response=min_response, allowed=allowed, in_view=in_view)
        if hit is not None:
            hits.append(hit)
    return _ranked(hits, radii, max_candidates)


#: Slices per slab of :func:`_scale_peaks` (its work buffers stay in the CPU's cache).
_PEAK_SLAB = 8


def _scale_peaks(cur: np.ndarray, below: np.ndarray, above: np.ndarray, i: int, r: float, sp: np.ndarray, *,
                 polarity: int, min_response: float, allowed: np.ndarray | None,
                 in_view: bool, workers: int | None = None) -> tuple[np.ndarray, int, np.ndarray] | None:
    """The peaks of scale ``i`` (response ``cur``, its neighbouring scales ``below`` and ``above``, edges: the
    scale itself): (indices, i, signed responses), or None.

    A peak equals the maximum of ``polarity`` x the responses over its 3 x 3 x 3 x 3 neighbourhood (edges: nearest)
    and exceeds ``min_response``. Made slab by slab (:data:`_PEAK_SLAB` slices and one neighbouring slice on each
    side, in buffers of that size, not work arrays of the response's size): a maximum is exact in any order, so
    the peaks are those of the whole array (tested against a 4-D maximum filter). The slabs are shared among up to
    ``workers`` threads (default: the thread budget) in runs of whole slabs (each reads, none writes the responses);
    the peaks come in the order of one run over all slabs."""
    from dicomnode.analysis.threads import slab_runs, thread_map

    cuts = slab_runs(cur.shape[0], _PEAK_SLAB, workers)
    args = (cur, below, above, r, sp, polarity, min_response, allowed, in_view)
    runs = thread_map(lambda k: _peak_run(cuts[k], cuts[k + 1], *args), range(len(cuts) - 1), len(cuts) - 1)
    found_idx = [x for idx, _ in runs for x in idx]
    found_val = [x for _, val in runs for x in val]
    if not found_idx:
        return None
    return np.concatenate(found_idx), i, np.concatenate(found_val)


def _peak_run(a: int, b: int, cur: np.ndarray, below: np.ndarray, above: np.ndarray, r: float, sp: np.ndarray,
              polarity: int, min_response: float, allowed: np.ndarray | None, in_view: bool
              ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """:func:`_scale_peaks` on slices ``a`` to ``b`` (``a`` a multiple of :data:`_PEAK_SLAB`): the peaks' indices
    (on the whole array) and signed responses, slab by slab."""
    nz = cur.shape[0]
    sign = np.float32(polarity)
    margins = [int(math.ceil(r / s - 0.5)) if in_view else 0 for s in sp]
    shape = (min(nz, _PEAK_SLAB) + 2,) + cur.shape[1:]
    mx, tmp = np.empty(shape, dtype=np.float32), np.empty(shape, dtype=np.float32)
    sig = None if polarity == 1 else np.empty(shape, dtype=np.float32)
    found_idx: list[np.ndarray] = []
    found_val: list[np.ndarray] = []
    for z0 in range(a, b, _PEAK_SLAB):
        z1 = min(b, z0 + _PEAK_SLAB)
        lo, hi = max(0, z0 - 1), min(nz, z1 + 1)
        m, t = mx[: hi - lo], tmp[: hi - lo]
        if sig is None:  # bright blobs: the responses as they are, no signed copy
            np.maximum(cur[lo:hi], below[lo:hi], out=m)  # the scale axis, edges: nearest (as _max3)
            np.maximum(m, above[lo:hi], out=m)
            signed = cur[z0:z1]
        else:
            sg = sig[: hi - lo]
            np.multiply(cur[lo:hi], sign, out=sg)
            np.multiply(below[lo:hi], sign, out=t)
            np.maximum(sg, t, out=m)
            np.multiply(above[lo:hi], sign, out=t)
            np.maximum(m, t, out=m)
            signed = sg[z0 - lo: z1 - lo]
        _max3(m, 0, out=t)  # the slab's inner rows (and the array's own edges) are the whole array's
        m, t = t[z0 - lo: z1 - lo], m[z0 - lo: z1 - lo]
        for ax in (1, 2):
            _max3(m, ax, out=t)
            m, t = t, m
        peaks = signed == m
        peaks &= signed > min_response
        if allowed is not None:
            peaks &= allowed[z0:z1]
        if margins[0] > 0:
            keep_lo, keep_hi = margins[0], nz - margins[0]
            if z0 < keep_lo:
                peaks[: min(keep_lo, z1) - z0] = False
            if z1 > keep_hi:
                peaks[max(keep_hi, z0) - z0:] = False
        for ax in (1, 2):
            if margins[ax] > 0:
                sl = [slice(None), slice(None), slice(None)]
                sl[ax] = slice(0, margins[ax])
                peaks[tuple(sl)] = False
                sl[ax] = slice(max(0, cur.shape[ax] - margins[ax]), None)
                peaks[tuple(sl)] = False
        flat = np.flatnonzero(peaks)  # (np.argwhere's indices, in its order: ten times faster on a few peaks)
        if flat.size:
            idx = np.empty((flat.size, 3), dtype=np.intp)
            for ax, ix in enumerate(np.unravel_index(flat, peaks.shape)):
                idx[:, ax] = ix
            found_val.append(signed[tuple(idx.T)])
            idx[:, 0] += z0
            found_idx.append(idx)
    return found_idx, found_val


def _ranked(hits: list[tuple[np.ndarray, int, np.ndarray]], radii: list[float],
            max_candidates: int) -> list[tuple[tuple[int, int, int], float, float]]:
    """The peaks of all scales, strongest first, at most ``max_candidates``."""
    if not hits:
        return []
    idx = np.concatenate([np.column_stack([np.full(len(h[0]), h[1]), h[0]]) for h in hits])
    resp = np.concatenate([h[2] for h in hits])
    order = np.argsort(-resp)[: int(max_candidates)]  # the same order (and ties) as one search over the stack
    return [((int(idx[o, 1]), int(idx[o, 2]), int(idx[o, 3])), radii[int(idx[o, 0])], float(resp[o]))
            for o in order]


def _ball_box(center: Sequence[float], radius_mm: float, spacing_mm: Sequence[float],
              shape: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(max(0, int(math.floor(c - radius_mm / s))), min(n, int(math.ceil(c + radius_mm / s)) + 1))
                 for c, s, n in zip(center, spacing_mm, shape))


def _distance_mm(box: tuple[slice, ...], center: Sequence[float], spacing_mm: Sequence[float]) -> np.ndarray:
    """Distance of each voxel of ``box`` from ``center`` (voxel indices), mm."""
    axes = [((np.arange(b.start, b.stop) - c) * s) ** 2 for b, c, s in zip(box, center, spacing_mm)]
    return np.sqrt(axes[0][:, None, None] + axes[1][None, :, None] + axes[2][None, None, :])


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``ndi.binary_fill_holes`` (face connectivity, any number of axes), the same voxels, by labelling the
    background once: a hole is a background component that touches no face of the array (scipy's version grows
    the outside by repeated dilations, one pass over the array per voxel of depth)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.size == 0 or not mask.any():
        return mask.copy()
    lab, n = ndi.label(~mask)
    outside = np.zeros(n + 1, dtype=bool)
    for ax in range(mask.ndim):
        outside[np.take(lab, [0, mask.shape[ax] - 1], axis=ax).ravel()] = True
    outside[0] = False
    return ~outside[lab]


def _grown_mask_box(mask: np.ndarray, margin: "int | tuple[int, ...]") -> tuple[slice, ...] | None:
    """The bounding box of a 3-D mask grown by ``margin`` voxels (one or one per axis), clipped to the grid; None
    when the mask is empty."""
    box = mask_box(mask)
    return None if box is None else grow_box(box, margin, mask.shape)


def _fill_holes_boxed(mask: np.ndarray) -> np.ndarray:
    """:func:`_fill_holes` of a mask much smaller than its grid (a whole-grid organ mask): the same voxels, filled on
    its bounding box grown by one voxel (clipped to the grid). A hole lies inside the bounding box; a background
    voxel there that reaches the grid's faces does so through the box's outer layer (all background, one connected
    shell), or lies on a face the box shares with the grid."""
    mask = np.asarray(mask, dtype=bool)
    box = _grown_mask_box(mask, 1)
    if box is None:
        return mask.copy()
    out = mask.copy()
    out[box] = _fill_holes(mask[box])
    return out


#: above this many row ends, :func:`max_diameter_mm` takes their convex hull's vertices before the pairwise
#: distances (pdist of N points holds N^2 / 2 floats: 3000 points are 36 MB; a 1.1-million-voxel ellipsoid has 10 000
#: row ends, 400 MB and 0.7 s without the hull)
_MAX_PAIRWISE_POINTS = 3000


def _row_ends(mask: np.ndarray) -> np.ndarray:
    """The voxels of a 3-D ``mask`` that are the first or the last of the mask along each axis through them: every
    extreme point of the voxel centres' convex hull is (a voxel with mask voxels on both sides of it along a line
    is the midpoint of two of them), so the farthest pair of voxels is among them."""
    keep = mask.copy()
    for ax in range(3):
        n = mask.shape[ax]
        if n <= 2:
            continue
        ends = np.zeros_like(mask)
        np.put_along_axis(ends, np.expand_dims(mask.argmax(axis=ax), ax), True, axis=ax)
        np.put_along_axis(ends, np.expand_dims(n - 1 - np.flip(mask, ax).argmax(axis=ax), ax), True, axis=ax)
        keep &= ends
    return keep


def _spans_3d(pts: np.ndarray) -> bool:
    """Whether integer points span 3-D space (not all on one plane or line), in exact integer arithmetic."""
    d = pts.astype(np.int64) - pts[0].astype(np.int64)
    nz = np.flatnonzero(np.any(d != 0, axis=1))
    if nz.size == 0:
        return False
    cr = np.cross(d, d[nz[0]])
    k = np.flatnonzero(np.any(cr != 0, axis=1))
    return bool(k.size) and bool(np.any(d @ cr[k[0]] != 0))


def max_diameter_mm(mask: np.ndarray, spacing_mm: Sequence[float]) -> float:
    """Largest distance between two voxel centres of ``mask`` plus one voxel (mean spacing), mm; 0 when empty.

    A 3-D mask whose voxels span space: over the voxels at the ends of their rows along all three axes
    (:func:`_row_ends`, a superset of the convex hull's vertices), the same float as over the hull's vertices.
    Otherwise (flat or few voxels, other dimensions): over the convex hull's vertices, or all voxels (subsampled)
    where there is no hull."""
    mask = np.asarray(mask)
    sp = np.asarray(spacing_mm, dtype=float)
    if mask.ndim == 3 and mask.size and sp.shape == (3,):
        ends = np.argwhere(_row_ends(mask.astype(bool, copy=False)))
        if len(ends) > 4 and _spans_3d(ends):
            xyz = ends * sp
            if len(xyz) > _MAX_PAIRWISE_POINTS:  # a large region (a solid mass on the full grid): its hull's
                from scipy.spatial import ConvexHull  # vertices, the same as the whole mask's (the ends hold them)

                xyz = xyz[ConvexHull(xyz).vertices]
            return float(math.sqrt(_max_d2(xyz))) + float(np.mean(sp))
    pts = np.argwhere(mask)
    if len(pts) == 0:
        return 0.0
    extra = float(np.mean(sp))
    xyz = pts * sp
    if len(xyz) > 4:
        try:
            from scipy.spatial import ConvexHull
            xyz = xyz[ConvexHull(xyz).vertices]
        except Exception:  # noqa: BLE001 - flat or degenerate point sets: all points, subsampled
            xyz = xyz[:: max(1, len(xyz) // 2000)]
    return float(math.sqrt(_max_d2(xyz))) + extra


def _max_d2(xyz: np.ndarray) -> float:
    """``((xyz[:, None, :] - xyz[None, :, :]) ** 2).sum(-1).max()``, the same float, without the (N, N, 3) array: the
    squared distances of every pair by scipy's ``pdist`` (half the pairs, no temporaries), then, of the pairs within
    a relative 1e-9 of its largest (the sums of three squares differ at most in their rounding), the expression
    itself."""
    if len(xyz) < 2:
        return float(((xyz[:, None, :] - xyz[None, :, :]) ** 2).sum(-1).max())
    from scipy.spatial.distance import pdist

    d2 = pdist(xyz, "sqeuclidean")
    near = np.flatnonzero(d2 >= d2.max() * (1.0 - 1e-9))
    n = len(xyz)
    # the condensed index k of pair (i, j), i < j: k = n i - i (i + 1) / 2 + j - i - 1
    i = (n - 2 - np.floor(np.sqrt(-8.0 * near + 4.0 * n * (n - 1) - 7.0) / 2.0 - 0.5)).astype(np.intp)
    j = (near + i + 1 - n * (n - 1) // 2 + (n - i) * ((n - i) - 1) // 2).astype(np.intp)
    return float(((xyz[i] - xyz[j]) ** 2).sum(-1).max())


def _shape_features(mask: np.ndarray, spacing_mm: Sequence[float]) -> dict[str, float]:
    sp = np.asarray(spacing_mm, dtype=float)
    n = int(np.count_nonzero(mask))
    vol_mm3 = n * float(np.prod(sp))
    diam = max_diameter_mm(mask, sp)
    pts = np.argwhere(mask) * sp
    cov = np.cov(pts.T) if n > 1 else np.zeros((3, 3))
    cov = cov + np.diag(sp ** 2 / 12.0)  # each voxel is a box, not a point
    ev = np.linalg.eigvalsh(cov)
    return {
        "volume_ml": vol_mm3 / 1000.0,
        "log10_volume_ml": math.log10(max(vol_mm3 / 1000.0, 1e-6)),
        "diameter_mm": diam,
        "equivalent_diameter_mm": (6.0 * vol_mm3 / math.pi) ** (1.0 / 3.0),
        "compactness": vol_mm3 / (math.pi * diam ** 3 / 6.0) if diam > 0 else 0.0,
        "elongation": float(math.sqrt(max(ev[0], 0.0) / ev[-1])) if ev[-1] > 0 else 0.0,
    }


def _component_at(mask: np.ndarray, seed: Sequence[int], spacing_mm: Sequence[float],
                  max_seed_mm: float) -> np.ndarray | None:
    """The connected component of ``mask`` holding ``seed``, or the one nearest to it within ``max_seed_mm``."""
    lab, n = ndi.label(mask)
    if n == 0:
        return None
    s = tuple(int(v) for v in seed)
    k = int(lab[s])
    if k == 0:
        dist, (iz, iy, ix) = ndi.distance_transform_edt(lab == 0, sampling=spacing_mm, return_indices=True)
        if dist[s] > max_seed_mm:
            return None
        k = int(lab[iz[s], iy[s], ix[s]])
    return lab == k


def _truncation(region: np.ndarray, dist: np.ndarray, grow_mm: float, spacing_mm: Sequence[float]) -> float:
    """Fraction of the region's boundary voxels that lie on the growth limit (a ball of ``grow_mm``): 0 for an
    isolated blob, large for a piece cut out of a bigger structure."""
    boundary = region & ~ndi.binary_erosion(region)
    n = int(np.count_nonzero(boundary))
    if n == 0:
        return 0.0
    return float(np.count_nonzero(boundary & (dist > grow_mm - max(spacing_mm)))) / n


def _cut_fraction(region: np.ndarray, beyond: np.ndarray) -> float:
    """Fraction of the region's boundary voxels (those with a face neighbour outside it, or on the array's edge) that
    have a face neighbour in ``beyond`` (where it would have grown on but for a growth limit): 0 for a region closed by
    its own fall-off, large for a piece cut out of a bigger structure."""
    boundary = region & ~ndi.binary_erosion(region)
    n = int(np.count_nonzero(boundary))
    if n == 0:
        return 0.0
    return float(np.count_nonzero(boundary & ndi.binary_dilation(beyond))) / n


def _seed_in(center: Sequence[float], box: tuple[slice, ...]) -> list[int]:
    """The voxel of ``center`` (voxel indices of the image, fractional) in ``box``'s own indices, clipped to it."""
    return [min(max(int(round(c)) - b.start, 0), b.stop - b.start - 1) for c, b in zip(center, box)]


def _grow_region(z: np.ndarray, foreground: np.ndarray, dist_mm: np.ndarray, seed: Sequence[int], *,
                 reach_mm: float, level: float, polarity: int, spacing_mm: Sequence[float],
                 max_seed_mm: float, band_cut: bool = False) -> tuple[np.ndarray, float, bool] | None:
    """The region a blob grows to: the connected part of the foreground beyond ``level`` (above it for
    ``polarity`` 1, below for -1) within ``reach_mm`` of the blob's centre that holds ``seed`` (or lies within
    ``max_seed_mm`` of it), its holes filled.

    Parameters
    ----------
    z : (Z, Y, X) ndarray
        Intensities (z-scores) of a box around the blob.
    foreground : (Z, Y, X) bool ndarray
        Where the region may grow, on the same box.
    dist_mm : (Z, Y, X) ndarray
        Distance of each voxel from the blob's centre, mm (:func:`_distance_mm`).
    seed : sequence of 3 int
        The centre's voxel in the box.
    reach_mm, level, polarity, spacing_mm, max_seed_mm
        Growth limit (mm), threshold (``z``'s unit), 1 (bright) or -1 (dark), voxel spacing (mm), how far the
        region may lie from the seed (mm).
    band_cut : bool, optional
        Count as cut the boundary voxels within the largest spacing of the limit (:func:`_truncation`), the definition
        the hand-set PET model's truncation likelihoods and the PET calibration were set on (PET in SUV), instead of
        those the limit stopped (:func:`_cut_fraction`). Default False.

    Returns
    -------
    (region, truncation, closed) or None
        The region (bool, the box's shape); the fraction of its boundary on the growth limit
        (:func:`_cut_fraction`), where it was cut, not closed by its own fall-off; and whether none of it is. None
        when no region lies within ``max_seed_mm`` of the seed.
    """
    cand = foreground & (dist_mm <= reach_mm) & ((z - level) * polarity > 0)
    region = _component_at(cand, seed, spacing_mm, max_seed_mm=max_seed_mm)
    if region is None:
        return None
    # holes filled and the boundary found on the region's bounding box grown by a voxel (clipped to the box): the
    # same voxels as on the box (a hole lies inside the bounding box; the erosion's border is the box's where the
    # bounding box meets it, and the empty layer around it elsewhere)
    bb = _grown_mask_box(region, 1)
    tight = _fill_holes(region[bb])
    if band_cut:  # the PET model's definition: a band of the largest spacing inside the limit
        trunc = _truncation(tight, dist_mm[bb], reach_mm, spacing_mm)
    else:  # cut where the limit stopped it: growth would have gone on into a face neighbour that passes the level in
        # the foreground but lies beyond the reach (the band counted a blob's in-plane fall-off on thick slices)
        beyond = foreground[bb] & (dist_mm[bb] > reach_mm) & ((z[bb] - level) * polarity > 0)
        trunc = _cut_fraction(tight, beyond)
    region[...] = False
    region[bb] = tight
    return region, trunc, trunc == 0.0


#: :func:`detect_tissue` grows its candidates in threads when the largest candidate's window (3 x its blob radius
#: each way, with the PET's regrowth) holds at most this many voxels: a PET's 4 mm grid and an MR's 1 x 1 x 3 mm
#: (the bench MR's detect peak 425 -> 490 MB, 5.4x its volume), not a 0.8 mm CT's (its windows would hold 20 million).
CANDIDATE_THREAD_VOXELS = 1 << 23

#: PET candidates cut by their blob's growth limit (1.5 x the blob radius) are grown once more, to this multiple of
#: that reach (:func:`detect_tissue`), above the same level: a 5 mL sphere (radius 10.6 mm, 13 mm with the blur)
#: found at the 6-7 mm scale fits inside twice the reach; a larger structure stays cut (docs/models.md, petsmall).
PET_REGROW = 2.0


def _near(mask: np.ndarray, spacing_mm: Sequence[float], dist_mm: float) -> np.ndarray:
    """``ndi.distance_transform_edt(~mask, sampling=spacing_mm) <= dist_mm`` (the mask grown by ``dist_mm``), the same
    voxels, the distances measured on the mask's bounding box grown by the distance and a voxel (clipped to the
    array): every voxel of the mask, the distance's only features, is in it, so each distance there is the whole
    array's (scipy's feature transform works line by line over the same features), and beyond it every voxel is
    farther."""
    mask = np.asarray(mask, dtype=bool)
    box = _grown_mask_box(mask, tuple(int(math.ceil(dist_mm / s)) + 1 for s in spacing_mm))
    if box is None:
        return ndi.distance_transform_edt(~mask, sampling=spacing_mm) <= dist_mm
    out = np.zeros(mask.shape, dtype=bool)
    out[box] = ndi.distance_transform_edt(~mask[box], sampling=spacing_mm) <= dist_mm
    return out


def _eroded(mask: np.ndarray, spacing_mm: Sequence[float], dist_mm: float) -> np.ndarray:
    """``ndi.distance_transform_edt(mask, sampling=spacing_mm) > dist_mm`` (the voxels farther than ``dist_mm`` from
    the outside of the mask), the same voxels, measured on the mask's bounding box grown by a voxel (clipped to the
    array): the empty layer around it holds, for every voxel of the mask, a nearest outside voxel as near as any
    beyond it (the nearer on every axis), and the array's edge is the box's where they meet."""
    mask = np.asarray(mask, dtype=bool)
    out = np.zeros(mask.shape, dtype=bool)
    box = _grown_mask_box(mask, 1)
    if box is None:
        return out
    out[box] = ndi.distance_transform_edt(mask[box], sampling=spacing_mm) > dist_mm
    return out


def _shell(region: np.ndarray, spacing_mm: Sequence[float], width_mm: float) -> np.ndarray:
    """The voxels outside ``region`` within ``width_mm`` of it (``0 < distance <= width_mm``)."""
    if not region.any():  # no features: scipy's distances of an empty region, as they are
        d = ndi.distance_transform_edt(~region, sampling=spacing_mm)
        return (d > 0) & (d <= width_mm)
    near = _near(region, spacing_mm, width_mm)
    near &= ~region
    return near


def _resolve_overlaps(found: list[Finding]) -> list[Finding]:
    """Largest first; a region that shares more than 20 % of its voxels with a kept one is dropped."""
    return _resolve_overlaps_ranked(found, [0.0] * len(found))


def _radii(min_radius_mm: float, max_radius_mm: float, ratio: float = 1.5) -> list[float]:
    radii = [min_radius_mm]
    while radii[-1] * ratio <= max_radius_mm * 1.0001:
        radii.append(radii[-1] * ratio)
    return radii


def _split(found: list[Finding], settings: DetectionSettings) -> tuple[tuple[Finding, ...], tuple[Finding, ...]]:
    # most probable first; a calibration that saturates ties are broken by the ranking score it mapped
    found = sorted(found, key=lambda f: (-f.probability, -f.features.get("ranking_score", f.probability)))
    ok, rejected = [], []
    for f in found:
        good = (f.diameter_mm >= settings.min_diameter_mm and f.volume_ml >= settings.min_volume_ml
                and f.probability >= settings.probability_threshold)
        (ok if good and len(ok) < settings.max_findings else rejected).append(f)
    return tuple(ok), tuple(rejected)


def _finding(label: str, region_box: np.ndarray, box: tuple[slice, ...], feats: dict[str, float],
             model: NaiveBayes | FittedModel) -> Finding:
    """A finding from a region on ``box``, cropped to the region's own bounding box."""
    idx = np.argwhere(region_box)
    lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
    tight = tuple(slice(int(b.start + l), int(b.start + h)) for b, l, h in zip(box, lo, hi))
    mask = np.ascontiguousarray(region_box[tuple(slice(int(l), int(h)) for l, h in zip(lo, hi))])
    c = idx.mean(axis=0) + np.array([b.start for b in box])
    return Finding(label=label, mask=mask, box=tight, centroid_zyx=(float(c[0]), float(c[1]), float(c[2])),
                   volume_ml=feats["volume_ml"], diameter_mm=feats["diameter_mm"],
                   probability=model.posterior(feats), features=feats)


# ------------------------------------------------------------------------------------------------ lung


def _closed_region(lung: np.ndarray, spacing_mm: Sequence[float], closing_mm: float) -> np.ndarray:
    """Each slice of ``lung`` closed by a disk of ``closing_mm`` (via distance transforms) with holes filled."""
    if not lung.any():
        return lung.copy()
    sp = tuple(float(s) for s in spacing_mm)
    pad_y = int(math.ceil(closing_mm / sp[1])) + 1
    pad_x = int(math.ceil(closing_mm / sp[2])) + 1
    m = np.pad(lung, ((0, 0), (pad_y, pad_y), (pad_x, pad_x)))
    # one 3-D distance transform whose slice distance is huge acts slice by slice: the nearest voxel in another
    # slice is always farther than ``closing_mm``
    sampling = (1e4 * closing_mm, sp[1], sp[2])
    dil = ndi.distance_transform_edt(~m, sampling=sampling) <= closing_mm
    closed = ndi.distance_transform_edt(dil, sampling=sampling) > closing_mm
    closed |= m
    out = np.zeros_like(m)
    for z in np.flatnonzero(closed.reshape(closed.shape[0], -1).any(axis=1)):
        out[z] = ndi.binary_fill_holes(closed[z])
    return out[:, pad_y:-pad_y, pad_x:-pad_x]


def detect_lung(image: np.ndarray, spacing_mm: Sequence[float], lungs: Sequence[np.ndarray], *,
                settings: DetectionSettings = DetectionSettings(), closing_mm: float = 25.0,
                tissue_range_hu: tuple[float, float] = (-400.0, 200.0), parenchyma_hu: float = -850.0,
                max_radius_mm: float = 40.0, coarse_mm: float = 2.5, min_response_hu: float = 100.0,
                vessel_opening_mm: float = 1.5, max_candidates: int = 40, mirror_axis: int | None = 2,
                model: NaiveBayes = LUNG_MODEL,
                calibration: "tuple[float, float] | ScoreCalibration | None" = None) -> DetectionResult:
    """Nodules and masses inside the lungs of a CT in HU.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        CT in HU, denoised (the working image).
    spacing_mm : tuple of 3 float
        Voxel spacing (dz, dy, dx), mm.
    lungs : sequence of (Z, Y, X) bool ndarray
        The lung masks (e.g. ``lung_left``, ``lung_right`` of ``segment_ct``); each is closed on its own.
    settings : DetectionSettings, optional
        Size limits, maximum number and probability threshold.
    closing_mm : float, optional
        Radius of the in-plane closing that brings bites and holes of the lung masks (masses at the chest wall or
        mediastinum) into the search region, mm. Default 25: bites narrower than about 50 mm are filled; the
        concavity around the heart is wider and stays out.
    tissue_range_hu : (float, float), optional
        A finding is made of voxels in this range, HU. Default (-400, 200).
    parenchyma_hu : float, optional
        Value given to everything outside the search region before the blob search, HU. Default -850.
    max_radius_mm : float, optional
        Largest blob radius searched, mm. Default 40. The smallest is ``settings.min_diameter_mm / 2``.
    coarse_mm : float, optional
        The blob search runs on a grid block-averaged to about this spacing, mm. Default 2.5.
    min_response_hu : float, optional
        Smallest normalised blob response, HU. Default 100.
    vessel_opening_mm : float, optional
        Radius of the opening that detaches vessels from a candidate before its component is taken, mm (in plane
        only when the slices are thicker than 2.5 times the pixels). 0 turns it off. Default 1.5.
    max_candidates : int, optional
        Blob candidates grown, strongest first. Default 40.
    mirror_axis : {0, 1, 2} or None, optional
        The index axis that runs left-right in the patient (2 for axial slices), for the ``mirror_tissue``
        feature; the mirror plane is half-way across the lungs' extent on it. None leaves the feature out. Default 2.
    model : NaiveBayes, optional
        The probability model (the ranking score). Default :data:`LUNG_MODEL`.
    calibration : (float, float) or ScoreCalibration or None, optional
        Maps the ranking score to a probability (see :func:`detect_tissue`). Default None (the score is the
        probability).

    Returns
    -------
    DetectionResult
        Findings labelled "nodule" (diameter <= 30 mm) or "mass". ``centroid_mm`` is None (see :func:`detect`).
    """
    _check_image(image)
    sp = _check_spacing(spacing_mm)
    lo, hi = tissue_range_hu
    if not lo < hi:
        raise ValueError(f"tissue_range_hu must be (low, high) with low < high, got {tissue_range_hu}")
    for name, v in (("closing_mm", closing_mm), ("max_radius_mm", max_radius_mm), ("coarse_mm", coarse_mm)):
        if not v > 0:
            raise ValueError(f"{name} must be > 0 mm, got {v}")
    if not vessel_opening_mm >= 0:
        raise ValueError(f"vessel_opening_mm must be >= 0 mm, got {vessel_opening_mm}")
    lungs = [np.asarray(m, dtype=bool) for m in lungs]
    if any(m.shape != image.shape for m in lungs):
        raise ValueError("every lung mask must have the image's shape")
    notes: list[str] = []
    if not lungs or not any(m.any() for m in lungs):
        return DetectionResult((), (), 0, ("no lungs: nothing to search",))

    f = _factors(sp, coarse_mm)
    csp = tuple(s * k for s, k in zip(sp, f))
    # the lungs' bounding box, padded by the closing radius and one coarse voxel
    zs, ys, xs = (np.flatnonzero(np.logical_or.reduce([m.any(axis=axes) for m in lungs]))
                  for axes in ((1, 2), (0, 2), (0, 1)))
    pad = [int(math.ceil((closing_mm if a else 0) / s)) + k for a, s, k in zip((0, 1, 1), sp, f)]
    box = tuple(slice(max(0, int(v[0]) - p), min(n, int(v[-1]) + p + 1))
                for v, p, n in zip((zs, ys, xs), pad, image.shape))
    mirror = None
    if mirror_axis is not None:
        if mirror_axis not in (0, 1, 2):
            raise ValueError(f"mirror_axis must be 0, 1, 2 or None, got {mirror_axis}")
        ext = (zs, ys, xs)[mirror_axis]
        mirror = (mirror_axis, float(ext[0] + ext[-1]))
    # the search region on the coarse grid
    region_c = None
    for m in lungs:
        if not m[box].any():
            continue
        r = _closed_region(block_centres(m[box], f), csp, closing_mm)
        region_c = r if region_c is None else region_c | r
    if region_c is None:
        return DetectionResult((), (), 0, ("no lungs: nothing to search",))
    img_c = block_mean(image[box], f)
    np.clip(img_c, -1000.0, hi, out=img_c)
    img_c[~region_c] = parenchyma_hu
    radii = _radii(max(settings.min_diameter_mm / 2.0, 1.0), max_radius_mm)
    cands = blob_candidates(img_c, csp, radii, polarity=1, min_response=min_response_hu,
                            allowed=region_c & (img_c > lo), max_candidates=max_candidates)
    notes.append(f"lung search: {len(cands)} blob candidate(s) on a {csp[0]:.2g} x {csp[1]:.2g} x {csp[2]:.2g} mm "
                 f"grid, radii {radii[0]:.3g}..{radii[-1]:.3g} mm")

    # full-resolution refinement around each candidate
    opening = None
    if vessel_opening_mm > 0:
        volumetric = sp[0] <= 2.5 * 0.5 * (sp[1] + sp[2])
        rad = [vessel_opening_mm / s if (a or volumetric) else 0.0 for a, s in zip((0, 1, 1), sp)]
        n = [int(math.floor(r)) for r in rad]
        g = np.ogrid[tuple(slice(-k, k + 1) for k in n)]
        ball = sum((gi / max(r, 1e-9)) ** 2 for gi, r in zip(g, rad)) <= 1.0
        opening = ball if ball.sum() > 1 else None
    found: list[Finding] = []
    for (cz, cy, cx), r_mm, resp in cands:
        center = [box[a].start + (c + 0.5) * f[a] - 0.5 for a, c in enumerate((cz, cy, cx))]
        grow_mm = max(2.0 * r_mm, r_mm + 6.0)
        bb = _ball_box(center, grow_mm + 4.0, sp, image.shape)
        im = image[bb]
        dist = _distance_mm(bb, center, sp)
        # the coarse region on this box, back at full resolution
        idx = [np.clip((np.arange(b.start, b.stop) - box[a].start) // f[a], 0, region_c.shape[a] - 1)
               for a, b in enumerate(bb)]
        inside = region_c[np.ix_(*idx)]
        cand = (im >= lo) & (im <= hi) & inside & (dist <= grow_mm)
        seed = [int(round(c)) - b.start for c, b in zip(center, bb)]
        seed = [min(max(s, 0), n - 1) for s, n in zip(seed, cand.shape)]
        region = None
        if opening is not None:
            # detach vessels by an opening, take the component, then give back the surface voxels the opening
            # took from it (at most one opening radius away: a vessel stays detached)
            opened = ndi.binary_opening(cand, structure=opening)
            core = _component_at(opened, seed, sp, max_seed_mm=max(r_mm, 2.0)) if opened.any() else None
            if core is not None:
                region = cand & ndi.binary_dilation(core, structure=opening)
                region = _component_at(region, seed, sp, max_seed_mm=max(r_mm, 2.0))
        if region is None:
            region = _component_at(cand, seed, sp, max_seed_mm=max(r_mm, 2.0))
        if region is None:
            continue
        feats = _shape_features(region, sp)
        shell = _shell(region, sp, 3.0)
        vals = im[region]
        sv = im[shell]
        feats["mean"] = float(vals.mean())
        feats["surround_mean"] = float(sv.mean()) if sv.size else float("nan")
        feats["contrast"] = feats["mean"] - feats["surround_mean"] if sv.size else float("nan")
        feats["lung_contact"] = float(np.mean(sv < lo)) if sv.size else 0.0
        feats["truncation"] = _truncation(region, dist, grow_mm, sp)
        if mirror is not None:
            pts = np.argwhere(region) + np.array([b.start for b in bb])
            ax, twice_mid = mirror
            pts[:, ax] = np.clip(np.round(twice_mid - pts[:, ax]).astype(int), 0, image.shape[ax] - 1)
            feats["mirror_tissue"] = float(np.mean(image[tuple(pts.T)] > lo))
        feats["blob_radius_mm"] = r_mm
        feats["blob_response"] = resp
        label = "nodule" if feats["diameter_mm"] <= 30.0 else "mass"
        found.append(_finding(label, region, bb, feats, model))
    found = _resolve_overlaps(found)
    if calibration is not None:
        found = _calibrate_all(found, calibration, settings, notes)
    ok, rejected = _split(found, settings)
    return DetectionResult(ok, rejected, len(cands), tuple(notes))


# ------------------------------------------------------------------------------------------------ tissue model


def _noise_sd(image: np.ndarray, mask: np.ndarray, spacing_mm: Sequence[float], sigma_mm: float = 2.0) -> float:
    """The median over ``mask`` of the local standard deviation (Gaussian window of ``sigma_mm``, in plane): the
    spread of intensities *within* a tissue (noise and texture), the unit of contrast-to-noise ratios."""
    step = max(1, image.shape[0] // 32)  # in-plane windows: a few dozen slices tell the spread
    image, mask = image[::step], mask[::step]
    sig = [0.0] + [sigma_mm / s for s in spacing_mm[1:]]
    m = ndi.gaussian_filter(image, sig)
    v = ndi.gaussian_filter(image * image, sig) - m * m
    sd = np.sqrt(np.clip(v[mask], 0, None))
    val = float(np.median(sd)) if sd.size else 0.0
    if not val > 0:
        val = float(np.std(image[mask])) if mask.any() else 1.0
    return val or 1.0


def _body_box(foreground: np.ndarray, spacing_mm: Sequence[float], margin_mm: float,
              align: Sequence[int] = (1, 1, 1), min_saving: float = 0.2) -> tuple[slice, slice, slice] | None:
    """The foreground's bounding box grown by ``margin_mm`` (clipped to the grid; its start a multiple of
    ``align``, so that block averages fall on the same blocks as on the whole grid), or None when it would save
    less than ``min_saving`` of the voxels."""
    idx = [np.flatnonzero(foreground.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    if any(i.size == 0 for i in idx):
        return None
    tight = tuple(slice(int(i[0]), int(i[-1]) + 1) for i in idx)
    return _grown_box(tight, foreground.shape, spacing_mm, margin_mm, align, min_saving)


def _grown_box(tight: tuple[slice, ...], shape: Sequence[int], spacing_mm: Sequence[float], margin_mm: float,
               align: Sequence[int] = (1, 1, 1), min_saving: float = 0.2) -> tuple[slice, slice, slice] | None:
    """:func:`_body_box` of a foreground whose bounding box is ``tight`` on a grid of ``shape``."""
    box = tuple(slice(max(0, int(t.start) - int(math.ceil(margin_mm / s))) // k * k,
                      min(n, int(t.stop) + int(math.ceil(margin_mm / s))))
                for t, s, n, k in zip(tight, spacing_mm, shape, align))
    kept = float(np.prod([b.stop - b.start for b in box])) / float(np.prod(shape))
    return box if kept < 1.0 - min_saving else None  # type: ignore[return-value]


def tissue_search_box(foreground_box: Sequence[slice], shape: Sequence[int], spacing_mm: Sequence[float], *,
                      max_radius_mm: float = 45.0, coarse_mm: float = 4.0,
                      work_mm: float | None = 2.0) -> tuple[slice, slice, slice] | None:
    """The box of the grid that :func:`detect_tissue` searches for a foreground whose bounding box is
    ``foreground_box`` (the foreground's box grown by the largest blob's reach), or None when it searches the
    whole grid. A caller that holds the foreground cropped to its box (a :class:`~dicomnode.analysis.volume.Segment`)
    may hand :func:`detect_tissue` that box of the image and of the foreground instead of the whole grid: the same
    search (it crops to the same box itself), without a whole-grid mask; findings are then on the box."""
    sp = _check_spacing(spacing_mm)
    w = _factors(sp, work_mm) if work_mm is not None else (1, 1, 1)
    f_c = _factors(tuple(s * k for s, k in zip(sp, w)), coarse_mm)
    return _grown_box(tuple(foreground_box), tuple(shape), sp,
                      max_radius_mm + 2.0 * max(coarse_mm, work_mm or 0.0, *sp),
                      align=tuple(a * b for a, b in zip(w, f_c)))


def _shifted(f: Finding, box: tuple[slice, ...]) -> Finding:
    """A finding on the crop ``box`` of a grid, placed on the grid."""
    off = [b.start for b in box]
    fbox = tuple(slice(b.start + o, b.stop + o) for b, o in zip(f.box, off))
    c = tuple(float(c + o) for c, o in zip(f.centroid_zyx, off))
    return replace(f, box=fbox, centroid_zyx=c)


def _upsample(f: Finding, w: tuple[int, int, int], shape: Sequence[int]) -> Finding:
    """A finding on a grid block-averaged by ``w`` brought back to the full grid of ``shape``."""
    mask = f.mask
    for ax, k in enumerate(w):
        mask = np.repeat(mask, k, axis=ax)
    box = tuple(slice(b.start * k, min(b.stop * k, n)) for b, k, n in zip(f.box, w, shape))
    mask = np.ascontiguousarray(mask[tuple(slice(0, b.stop - b.start) for b in box)])
    c = tuple(float((c + 0.5) * k - 0.5) for c, k in zip(f.centroid_zyx, w))
    return replace(f, mask=mask, box=box, centroid_zyx=c)


def _crop_inside_padding(image: np.ndarray, foreground: np.ndarray, no_data_below: float,
                         fraction: float = 0.25, max_slices: int = 16) -> str:
    """A note when the field of view is a crop inside the body whose edge is padding (values below
    ``no_data_below``, e.g. a circular reconstruction padded with -3024 HU): the foreground meets the edge of the
    data (the image's edge and the padding's, a band 3 pixels wide) on more than ``fraction`` of it, on up to
    ``max_slices`` slices evenly spaced; else "" (no padding, or a body seen whole inside it)."""
    step = max(1, image.shape[0] // max_slices)
    valid = image[::step] >= no_data_below
    if valid.all():
        return ""
    # the edge as a band of 3 pixels: a smoothed working image blurs the padding's edge over a pixel or two,
    # which are neither padding nor foreground
    inner = ndi.binary_erosion(valid, structure=np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], dtype=bool),
                               iterations=3, border_value=0)
    edge = valid & ~inner
    n_edge = int(np.count_nonzero(edge))
    if not n_edge or np.count_nonzero(foreground[::step] & edge) <= fraction * n_edge:
        return ""
    return (f"field of view inside the body (the foreground meets the edge of the data, padding below "
            f"{no_data_below:g} included, on more than {fraction:.0%} of it): no body midline in view")


def _robust_scale(values: np.ndarray) -> tuple[float, float]:
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    spread = float(q3 - q1) / 1.349
    if not spread > 0:
        spread = float(np.std(values)) or 1.0
    return float(med), spread


def detect_tissue(image: np.ndarray, spacing_mm: Sequence[float], foreground: np.ndarray, *,
                  settings: DetectionSettings = DetectionSettings(min_diameter_mm=10.0, min_volume_ml=0.5,
                                                                  max_findings=3),
                  class_means: Sequence[float] | None = None, class_sds: Sequence[float] | None = None,
                  polarity: str = "both", window: tuple[float, float] | None = None,
                  max_radius_mm: float = 45.0, coarse_mm: float = 4.0, min_response: float = 1.0,
                  z_clip: float = 8.0, max_candidates: int = 20, work_mm: float | None = 2.0,
                  hot_threshold: float | None = None, mirror_axis: int | None = 2,
                  symmetric_max: float | None = 0.3, symmetric_factor: float = 0.1, percist_liver: bool = False,
                  model: NaiveBayes | FittedModel = TISSUE_MODEL, cranial: int | None = None,
                  calibration: "tuple[float, float] | ScoreCalibration | None" = None,
                  no_data_below: float | None = None) -> DetectionResult:
    """Focal regions that depart from their surroundings and from the tissue model, in any modality.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Intensities in the series' unit (the denoised working image).
    spacing_mm : tuple of 3 float
        Voxel spacing (dz, dy, dx), mm.
    foreground : (Z, Y, X) bool ndarray
        Where to search (the body / foreground segment).
    settings : DetectionSettings, optional
        Limits. Default: diameter >= 10 mm, volume >= 0.5 mL, at most 3 findings, probability >= 0.5.
    class_means, class_sds : sequence of float, optional
        The tissue model (e.g. the Gaussian mixture of ``segment_generic``), in image units: adds the feature
        ``tissue_outlier``: how many class SDs the region's mean lies from the nearest class mean (a region of a normal
        tissue class is no lesion). Without a model the feature is left out of the posterior.
    polarity : {"both", "bright", "dark"}, optional
        Which blobs to look for. Default "both" (PET lesions are bright, T1 MR tumours in fat dark).
    window : (float, float), optional
        Intensities are clipped to this range first (e.g. (-200, 250) HU for CT, so that bone casts no blob).
        Default: none (the robust z-score is clipped to +-``z_clip`` anyway).
    max_radius_mm : float, optional
        Largest blob radius, mm. Default 45. The smallest is ``settings.min_diameter_mm / 2``.
    coarse_mm : float, optional
        Blob search grid spacing, about, mm. Default 4.
    min_response : float, optional
        Smallest normalised blob response, in units of the within-tissue spread. Default 1.
    z_clip : float, optional
        For the blob search, intensities (in units of the within-tissue spread, from the foreground median) are
        clipped to +- this: one extreme structure (bone, a bladder) does not outshine the rest. Default 8.
    max_candidates : int, optional
        Candidates grown per polarity, strongest first. Default 20.
    work_mm : float or None, optional
        Regions grow on a grid block-averaged to about this spacing (mm); masks are brought back to the full grid
        by repetition. A 1 mm CT is worked at 2 mm: four to eight times fewer voxels, for findings of 10 mm and more.
        None works at full resolution. Default 2.
    hot_threshold : float, optional
        An absolute level in image units (e.g. SUV 2.5 for PET, the clinical convention for a hot lesion): every
        connected region above it is a candidate too, beside the blobs, with its holes filled slice by slice and
        in 3-D (a necrotic, cold centre belongs to the lesion around it). Blobs alone miss a large lesion with a
        cold centre: at its own scale it looks like a dark blob in a bright ring. Default: none.
    mirror_axis : {0, 1, 2} or None, optional
        The index axis that runs left-right in the patient, for the context features ``mirror_uptake`` and
        ``midline_offset`` (left out when None, or when the foreground touches the edge of the field of view on
        more than a quarter of it: a crop shows no midline). Default 2.
    percist_liver : bool, optional
        PET in SUV: look for the liver as the reference region (:func:`liver_reference`) and, when it is in view,
        use PERCIST's threshold ``1.5 x liver mean + 2 x liver SD`` for the hot regions where it is below
        ``hot_threshold`` (Wahl et al. 2009; above it, STS_001's necrotic sarcoma falls apart into pieces), note
        it, and give each finding ``log2_to_liver`` and ``above_percist`` (its mean above the threshold: PERCIST's
        measurable disease). Default False (the detect step sets it for SUV).
    symmetric_max, symmetric_factor : float, optional
        Normal anatomy is symmetric or paired (brain, bladder, kidneys, salivary glands; on PET the usual sites of
        physiological uptake besides the heart): a region whose ``mirror_uptake`` exceeds ``symmetric_max`` has its
        probability multiplied by ``symmetric_factor`` (feature ``symmetric`` = 1). A hand-set rule on top of the
        model, as readers (and PERCIST's exclusion of physiological uptake) do; it also lowers a lesion on the
        midline or bilateral disease. None turns it off. Defaults 0.3 and 0.1.
    model : NaiveBayes or FittedModel, optional
        Default :data:`TISSUE_MODEL`.
    cranial : {1, -1} or None, optional
        1 when the slice index runs towards the head, -1 towards the feet (:func:`detect` sets it from the
        volume's direction). With ``percist_liver``, the liver in view and the body's midline in view, it turns on
        the organ context of a whole-body PET (:func:`_physiology`): the heart above the liver's dome, the brain
        far above it, the bladder far below it on the midline, kidneys and mirror twins are physiological uptake
        (feature ``physiological`` = 1, probability times ``symmetric_factor``); with ``percist_liver`` and no liver
        in view, the heart by its own shape or a note saying why it could not be told (:func:`_heart_by_shape`).
        Default None (off).
    calibration : (float, float) or ScoreCalibration or None, optional
        Maps the final score (model and rules) to a probability: a :class:`ScoreCalibration` (fitted on scored
        candidates by :func:`dicomnode.findings_training.fit_findings`: Platt scaling plus a weight for the series'
        top candidate, capped), or Platt scaling ``(slope, intercept)``: ``p = 1 / (1 + exp(-(slope * logit(score)
        + intercept)))``. Monotone in the score, so the ranking stays; the score is kept as the feature
        ``ranking_score``. Default None (the score is the probability).
    no_data_below : float, optional
        Values below this are no data (the padding outside a CT's circular reconstruction field of view, which the
        header need not name; :func:`detect` gives -1500 for a CT in HU, as ``segment_ct``). The edge of the data
        counts as the edge of the field of view: a foreground that meets it on more than a quarter of it is a crop
        with no body midline in view, and the mirror features are left out (``mirror_axis`` None), as for a crop
        cut by the image's own edge. Default None (the image's edge only).

    Returns
    -------
    DetectionResult
        Findings labelled "lesion". The search runs on the foreground's bounding box grown by the largest blob's
        reach (air costs nothing); findings are placed on the full grid.
    """
    _check_image(image)
    sp = _check_spacing(spacing_mm)
    if polarity not in ("both", "bright", "dark"):
        raise ValueError(f"polarity must be 'both', 'bright' or 'dark', got {polarity!r}")
    if foreground.shape != image.shape or foreground.dtype != np.bool_:
        raise ValueError("foreground must be a bool mask with the image's shape")
    if window is not None and not window[0] < window[1]:
        raise ValueError(f"window must be (low, high) with low < high, got {window}")
    if (class_means is None) != (class_sds is None):
        raise ValueError("give class_means and class_sds together")
    if not 0 <= symmetric_factor <= 1:
        raise ValueError(f"symmetric_factor must be in [0, 1], got {symmetric_factor}")
    if not foreground.any():
        return DetectionResult((), (), 0, ("empty foreground: nothing to search",))
    padded_crop = ""
    if no_data_below is not None and mirror_axis is not None:
        padded_crop = _crop_inside_padding(image, foreground, no_data_below)
        if padded_crop:
            mirror_axis = None
    kw = dict(settings=settings, class_means=class_means, class_sds=class_sds, polarity=polarity, window=window,
              max_radius_mm=max_radius_mm, coarse_mm=coarse_mm, min_response=min_response, z_clip=z_clip,
              max_candidates=max_candidates, hot_threshold=hot_threshold, mirror_axis=mirror_axis,
              symmetric_max=symmetric_max, symmetric_factor=symmetric_factor, percist_liver=percist_liver,
              model=model, cranial=cranial, calibration=calibration)
    w = _factors(sp, work_mm) if work_mm is not None else (1, 1, 1)
    f_c = _factors(tuple(s * k for s, k in zip(sp, w)), coarse_mm)
    box = _body_box(foreground, sp, max_radius_mm + 2.0 * max(coarse_mm, work_mm or 0.0, *sp),
                    align=tuple(a * b for a, b in zip(w, f_c)))
    if box is not None:
        # only the body's box (plus the largest blob's reach) is searched: air costs nothing. Blob centres lie in
        # the foreground, so a crop edge that is not the field of view's is farther than any blob's ball.
        res = detect_tissue(image[box], sp, foreground[box], work_mm=work_mm, **kw)  # type: ignore[arg-type]
        return DetectionResult(tuple(_shifted(f, box) for f in res.findings),
                               tuple(_shifted(f, box) for f in res.rejected), res.n_candidates,
                               (padded_crop,) * bool(padded_crop) + res.notes)
    if w != (1, 1, 1):
        sp_w = tuple(s * k for s, k in zip(sp, w))
        res = detect_tissue(block_mean(image, w), sp_w, block_centres(foreground, w), work_mm=None,
                            **kw)  # type: ignore[arg-type]
        notes = (padded_crop,) * bool(padded_crop) + res.notes + (
            f"regions grown on a {sp_w[0]:.2g} x {sp_w[1]:.2g} x {sp_w[2]:.2g} mm grid",)
        return DetectionResult(tuple(_upsample(f, w, image.shape) for f in res.findings),
                               tuple(_upsample(f, w, image.shape) for f in res.rejected), res.n_candidates, notes)
    if window is not None:
        img = image.astype(np.float32, copy=True)
        np.clip(img, window[0], window[1], out=img)
    else:  # read only below: no copy of a float32 image
        img = image.astype(np.float32, copy=False)
    step = max(1, int(np.count_nonzero(foreground)) // 500_000)
    med, _ = _robust_scale(img[foreground][::step])
    spread = _noise_sd(img, foreground, sp)

    def z_of(bb: tuple[slice, ...] = (slice(None),) * 3) -> np.ndarray:
        """The z-score over ``bb``, 0 outside the foreground: unclipped, region growing follows the true levels
        (made per box where it is read, not kept for the whole image)."""
        zb = (img[bb] - med) / spread
        zb[~foreground[bb]] = 0.0
        return zb
    liver_mask = liver_extent = None
    liver = None
    if percist_liver and hot_threshold is not None:
        organ = _liver_organ(img, foreground, sp)
        if organ is not None:
            liver_mask, liver_extent = organ
        if liver_mask is not None:
            vals = img[liver_mask]  # (once, not per statistic)
            liver = (float(vals.mean()), float(vals.std()), float(vals.size) * float(np.prod(sp)) / 1000.0)
            del vals
    # a PET in SUV with the liver in view (whole-body FDG): the search runs on log2 SUV, so that a focus twice its
    # surroundings responds alike in the lung (SUV 0.4), in muscle (0.7) and in the liver (2); the within-tissue
    # spread of a mostly cold body says nothing of a warm organ's texture
    pet = liver is not None and model is TISSUE_MODEL
    f = _factors(sp, coarse_mm)
    csp = tuple(s * k for s, k in zip(sp, f))
    if pet:
        search = _pet_search_image(img, foreground, med)
        z_c = search if f == (1, 1, 1) else block_mean(search, f)  # (block_mean copies, also at factors 1)
        del search
        n_cand, min_resp = max(max_candidates, PET_CANDIDATES), PET_MIN_RESPONSE
    else:
        z = z_of()
        z_c = z.astype(np.float32, copy=False) if f == (1, 1, 1) else block_mean(z, f)  # (block_mean copies)
        del z
        np.clip(z_c, -z_clip, z_clip, out=z_c)  # clipped for the search: one extreme structure does not dominate
        n_cand, min_resp = max_candidates, min_response
    if f == (1, 1, 1):  # every block one voxel: its centre and its mean (1 or 0) are the voxel's
        fg_c = foreground.copy()
    else:
        fg_c = block_centres(foreground, f) & (block_mean(foreground, f) > 0.99)
    radii = _radii(max(settings.min_diameter_mm / 2.0, 2.0 * max(csp)), max_radius_mm)
    pols = {"both": (1, -1), "bright": (1,), "dark": (-1,)}[polarity]
    cands = []
    # one response for both polarities, made scale by scale (three scales in memory, not the whole stack)
    # PET: the small scales' responses are kept for the signal-to-noise search below (radii increase: the first k)
    k_small = max(1, sum(r <= PET_SMALL_RADIUS_MM for r in radii)) if pet else 0
    peaks, radii, small = _log_peaks(z_c, csp, radii, polarities=pols, min_response=min_resp, allowed=fg_c,
                                     max_candidates=n_cand, in_view=True, keep=k_small, overwrite=True)
    del z_c  # its memory held the last scale's response: nothing reads it below
    for pol in pols:
        cands += [(c, r, resp, pol) for c, r, resp in peaks[pol]]
    del peaks
    n_snr = 0
    if pet:
        # small foci by their signal-to-noise ratio at the small-lesion scales (1-5 mL): beside the strongest
        # blobs of the whole body, which physiological uptake fills first; on the blob search's own responses at
        # those scales (kept by it)
        seen = {c for c, *_ in cands}
        for c, r, snr, resp in _pet_snr_blobs(small, radii[:k_small], fg_c, csp):
            if c not in seen:
                cands.append((c, r, resp, 1, snr))
                seen.add(c)
                n_snr += 1
        del small
    notes = [padded_crop] * bool(padded_crop) + [f"tissue search: median {med:.4g}, within-tissue spread {spread:.4g}; {len(cands)} blob candidate(s) on a "
             f"{csp[0]:.2g} x {csp[1]:.2g} x {csp[2]:.2g} mm grid, radii {radii[0]:.3g}..{radii[-1]:.3g} mm"
             + (f" (PET: on log2 SUV; {n_snr} of them by their signal-to-noise ratio >= {PET_MIN_SNR:g})"
                if pet else "")]

    def window(center: Sequence[float], radius_mm: float
               ) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray, np.ndarray]:
        """The box of a ball of ``radius_mm`` (plus two voxels) around ``center``: its z-scores, foreground and
        distances from the centre (mm)."""
        bb = _ball_box(center, radius_mm + 2.0 * max(sp), sp, image.shape)
        return bb, z_of(bb), foreground[bb], _distance_mm(bb, center, sp)

    def candidate(cand: tuple) -> Finding | None:
        """One blob candidate grown into a region with its features (None when it grows into none). Reads the
        image, the foreground and the search's settings only: the candidates are made in threads."""
        (cz, cy, cx), r_mm, resp, pol, *snr = cand
        center = [(c + 0.5) * k - 0.5 for c, k in zip((cz, cy, cx), f)]
        grow_mm = 1.5 * r_mm
        bb, zz, fg, dist = window(center, 2.0 * r_mm)  # the ring below reaches 2 x the radius, past grow_mm
        core = fg & (dist <= 0.5 * r_mm)
        ring = fg & (dist >= 1.3 * r_mm) & (dist <= 2.0 * r_mm)
        if not core.any() or not ring.any():
            return None
        core_level = float(np.median(zz[core]))
        ring_level = float(np.median(zz[ring]))
        if (core_level - ring_level) * pol <= 0:
            return None
        thr = 0.5 * (core_level + ring_level)
        grown = _grow_region(zz, fg, dist, _seed_in(center, bb), reach_mm=grow_mm, level=thr, polarity=pol,
                             spacing_mm=sp, max_seed_mm=0.5 * r_mm,
                             band_cut=percist_liver)  # (PET in SUV: the PET model's and calibration's definition)
        if grown is None:
            return None
        region, trunc, closed = grown
        if pet and not closed:
            # PET: a focus blurred by the scanner's resolution (6-7 mm FWHM) answers the blob search at a scale below
            # its own size (a small scale wins on noise at the SNR search's radii), so the growth limit of that
            # scale cuts a whole lesion; grown once more to PET_REGROW x that reach, a lesion closes (its level
            # falls off all round) where a piece of a larger structure stays cut: a region that closes replaces
            # the cut one
            wide_mm = PET_REGROW * grow_mm
            bb2, zz2, fg2, dist2 = window(center, wide_mm)
            grown2 = _grow_region(zz2, fg2, dist2, _seed_in(center, bb2), reach_mm=wide_mm, level=thr,
                                  polarity=pol, spacing_mm=sp, max_seed_mm=0.5 * r_mm, band_cut=True)
            if grown2 is not None and grown2[2]:
                bb, zz, fg, (region, trunc, closed) = bb2, zz2, fg2, grown2
        feats, shell = _region_features(img[bb], region, fg, sp, spread, class_means, class_sds)
        feats["truncation"] = trunc
        feats["enclosure"] = float(np.mean((zz[shell] - thr) * pol < 0)) if shell.any() else 0.0
        feats["polarity"] = float(pol)
        feats["blob_radius_mm"] = r_mm
        feats["blob_response"] = resp
        if snr:
            feats["blob_snr"] = snr[0]
        return _finding("lesion", region, bb, feats, model)

    # the candidates are independent of each other (numpy and scipy.ndimage release the GIL on their boxes); the
    # findings keep the candidates' order, whatever thread made them. Only where every candidate's work arrays are
    # bounded (a window of the largest blob, with its regrowth, of at most CANDIDATE_THREAD_VOXELS)
    from dicomnode.analysis.threads import thread_budget, thread_map

    half = max(PET_REGROW * 1.5, 2.0) * max((r for _, r, *_ in cands), default=0.0)  # the widest window's reach
    window_voxels = float(np.prod([2.0 * half / s + 5.0 for s in sp]))
    workers = min(thread_budget(), max(1, len(cands) // 16)) if window_voxels <= CANDIDATE_THREAD_VOXELS else 1
    if percist_liver and hot_threshold is not None:
        if liver is None:
            notes.append(f"PERCIST: no liver in view; hot regions above the fixed {hot_threshold:g}")
        else:
            percist = 1.5 * liver[0] + 2.0 * liver[1]
            notes.append(f"PERCIST: liver reference mean {liver[0]:.3g}, SD {liver[1]:.3g} ({liver[2]:.0f} mL), "
                         f"threshold 1.5 x mean + 2 x SD = {percist:.3g}; hot regions above "
                         f"{min(percist, hot_threshold):.3g}")
            # only ever lowers the fixed level: above it, a heterogeneous tumour (a necrotic sarcoma) falls apart
            hot_threshold = min(percist, hot_threshold)
    hot = None
    if hot_threshold is not None and workers > 1:
        # the hot regions labelled in this thread while the candidates grow in theirs (whose many small array
        # operations leave a core idle part of the time)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1) as pool:
            grown_all = pool.submit(thread_map, candidate, cands, workers)
            hot = _hot_regions(img, foreground, sp, hot_threshold, settings)
            made = grown_all.result()
    else:
        made = thread_map(candidate, cands, workers)
    found: list[Finding] = [f for f in made if f is not None]
    del made
    n_hot = 0
    if hot_threshold is not None:
        level: float = hot_threshold  # (narrowed for the closure)

        def hot_candidate(item: tuple[np.ndarray, tuple[slice, ...]]) -> Finding:
            """One hot region with its features (its own box: the regions are measured in threads)."""
            region, bb = item
            feats, shell = _region_features(img[bb], region, foreground[bb], sp, spread, class_means, class_sds)
            feats["truncation"] = 0.0  # the whole connected region, not a piece cut out by a growth limit
            feats["enclosure"] = float(np.mean(img[bb][shell] < level)) if shell.any() else 0.0
            feats["polarity"] = 1.0
            feats["blob_radius_mm"] = feats["equivalent_diameter_mm"] / 2.0
            feats["blob_response"] = feats["cnr"]
            return _finding("lesion", region, bb, feats, model)

        if hot is None:
            hot = _hot_regions(img, foreground, sp, hot_threshold, settings, workers=thread_budget())
        n_hot = len(hot)
        found += thread_map(hot_candidate, hot, thread_budget() if n_hot >= 4 else 1)
        del hot
        notes.append(f"hot regions above {hot_threshold:g}: {n_hot} candidate(s)")
    if not pet:
        found = _resolve_overlaps(found)
    if liver is not None:
        # PERCIST's measurable disease: SUVpeak (the hottest 1 mL sphere) above 1.5 x liver mean + 2 SD. Without
        # the liver there is no reference: a fixed level ranks a hot urethra above a sarcoma (STS_001's crop)
        percist = 1.5 * liver[0] + 2.0 * liver[1]

        def measured(f: Finding) -> None:
            """SUVpeak and the PERCIST features of one finding (in its own features, in place); on PET, its local
            background too. Each finding's own boxes: made in threads."""
            if f.features.get("mean", 0.0) > 0:
                peak = _suv_peak(img, f, sp)
                f.features["peak"] = peak  # type: ignore[index]
                f.features["log2_peak_to_percist"] = math.log2(max(peak, 1e-3) / percist)  # type: ignore[index]
                f.features["log2_to_liver"] = math.log2(f.features["mean"] / liver[0])  # type: ignore[index]
                f.features["above_percist"] = float(peak > percist)  # type: ignore[index]
                if pet:
                    _pet_background([f], img, foreground, sp)

        # the findings' boxes are bounded by the candidates' windows and the hot regions (numpy and scipy.ndimage
        # release the GIL on them); the features do not depend on the order
        thread_map(measured, found, thread_budget() if len(found) >= 8 else 1)
        if pet:
            model = PET_MODEL
            # overlapping candidates (a blob and the hot region around it and a neighbouring organ): the one the
            # PET model favours stays, not the largest: a node beside the heart or a tonsil is not swallowed
            found = _resolve_overlaps_ranked(found, [-_log_odds(PET_MODEL, f.features) for f in found])
            notes.append("PET: each focus against its own surroundings (SUVpeak over the median 5-15 mm around it, and "
                         "over the local noise); hand-set PET model")
    # a whole-body PET with its organ context: the anatomical rules of _physiology (organs, mirror twins of the same
    # size, uptake, height and depth) replace the generic mirror rule, which lowers any focus whose mirror image
    # lands on warm tissue (bowel, an organ: abdominal and pelvic lesions; docs/models.md)
    organs = pet and cranial in (1, -1)
    found = _with_context(found, img, foreground, med, mirror_axis, model, notes,
                          None if organs else symmetric_max, symmetric_factor, exclude_self=pet)
    if liver_mask is not None and cranial in (1, -1):
        found = _physiology(found, img, foreground, liver_mask, liver, sp, int(cranial), mirror_axis, notes,
                            symmetric_factor, extent=liver_extent)
    elif percist_liver and hot_threshold is not None and cranial in (1, -1):
        found = _heart_by_shape(found, img, foreground, sp, mirror_axis, notes, symmetric_factor)
    if calibration is not None:
        found = _calibrate_all(found, calibration, settings, notes)
    ok, rejected = _split(found, settings)
    return DetectionResult(ok, rejected, len(cands) + n_hot, tuple(notes))


def _with_context(found: list[Finding], img: np.ndarray, foreground: np.ndarray, reference: float,
                  mirror_axis: int | None, model: NaiveBayes | FittedModel, notes: list[str],
                  symmetric_max: float | None = None, symmetric_factor: float = 1.0,
                  exclude_self: bool = False) -> list[Finding]:
    """Add the context features and recompute each probability.

    * ``log2_to_reference``: log2 of the region's mean over the reference level (the foreground's median: the
      background tissue, muscle and fat), scale-free in any unit;
    * ``midline_offset``: distance of the centroid from the body's mid-sagittal plane (per slice, the foreground's
      centre along ``mirror_axis``) over the body's half-width there;
    * ``mirror_uptake``: fraction of the region whose mirror image across that plane departs from the reference as
      the region does (more than half its contrast): brain, bladder, heart and kidneys are symmetric or paired,
      most lesions are not. With ``exclude_self`` (PET), mirrored voxels that fall in the region itself do not count:
      a node or a vertebra on the midline is its own mirror image, not a twin (the midline organs, brain and bladder,
      are told by :func:`_physiology`), and the level is half-way from the focus's own background (feature
      ``background``) to its mean.
    """
    if not found:
        return found
    from dicomnode.analysis.segment import _border_fraction

    if mirror_axis is not None and mirror_axis not in (0, 1, 2):
        raise ValueError(f"mirror_axis must be 0, 1, 2 or None, got {mirror_axis}")
    crop = mirror_axis in (None, 0) or _border_fraction(foreground) > 0.25  # axis 0: slices run left-right
    if crop:
        notes.append("no body midline in view (a crop or no left-right axis): mirror_uptake, midline_offset left out")
    else:
        # per slice, the foreground's centre and half-width along the left-right axis
        ax = int(mirror_axis)  # type: ignore[arg-type]
        prof = foreground.any(axis=3 - ax)  # (Z, n along the left-right axis)
        cnt = prof.sum(axis=1)
        lo = np.where(cnt > 0, np.argmax(prof, axis=1), 0)
        hi = np.where(cnt > 0, prof.shape[1] - 1 - np.argmax(prof[:, ::-1], axis=1), 0)
        centre = 0.5 * (lo + hi)
        half = np.maximum(0.5 * (hi - lo), 1.0)
    out = []
    for f in found:
        feats = dict(f.features)
        mean = feats.get("mean", float("nan"))
        if reference > 0 and mean > 0:
            feats["log2_to_reference"] = math.log2(mean / reference)
        if not crop:
            pts = np.argwhere(f.mask) + np.array([b.start for b in f.box])
            z = pts[:, 0]
            c = centre[z]
            feats["midline_offset"] = float(abs(np.mean(pts[:, ax]) - np.mean(c)) / np.mean(half[z]))
            mirrored = pts.copy()
            mirrored[:, ax] = np.clip(np.round(2 * c - pts[:, ax]).astype(int), 0, img.shape[ax] - 1)
            # PET: against the focus's own surroundings (a node beside a gland is not the gland's twin)
            ref = feats.get("background", reference) if exclude_self else reference
            level = ref + 0.5 * (mean - ref)
            vals = img[tuple(mirrored.T)]
            twin = (vals - level) * np.sign(mean - ref) > 0
            if exclude_self:
                rel = mirrored - np.array([b.start for b in f.box])
                inside = np.all((rel >= 0) & (rel < np.array(f.mask.shape)), axis=1)
                own = np.zeros(len(rel), dtype=bool)
                own[inside] = f.mask[tuple(rel[inside].T)]
                twin &= ~own
            feats["mirror_uptake"] = float(np.mean(twin))
        p = model.posterior(feats)
        if symmetric_max is not None and feats.get("mirror_uptake", 0.0) > symmetric_max:
            feats["symmetric"] = 1.0
            p *= symmetric_factor
        out.append(replace(f, probability=p, features=feats))
    n_sym = sum(1 for f in out if f.features.get("symmetric"))
    if n_sym:
        notes.append(f"{n_sym} symmetric or paired region(s) (mirror_uptake > {symmetric_max:g}: normal anatomy "
                     f"or physiological uptake) down-weighted x{symmetric_factor:g}")
    return out


@dataclass(frozen=True, slots=True)
class ScoreCalibration:
    """A monotone map of a ranking score to a probability, fitted on scored candidates
    (:func:`dicomnode.findings_training.fit_findings`)::

        p = min(cap, 1 / (1 + exp(-(slope * clip(logit(score), -logit_clip, logit_clip) + top_weight * top
                                    + intercept))))

    ``top`` is 1 for the series' highest-scoring candidate that passes the size limits, else 0. With ``top_weight``
    0, ``cap`` 1 and the default ``logit_clip`` this is Platt scaling. ``slope`` and ``top_weight`` must be >= 0 (the
    ranking stays; ties can appear where the logit is clipped).
    """

    slope: float
    intercept: float
    top_weight: float = 0.0
    cap: float = 1.0
    logit_clip: float = 30.0
    #: the top candidate gets its weight only when its score reaches this (0.5: the calibration then never reports
    #: a candidate the hand-set score would not)
    top_min_score: float = 0.0

    def __post_init__(self) -> None:
        if not (self.slope >= 0 and self.top_weight >= 0):
            raise ValueError(f"slope and top_weight must be >= 0 (a monotone map), got {self.slope}, "
                             f"{self.top_weight}")
        if not 0 < self.cap <= 1:
            raise ValueError(f"cap must be in (0, 1], got {self.cap}")
        if not self.logit_clip > 0:
            raise ValueError(f"logit_clip must be > 0, got {self.logit_clip}")

    def probability(self, score: float, top: bool = False) -> float:
        """The calibrated probability of a candidate with ranking score ``score``."""
        q = min(max(float(score), 1e-9), 1.0 - 1e-9)
        x = min(max(math.log(q / (1.0 - q)), -self.logit_clip), self.logit_clip)
        t = self.slope * x + self.top_weight * float(top and score >= self.top_min_score) + self.intercept
        return min(self.cap, float(1.0 / (1.0 + math.exp(-min(max(t, -700.0), 700.0)))))


def _as_calibration(calibration: "tuple[float, float] | ScoreCalibration") -> ScoreCalibration:
    if isinstance(calibration, ScoreCalibration):
        return calibration
    slope, intercept = (float(v) for v in calibration)
    return ScoreCalibration(slope, intercept)


def platt(score: float, calibration: "tuple[float, float] | ScoreCalibration") -> float:
    """``1 / (1 + exp(-(slope * logit(score) + intercept)))``, the score clipped to [1e-9, 1 - 1e-9] first (a
    :class:`ScoreCalibration` adds its top weight (not top here) and cap)."""
    return _as_calibration(calibration).probability(score, False)


def _calibrated(f: Finding, calibration: ScoreCalibration, top: bool = False) -> Finding:
    feats = dict(f.features)
    feats["ranking_score"] = f.probability
    feats["top_candidate"] = float(top)
    return replace(f, probability=calibration.probability(f.probability, top), features=feats)


def _calibrate_all(found: list[Finding], calibration: "tuple[float, float] | ScoreCalibration",
                   settings: DetectionSettings, notes: list[str]) -> list[Finding]:
    """Map every candidate's ranking score to its calibrated probability; the top candidate is the highest-scoring
    one that passes the size limits (the one the series would report first)."""
    cal = _as_calibration(calibration)
    sized = [f for f in found if f.diameter_mm >= settings.min_diameter_mm and f.volume_ml >= settings.min_volume_ml]
    best = max(sized, key=lambda f: f.probability, default=None)
    out = [_calibrated(f, cal, f is best) for f in found]
    notes.append(f"probabilities: the ranking score calibrated (slope {cal.slope:.3g}, top weight "
                 f"{cal.top_weight:.3g}, intercept {cal.intercept:.3g}, cap {cal.cap:.3g}; the score stays in "
                 "ranking_score)")
    return out


def _suv_peak(img: np.ndarray, f: Finding, spacing_mm: Sequence[float], volume_ml: float = 1.0) -> float:
    """The largest mean over a sphere of ``volume_ml`` (PERCIST's SUVpeak: 1 mL, 1.2 cm across) centred in the
    region; the region's maximum when it is smaller than the sphere's voxels."""
    r = (3.0 * volume_ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
    half = [int(math.floor(r / s)) for s in spacing_mm]
    g = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    ball = sum((a * s) ** 2 for a, s in zip(g, spacing_mm)) <= r * r
    box = tuple(slice(max(0, b.start - h), min(n, b.stop + h)) for b, h, n in zip(f.box, half, img.shape))
    sub = img[box].astype(np.float32, copy=False)
    mean = ndi.correlate(sub, ball.astype(np.float32) / np.float32(ball.sum()), mode="nearest")
    inner = tuple(slice(b.start - bb.start, b.stop - bb.start) for b, bb in zip(f.box, box))
    vals = mean[inner][f.mask]
    return float(vals.max()) if vals.size else float(img[f.box][f.mask].max())


#: Physiological FDG uptake a whole-body PET shows, and where it lies relative to the liver (heights in mm along
#: the body's long axis, head up; see :func:`_physiology`).
PHYSIOLOGICAL_SITES = ("brain", "heart", "kidney", "bladder", "paired")


def _physiology(found: list[Finding], img: np.ndarray, foreground: np.ndarray, liver: np.ndarray,
                liver_ref: tuple[float, float, float], spacing_mm: Sequence[float], cranial: int,
                mirror_axis: int | None, notes: list[str], factor: float,
                extent: np.ndarray | None = None) -> list[Finding]:
    """Tell physiological FDG uptake from lesions by organ context, with the liver as the landmark (a whole-body
    PET in SUV with the liver in view). Heights ``h`` run along the body's long axis, head up, in mm; the liver
    spans ``[L_lo, L_hi]``. A region is

    * the **heart** (myocardium) when it lies on the diaphragm above the liver's dome: centroid in
      ``[L_hi - 40, L_hi + 150]``, lowest point in ``[L_hi - 80, L_hi + HEART_BASE_MM]`` (it rests on the
      diaphragm), at least 30 mL, near the midline, and not wrapped in liver (at most ``HEART_MAX_LIVER_CONTACT``
      of its shell in the liver's ``extent``, when given: a lesion under the dome);
    * the **brain** when it is at least 250 mm above the liver's dome, at least 100 mL, on the midline;
    * the **bladder** when it lies at least 150 mm below the liver, on the midline, with a mean at least 4 times
      the liver's (urine: SUV 10-60 and more);
    * a **kidney** when, between 100 mm below the liver and its dome, off the midline, 10-400 mL, it has a partner
      region at the mirror position: on the other side, within 60 mm in height, as far off the midline (within
      ``KIDNEY_MIRROR_SIDE`` half-widths) and as deep (within ``KIDNEY_MIRROR_DEPTH_MM``) (or its mirror image is as
      hot: ``mirror_uptake`` > 0.2);
    * **paired** (salivary glands, tonsils, muscles) when, anywhere, a region hotter than the liver has a mirror
      twin: across the midline (within 10 % of the body's half-width), at the same height (20 mm) and depth
      (15 mm), of the same volume (within x1.6) and mean (within x1.3). Symmetric bilateral nodes are down-weighted
      too (said in docs/models.md).

    Such a region gets ``physiological`` = 1 and its probability times ``factor``; the others get 0. Lesions in
    these organs (a bladder-wall tumour, a myocardial metastasis) are down-weighted too: PET readers cannot tell
    them either without a second look (said in docs/models.md).
    """
    sp = np.asarray(spacing_mm, dtype=float)
    zs = np.flatnonzero(liver.any(axis=(1, 2)))
    hz = lambda k: cranial * float(k) * sp[0]  # noqa: E731  height of slice k, head up
    l_lo, l_hi = sorted((hz(zs[0]), hz(zs[-1])))
    l_mean = liver_ref[0]
    if mirror_axis in (1, 2):
        other = 3 - mirror_axis  # (Z, n along the left-right axis)
        prof = foreground.any(axis=other)
        cnt = prof.sum(axis=1)
        lo = np.where(cnt > 0, np.argmax(prof, axis=1), 0)
        hi = np.where(cnt > 0, prof.shape[1] - 1 - np.argmax(prof[:, ::-1], axis=1), 0)
        centre, half = 0.5 * (lo + hi), np.maximum(0.5 * (hi - lo), 1.0)
    else:
        return found
    info = []
    for f in found:
        k0, k1 = f.box[0].start, f.box[0].stop - 1
        h_c = hz(f.centroid_zyx[0])
        h_lo, h_hi = sorted((hz(k0), hz(k1)))
        kc = int(round(f.centroid_zyx[0]))
        side = (f.centroid_zyx[mirror_axis] - centre[kc]) / half[kc]  # signed, body half-widths
        info.append((h_c, h_lo, h_hi, side))
    out = []
    sites: dict[str, int] = {}
    n_slices = img.shape[0]
    # the liver with its holes filled: a hot lesion inside it leaves a hole (the homogeneity test fails around it)
    liver_filled = _fill_holes_boxed(liver)  # (ndi.binary_fill_holes' voxels, on the liver's box)
    site_of: list[str | None] = []
    for i, f in enumerate(found):
        h_c, h_lo, h_hi, side = info[i]
        mid = abs(side)
        mean = f.features.get("mean", 0.0)
        site = None
        # the cranial end of the field of view: a brain cut by it is smaller than a whole one
        at_top = (f.box[0].stop >= n_slices) if cranial > 0 else (f.box[0].start <= 0)
        kc = f.centroid_zyx[0]
        if min(kc, n_slices - 1 - kc) * sp[0] < FOV_EDGE_MM:
            # the axial ends of the field of view: the sensitivity of the last bed position falls off, noise rises,
            # and organs are cut (the top of the brain, raised arms)
            site = "field-of-view end"
        elif (h_c >= l_hi + 200 and f.features.get("peak", mean) > l_mean
              and abs(f.centroid_zyx[mirror_axis] - centre[int(round(kc))]) * sp[mirror_axis]
              <= HEAD_NECK_MIDLINE_MM):
            # on the midline of the head and neck: tongue, Waldeyer's ring (the tonsils merge across it), larynx.
            # Nodes lie beside the airway and the vessels, not on the midline (in mm: raised arms beside the head
            # make the body's slice three times as wide as the neck)
            site = "head-neck midline"
        elif mean <= l_mean:
            pass  # not hotter than the liver: no physiological hot spot (nor a PERCIST lesion)
        elif (l_hi - 40 <= h_c <= l_hi + 150 and l_hi - 80 <= h_lo <= l_hi + HEART_BASE_MM and f.volume_ml >= 30
              and mid <= 0.45 and (extent is None or _liver_contact(f, extent, spacing_mm) < HEART_MAX_LIVER_CONTACT)):
            # on the diaphragm: its lowest point near the liver's dome; not inside the liver (a lesion under the
            # dome is wrapped in liver, the heart only rests on it)
            site = "heart"
        elif h_c >= l_hi + 250 and (f.volume_ml >= 100 or (at_top and f.volume_ml >= 10)) and mid <= 0.3:
            site = "brain"
        elif h_c <= l_lo - 150 and mid <= 0.3 and mean >= 4.0 * l_mean:
            site = "bladder"
        elif (l_lo - 100 <= h_c <= l_hi and 0.1 <= mid <= 0.9 and 10 <= f.volume_ml <= 400
              # a kidney is not inside the liver: neither in contact with it all round nor in liver-level surroundings
              and _liver_contact(f, liver_filled, spacing_mm) < 0.3
              and f.features.get("background", 0.0) < 0.8 * l_mean):
            # the other kidney lies at the mirror position: as far off the midline, as deep (both retroperitoneal,
            # beside the spine), up to 60 mm higher or lower (the right one sits lower, under the liver)
            depth = 3 - mirror_axis
            partner = any(j != i and abs(info[j][0] - h_c) <= 60 and info[j][3] * side < 0
                          and 0.1 <= abs(info[j][3]) <= 0.9 and 5 <= g.volume_ml <= 400
                          and abs(info[j][3] + side) <= KIDNEY_MIRROR_SIDE
                          and abs(g.centroid_zyx[depth] - f.centroid_zyx[depth]) * sp[depth] <= KIDNEY_MIRROR_DEPTH_MM
                          and g.features.get("mean", 0.0) > l_mean for j, g in enumerate(found))
            if partner or f.features.get("mirror_uptake", 0.0) > 0.2:
                site = "kidney"
        elif (h_c <= l_lo and h_c >= l_lo - 400 and 0.03 <= mid <= 0.6 and mean >= 2.0 * l_mean
              and f.features.get("elongation", 1.0) < 0.4 and f.features.get("compactness", 1.0) < 0.25):
            site = "ureter"  # a thin tube of urine on its way from a kidney to the bladder
        site_of.append(site)
    bladders = [f for f, site in zip(found, site_of) if site == "bladder"]
    for i, f in enumerate(found):
        site = site_of[i]
        h_c, h_lo, h_hi, side = info[i]
        mid = abs(side)
        mean = f.features.get("mean", 0.0)
        if site is None and bladders and mean >= 2.0 * l_mean and any(
                _gap_mm(f, b, spacing_mm) <= 40.0 for b in bladders):
            site = "bladder"  # urine beside the bladder: a ureter's end, a diverticulum, the bladder's other lobe
        if site is None and bladders and mid <= 0.2 and mean > 0.75 * l_mean:
            # under the bladder on the midline: the genitals (testes, penis; uterus above it is not told)
            h_b = min(hz(b.centroid_zyx[0]) for b in bladders)
            if h_b - 100.0 <= h_c <= h_b - 30.0:
                site = "genital"
        if site is None and mean > l_mean and mid >= 0.1:
            # a mirror twin: glands, tonsils, muscles come in left-right pairs of the same size and uptake at the
            # same height; lesions seldom do
            for j, g in enumerate(found):
                gm = g.features.get("mean", 0.0)
                if (j != i and abs(info[j][0] - h_c) <= 20 and abs(info[j][3] + side) <= 0.1 and gm > l_mean
                        and abs(g.centroid_zyx[3 - mirror_axis] - f.centroid_zyx[3 - mirror_axis]) * sp[3 - mirror_axis]
                        <= 15 and max(g.volume_ml, f.volume_ml) <= 1.6 * min(g.volume_ml, f.volume_ml)
                        and max(gm, mean) <= 1.3 * min(gm, mean)):
                    site = "paired"
                    break
        feats = dict(f.features)
        feats["physiological"] = 1.0 if site else 0.0
        p = f.probability * factor if site else f.probability
        if site:
            sites[site] = sites.get(site, 0) + 1
        out.append(replace(f, probability=p, features=feats))
    notes.append(f"organ context (liver from {l_lo:.0f} to {l_hi:.0f} mm along the body, head up): "
                 + (", ".join(f"{n} {k}" for k, n in sorted(sites.items())) if sites else "no")
                 + f" physiological uptake region(s) down-weighted x{factor:g}")
    return out


#: The heart without the liver as landmark (:func:`_heart_by_shape`): the myocardium with its cavity is 100-800 mL
#: (a left ventricle of 150 g around 100-150 mL of blood, up to a dilated heart), lies in the trunk within 0.45
#: half-widths of the midline (as :func:`_physiology`'s rule), and its cavity (the blood pool, SUV 1.5-2) is colder
#: than its wall (SUV 3-15): the median of the region deeper than ``HEART_WALL_MM`` (a wall of 10 mm blurred by
#: 6-7 mm FWHM) below this fraction of its 90th percentile.
HEART_VOLUME_ML = (100.0, 800.0)
HEART_WALL_MM = 8.0
HEART_CAVITY_FRACTION = 0.6


def _heart_by_shape(found: list[Finding], img: np.ndarray, foreground: np.ndarray, spacing_mm: Sequence[float],
                    mirror_axis: int | None, notes: list[str], factor: float) -> list[Finding]:
    """A PET in SUV without the liver in view (a chest PET, a liver the search could not tell): the heart by its
    own shape, not by the liver's dome. A region is the heart when it is ``HEART_VOLUME_ML``, within 0.45
    half-widths of the midline of the trunk (the body component at its centroid spans the midline: not a limb),
    the body's width in view, and hollow (its cavity colder than its wall, ``HEART_CAVITY_FRACTION``): such a region
    gets ``physiological`` = 1 and its probability times ``factor``. Otherwise a note says the heart could not be
    told and why; nothing is vetoed for a missing landmark. A hollow lesion of the heart's size on the trunk's midline
    (a necrotic mediastinal mass) is lowered with it (docs/models.md "petliver")."""
    sp = np.asarray(spacing_mm, dtype=float)
    if mirror_axis not in (1, 2):
        notes.append("heart: no liver in view and no left-right axis: the heart could not be told")
        return found
    other = 3 - mirror_axis
    edge = np.zeros(foreground.shape[1:], dtype=bool)
    edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = True
    out: list[Finding] = []
    told = maybe = 0
    why = "no hot region of the heart's size, hollow, on the trunk's midline"
    for f in found:
        k = int(round(f.centroid_zyx[0]))
        sl = foreground[k]
        site = False
        if (HEART_VOLUME_ML[0] <= f.volume_ml <= HEART_VOLUME_ML[1] and f.features.get("polarity", 1.0) > 0
                and sl.any()):
            if np.count_nonzero(sl & edge) > 0.25 * np.count_nonzero(edge):
                why = "the body's width is not in view (a crop: no midline)"
            else:
                prof = sl.any(axis=other - 1)
                cols = np.flatnonzero(prof)
                centre, half = 0.5 * (cols[0] + cols[-1]), max(0.5 * (cols[-1] - cols[0]), 1.0)
                side = abs(f.centroid_zyx[mirror_axis] - centre) / half
                lab, _ = ndi.label(sl)
                yx = [int(round(c)) for c in f.centroid_zyx[1:]]
                comp = lab == lab[tuple(yx)] if lab[tuple(yx)] > 0 else None
                if comp is not None and side <= 0.45:
                    ccols = np.flatnonzero(comp.any(axis=other - 1))
                    trunk = ccols[0] <= centre <= ccols[-1]  # the component spans the midline: the trunk, no limb
                    region = f.mask
                    depth = ndi.distance_transform_edt(region, sampling=sp)
                    vals = img[f.box][region]
                    inner = img[f.box][depth > HEART_WALL_MM]
                    hollow = inner.size > 0 and float(np.median(inner)) < HEART_CAVITY_FRACTION * float(
                        np.percentile(vals, 90))
                    site = trunk and hollow
                    if trunk and not hollow:
                        maybe += 1
                        why = ("a hot region of the heart's size on the trunk's midline is not hollow (its cavity not "
                               "resolved): heart or lesion, not told without the liver's dome")
        feats = dict(f.features)
        feats["physiological"] = 1.0 if site else 0.0
        told += int(site)
        out.append(replace(f, probability=f.probability * factor if site else f.probability, features=feats))
    if told:
        notes.append(f"heart: no liver in view; {told} region(s) told as the heart by its own shape (100-800 mL, "
                     f"hollow, on the trunk's midline), down-weighted x{factor:g}")
    else:
        notes.append(f"heart: no liver in view; the heart could not be told ({why}): a hot region in the chest may "
                     "be the normal myocardium")
    return out


#: Organ context of a whole-body PET (:func:`_physiology`, docs/models.md "Organ context on PET"): the heart's lowest
#: point lies at most this far (mm) above the liver's dome (it rests on the diaphragm) ...
HEART_BASE_MM = 40.0
#: ... and at most this fraction of its 8 mm shell lies in the liver's extent (:func:`_liver_organ`): the heart's
#: inferior wall rests on the diaphragm over the liver, a lesion under the dome is wrapped in liver on most sides.
HEART_MAX_LIVER_CONTACT = 0.5
#: ... and a kidney's partner lies at the mirror position: off the midline by the same fraction of the body's
#: half-width (within this) and at the same depth (within this, mm; both lie beside the spine, retroperitoneal).
KIDNEY_MIRROR_SIDE = 0.2
KIDNEY_MIRROR_DEPTH_MM = 30.0

#: Foci whose centre lies within this distance (mm) of either axial end of a whole-body PET's field of view are
#: not reported (:func:`_physiology`).
FOV_EDGE_MM = 20.0

#: The head-neck midline rule of :func:`_physiology`: a focus whose centroid lies within this distance (mm) of the
#: body's mid-sagittal plane is midline uptake (tongue, palate, pharynx, larynx: organs 35-50 mm wide, their uptake
#: centred on the midline); cervical nodes of levels II-V lie along the jugular vein, 25-40 mm from it. In mm, not
#: in body half-widths: arms raised beside the head make the body's slice three times as wide as the neck (branch
#: petsens2; before, 0.1 half-widths: 25 mm with the arms up, 7 mm without).
HEAD_NECK_MIDLINE_MM = 15.0

#: PET search (whole-body, liver in view): blob candidates kept (a whole-body FDG PET shows dozens of hot spots
#: before the first lesion: brain, tonsils, glands, heart, kidneys, ureters, bowel, bladder) and their smallest
#: response, in log2 SUV units (about a tenth of a doubling).
PET_CANDIDATES = 60
PET_MIN_RESPONSE = 0.1


def _log_odds(model: NaiveBayes, features: Mapping[str, float]) -> float:
    """The naive Bayes log-odds of the target (unbounded: ranks candidates whose posterior rounds to 1)."""
    p = model.posterior(features)
    if 1e-12 < p < 1.0 - 1e-12:
        return math.log(p / (1.0 - p))
    out = math.log(model.prior) - math.log1p(-model.prior)
    for name, (mt, st) in model.target.items():
        if name not in features or not np.isfinite(features[name]):
            continue
        x = float(features[name])
        if name in model.clip:
            x = min(max(x, model.clip[name][0]), model.clip[name][1])
        mo, so = model.other[name]
        out += (-0.5 * ((x - mt) / st) ** 2 - math.log(st)) - (-0.5 * ((x - mo) / so) ** 2 - math.log(so))
    return out


def _resolve_overlaps_ranked(found: list[Finding], keys: Sequence[float]) -> list[Finding]:
    """Candidates in the order of ``keys`` (ascending; ties: largest first); one that shares more than 20 % of its
    voxels with a kept one is dropped."""
    order = sorted(range(len(found)), key=lambda i: (keys[i], -found[i].volume_ml))
    kept: list[Finding] = []
    for i in order:
        f = found[i]
        n = int(np.count_nonzero(f.mask))
        if n == 0:
            continue
        shared = 0
        for k in kept:
            inter = tuple(slice(max(a.start, b.start), min(a.stop, b.stop)) for a, b in zip(f.box, k.box))
            if any(sl.start >= sl.stop for sl in inter):
                continue
            fa = f.mask[tuple(slice(i0.start - a.start, i0.stop - a.start) for i0, a in zip(inter, f.box))]
            ka = k.mask[tuple(slice(i0.start - b.start, i0.stop - b.start) for i0, b in zip(inter, k.box))]
            shared += int(np.count_nonzero(fa & ka))
        if shared <= 0.2 * n:
            kept.append(f)
    return kept


def _pet_search_image(img: np.ndarray, foreground: np.ndarray, med: float) -> np.ndarray:
    """log2 of SUV over the foreground's median, floored at a quarter of it (air, lung edges), 0 outside."""
    floor = np.float32(max(0.25 * med, 1e-3))
    out = np.empty(img.shape, dtype=np.result_type(img, floor))

    def part(a: int, b: int) -> None:  # elementwise: the same values in slabs, made in threads
        o = out[a:b]
        np.maximum(img[a:b], floor, out=o)
        o /= np.float32(med if med > 0 else 1.0)
        np.log2(o, out=o)
        o[~foreground[a:b]] = 0.0

    _slabwise(part, img.shape[0])
    return out


#: Slices per slab of :func:`_slabwise` (a slab's temporaries stay small: a thread's freed arrays stay in its
#: malloc arena).
_ELEMENTWISE_SLAB = 16


def _slabwise(fn: Callable[[int, int], None], n: int, workers: int | None = None) -> None:
    """``fn(a, b)`` over slices ``[a, b)`` of ``n``, in slabs of :data:`_ELEMENTWISE_SLAB`, shared among up to
    ``workers`` threads (default: the thread budget) in runs of whole slabs: for elementwise work on a whole image
    (the same values in any order)."""
    from dicomnode.analysis.threads import slab_runs, thread_map

    cuts = slab_runs(n, _ELEMENTWISE_SLAB, workers)

    def run(k: int) -> None:
        for z0 in range(cuts[k], cuts[k + 1], _ELEMENTWISE_SLAB):
            fn(z0, min(cuts[k + 1], z0 + _ELEMENTWISE_SLAB))

    thread_map(run, range(len(cuts) - 1), len(cuts) - 1)


#: PET small-focus search (:func:`_pet_snr_blobs`): the Gaussian window (mm) over which the noise of the blob filter's
#: output is measured, the smallest signal-to-noise ratio of a candidate (3: a 1-5 mL lesion at 3-4 x its background
#: answers the matched filter at 3-5 noise SDs; candidates, not findings), and how many such candidates are kept
#: beside the strongest blobs (more than reach 3 on a whole-body FDG PET, 58 on the shared one: the budget caps the
#: work on a noisier scanner, the highest ratios first).
PET_NOISE_WINDOW_MM = 30.0
PET_MIN_SNR = 3.0
PET_SNR_CANDIDATES = 80
#: ... at the blob radii up to this (mm): lesions of 1-5 mL after 6-7 mm FWHM
PET_SMALL_RADIUS_MM = 15.0


def _upsample_linear(coarse: np.ndarray, factors: Sequence[int], *, out: np.ndarray) -> np.ndarray:
    """``coarse`` (the :func:`~dicomnode.analysis.blocks.block_mean` grid of ``factors``) read back at every voxel of
    ``out`` (float32) by linear interpolation between block centres, axis by axis; nearest beyond the outer
    centres. Made slab by slab along the first axis (work arrays of a slab's size, not of ``out``'s)."""

    def weights(ax: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n, m, k = out.shape[ax], coarse.shape[ax], int(factors[ax])
        pos = np.clip((np.arange(n, dtype=np.float64) - (k - 1) / 2.0) / k, 0.0, m - 1)
        i0 = np.floor(pos).astype(np.intp)
        return i0, np.minimum(i0 + 1, m - 1), (pos - i0).astype(np.float32)

    def along(a: np.ndarray, ax: int, i0: np.ndarray, i1: np.ndarray, w: np.ndarray,
              into: np.ndarray | None = None) -> np.ndarray:
        shape = [1] * a.ndim
        shape[ax] = len(w)
        lo, hi = np.take(a, i0, axis=ax), np.take(a, i1, axis=ax)
        hi -= lo
        hi *= w.reshape(shape)
        return np.add(lo, hi, out=into)

    w0, w1, w2 = weights(0), weights(1), weights(2)
    n = out.shape[0]
    for z0 in range(0, n, 16):
        z1 = min(n, z0 + 16)
        i0, i1, w = (x[z0:z1] for x in w0)
        slab = along(coarse, 0, i0, i1, w)
        slab = along(slab, 1, *w1)
        along(slab, 2, *w2, into=out[z0:z1])
    return out


def _pet_snr_blobs(stack: np.ndarray, radii_mm: Sequence[float], foreground: np.ndarray,
                   spacing_mm: Sequence[float], *, window_mm: float = PET_NOISE_WINDOW_MM,
                   min_snr: float = PET_MIN_SNR, max_candidates: int = PET_SNR_CANDIDATES
                   ) -> list[tuple[tuple[int, int, int], float, float, float]]:
    """Small PET foci by signal-to-noise ratio: local maxima over space and scale of the scale-normalised LoG of
    log2 SUV (``stack``, from :func:`_log_stack`; divided in place) over the local noise of that filter output.

    A 1-2 mL lesion (radius 6-8 mm) blurred to 6-7 mm FWHM is a Gaussian-like blob of 4.5-6 mm SD: the LoG at the
    smallest radii (``r / sqrt(3)`` = the blob's SD) is its matched filter. Its response is compared with what the
    filter gives on the tissue around it, not with the strongest responses of the whole body (the brain, heart,
    kidneys and bladder answer first, and a cold lung's noise is larger in log2 SUV than the liver's): the noise SD at
    each voxel and scale is ``sqrt(2 x local mean of min(response, 0)^2)`` over a Gaussian window of ``window_mm``
    in the foreground (the negative half of a zero-mean response: a hot focus does not raise it, its own negative
    ring little, the ring around a hot organ does, which only lowers the ratio next to it). Under Gaussian noise a
    ratio of 4 is crossed by chance a few times per whole-body series (some 10^4 blob-sized volumes in a trunk;
    Worsley et al. 1996): these are candidates, which the PET model (contrast to the surroundings, peak over the
    local noise) and the organ context then weigh, not findings. The default ratio is 3, where about 18 times as
    many chance peaks as at 4 are expected (the density ``(u^2 - 1) exp(-u^2 / 2)``): tens per series, each grown and
    weighed (docs/models.md).

    Returns
    -------
    list of ((z, y, x), radius_mm, snr, response)
        The ``max_candidates`` highest ratios >= ``min_snr``, highest first; centres in the foreground, balls in
        view; ``response`` is the LoG response there (log2 SUV units).

    References
    ----------
    .. [1] K. J. Worsley et al., "A unified statistical approach for determining significant signals in images of
       cerebral activation", Human Brain Mapping 4, 1996 (expected peaks of a smooth Gaussian field above a level).
    """
    sp = np.asarray(spacing_mm, dtype=float)
    radii = [float(r) for r in radii_mm]
    # the window is wide (30 mm) and smooth: it is made on a grid of blocks about a third of its width and read back
    # at every voxel by linear interpolation (within 1 % of the full-grid window; a tenth of the time)
    f = tuple(max(1, int(window_mm / 3.0 / s)) for s in sp)
    sig = [window_mm / (s * k) for s, k in zip(sp, f)]
    den = block_mean(foreground, f, partial="zeros")  # the far blocks' missing voxels: outside, as mode constant
    ndi.gaussian_filter(den, sig, mode="constant", output=den)
    np.maximum(den, np.float32(1e-3), out=den)
    import queue

    from dicomnode.analysis.threads import thread_budget, thread_map

    workers = min(thread_budget(), stack.shape[0])
    # a work array per thread, made here: an array a thread allocates stays in that thread's malloc arena once freed
    # (RSS the rest of the step cannot reuse; 60 MB more at the detect step's peak on the bench PET)
    free: queue.SimpleQueue[np.ndarray] = queue.SimpleQueue()
    for _ in range(workers):
        free.put(np.empty(stack.shape[1:], dtype=np.float32))

    def noise_ratio(i: int) -> dict[int, float]:
        """Scale ``i`` of the stack divided by its local noise, in place; the noise SD where the ratio reaches
        ``min_snr`` (few voxels). The scales are independent: made in threads, each on a free work array."""
        var = free.get()
        try:
            return scale_ratio(i, var)
        finally:
            free.put(var)

    def scale_ratio(i: int, var: np.ndarray) -> dict[int, float]:
        np.minimum(stack[i], 0.0, out=var)
        var *= var
        var *= foreground
        coarse = block_mean(var, f, partial="zeros")
        ndi.gaussian_filter(coarse, sig, mode="constant", output=coarse)
        coarse /= den
        coarse *= np.float32(2.0)
        np.sqrt(coarse, out=coarse)
        _upsample_linear(coarse, f, out=var)
        # a floor: a flat, noiseless stretch (a phantom, an air gap) does not make every ripple a candidate
        np.maximum(var, np.float32(0.02), out=var)
        stack[i] /= var
        idx = np.flatnonzero(stack[i] >= min_snr)
        return dict(zip(idx.tolist(), var.ravel()[idx].tolist()))

    # per scale, the noise SD where the ratio reaches min_snr
    noise_at = thread_map(noise_ratio, range(stack.shape[0]), workers)
    while not free.empty():  # the work arrays go before the peak search (the closures hold the queue)
        free.get()
    del den
    peaks = _stack_peaks(stack, radii, sp, polarity=1, min_response=min_snr, allowed=foreground,
                         max_candidates=max_candidates, in_view=True)
    shape = stack.shape[1:]
    return [(c, r, snr, snr * noise_at[radii.index(r)][int(np.ravel_multi_index(c, shape))]) for c, r, snr in peaks]


def _pet_background(found: list[Finding], img: np.ndarray, foreground: np.ndarray, spacing_mm: Sequence[float],
                    inner_mm: float = 5.0, outer_mm: float = 15.0) -> None:
    """Give each PET focus its local background and contrast (features, in place): ``background`` (median SUV in
    the foreground 5-15 mm around the region: past the partial-volume spill of 6-7 mm FWHM), ``local_noise`` (SD of
    the SUV minus its 4 mm smoothing there, MAD-scaled: noise and texture), ``log2_peak_to_background`` and
    ``log10_peak_cnr`` ((SUVpeak - background) / local noise)."""
    sp = np.asarray(spacing_mm, dtype=float)
    pad = [int(math.ceil(outer_mm / s)) + 1 for s in sp]
    for f in found:
        peak = f.features.get("peak")
        if peak is None:
            continue
        box = tuple(slice(max(0, b.start - p), min(n, b.stop + p)) for b, p, n in zip(f.box, pad, img.shape))
        region = np.zeros(tuple(b.stop - b.start for b in box), dtype=bool)
        region[tuple(slice(b.start - bb.start, b.stop - bb.start) for b, bb in zip(f.box, box))] = f.mask
        d = ndi.distance_transform_edt(~region, sampling=sp)
        shell = (d > inner_mm) & (d <= outer_mm) & foreground[box]
        if np.count_nonzero(shell) < 10:
            continue
        sub = img[box].astype(np.float32, copy=False)
        vals = sub[shell]
        bg = max(float(np.median(vals)), 0.05)
        detail = (sub - ndi.gaussian_filter(sub, [4.0 / s for s in sp], mode="nearest"))[shell]
        noise = max(1.4826 * float(np.median(np.abs(detail - np.median(detail)))), 0.02 * bg, 1e-3)
        feats = f.features
        feats["background"] = bg  # type: ignore[index]
        feats["local_noise"] = noise  # type: ignore[index]
        feats["log2_peak_to_background"] = math.log2(max(float(peak), 1e-3) / bg)  # type: ignore[index]
        feats["log10_peak_cnr"] = math.log10(max((float(peak) - bg) / noise, 1e-2))  # type: ignore[index]


def _liver_contact(f: Finding, liver: np.ndarray, spacing_mm: Sequence[float], width_mm: float = 8.0) -> float:
    """Fraction of the shell ``width_mm`` around a region that is liver (a focus inside the liver: about 1)."""
    pad = [int(math.ceil(width_mm / s)) + 1 for s in spacing_mm]
    box = tuple(slice(max(0, b.start - p), min(n, b.stop + p)) for b, p, n in zip(f.box, pad, liver.shape))
    region = np.zeros(tuple(b.stop - b.start for b in box), dtype=bool)
    region[tuple(slice(b.start - bb.start, b.stop - bb.start) for b, bb in zip(f.box, box))] = f.mask
    shell = _shell(region, spacing_mm, width_mm)
    return float(np.mean(liver[box][shell])) if shell.any() else 0.0


def _gap_mm(a: Finding, b: Finding, spacing_mm: Sequence[float]) -> float:
    """Smallest distance between the voxels of two regions, mm (0 when they touch); inf beyond 100 mm of box gap."""
    sp = np.asarray(spacing_mm, dtype=float)
    gap = [max(0, max(x.start, y.start) - min(x.stop, y.stop)) * s for x, y, s in zip(a.box, b.box, sp)]
    if math.sqrt(sum(g * g for g in gap)) > 100.0:
        return float("inf")
    from scipy.spatial import cKDTree

    pa = (np.argwhere(a.mask) + [x.start for x in a.box]) * sp
    pb = (np.argwhere(b.mask) + [x.start for x in b.box]) * sp
    d, _ = cKDTree(pb).query(pa, k=1)
    return float(max(d.min() - float(sp.min()), 0.0))


def liver_reference(image: np.ndarray, foreground: np.ndarray, spacing_mm: Sequence[float], *,
                    window_mm: float = 10.0, suv_range: tuple[float, float] = (1.0, 4.0), max_cv: float = 0.2,
                    min_volume_ml: float = 500.0) -> tuple[float, float, float] | None:
    """The liver as PERCIST's reference region on a PET in SUV: (mean SUV, SD, volume mL), or None when not in view.

    The liver is the largest region of homogeneous, moderate uptake: where the local mean (Gaussian window of
    ``window_mm``) lies in ``suv_range`` and the local SD is below ``max_cv`` times it (brain and bladder are hotter,
    muscle and lung colder, the blood pool of the heart and the spleen smaller), with the pieces a focal lesion split
    off it; in view when the organ's extent (holes filled, rim grown back) is at least ``min_volume_ml``
    (:func:`_liver_organ`). Its mean and SD are those of the SUV over the homogeneous voxels, which keep clear of
    any lesion (hot or cold) by the window's reach.

    References
    ----------
    .. [1] R. L. Wahl et al., "From RECIST to PERCIST: evolving considerations for PET response criteria in solid
       tumors", J Nucl Med 50 Suppl 1, 2009 (liver reference, threshold 1.5 x mean + 2 SD).
    """
    mask = _liver_mask(image, foreground, spacing_mm, window_mm=window_mm, suv_range=suv_range, max_cv=max_cv,
                       min_volume_ml=min_volume_ml)
    if mask is None:
        return None
    vals = image[mask].astype(np.float64)
    return float(vals.mean()), float(vals.std()), float(vals.size) * float(np.prod(spacing_mm)) / 1000.0


#: The liver on PET (:func:`_liver_organ`, docs/models.md "petliver"): a focal lesion inside it (hot or cold) breaks
#: the homogeneous region around it out to its own radius plus the window's reach (about 2 window widths), so a
#: 30 mL lesion (radius 19 mm) leaves a hole or notch of about 40 mm radius; pieces of the organ within this distance
#: of its largest piece, at its level (within ``LIVER_PIECE_LEVEL``) and at least ``LIVER_PIECE_FRACTION`` of its
#: size are the same organ, and the organ's extent (its pieces closed over this radius, holes filled) is what its
#: volume is judged on.
LIVER_LESION_REACH_MM = 40.0
LIVER_PIECE_LEVEL = 0.25
LIVER_PIECE_FRACTION = 0.1


def _liver_mask(image: np.ndarray, foreground: np.ndarray, spacing_mm: Sequence[float], *, window_mm: float = 10.0,
                suv_range: tuple[float, float] = (1.0, 4.0), max_cv: float = 0.2,
                min_volume_ml: float = 500.0) -> np.ndarray | None:
    """The region :func:`liver_reference` measures, as a mask (None when not in view): the homogeneous voxels of
    the liver (:func:`_liver_organ`), never a lesion's."""
    organ = _liver_organ(image, foreground, spacing_mm, window_mm=window_mm, suv_range=suv_range, max_cv=max_cv,
                         min_volume_ml=min_volume_ml)
    return None if organ is None else organ[0]


def _liver_organ(image: np.ndarray, foreground: np.ndarray, spacing_mm: Sequence[float], *, window_mm: float = 10.0,
                 suv_range: tuple[float, float] = (1.0, 4.0), max_cv: float = 0.2, min_volume_ml: float = 500.0,
                 reach_mm: float = LIVER_LESION_REACH_MM) -> tuple[np.ndarray, np.ndarray] | None:
    """The liver on a PET in SUV: ``(core, extent)`` masks, or None when it is not in view.

    ``core``: the homogeneous voxels (local mean over a Gaussian window of ``window_mm`` in ``suv_range``, local SD
    below ``max_cv`` times it) of the largest such region and of the pieces of the same organ a focal lesion split
    off it (within ``reach_mm``, mean level within ``LIVER_PIECE_LEVEL`` of the largest piece's, at least
    ``LIVER_PIECE_FRACTION`` of its size). A lesion, hot or cold, and the window's reach around it are never in the
    core: PERCIST's reference is normal liver. ``extent``: the core closed over ``reach_mm`` with its holes filled
    (a lesion's hole and notch belong to the organ); the organ is in view when the extent is at least
    ``min_volume_ml`` (an adult liver is 1.2-1.8 L; its homogeneous core on a clinical PET a third of that; the
    spleen's core and the heart's blood pool are smaller). Both masks are on the image's grid.
    """
    img = image.astype(np.float32, copy=False)
    sp = np.asarray(spacing_mm, dtype=float)
    sig = [window_mm / s for s in sp]
    # uptake above the highest a liver shows counts as that level: a hot lesion (or organ) beside normal liver
    # raises the local SD only as far as a step to that level does, not by its square (a 6x lesion at SUV 12)
    capped = np.minimum(img, np.float32(suv_range[1]))
    m = _gaussian(capped, sig, mode="reflect")
    capped *= capped
    v = _gaussian(capped, sig, mode="reflect", output=capped)
    del capped
    warm = np.empty(img.shape, dtype=bool)
    hom = np.empty(img.shape, dtype=bool)

    def level_and_spread(a: int, b: int) -> None:
        """The local variance, the warm and the homogeneous voxels of slices ``a`` to ``b`` (elementwise: the same
        values in slabs, made in threads)."""
        ms, vs = m[a:b], v[a:b]
        vs -= ms * ms
        np.clip(vs, 0, None, out=vs)
        w = foreground[a:b] & (ms > suv_range[0]) & (ms < suv_range[1])
        warm[a:b] = w
        hom[a:b] = w & (vs < (max_cv * ms) ** 2)

    _slabwise(level_and_spread, img.shape[0])
    del m, v
    lab, n = ndi.label(hom)
    if n == 0:
        return None
    sizes = np.bincount(lab[hom], minlength=n + 1)[1:]  # (the labelled voxels only: the same counts)
    k = int(np.argmax(sizes)) + 1
    vox_ml = float(np.prod(sp)) / 1000.0
    # the organ's box: its largest piece grown by twice the reach (a split-off piece starts within one)
    pad = [int(math.ceil(2.0 * reach_mm / s)) + 1 for s in sp]
    objs = ndi.find_objects(lab)
    box = tuple(slice(max(0, b.start - p), min(n_, b.stop + p)) for b, p, n_ in zip(objs[k - 1], pad, img.shape))
    sub = lab[box]
    main = sub == k
    level = float(np.median(img[box][main]))
    gap = ndi.distance_transform_edt(~main, sampling=sp)
    core = main.copy()
    for j in np.unique(sub[(gap <= reach_mm) & (sub > 0)]):
        j = int(j)
        if j == k or sizes[j - 1] < LIVER_PIECE_FRACTION * sizes[k - 1]:
            continue
        piece = sub == j
        if np.count_nonzero(piece) < sizes[j - 1] or gap[piece].max() > 2.0 * reach_mm:
            continue  # a piece the lesion split off lies wholly beside it (not a spine or a bowel loop running off)
        if abs(float(np.median(img[box][piece])) / level - 1.0) <= LIVER_PIECE_LEVEL:
            core |= piece
    # the extent: closed over the reach (distance transforms: dilate, then erode), holes filled; the box is grown
    # by the reach first so that the closing is not cut by it (a crop's edge is the field of view's: closed there)
    # (_near, _eroded, _fill_holes_boxed: the voxels of the distance transforms and ndi.binary_fill_holes on the
    # box, each made on its mask's own bounding box)
    grown = _near(core, sp, reach_mm)
    extent = _eroded(grown, sp, reach_mm)
    extent = _fill_holes_boxed(extent | core)
    # the homogeneity test loses the organ's rim (the window's reach, two window widths, from its edge): the organ
    # is its extent grown back by that reach over tissue at the organ's level of uptake
    rim = _near(extent, sp, 2.0 * window_mm)
    extent |= rim & warm[box]
    if float(np.count_nonzero(extent)) * vox_ml < min_volume_ml:
        return None
    out_core = np.zeros(img.shape, dtype=bool)
    out_core[box] = core
    out_extent = np.zeros(img.shape, dtype=bool)
    out_extent[box] = extent
    return out_core, out_extent


def _region_features(img: np.ndarray, region: np.ndarray, foreground: np.ndarray, spacing_mm: Sequence[float],
                     spread: float, class_means: Sequence[float] | None, class_sds: Sequence[float] | None
                     ) -> tuple[dict[str, float], np.ndarray]:
    """Shape and intensity features of ``region`` (on the box ``img``), and its surround shell in the foreground."""
    feats = _shape_features(region, spacing_mm)
    shell = _shell(region, spacing_mm, max(3.0, 1.5 * max(spacing_mm))) & foreground
    feats["mean"] = float(img[region].mean())
    sv = img[shell]
    feats["surround_mean"] = float(sv.mean()) if sv.size else float("nan")
    feats["contrast"] = feats["mean"] - feats["surround_mean"] if sv.size else float("nan")
    feats["cnr"] = abs(feats["contrast"]) / spread if sv.size else 0.0
    feats["log10_cnr"] = math.log10(max(feats["cnr"], 1e-3))
    if class_means is not None and class_sds is not None:
        mu = np.asarray(class_means, dtype=float)
        sd = np.maximum(np.asarray(class_sds, dtype=float), 1e-12)
        # how many class SDs the region mean lies from the nearest class
        feats["tissue_outlier"] = float(np.min(np.abs(feats["mean"] - mu) / sd))
    return feats, shell


def _hot_regions(img: np.ndarray, foreground: np.ndarray, spacing_mm: Sequence[float], threshold: float,
                 settings: DetectionSettings, max_regions: int = 20,
                 workers: int = 1) -> list[tuple[np.ndarray, tuple[slice, ...]]]:
    """Connected regions of ``img > threshold`` in the foreground, holes filled (slice by slice, then in 3-D), as
    (mask on its bounding box, bounding box); at least ``settings.min_volume_ml``, the largest first. The regions'
    holes are filled in up to ``workers`` threads (each on its own box)."""
    hot = (img > threshold) & foreground
    lab, n = ndi.label(hot)
    if n == 0:
        return []
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    sizes = np.bincount(lab[hot], minlength=n + 1)[1:]  # (the labelled voxels only: the same counts)
    order = [int(k) + 1 for k in np.argsort(-sizes) if sizes[k] * voxel_ml >= settings.min_volume_ml]
    # room around each region for its surround shell (the width used by detect_tissue)
    margin = int(math.ceil(max(3.0, 1.5 * max(spacing_mm)) / min(spacing_mm))) + 1
    boxes = ndi.find_objects(lab)

    def filled(k: int) -> tuple[np.ndarray, tuple[slice, ...]]:
        pad = tuple(slice(max(0, b.start - margin), min(b.stop + margin, dim))
                    for b, dim in zip(boxes[k - 1], img.shape))
        region = lab[pad] == k
        for z in range(region.shape[0]):
            region[z] = _fill_holes(region[z])
        return _fill_holes(region), pad

    from dicomnode.analysis.threads import thread_map

    return thread_map(filled, order[:max_regions], workers)


# ------------------------------------------------------------------------------------------------ entry point


def detect(volume: Volume, *, method: str, lungs: Sequence[np.ndarray] = (), foreground: np.ndarray | None = None,
           settings: DetectionSettings = DetectionSettings(), solid_range: tuple[float, float] | None = None,
           no_bowel_z_mm: Sequence[tuple[float, float]] = (), **options) -> DetectionResult:
    """Run a detector on a volume and give each finding its centroid in patient coordinates.

    Parameters
    ----------
    volume : Volume
        The working (denoised) volume; its geometry maps centroids to DICOM patient coordinates.
    method : {"lung", "tissue_model"}
        Which detector (see the module docstring).
    lungs : sequence of (Z, Y, X) bool ndarray
        For "lung": the lung masks.
    foreground : (Z, Y, X) bool ndarray, optional
        For "tissue_model": where to search. Default: the whole volume.
    settings : DetectionSettings
        Limits.
    solid_range : (float, float), optional
        For "tissue_model" in a limb (the detect step gives it where the scene says extremity): the intensity range
        of solid soft tissue; the thickest solid lump that stands out against the limb's muscles
        (:func:`dicomnode.analysis.masses.solid_masses`) is a candidate too, with its score as probability (features
        ``solid_thickness_mm``, ``solid_thickness_elsewhere_mm``, ``solid_thickness_ratio``, ``solid_mass`` = 1);
        without one, on axial slices, the solid ball that ends most clearly along the limb
        (:func:`dicomnode.analysis.masses.solid_lump`: ``solid_radius_mm``, ``solid_boundedness``,
        ``solid_lumpiness``, ``solid_mass`` = 1). On MR, a dark candidate whose mean lies below the range is a
        signal void (bowel gas, bone), no soft-tissue mass: probability x 0.1, feature ``signal_void`` = 1.
        Default: none (blob search only).
    no_bowel_z_mm : sequence of (float, float), optional
        On MR, the stretches of patient z (LPS, mm, ``(low, high)``) that hold no bowel loop and no stomach (the
        detect step gives the scene's head and neck regions; ``[(-inf, inf)]`` for a series that is all head).
        Air inside the body is never a finding on MR (:func:`air_voids`); a bright region whose centroid lies outside
        these stretches and under a gas cap is bowel content (:func:`gas_capped`). Default: none (bowel anywhere).
    **options
        Keywords of :func:`detect_lung` or :func:`detect_tissue`. ``calibration`` is applied here, last, to every
        candidate (the solid mass included), the top candidate being the highest-scoring one overall.

    Returns
    -------
    DetectionResult
        With ``centroid_mm`` set on every finding (accepted and rejected).
    """
    if "mirror_axis" not in options:
        # the index axis along the patient's left-right direction, when one is (nearly) aligned with it
        lateral = np.abs(np.asarray(volume.direction, dtype=float)[0])
        options["mirror_axis"] = 2 - int(np.argmax(lateral)) if lateral.max() > 0.9 else None
    if method == "tissue_model" and volume.modality == "CT" and volume.unit == "HU":
        options.setdefault("no_data_below", -1500.0)  # padding outside a circular field of view (segment_ct's)
    if method == "tissue_model" and "cranial" not in options:
        # +1 when the slice index runs towards the head (patient +z, LPS), -1 towards the feet, None when oblique
        dz = float(np.asarray(volume.direction, dtype=float)[2][2])
        options["cranial"] = (1 if dz > 0 else -1) if abs(dz) > 0.9 else None
    # the calibration maps the final ranking score of every candidate, the solid masses' included: applied last
    calibration = options.pop("calibration", None)
    if method == "lung":
        res = detect_lung(volume.array, volume.spacing_mm, lungs, settings=settings, **options)
    elif method == "tissue_model":
        fg = np.ones(volume.shape, dtype=bool) if foreground is None else foreground
        res = detect_tissue(volume.array, volume.spacing_mm, fg, settings=settings, **options)
        if solid_range is not None:  # ---- solid masses (extremity branch): the thickest solid lump in a limb
            res = _with_solid_mass(res, volume, fg, solid_range, settings)
        if volume.modality == "MR":  # ---- normal anatomy on MR: air in the body, gas-capped fluid in a lumen
            res = _with_mr_normal_anatomy(res, volume, fg, settings, no_bowel_z_mm=no_bowel_z_mm)
        elif volume.modality == "CT" and volume.unit == "HU":  # ---- air on CT: a dark core below any fat
            res = _with_ct_air(res, volume, settings)
    else:
        raise ValueError(f"method must be 'lung' or 'tissue_model', got {method!r}")
    if calibration is not None:
        notes = list(res.notes)
        ok, rejected = _split(_calibrate_all([*res.findings, *res.rejected], calibration, settings, notes), settings)
        res = DetectionResult(ok, rejected, res.n_candidates, tuple(notes))

    def place(fs: tuple[Finding, ...]) -> tuple[Finding, ...]:
        out = []
        for f in fs:
            xyz = volume.index_to_patient(np.asarray(f.centroid_zyx))[0]
            out.append(replace(f, centroid_mm=(float(xyz[0]), float(xyz[1]), float(xyz[2]))))
        return tuple(out)

    return DetectionResult(place(res.findings), place(res.rejected), res.n_candidates, res.notes)


def _with_solid_mass(res: DetectionResult, volume: Volume, foreground: np.ndarray, solid_range: tuple[float, float],
                     settings: DetectionSettings) -> DetectionResult:
    """``res`` with the solid mass (:func:`dicomnode.analysis.masses.solid_masses`) or else the solid lump
    (:func:`dicomnode.analysis.masses.solid_lump`, axial slices) as one more candidate (label "lesion", its score as
    probability), signal voids down-weighted on MR, ranked and limited with the others."""
    from dicomnode.analysis.masses import PIU_MIN, fat_like, fat_reference, slice_shading, solid_lump, solid_masses

    notes = list(res.notes)
    found = [*res.findings, *res.rejected]
    fat = None
    if volume.modality == "MR":
        found = _signal_voids(found, solid_range[0], notes)
        fat = fat_reference(volume.array, volume.spacing_mm, foreground, solid_range=solid_range, notes=notes)
        if fat is not None:
            found = fat_like(found, fat, notes)
            # a surface coil's fall-off darkens the fat at the ends of the field of view towards the solid range
            shading = slice_shading(volume.array, foreground)
            if shading is not None and shading.shaded:
                notes.append(f"shading: the fat level varies along the slices from {shading.scale.min():.2f} to "
                             f"{shading.scale.max():.2f} of its median (uniformity {shading.piu_percent:.0f} % < "
                             f"{PIU_MIN:g} %: a surface coil's fall-off); where fat is darkened it can be taken for "
                             "solid tissue, so solid masses and lumps there are less reliable")
    mass = solid_masses(volume.array, volume.spacing_mm, foreground, solid_range=solid_range, notes=notes)
    if mass is not None and mass.mask.any():
        found.append(_mass_finding(mass.mask, volume, mass.score, solid_thickness_mm=mass.thickness_mm,
                                   solid_thickness_elsewhere_mm=mass.elsewhere_mm,
                                   solid_thickness_ratio=min(mass.ratio, 1e6)))
    axial = abs(float(np.asarray(volume.direction, dtype=float)[2][2])) > 0.9  # slices across the limb's axis
    if axial and (mass is None or mass.score < 0.5):  # a mass that stands out needs no weaker evidence
        lump = solid_lump(volume.array, volume.spacing_mm, foreground, solid_range=solid_range, notes=notes,
                          exclude=None if mass is None else mass.mask)
        if lump is not None and lump.mask.any():
            found.append(_mass_finding(lump.mask, volume, lump.score, solid_radius_mm=lump.radius_mm,
                                       solid_boundedness=lump.boundedness, solid_lumpiness=lump.lumpiness))
        if fat is not None:  # MR with bright fat (T1, fast spin echo T2 without fat suppression): say what it cannot
            told = ("the solid lump is told by its shape only (weak evidence)" if lump is not None
                    and lump.score >= 0.5 else "no solid mass stands out by its thickness or shape")
            notes.append(f"solid masses: {told}; on MR with bright fat, without fat suppression or contrast, a "
                         "sarcoma has about the signal of muscle, and one no thicker than the muscles around it can be "
                         "missed or taken for a muscle: read fat-suppressed T2/STIR or contrast-enhanced T1")
    ok, rejected = _split(found, settings)
    return DetectionResult(ok, rejected, res.n_candidates + len(found) - len(res.findings) - len(res.rejected),
                           tuple(notes))


def _signal_voids(found: list[Finding], void_level: float, notes: list[str], factor: float = 0.1) -> list[Finding]:
    """On MR in a limb: a dark candidate whose mean lies below ``void_level`` (the lower end of the solid tissue
    range, half the muscle level) is a signal void (gas in the bowel, cortical bone, a tendon), no soft-tissue mass:
    probability x ``factor``, feature ``signal_void`` = 1 (a hand-set rule, like the symmetry rule)."""
    out, n = [], 0
    for f in found:
        if f.features.get("polarity") == -1.0 and f.features.get("mean", np.inf) < void_level:
            feats = {**f.features, "signal_void": 1.0}
            f = replace(f, probability=f.probability * factor, features=feats)
            n += 1
        out.append(f)
    if n:
        notes.append(f"{n} dark region(s) below the solid tissue range ({void_level:.4g}: signal voids, gas or "
                     f"bone) down-weighted x{factor:g}")
    return out


def _mass_finding(mask: np.ndarray, volume: Volume, score: float, **features: float) -> Finding:
    """A finding from a solid mass or lump on the full grid, its score as probability, ``solid_mass`` = 1."""
    feats = _shape_features(mask, volume.spacing_mm)
    feats.update(features, solid_mass=1.0, mean=float(volume.array[mask].mean()))
    idx = np.argwhere(mask)
    lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    c = idx.mean(axis=0)
    return Finding("lesion", np.ascontiguousarray(mask[box]), box,  # type: ignore[arg-type]
                   (float(c[0]), float(c[1]), float(c[2])), feats["volume_ml"], feats["diameter_mm"], score, feats)


#: MR: a level below this fraction of the body's median is air (no mobile protons: the noise floor), not tissue
AIR_FRACTION_MR = 0.1
#: MR: the core of a region is the part at least this far inside its rim (partial volume with the wall), mm
AIR_CORE_MM = 3.0
#: MR: how far in front of a bright region's anterior surface gas counts as the lumen's gas cap, mm
GAS_CAP_REACH_MM = 10.0
#: MR: the fraction of a bright region's anterior surface under gas from which it is fluid in a gas-holding lumen
GAS_CAP_MIN = 0.2
#: the probability factor for normal anatomy (like the symmetry and signal-void rules)
MR_NORMAL_FACTOR = 0.1
#: CT: a core below this is air mixed with its wall (fat, the lowest tissue, lies at -190 to -30 HU), not tissue
CT_AIR_BELOW_HU = -250.0


def _with_mr_normal_anatomy(res: DetectionResult, volume: Volume, foreground: np.ndarray,
                            settings: DetectionSettings, *,
                            no_bowel_z_mm: Sequence[tuple[float, float]] = ()) -> DetectionResult:
    """``res`` with the MR candidates that are normal anatomy down-weighted (:func:`air_voids`; and
    :func:`gas_capped` on the candidates whose patient z lies outside ``no_bowel_z_mm``: in the head, air in front of
    a bright region is a sinus, not a lumen's gas cap), ranked and limited again."""
    found = [*res.findings, *res.rejected]
    if not found or not foreground.any():
        return res
    notes = list(res.notes)
    # the body's median, partitioned in the one copy the mask makes (no second copy: same value)
    reference = float(np.median(volume.array[foreground], overwrite_input=True))
    found = air_voids(found, volume.array, volume.spacing_mm, reference, notes)

    def bowel_possible(f: Finding) -> bool:
        z = float(volume.index_to_patient(np.asarray(f.centroid_zyx))[0][2])
        return not any(min(a, b) <= z <= max(a, b) for a, b in no_bowel_z_mm)

    lumen = [bowel_possible(f) for f in found]
    if any(lumen):
        air = volume.array < AIR_FRACTION_MR * reference
        air &= foreground
        capped = iter(gas_capped([f for f, b in zip(found, lumen) if b], air, volume.spacing_mm,
                                 _anterior_step(volume), notes))
        found = [next(capped) if b else f for f, b in zip(found, lumen)]
    ok, rejected = _split(found, settings)
    return DetectionResult(ok, rejected, res.n_candidates, tuple(notes))


def _with_ct_air(res: DetectionResult, volume: Volume, settings: DetectionSettings) -> DetectionResult:
    """``res`` with the CT candidates that hold air down-weighted (:func:`ct_air_voids`), ranked and limited again."""
    found = [*res.findings, *res.rejected]
    if not found:
        return res
    notes = list(res.notes)
    ok, rejected = _split(ct_air_voids(found, volume.array, volume.spacing_mm, notes), settings)
    return DetectionResult(ok, rejected, res.n_candidates, tuple(notes))


def _anterior_step(volume: Volume) -> tuple[int, int] | None:
    """(index axis, +1 or -1): the index step that goes towards the patient's anterior (LPS -y), when one index
    axis is (nearly) aligned with the anterior-posterior direction; None when oblique."""
    steps = np.asarray(volume.direction, dtype=float)  # columns: the (x, y, z) index axes in patient coordinates
    ap = steps[1, ::-1]  # the LPS y component of the (z, y, x) index axes
    ax = int(np.argmax(np.abs(ap)))
    if abs(ap[ax]) < 0.9:
        return None
    return ax, (-1 if ap[ax] > 0 else 1)


def _reweighted(f: Finding, factor: float, **features: float) -> Finding:
    return replace(f, probability=f.probability * factor, features={**f.features, **features})


def _judged(found: Sequence[Finding], judge: Callable[[Finding], tuple[bool, dict[str, float]] | None],
            factor: float) -> tuple[list[Finding], int]:
    """Each candidate judged by a normal-anatomy rule: ``judge`` gives None (the rule does not apply: the candidate
    is kept as it is) or (normal, features): the features are added, and a normal one's probability is multiplied
    by ``factor``. Returns the candidates in their order and how many were normal."""
    out, n = [], 0
    for f in found:
        verdict = judge(f)
        if verdict is None:
            out.append(f)
            continue
        normal, features = verdict
        out.append(_reweighted(f, factor if normal else 1.0, **features))
        n += normal
    return out, n


def air_voids(found: Sequence[Finding], image: np.ndarray, spacing_mm: Sequence[float], reference: float,
              notes: list[str] | None = None, *, air_fraction: float = AIR_FRACTION_MR,
              core_mm: float = AIR_CORE_MM, factor: float = MR_NORMAL_FACTOR) -> list[Finding]:
    """On MR: a dark candidate whose core is at the level of air is air inside the body, not a lesion.

    Air has no mobile protons: on every MR sequence its signal is the noise floor, a few percent of the tissue's
    (the background outside the body), while the darkest tissues with signal (muscle on T2, fluid on T1, a cyst)
    stay at a fifth of the body's median or more. Paranasal sinuses, mastoid cells, the pharynx, bowel gas and lung
    are such voids. Their rim shares voxels with the wall (partial volume, thick slices), so the level is read in
    the region's core, the part at least ``core_mm`` inside its rim (the deepest voxels when none is that deep).

    Parameters
    ----------
    found : sequence of Finding
        Candidates (``polarity`` -1 for a dark blob).
    image : (Z, Y, X) ndarray
        The volume the candidates were found on.
    spacing_mm : sequence of 3 float
        Voxel spacing along (z, y, x), in mm.
    reference : float
        The body's median level (the foreground's median), image units; > 0.
    notes : list of str, optional
        A line is appended saying how many regions were air.
    air_fraction : float, optional
        Air lies below this fraction of ``reference``. Default :data:`AIR_FRACTION_MR` (0.1).
    core_mm : float, optional
        Depth of the core, mm. Default :data:`AIR_CORE_MM` (3).
    factor : float, optional
        Probability factor for air. Default 0.1.

    Returns
    -------
    list of Finding
        The candidates, air down-weighted with features ``air_void`` = 1 and ``core_to_reference`` (the core's
        median over ``reference``) on every dark candidate.
    """
    if not reference > 0:
        raise ValueError(f"reference must be > 0 (the body's median level), got {reference}")
    if not (0 < air_fraction < 1 and core_mm >= 0 and 0 <= factor <= 1):
        raise ValueError(f"air_fraction must be in (0, 1), core_mm >= 0 and factor in [0, 1], got {air_fraction}, "
                         f"{core_mm}, {factor}")

    # (a region already down-weighted as a signal void in a limb, :func:`_signal_voids`, is not counted twice)
    out, n = _air_in_core(found, image, spacing_mm, core_mm, factor, below=air_fraction, scale=reference,
                          key="core_to_reference", skip="signal_void")
    if n and notes is not None:
        notes.append(f"{n} dark region(s) with the level of air in their core (< {air_fraction:g} x the body's "
                     f"median {reference:.4g}: sinuses, mastoid cells, airway, bowel gas or lung, no tissue) "
                     f"down-weighted x{factor:g}")
    return out


def _core_median(f: Finding, image: np.ndarray, spacing_mm: Sequence[float], core_mm: float) -> float:
    """The median of ``image`` over ``f``'s core: the part of it at least ``core_mm`` inside its rim (the deepest
    voxels when none is that deep), clear of the partial volume its rim shares with the wall."""
    depth = ndi.distance_transform_edt(np.pad(f.mask, 1), sampling=spacing_mm)[1:-1, 1:-1, 1:-1]
    core = f.mask & (depth >= min(core_mm, float(depth[f.mask].max())))
    return float(np.median(image[f.box][core]))


def _air_in_core(found: Sequence[Finding], image: np.ndarray, spacing_mm: Sequence[float], core_mm: float,
                 factor: float, *, below: float, key: str, scale: float = 1.0, skip: str | None = None
                 ) -> tuple[list[Finding], int]:
    """The dark candidates (``polarity`` -1, without feature ``skip``) whose core level (:func:`_core_median` over
    ``scale``) lies below ``below`` down-weighted by ``factor`` with ``air_void`` = 1; every dark one gets its level
    as feature ``key``. The candidates and how many were air."""
    def judge(f: Finding) -> tuple[bool, dict[str, float]] | None:
        if f.features.get("polarity") != -1.0 or (skip and f.features.get(skip)) or not f.mask.any():
            return None
        level = _core_median(f, image, spacing_mm, core_mm) / scale
        return (True, {"air_void": 1.0, key: level}) if level < below else (False, {key: level})

    return _judged(found, judge, factor)


def ct_air_voids(found: Sequence[Finding], image_hu: np.ndarray, spacing_mm: Sequence[float],
                 notes: list[str] | None = None, *, air_below_hu: float = CT_AIR_BELOW_HU,
                 core_mm: float = AIR_CORE_MM, factor: float = MR_NORMAL_FACTOR) -> list[Finding]:
    """On CT in HU: a dark candidate whose core lies below every tissue's density holds air, and is no lesion.

    Fat, the lowest-density tissue, lies between -190 and -30 HU; a soft-tissue or fatty lesion never lies lower.
    A core below ``air_below_hu`` is air mixed with its wall by partial volume: paranasal sinuses, mastoid cells,
    the airway, bowel gas. (Lung lesions are the lung method's.) Read in the core as :func:`air_voids` does on MR.

    Parameters
    ----------
    found : sequence of Finding
        Candidates (``polarity`` -1 for a dark blob).
    image_hu : (Z, Y, X) ndarray
        The volume the candidates were found on, in HU (not clipped to the search's window).
    spacing_mm : sequence of 3 float
        Voxel spacing along (z, y, x), in mm.
    notes : list of str, optional
        A line is appended saying how many regions held air.
    air_below_hu : float, optional
        Air lies below this level. Default :data:`CT_AIR_BELOW_HU` (-250).
    core_mm, factor : float, optional
        Depth of the core (mm, default 3) and the probability factor for air (default 0.1).

    Returns
    -------
    list of Finding
        The candidates, air down-weighted with features ``air_void`` = 1 and ``core_hu`` on every dark candidate.
    """
    if not (core_mm >= 0 and 0 <= factor <= 1):
        raise ValueError(f"core_mm must be >= 0 and factor in [0, 1], got {core_mm}, {factor}")

    out, n = _air_in_core(found, image_hu, spacing_mm, core_mm, factor, below=air_below_hu, key="core_hu")
    if n and notes is not None:
        notes.append(f"{n} dark region(s) with air in their core (median below {air_below_hu:g} HU, lower than any "
                     f"fat: sinuses, mastoid cells, airway or bowel gas, no tissue) down-weighted x{factor:g}")
    return out


def gas_capped(found: Sequence[Finding], air: np.ndarray, spacing_mm: Sequence[float],
               anterior: tuple[int, int] | None, notes: list[str] | None = None, *,
               reach_mm: float = GAS_CAP_REACH_MM, min_fraction: float = GAS_CAP_MIN,
               factor: float = MR_NORMAL_FACTOR) -> list[Finding]:
    """On MR: a bright candidate with gas in front of it is fluid in a lumen that holds gas (stomach, bowel).

    Gas floats: in a lumen that holds both, it rises above the fluid (an air-fluid level), in front of it in a
    supine patient, the usual position for MR of the trunk. A lesion in a solid organ or in soft tissue has tissue in
    front of it, never gas a few millimetres away. The test follows each column of the region's anterior surface
    forwards for ``reach_mm`` (the lumen's folds and wall) and counts the columns that meet gas; a region with at
    least ``min_fraction`` of them capped is bowel content. A prone patient (breast MR) has its gas behind the
    fluid: the rule then does not fire, it never removes more.

    Parameters
    ----------
    found : sequence of Finding
        Candidates (``polarity`` +1 for a bright blob).
    air : (Z, Y, X) bool ndarray
        Air inside the body (the level of air, :data:`AIR_FRACTION_MR` of the body's median, in the foreground).
    spacing_mm : sequence of 3 float
        Voxel spacing along (z, y, x), in mm.
    anterior : (int, int) or None
        The index axis along the anterior-posterior direction and the step (+1 or -1) towards anterior; None
        (oblique slices): no candidate changes.
    notes : list of str, optional
        A line is appended saying how many regions were gas-capped.
    reach_mm : float, optional
        How far in front of the surface gas counts, mm. Default :data:`GAS_CAP_REACH_MM` (10).
    min_fraction : float, optional
        Fraction of the anterior surface's columns under gas. Default :data:`GAS_CAP_MIN` (0.2).
    factor : float, optional
        Probability factor. Default 0.1.

    Returns
    -------
    list of Finding
        The candidates; bright ones get ``gas_cap`` (the fraction) and, from ``min_fraction``, ``bowel_content`` = 1
        and the probability x ``factor``.
    """
    if air.ndim != 3:
        raise ValueError(f"air must be a (Z, Y, X) mask, got shape {air.shape}")
    if not (reach_mm > 0 and 0 < min_fraction <= 1 and 0 <= factor <= 1):
        raise ValueError(f"reach_mm must be > 0, min_fraction in (0, 1] and factor in [0, 1], got {reach_mm}, "
                         f"{min_fraction}, {factor}")
    if anterior is None:
        return list(found)
    ax, step = anterior
    n_steps = max(1, int(round(reach_mm / float(spacing_mm[ax]))))

    def judge(f: Finding) -> tuple[bool, dict[str, float]] | None:
        if f.features.get("polarity") != 1.0 or not f.mask.any():
            return None
        full = np.pad(f.mask, [(1, 1) if a == ax else (0, 0) for a in range(3)])  # the box, one slab more each side
        ahead = np.zeros_like(full)  # ahead[i] = full[i + step]
        src = [slice(None)] * 3
        dst = [slice(None)] * 3
        src[ax], dst[ax] = (slice(1, None), slice(None, -1)) if step > 0 else (slice(None, -1), slice(1, None))
        ahead[tuple(dst)] = full[tuple(src)]
        surface = np.argwhere(full & ~ahead) + np.array([b.start for b in f.box])
        surface[:, ax] -= 1  # undo the pad
        capped = np.zeros(len(surface), dtype=bool)
        for k in range(1, n_steps + 1):
            j = surface.copy()
            j[:, ax] += step * k
            inside = (j[:, ax] >= 0) & (j[:, ax] < air.shape[ax])
            capped[inside] |= air[tuple(j[inside].T)]
        frac = float(capped.mean())
        if frac >= min_fraction:
            return True, {"gas_cap": frac, "bowel_content": 1.0}
        return False, {"gas_cap": frac}

    out, n = _judged(found, judge, factor)
    if n and notes is not None:
        notes.append(f"{n} bright region(s) with gas within {reach_mm:g} mm in front of >= {min_fraction:.0%} of "
                     f"their anterior surface (fluid under its gas cap in a lumen: stomach or bowel content, no "
                     f"lesion) down-weighted x{factor:g}")
    return out
