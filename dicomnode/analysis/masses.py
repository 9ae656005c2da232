"""Solid soft-tissue masses in a limb by their thickness: a lump without fat planes, thicker than the limb's muscles.

In a limb, muscles are bundles bounded by fat planes (fascia, intermuscular fat), so no normal muscle belly is a
very thick solid block; a sarcoma grows as a ball and pushes the fat planes aside. A tumour with the density of muscle
(STS_001's 365 mL sarcoma: 28 HU inside the contour, about 30 HU in the muscle around it; iso-intense on T1 MR)
casts no blob, but it is the thickest solid tissue in view. :func:`solid_masses` measures, at every voxel of solid
tissue (intensities in ``solid_range``: muscle and tumour, not fat, air or bone), the radius of the largest ball of
solid tissue centred there (the Euclidean distance transform, in mm, with the field of view's edge counted as a
boundary: a structure cut by the edge has an unknown thickness, counted as thin). The thickest point is a mass when

* its radius is at least ``min_thickness_mm`` (a ball of 5 cm: a mass by the radiological convention of > 3 cm, well
  above the thickness of a limb's muscle bellies), and
* it exceeds ``min_ratio`` times the thickest solid tissue *elsewhere* in view (the other muscles of the same
  series: a ball that does not reach into the mass): the mass stands out against the same patient's muscles, in
  the same image, whatever the scanner, the unit or the size of the patient.

The mass region is the union of the thick cores' balls (the opening of the solid tissue by a ball of a fraction of
the radius), connected to the thickest point. Its score is a hand-set logistic function of the ratio (not fitted:
three sarcomas are too few), a ranking score like the naive Bayes posterior of :mod:`dicomnode.analysis.detect`.

A smaller mass (STS_002's 53 mL, STS_003's 80 mL: balls of 18-23 mm radius, as thick as the muscles beside them)
does not stand out by thickness, but by its *shape along the limb*: muscles run along the limb (the slice axis of an
axial series) and stay as thick a few centimetres up and down, a tumour is a ball and ends. :func:`solid_lump` takes
the local maxima of the thickness of at least ``min_radius_mm`` (a ball of 3 cm: a mass), and at each the thickness
``axial_reach`` radii up and down the slice axis (the largest within half a radius in plane) over its own: about 0 for
a ball, about 1 for a muscle belly (``boundedness``, the larger of the two sides; a side beyond the field of view
is unknown, and the peak is passed over). The lump with the largest ``radius / min_radius_mm x (1 - boundedness)``
(``lumpiness``) is the candidate, with a score that is 0.5 at lumpiness 1: weak evidence, said as such (a normal
structure can be a short solid ball too, e.g. a lymph node conglomerate or a muscle's end).

*Fat is not a mass* (:func:`fat_reference`, MR where fat is bright): a lump whose signal is that of the patient's
own subcutaneous fat (the bright layer under the skin, measured per series) is fat (a fat lobule, a lipoma, the
marrow inside a bone), not a solid tumour: sarcomas on T1 are iso- to mildly hyperintense to muscle. The position of
a region's mean between the patient's muscle and fat (:meth:`FatReference.fraction`: 0 at muscle, 1 at fat) is a
relative measure, whatever the scanner's unit or gain.

Where this says nothing (said in the notes and in docs/models.md): in the trunk and the head, organs are thick solid
blocks (brain, liver, spleen, heart, a full bladder), so the detect step runs it only where the scene says limb; a
mass smaller than the thickest normal muscle (STS_002's 53 mL, STS_003's 80 mL: about 18-23 mm in radius, as thick as
the muscles beside them) does not stand out by thickness; on fat-suppressed MR (fat dark) the solid range taken from
the image is wrong.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence, TypeVar

import numpy as np
from scipy import ndimage as ndi

from dicomnode.analysis.blocks import block_mean
from dicomnode.analysis.denoise import _check_image, _check_spacing


class Candidate(Protocol):
    """What :func:`fat_like` reads of a candidate (:class:`dicomnode.analysis.detect.Finding`): a frozen dataclass
    with these fields."""

    probability: float
    features: Mapping[str, float]


C = TypeVar("C", bound=Candidate)

__all__ = ["FAT_FRACTION_MIN", "PIU_MIN", "FatReference", "Shading", "SolidLump", "SolidMass", "fat_like",
           "fat_reference", "slice_shading", "solid_lump", "solid_masses", "solid_range_from_image", "solid_thickness"]


@dataclass(frozen=True, eq=False, slots=True)
class SolidMass:
    """The thickest solid lump in view and how it stands out.

    Attributes
    ----------
    mask : (Z, Y, X) bool ndarray
        The mass region on the full grid (the union of the thick cores' balls, within the solid tissue).
    thickness_mm : float
        Radius of the largest ball of solid tissue inside it, mm.
    elsewhere_mm : float
        Radius of the largest ball of solid tissue elsewhere (a ball that does not reach into the mass), mm; 0 when
        there is none.
    ratio : float
        ``thickness_mm / elsewhere_mm`` (inf when there is no solid tissue elsewhere).
    score : float
        Hand-set ranking score in [0, 1]: ``1 / (1 + exp(-(ratio - min_ratio) / ratio_width))``.
    centre_zyx : tuple of 3 int
        The thickest point, voxel indices.
    """

    mask: np.ndarray
    thickness_mm: float
    elsewhere_mm: float
    ratio: float
    score: float
    centre_zyx: tuple[int, int, int]


@dataclass(frozen=True, eq=False, slots=True)
class SolidLump:
    """A solid ball that ends along the limb (see the module docstring).

    Attributes
    ----------
    mask : (Z, Y, X) bool ndarray
        The lump region on the full grid.
    radius_mm : float
        Radius of the largest ball of solid tissue at its centre, mm.
    boundedness : float
        Thickness ``axial_reach`` radii up and down the slice axis over ``radius_mm`` (the larger side): 0 for a
        ball, 1 for a cylinder along the slice axis.
    lumpiness : float
        ``radius_mm / min_radius_mm * (1 - boundedness)``.
    score : float
        Hand-set ranking score: ``1 / (1 + exp(-(lumpiness - 1) / lumpiness_width))``.
    centre_zyx : tuple of 3 int
        The centre, voxel indices.
    """

    mask: np.ndarray
    radius_mm: float
    boundedness: float
    lumpiness: float
    score: float
    centre_zyx: tuple[int, int, int]


def solid_range_from_image(image: np.ndarray, foreground: np.ndarray) -> tuple[float, float]:
    """The intensity range of solid soft tissue (muscle, tumour) on an MR image where fat is the brightest tissue.

    Otsu's threshold over the foreground splits fat (bright on T1 and on fast spin echo T2) from the rest; the
    rest's median is the muscle level, and half of it the upper limit of signal voids (air, cortical bone, tendons).

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Intensities in the series' unit.
    foreground : (Z, Y, X) bool ndarray
        The body.

    Returns
    -------
    (float, float)
        ``(half the muscle level, Otsu's threshold)``, in image units.

    Raises
    ------
    ValueError
        When the foreground is empty or of one intensity.
    """
    from skimage.filters import threshold_otsu

    if foreground.shape != image.shape or foreground.dtype != np.bool_:
        raise ValueError("foreground must be a bool mask with the image's shape")
    step = max(1, int(np.count_nonzero(foreground)) // 500_000)
    v = image[foreground][::step].astype(np.float64)
    if v.size == 0 or not np.ptp(v) > 0:
        raise ValueError("foreground is empty or of one intensity: no solid tissue range to tell")
    hi = float(threshold_otsu(v))
    below = v[v < hi]
    return 0.5 * float(np.median(below)), hi


@dataclass(frozen=True, slots=True)
class FatReference:
    """The patient's own muscle and subcutaneous fat levels on an MR image where fat is bright (T1, fast spin echo).

    Attributes
    ----------
    muscle : float
        Muscle level: the median of the body's intensities below Otsu's threshold (twice the lower end of
        :func:`solid_range_from_image`), image units.
    fat : float
        Subcutaneous fat level: the median of the bright voxels (above Otsu's threshold) of the layer under the skin,
        in the slices where that layer is mostly bright, image units.
    bright_slices : int
        Slices whose layer under the skin is mostly bright (fat).
    rim_slices : int
        Slices with a layer under the skin in view (the body's outline, not the field of view's edge).
    """

    muscle: float
    fat: float
    bright_slices: int
    rim_slices: int

    def fraction(self, value: float) -> float:
        """Where ``value`` lies between the muscle (0) and the fat (1) level."""
        return (float(value) - self.muscle) / (self.fat - self.muscle)


def fat_reference(image: np.ndarray, spacing_mm: Sequence[float], foreground: np.ndarray, *,
                  solid_range: tuple[float, float], rim_mm: tuple[float, float] = (2.0, 10.0),
                  min_bright_fraction: float = 0.5, min_slice_fraction: float = 0.25, work_mm: float = 2.0,
                  notes: list[str] | None = None) -> FatReference | None:
    """The patient's subcutaneous fat level, measured in the layer under the skin, when fat is bright in the image.

    The body's outline is the tissue above the signal-void level (``solid_range[0]``, half the muscle level), its
    holes filled slice by slice; the field of view's edge is not skin (a crop's cut is no outline). The layer under
    the skin is the tissue ``rim_mm`` deep from that outline: subcutaneous fat, the one fat depot every limb and
    trunk has. A slice's layer is *bright* when at least ``min_bright_fraction`` of it lies above Otsu's threshold
    (``solid_range[1]``); fat is the bright tissue of the image when at least ``min_slice_fraction`` of the slices
    with a layer in view are bright (T1 and fast spin echo T2: yes; a fat-suppressed image: the layer under the skin
    is dark, and no fat level is given). Slices, not the whole layer, are counted because a surface coil's signal
    falls off towards its ends (STS_003's T1: fat grey in its top 15 slices).

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Intensities in the series' unit (a denoised working image).
    spacing_mm : tuple of 3 float
        Voxel spacing (dz, dy, dx), mm.
    foreground : (Z, Y, X) bool ndarray
        The body (or the whole field of view: the outline is taken from the image).
    solid_range : (float, float)
        :func:`solid_range_from_image`'s ``(half the muscle level, Otsu's threshold)``.
    rim_mm : (float, float), optional
        Depth of the layer under the skin, mm. Default (2, 10): below the skin itself, within the thinnest usual
        subcutaneous fat.
    min_bright_fraction, min_slice_fraction : float, optional
        See above. Defaults 0.5 and 0.25.
    work_mm : float, optional
        Grid spacing of the measurement, about, mm. Default 2.
    notes : list of str, optional
        What was measured is appended here.

    Returns
    -------
    FatReference or None
        None when no layer under the skin is in view or fat is not its bright tissue (fat-suppressed).
    """
    _check_image(image)
    sp = _check_spacing(spacing_mm)
    if foreground.shape != image.shape or foreground.dtype != np.bool_:
        raise ValueError("foreground must be a bool mask with the image's shape")
    lo, hi = solid_range
    if not lo < hi:
        raise ValueError(f"solid_range must be (low, high) with low < high, got {solid_range}")
    if not 0 <= rim_mm[0] < rim_mm[1]:
        raise ValueError(f"rim_mm must be (near, far) with 0 <= near < far, got {rim_mm}")
    for name, v in (("min_bright_fraction", min_bright_fraction), ("min_slice_fraction", min_slice_fraction)):
        if not 0 < v <= 1:
            raise ValueError(f"{name} must be in (0, 1], got {v}")
    notes = notes if notes is not None else []
    f = _pool_factors(sp, work_mm)
    sp_w = tuple(s * k for s, k in zip(sp, f))
    img = block_mean(image, f)
    tissue = (block_mean(foreground, f) > 0.5) & (img > lo)
    tissue = np.stack([ndi.binary_fill_holes(t) for t in tissue]) if tissue.size else tissue
    # depth under the skin; the field of view's edge is not skin: the edge voxels are repeated outwards
    depth = ndi.distance_transform_edt(np.pad(tissue, 1, mode="edge"), sampling=sp_w)[1:-1, 1:-1, 1:-1]
    rim = tissue & (depth > rim_mm[0]) & (depth <= rim_mm[1])
    min_voxels = max(20, int(round(100.0 / (sp_w[1] * sp_w[2]))))  # at least 1 cm^2 of layer in a slice
    bright_vals, n_rim, n_bright = [], 0, 0
    for z in range(img.shape[0]):
        if np.count_nonzero(rim[z]) < min_voxels:
            continue
        n_rim += 1
        v = img[z][rim[z]]
        if np.mean(v > hi) >= min_bright_fraction:
            n_bright += 1
            bright_vals.append(v[v > hi])
    muscle = 2.0 * lo
    if n_rim == 0 or n_bright < min_slice_fraction * n_rim:
        notes.append(f"fat: the layer under the skin is bright in {n_bright} of {n_rim} slice(s): fat is not the "
                     "bright tissue (fat-suppressed, or no skin in view); no fat level, fat-like regions not told")
        return None
    fat = float(np.median(np.concatenate(bright_vals)))
    notes.append(f"fat: subcutaneous fat level {fat:.4g} (bright layer under the skin in {n_bright} of {n_rim} "
                 f"slices), muscle level {muscle:.4g}")
    return FatReference(muscle, fat, n_bright, n_rim)


#: A region whose mean lies at least this far from the patient's muscle towards its subcutaneous fat is fat.
FAT_FRACTION_MIN = 0.5


def fat_like(found: Sequence[C], fat: FatReference, notes: list[str] | None = None, *,
             factor: float = 0.1) -> list[C]:
    """Candidates with the signal of the patient's own fat down-weighted (MR in a limb where fat is bright).

    A candidate whose mean (feature ``mean``) is closer to the patient's subcutaneous fat than to its muscle
    (:meth:`FatReference.fraction` >= :data:`FAT_FRACTION_MIN`) is fat (a fat lobule, a lipoma, the marrow inside a
    bone), not a solid mass: probability x ``factor``, feature ``fat_like`` = 1 (a hand-set rule, like the signal
    voids of :mod:`dicomnode.analysis.detect`). Sarcomas on T1 are iso- to mildly hyperintense to muscle (fraction
    about 0-0.3). Every candidate with a finite mean gets ``fat_fraction``.

    Parameters
    ----------
    found : sequence of Candidate
        Candidates (:class:`dicomnode.analysis.detect.Finding`, frozen dataclasses); those without a finite ``mean`` pass unchanged.
    fat : FatReference
        The patient's muscle and fat levels (:func:`fat_reference`).
    notes : list of str, optional
        How many were down-weighted is appended here.
    factor : float, optional
        Probability factor of a fat-like candidate, in [0, 1]. Default 0.1.

    Returns
    -------
    list of Candidate
        New candidates of the same type, in the same order.
    """
    if not 0 <= factor <= 1:
        raise ValueError(f"factor must be in [0, 1], got {factor}")
    notes = notes if notes is not None else []
    out: list[C] = []
    n = 0
    for f in found:
        mean = f.features.get("mean")
        if mean is None or not np.isfinite(mean):
            out.append(f)
            continue
        frac = fat.fraction(float(mean))
        feats = {**f.features, "fat_fraction": frac}
        p = f.probability
        if frac >= FAT_FRACTION_MIN:
            feats["fat_like"] = 1.0
            p *= factor
            n += 1
        out.append(dataclasses.replace(f, probability=p, features=feats))
    if n:
        notes.append(f"{n} region(s) with the signal of the patient's fat (fraction >= {FAT_FRACTION_MIN:g} of the way "
                     f"from muscle {fat.muscle:.4g} to subcutaneous fat {fat.fat:.4g}: fat lobules, lipomas, "
                     f"marrow) down-weighted x{factor:g}")
    return out


#: Percent integral uniformity below which a series' fat level along the slices counts as shaded: the ACR MRI
#: accreditation phantom's lower limit for 3 T scanners (82 %; 87.5 % at 1.5 T), ACR MRI Quality Control Manual 2015.
PIU_MIN = 82.0


@dataclass(frozen=True, eq=False, slots=True)
class Shading:
    """The receive coil's shading along the slice axis, measured on the brightest tissue (fat on T1).

    Attributes
    ----------
    scale : (Z,) float ndarray
        Each slice's fat level over the median slice's (1 = as the median).
    piu_percent : float
        Percent integral uniformity of the smoothed per-slice level: ``100 (1 - (max - min) / (max + min))``.
    shaded : bool
        ``piu_percent < PIU_MIN``: one intensity threshold does not tell the same tissue at both ends.
    """

    scale: np.ndarray
    piu_percent: float
    shaded: bool

    def corrected(self, image: np.ndarray) -> np.ndarray:
        """``image`` with each slice divided by its scale (float32)."""
        return (image / self.scale[:, None, None]).astype(np.float32)


def slice_shading(image: np.ndarray, foreground: np.ndarray, *, quantile: float = 0.95, window_slices: int = 5,
                  min_voxels: int = 500, piu_min: float = PIU_MIN) -> Shading | None:
    """How the signal of the brightest tissue changes from slice to slice (a surface coil's fall-off).

    A surface (receive) coil's sensitivity falls with the distance from it: on a limb coil the ends of the field of
    view are darker (STS_003's thigh T1: fat at 35 % of its level at one end, although N4-corrected). Fat is the
    brightest tissue on T1 and fast spin echo T2 and its true signal is the same everywhere, so the upper
    ``quantile`` of each slice's body (fat fills more than 5 % of a limb's cross-section: the subcutaneous layer)
    follows the coil's sensitivity along the slice axis. The level is median-filtered over ``window_slices`` slices
    (one slice with little fat does not move it) and divided by its median. Where fat is not the bright tissue (fat
    suppression) this measures something else: call it only where :func:`fat_reference` found bright fat.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Intensities in the series' unit.
    foreground : (Z, Y, X) bool ndarray
        The body.
    quantile : float, optional
        The quantile of each slice's body taken as its fat level, in (0.5, 1). Default 0.95.
    window_slices : int, optional
        Odd width of the median filter along the slices. Default 5.
    min_voxels : int, optional
        Slices with fewer body voxels take the level of their neighbours. Default 500.
    piu_min : float, optional
        Percent integral uniformity below which the series is shaded. Default :data:`PIU_MIN` (82 %, the ACR's
        3 T limit).

    Returns
    -------
    Shading or None
        None when no slice has ``min_voxels`` body voxels or a level <= 0.

    References
    ----------
    .. [1] American College of Radiology, Magnetic Resonance Imaging Quality Control Manual, 2015 (percent integral
       uniformity).
    """
    _check_image(image)
    if foreground.shape != image.shape or foreground.dtype != np.bool_:
        raise ValueError("foreground must be a bool mask with the image's shape")
    if not 0.5 < quantile < 1:
        raise ValueError(f"quantile must be in (0.5, 1), got {quantile}")
    if window_slices < 1 or window_slices % 2 == 0:
        raise ValueError(f"window_slices must be an odd integer >= 1, got {window_slices}")
    level = np.full(image.shape[0], np.nan)
    for z in range(image.shape[0]):
        if np.count_nonzero(foreground[z]) >= min_voxels:
            level[z] = float(np.quantile(image[z][foreground[z]], quantile))
    ok = np.isfinite(level) & (level > 0)
    if not ok.any():
        return None
    zs = np.arange(level.size)
    level = np.interp(zs, zs[ok], level[ok])
    level = ndi.median_filter(level, size=window_slices, mode="nearest")
    hi, lo = float(level.max()), float(level.min())
    piu = 100.0 * (1.0 - (hi - lo) / (hi + lo))
    return Shading(level / float(np.median(level)), piu, piu < piu_min)


def _pool_factors(spacing_mm: Sequence[float], work_mm: float) -> tuple[int, int, int]:
    return tuple(max(1, int(math.floor(work_mm / s + 1e-6))) for s in spacing_mm)  # type: ignore[return-value]


def solid_thickness(image: np.ndarray, spacing_mm: Sequence[float], foreground: np.ndarray, *,
                    solid_range: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Solid tissue and, at each of its voxels, the radius of the largest ball of solid tissue centred there.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Intensities in the series' unit (a denoised working image).
    spacing_mm : tuple of 3 float
        Voxel spacing (dz, dy, dx), mm.
    foreground : (Z, Y, X) bool ndarray
        The body.
    solid_range : (float, float)
        Solid tissue lies strictly between these intensities (e.g. (-10, 100) HU on CT).

    Returns
    -------
    solid : (Z, Y, X) bool ndarray
        Solid tissue (in-plane 3 x 3 majority, so that noise does not punch holes in it).
    thickness_mm : (Z, Y, X) float32 ndarray
        Distance in mm from each solid voxel to the nearest voxel that is not solid or to the edge of the field of
        view (0 outside the solid tissue).
    """
    _check_image(image)
    sp = _check_spacing(spacing_mm)
    lo, hi = solid_range
    if not lo < hi:
        raise ValueError(f"solid_range must be (low, high) with low < high, got {solid_range}")
    if foreground.shape != image.shape or foreground.dtype != np.bool_:
        raise ValueError("foreground must be a bool mask with the image's shape")
    solid = foreground & (image > lo) & (image < hi)
    solid = ndi.median_filter(solid, size=(1, 3, 3))
    padded = np.pad(solid, 1)  # the field of view's edge is a boundary: a cut structure's thickness is unknown
    thick = ndi.distance_transform_edt(padded, sampling=sp)[1:-1, 1:-1, 1:-1].astype(np.float32)
    return solid, thick


def solid_masses(image: np.ndarray, spacing_mm: Sequence[float], foreground: np.ndarray, *,
                 solid_range: tuple[float, float], min_thickness_mm: float = 25.0, min_ratio: float = 1.2,
                 ratio_width: float = 0.05, core_fraction: float = 0.9, work_mm: float = 2.0,
                 notes: list[str] | None = None) -> SolidMass | None:
    """The thickest solid lump in view, when it is thicker than ``min_thickness_mm`` and stands out.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Intensities in the series' unit (a denoised working image).
    spacing_mm : tuple of 3 float
        Voxel spacing (dz, dy, dx), mm.
    foreground : (Z, Y, X) bool ndarray
        The body.
    solid_range : (float, float)
        Solid tissue lies strictly between these intensities: (-10, 100) HU on CT (muscle and an isodense tumour,
        not fat, not bone); :func:`solid_range_from_image` on MR.
    min_thickness_mm : float, optional
        Smallest radius of the largest solid ball of a mass, mm. Default 25 (a ball of 5 cm).
    min_ratio : float, optional
        The ratio of the mass's thickness to the thickest solid tissue elsewhere at which the score is 0.5.
        Default 1.2.
    ratio_width : float, optional
        Width of the logistic score around ``min_ratio``. Default 0.05 (score 0.98 at ratio 1.4, 0.02 at 1.0).
    core_fraction : float, optional
        The mass is the union of the balls of the solid points at least this fraction of the thickest as thick,
        connected to it. Default 0.9.
    work_mm : float, optional
        The thickness is measured on a grid block-averaged to about this spacing, mm. Default 2.
    notes : list of str, optional
        What was measured is appended here.

    Returns
    -------
    SolidMass or None
        None when no solid lump reaches ``min_thickness_mm`` (or there is no solid tissue).

    References
    ----------
    .. [1] P. E. Danielsson, "Euclidean distance mapping", Computer Graphics and Image Processing 14(3), 1980.
    """
    _check_image(image)
    sp = _check_spacing(spacing_mm)
    if foreground.shape != image.shape or foreground.dtype != np.bool_:
        raise ValueError("foreground must be a bool mask with the image's shape")
    for name, v in (("min_thickness_mm", min_thickness_mm), ("min_ratio", min_ratio), ("ratio_width", ratio_width),
                    ("work_mm", work_mm)):
        if not v > 0:
            raise ValueError(f"{name} must be > 0, got {v}")
    if not 0 < core_fraction <= 1:
        raise ValueError(f"core_fraction must be in (0, 1], got {core_fraction}")
    notes = notes if notes is not None else []
    f = _pool_factors(sp, work_mm)
    img_w = block_mean(image, f)
    fg_w = block_mean(foreground, f) > 0.5
    sp_w = tuple(s * k for s, k in zip(sp, f))
    solid, thick = solid_thickness(img_w, sp_w, fg_w, solid_range=solid_range)
    if not solid.any():
        notes.append("solid masses: no solid tissue in view")
        return None
    centre = np.unravel_index(int(np.argmax(thick)), thick.shape)
    t1 = float(thick[centre])
    if t1 < min_thickness_mm:
        notes.append(f"solid masses: the thickest solid tissue is a ball of {t1:.0f} mm radius, below "
                     f"{min_thickness_mm:g} mm: no mass by thickness")
        return None
    region = _ball_region(solid, thick, centre, t1, core_fraction, sp_w)
    # the thickest solid tissue elsewhere: a ball that does not reach into the mass
    to_mass = ndi.distance_transform_edt(~region, sampling=sp_w)
    other = solid & (to_mass >= thick)
    t2 = float(thick[other].max()) if other.any() else 0.0
    ratio = t1 / t2 if t2 > 0 else math.inf
    score = 1.0 if math.isinf(ratio) else 1.0 / (1.0 + math.exp(-min(max((ratio - min_ratio) / ratio_width,
                                                                         -700.0), 700.0)))
    notes.append(f"solid masses: thickest solid lump a ball of {t1:.0f} mm radius, the thickest solid tissue "
                 f"elsewhere {t2:.0f} mm (ratio {ratio:.2f}, score {score:.2f}; solid range {solid_range[0]:.4g}.."
                 f"{solid_range[1]:.4g})")
    full, c_full = _to_full(region, centre, f, foreground)
    return SolidMass(full, t1, t2, ratio, score, c_full)


def _ball_region(solid: np.ndarray, thick: np.ndarray, centre: tuple[int, ...], radius: float, core_fraction: float,
                 spacing_mm: Sequence[float]) -> np.ndarray:
    """The union of the balls of the solid points at least ``core_fraction`` of ``radius`` thick, connected to
    ``centre`` (within the solid tissue)."""
    core_lab, _ = ndi.label(thick >= core_fraction * radius)
    core = core_lab == core_lab[centre]
    near = ndi.distance_transform_edt(~core, sampling=spacing_mm) <= core_fraction * radius
    lab, _ = ndi.label(near & solid)
    return lab == lab[centre]


def _to_full(region: np.ndarray, centre: Sequence[int], f: tuple[int, int, int],
             foreground: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
    full = np.zeros(foreground.shape, dtype=bool)
    up = region
    for ax, k in enumerate(f):
        up = np.repeat(up, k, axis=ax)
    full[: up.shape[0], : up.shape[1], : up.shape[2]] = up
    full &= foreground
    c_full = tuple(int(min((c + 0.5) * k, n - 1)) for c, k, n in zip(centre, f, foreground.shape))
    return full, c_full  # type: ignore[return-value]


def solid_lump(image: np.ndarray, spacing_mm: Sequence[float], foreground: np.ndarray, *,
               solid_range: tuple[float, float], min_radius_mm: float = 15.0, axial_reach: float = 1.6,
               lumpiness_width: float = 0.15, core_fraction: float = 0.9, work_mm: float = 2.0,
               exclude: np.ndarray | None = None, notes: list[str] | None = None) -> SolidLump | None:
    """The solid ball of at least ``min_radius_mm`` that ends most clearly along the slice axis (the limb's axis).

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Intensities in the series' unit (a denoised working image), axial slices of a limb.
    spacing_mm : tuple of 3 float
        Voxel spacing (dz, dy, dx), mm.
    foreground : (Z, Y, X) bool ndarray
        The body.
    solid_range : (float, float)
        Solid tissue lies strictly between these intensities (as for :func:`solid_masses`).
    min_radius_mm : float, optional
        Smallest radius of a lump, mm. Default 15 (a ball of 3 cm: a mass by the radiological convention).
    axial_reach : float, optional
        Where along the slice axis, in radii from the centre, the thickness is compared with the centre's.
        Default 1.6.
    lumpiness_width : float, optional
        Width of the logistic score around lumpiness 1. Default 0.15.
    core_fraction : float, optional
        The lump is the union of the balls of the solid points at least this fraction of its radius thick,
        connected to it. Default 0.9.
    work_mm : float, optional
        Grid spacing of the measurement, about, mm. Default 2.
    exclude : (Z, Y, X) bool ndarray, optional
        Centres inside this mask are passed over (e.g. a mass :func:`solid_masses` found already).
    notes : list of str, optional
        What was measured is appended here.

    Returns
    -------
    SolidLump or None
        None when no solid ball of ``min_radius_mm`` ends inside the field of view on both sides with a
        boundedness below 0.5.
    """
    _check_image(image)
    sp = _check_spacing(spacing_mm)
    if foreground.shape != image.shape or foreground.dtype != np.bool_:
        raise ValueError("foreground must be a bool mask with the image's shape")
    for name, v in (("min_radius_mm", min_radius_mm), ("axial_reach", axial_reach),
                    ("lumpiness_width", lumpiness_width), ("work_mm", work_mm)):
        if not v > 0:
            raise ValueError(f"{name} must be > 0, got {v}")
    if not 0 < core_fraction <= 1:
        raise ValueError(f"core_fraction must be in (0, 1], got {core_fraction}")
    if exclude is not None and exclude.shape != image.shape:
        raise ValueError("exclude must be a mask with the image's shape")
    notes = notes if notes is not None else []
    f = _pool_factors(sp, work_mm)
    sp_w = tuple(s * k for s, k in zip(sp, f))
    solid, thick = solid_thickness(block_mean(image, f), sp_w, block_mean(foreground, f) > 0.5,
                                   solid_range=solid_range)
    excl = None if exclude is None else block_mean(exclude, f) > 0.5
    size = [2 * max(1, int(round(10.0 / s))) + 1 for s in sp_w]  # peaks 10 mm apart
    peaks = np.argwhere((thick == ndi.maximum_filter(thick, size=size)) & (thick >= min_radius_mm))
    best: tuple[float, float, float, tuple[int, int, int]] | None = None
    for c in peaks:
        c = tuple(int(v) for v in c)
        if excl is not None and excl[c]:
            continue
        r = float(thick[c])
        nz = int(math.ceil(axial_reach * r / sp_w[0]))
        half = [max(1, int(0.5 * r / s)) for s in sp_w[1:]]
        sides = []
        for z in (c[0] - nz, c[0] + nz):
            if not 0 <= z < thick.shape[0]:
                break  # beyond the field of view: whether it ends is unknown
            sides.append(float(thick[z, max(0, c[1] - half[0]): c[1] + half[0] + 1,
                                     max(0, c[2] - half[1]): c[2] + half[1] + 1].max()) / r)
        if len(sides) < 2 or max(sides) >= 0.5:
            continue
        lumpiness = r / min_radius_mm * (1.0 - max(sides))
        if best is None or lumpiness > best[0]:
            best = (lumpiness, r, max(sides), c)
    if best is None:
        notes.append(f"solid lumps: no solid ball of {min_radius_mm:g} mm radius or more that ends along the slice "
                     "axis inside the field of view")
        return None
    lumpiness, r, bounded, c = best
    score = 1.0 / (1.0 + math.exp(-min(max((lumpiness - 1.0) / lumpiness_width, -700.0), 700.0)))
    notes.append(f"solid lumps: a solid ball of {r:.0f} mm radius that ends along the slice axis (boundedness "
                 f"{bounded:.2f}, lumpiness {lumpiness:.2f}, score {score:.2f})")
    full, c_full = _to_full(_ball_region(solid, thick, c, r, core_fraction, sp_w), c, f, foreground)
    return SolidLump(full, r, bounded, lumpiness, score, c_full)
