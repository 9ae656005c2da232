"""Feature matching: weighted normalised cross-correlation, template matching, paired-structure comparison.

* :func:`weighted_ncc`: ``sum w a b / sqrt(sum w a^2 * sum w b^2)`` between two feature vectors or image regions
  (optionally centred on their weighted means, which makes it Pearson's correlation);
* :func:`match_template`: the normalised cross-correlation of a template at every position of a volume, by FFT
  (Lewis's fast normalised cross-correlation), and the best offset;
* :func:`compare_paired`: two paired structures (left and right lung, kidneys, ...): one is mirrored across the
  body's left-right midline and moved onto the other by their centroids; the result gives the shape overlap
  (Dice), the NCC of their intensity histograms and of their mirrored intensities, and their volume ratio.

References
----------
J. P. Lewis, "Fast normalized cross-correlation", Vision Interface 1995 (as in ``skimage.feature.match_template``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve

__all__ = ["PairedComparison", "TemplateMatch", "compare_paired", "match_template", "weighted_ncc"]


def weighted_ncc(a: np.ndarray, b: np.ndarray, w: np.ndarray | None = None, *, centred: bool = False) -> float:
    """Weighted normalised cross-correlation of two arrays of one shape.

    Parameters
    ----------
    a, b : ndarray
        Feature vectors or image regions (any shape, the same for both).
    w : ndarray, optional
        Non-negative weights of the same shape (a mask as 0/1 restricts the sum to a region). Default 1.
    centred : bool, optional
        Subtract the weighted means first (Pearson's correlation). Default False: the formula
        ``sum w a b / sqrt(sum w a^2 * sum w b^2)`` as written.

    Returns
    -------
    float
        In [-1, 1]: 1 for proportional inputs, 0 for orthogonal ones; 0.0 when either side has no energy.

    Raises
    ------
    ValueError
        When shapes differ or a weight is negative.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have one shape, got {a.shape} and {b.shape}")
    w = np.ones_like(a) if w is None else np.asarray(w, dtype=float)
    if w.shape != a.shape:
        raise ValueError(f"w must have the shape of a {a.shape}, got {w.shape}")
    if (w < 0).any():
        raise ValueError("weights must be >= 0")
    if centred:
        sw = w.sum()
        if sw <= 0:
            return 0.0
        a = a - (w * a).sum() / sw
        b = b - (w * b).sum() / sw
    den = np.sqrt((w * a * a).sum() * (w * b * b).sum())
    return float((w * a * b).sum() / den) if den > 0 else 0.0


@dataclass(frozen=True, slots=True)
class TemplateMatch:
    """Where a template fits best.

    Attributes
    ----------
    offset : tuple of int
        Index of the template's first voxel in the image at the best match.
    score : float
        The NCC there, in [-1, 1].
    scores : ndarray
        NCC of every valid offset, shape ``image.shape - template.shape + 1``.
    """

    offset: tuple[int, ...]
    score: float
    scores: np.ndarray


def match_template(image: np.ndarray, template: np.ndarray) -> TemplateMatch:
    """Normalised (zero-mean) cross-correlation of ``template`` at every offset where it fits inside ``image``.

    Parameters
    ----------
    image : (Z, Y, X) or (Y, X) ndarray
        Where to search.
    template : ndarray
        What to search for; as many dimensions as ``image``, not larger along any axis.

    Returns
    -------
    TemplateMatch

    Raises
    ------
    ValueError
        When the dimensions differ, the template is larger than the image, or the template is constant.
    """
    img = np.asarray(image, dtype=np.float64)
    t = np.asarray(template, dtype=np.float64)
    if img.ndim != t.ndim or any(ts > s for ts, s in zip(t.shape, img.shape)):
        raise ValueError(f"template {t.shape} must have the image's dimensions {img.shape} and fit inside it")
    t = t - t.mean()
    t_energy = float((t * t).sum())
    if t_energy <= 0:
        raise ValueError("the template is constant: its normalised correlation is undefined")
    ones = np.ones(t.shape)
    num = fftconvolve(img, t[(slice(None, None, -1),) * t.ndim], mode="valid")
    s1 = fftconvolve(img, ones, mode="valid")
    s2 = fftconvolve(img * img, ones, mode="valid")
    var = np.clip(s2 - s1 * s1 / t.size, 0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = np.where(var > 1e-12 * max(1.0, float(var.max(initial=0))), num / np.sqrt(var * t_energy), 0.0)
    scores = np.clip(scores, -1.0, 1.0)
    best = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return TemplateMatch(tuple(int(i) for i in best), float(scores[best]), scores)


@dataclass(frozen=True, slots=True)
class PairedComparison:
    """How alike two paired structures are.

    Attributes
    ----------
    volume_ratio : float
        Smaller volume / larger volume, in (0, 1].
    shape_dice : float
        Dice overlap of ``a`` and ``b`` mirrored across the left-right axis and moved onto ``a``'s centroid.
    histogram_ncc : float
        Weighted NCC (uncentred) of their intensity histograms (common bins, counts normalised): 1 = same shape.
    intensity_ncc : float
        Centred NCC of the intensities of ``a`` and mirrored ``b`` over the voxels both cover.
    mean_difference : float
        Mean intensity of ``a`` minus that of ``b``, in the image's unit.
    """

    volume_ratio: float
    shape_dice: float
    histogram_ncc: float
    intensity_ncc: float
    mean_difference: float


def _lr_axis(direction: np.ndarray) -> int:
    """Array axis (0 = z, 1 = y, 2 = x) that runs most along the patient's left-right (x) axis."""
    d = np.abs(np.asarray(direction, dtype=float))
    index_axis = int(np.argmax(d[0]))  # column 0/1/2 = index x/y/z
    return 2 - index_axis


def compare_paired(image: np.ndarray, mask_a: np.ndarray, mask_b: np.ndarray,
                   spacing_mm: tuple[float, float, float], *, direction: np.ndarray | None = None,
                   n_bins: int = 64) -> PairedComparison:
    """Compare two paired structures (e.g. left and right lung) by mirroring one onto the other.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Intensities in the series' unit.
    mask_a, mask_b : (Z, Y, X) bool ndarray
        The two structures (non-empty).
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x), in mm (volumes are compared in mm^3).
    direction : (3, 3) ndarray, optional
        Volume direction cosines; the mirror axis is the array axis along the patient's left-right. Default
        identity (axial: x).
    n_bins : int, optional
        Histogram bins over the joint intensity range. Default 64.

    Returns
    -------
    PairedComparison

    Raises
    ------
    ValueError
        When shapes differ, a mask is empty, or ``n_bins`` < 2.
    """
    if image.shape != mask_a.shape or image.shape != mask_b.shape:
        raise ValueError(f"image and masks must share one shape, got {image.shape}, {mask_a.shape}, {mask_b.shape}")
    if not mask_a.any() or not mask_b.any():
        raise ValueError("both masks must hold at least one voxel")
    if n_bins < 2:
        raise ValueError(f"n_bins must be >= 2, got {n_bins}")
    if len(spacing_mm) != 3 or any(not (s > 0) for s in spacing_mm):
        raise ValueError(f"spacing_mm must be 3 positive values in mm, got {spacing_mm}")
    axis = _lr_axis(np.eye(3) if direction is None else direction)
    # Mirror b across the left-right axis, then shift it so that its centroid falls on a's. Done on b's voxel
    # indices rather than on whole-volume copies: the same numbers as flipping and shifting the arrays
    # (order 0, voxels shifted out of the field of view dropped), in memory proportional to the structure.
    ia = np.nonzero(mask_a)
    ib_idx = np.nonzero(mask_b)
    va, vb = float(ia[0].size), float(ib_idx[0].size)
    n_axis = mask_b.shape[axis]
    mirrored = [c.astype(np.int64) for c in ib_idx]
    mirrored[axis] = (n_axis - 1) - mirrored[axis]
    com_a = np.array([c.mean() for c in ia])
    com_mb = np.array([c.mean() for c in mirrored])
    shift = np.round(com_a - com_mb).astype(int)
    moved = [c + d for c, d in zip(mirrored, shift)]
    inside = np.ones(moved[0].shape, dtype=bool)
    for c, n in zip(moved, mask_b.shape):
        inside &= (c >= 0) & (c < n)
    moved = [c[inside] for c in moved]
    src = [c[inside] for c in ib_idx]
    hit = mask_a[tuple(moved)]
    dice = 2.0 * np.count_nonzero(hit) / (va + float(np.count_nonzero(inside)))
    a_vals = image[ia].astype(float)
    b_vals = image[ib_idx].astype(float)
    lo, hi = float(min(a_vals.min(), b_vals.min())), float(max(a_vals.max(), b_vals.max()))
    if hi <= lo:
        hi = lo + 1.0
    ha, _ = np.histogram(a_vals, bins=n_bins, range=(lo, hi))
    hb, _ = np.histogram(b_vals, bins=n_bins, range=(lo, hi))
    hist_ncc = weighted_ncc(ha / ha.sum(), hb / hb.sum())
    # intensities of a and of mirrored b where the two overlap
    pa = image[tuple(c[hit] for c in moved)].astype(float)
    pb = image[tuple(c[hit] for c in src)].astype(float)
    inten_ncc = weighted_ncc(pa, pb, centred=True) if pa.size > 1 else 0.0
    return PairedComparison(volume_ratio=min(va, vb) / max(va, vb), shape_dice=float(dice),
                            histogram_ncc=hist_ncc, intensity_ncc=float(inten_ncc),
                            mean_difference=float(a_vals.mean() - b_vals.mean()))
