"""Lesion insertion: synthetic lesions of known size, place and contrast put into a real image, to measure a
detector's sensitivity where the real truth is thin (a whole-body PET with one drawn tumour says nothing about
small neck nodes).

A lesion is an ellipsoid of uniform activity ``contrast x`` the local background, added on top of the image:

1. its partial-volume fraction per voxel (the ellipsoid sampled ``supersample^3`` times per voxel);
2. the added activity ``(contrast - 1) x background x fraction`` blurred with the scanner's point-spread function
   (a Gaussian of ``fwhm_mm``: 6-7 mm for a clinical whole-body PET);
3. noise on the added activity, Poisson-like (variance proportional to the level: the background's local noise
   variance times ``added / background``), correlated like the image's own (white noise smoothed to the local
   texture's grain), so the lesion is as noisy as real tissue at its level.

The background is measured on the image itself in a shell around the lesion (median), the noise as the SD of the
image minus its smoothed self in that shell. Pure numpy/scipy over arrays with explicit spacing; randomness comes in
as ``rng``.

The truth of a lesion is its ellipsoid on the grid (voxels at least half inside): a finding *hits* it when the
voxel holding the finding's centroid is in that mask (as ``dicomnode evaluate`` scores drawn lesions).

References
----------
.. [1] M. Soret, S. L. Bacharach, I. Buvat, "Partial-volume effect in PET tumor imaging", J Nucl Med 48(6), 2007.
.. [2] NEMA NU 2-2018 (hot spheres of 10-37 mm at 4:1 contrast in a warm background, the usual detectability test).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage as ndi

__all__ = ["InsertedLesion", "insert_lesion", "local_background", "sample_positions", "semi_axes_mm"]

_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


@dataclass(frozen=True, slots=True)
class InsertedLesion:
    """One inserted lesion.

    Attributes
    ----------
    center_zyx : tuple of 3 float
        Centre in (fractional) voxel indices.
    semi_axes_mm : tuple of 3 float
        Semi-axes along (z, y, x), mm.
    volume_ml : float
        The ellipsoid's volume, mL.
    background : float
        Local background level (median of the shell), image units.
    contrast : float
        Lesion activity over the background (before blurring).
    mask : (z, y, x) bool ndarray
        Voxels at least half inside the ellipsoid, on ``box``.
    box : tuple of 3 slice
        Where ``mask`` lies on the grid.
    """

    center_zyx: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]
    volume_ml: float
    background: float
    contrast: float
    mask: np.ndarray
    box: tuple[slice, slice, slice]

    def contains(self, zyx: Sequence[float]) -> bool:
        """Whether the voxel nearest the point ``zyx`` (voxel indices) is in the lesion's mask."""
        idx = [int(round(float(c))) - b.start for c, b in zip(zyx, self.box)]
        return all(0 <= i < n for i, n in zip(idx, self.mask.shape)) and bool(self.mask[tuple(idx)])


def semi_axes_mm(volume_ml: float, ratios: Sequence[float] = (1.0, 1.0, 1.0)) -> tuple[float, float, float]:
    """Semi-axes (z, y, x) in mm of an ellipsoid of ``volume_ml`` whose axes are in the proportions ``ratios``."""
    if not volume_ml > 0:
        raise ValueError(f"volume_ml must be > 0 mL, got {volume_ml}")
    r = np.asarray(ratios, dtype=float)
    if r.shape != (3,) or not np.all(r > 0):
        raise ValueError(f"ratios must be 3 numbers > 0, got {ratios}")
    k = (3.0 * volume_ml * 1000.0 / (4.0 * math.pi * float(np.prod(r)))) ** (1.0 / 3.0)
    return tuple(float(k * x) for x in r)  # type: ignore[return-value]


def _box(center: Sequence[float], reach_mm: Sequence[float], spacing_mm: Sequence[float],
         shape: Sequence[int]) -> tuple[slice, slice, slice]:
    return tuple(slice(max(0, int(math.floor(c - r / s))), min(n, int(math.ceil(c + r / s)) + 1))
                 for c, r, s, n in zip(center, reach_mm, spacing_mm, shape))  # type: ignore[return-value]


def _fraction(box: tuple[slice, ...], center: Sequence[float], axes_mm: Sequence[float],
              spacing_mm: Sequence[float], supersample: int) -> np.ndarray:
    """Fraction of each voxel of ``box`` inside the ellipsoid (``supersample`` sub-samples per axis)."""
    offs = (np.arange(supersample) + 0.5) / supersample - 0.5
    grids = []
    for b, c, a, s in zip(box, center, axes_mm, spacing_mm):
        pos = (np.arange(b.start, b.stop)[:, None] + offs[None, :] - c) * s / a  # (n, supersample), unit radii
        grids.append(pos ** 2)
    gz, gy, gx = grids
    inside = (gz[:, None, None, :, None, None] + gy[None, :, None, None, :, None]
              + gx[None, None, :, None, None, :]) <= 1.0
    return inside.mean(axis=(3, 4, 5))


def local_background(image: np.ndarray, spacing_mm: Sequence[float], center_zyx: Sequence[float],
                     inner_mm: float, outer_mm: float, *, grain_mm: float = 8.0) -> tuple[float, float]:
    """(median level, noise SD) of ``image`` in the shell ``inner_mm < distance <= outer_mm`` around a point; the
    noise SD is that of the image minus its Gaussian smoothing of ``grain_mm`` (texture and noise, not trends)."""
    if not 0 <= inner_mm < outer_mm:
        raise ValueError(f"need 0 <= inner_mm < outer_mm, got {inner_mm}, {outer_mm}")
    box = _box(center_zyx, (outer_mm + 3 * grain_mm,) * 3, spacing_mm, image.shape)
    sub = image[box].astype(np.float64)
    g = np.ogrid[tuple(slice(b.start, b.stop) for b in box)]
    d2 = sum(((x - c) * s) ** 2 for x, c, s in zip(g, center_zyx, spacing_mm))
    shell = (d2 > inner_mm ** 2) & (d2 <= outer_mm ** 2)
    if not shell.any():
        raise ValueError("the background shell holds no voxel: the point lies outside the image")
    detail = sub - ndi.gaussian_filter(sub, [grain_mm / s for s in spacing_mm])
    return float(np.median(sub[shell])), float(np.std(detail[shell]))


def insert_lesion(image: np.ndarray, spacing_mm: Sequence[float], center_zyx: Sequence[float], *,
                  volume_ml: float, contrast: float, rng: np.random.Generator,
                  ratios: Sequence[float] = (1.0, 1.0, 1.0), fwhm_mm: float = 6.5, noise: bool = True,
                  supersample: int = 3, background: float | None = None) -> tuple[np.ndarray, InsertedLesion]:
    """Insert one ellipsoidal lesion into a copy of ``image``.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Activity (e.g. SUV), >= 0 where the lesion goes.
    spacing_mm : tuple of 3 float
        Voxel spacing (z, y, x), mm.
    center_zyx : tuple of 3 float
        Lesion centre, voxel indices.
    volume_ml : float
        Lesion volume, mL.
    contrast : float
        Lesion activity over the local background (> 1): 4 is NEMA's hot-sphere ratio.
    rng : numpy.random.Generator
        Source of the noise.
    ratios : tuple of 3 float, optional
        Proportions of the semi-axes (z, y, x). Default a sphere.
    fwhm_mm : float, optional
        Scanner resolution (Gaussian point-spread function), mm. Default 6.5.
    noise : bool, optional
        Add Poisson-like noise to the added activity. Default True.
    supersample : int, optional
        Sub-samples per voxel and axis for the partial-volume fraction. Default 3.
    background : float, optional
        The background level; default measured (:func:`local_background`, shell 5-15 mm outside the lesion).

    Returns
    -------
    (ndarray, InsertedLesion)
        The new image (float32) and the lesion's description and truth mask.

    Raises
    ------
    ValueError
        Bad parameters, or no positive background at the place (outside the body).
    """
    sp = tuple(float(s) for s in spacing_mm)
    if image.ndim != 3 or len(sp) != 3 or not all(s > 0 for s in sp):
        raise ValueError("image must be 3-D and spacing_mm 3 numbers > 0 mm")
    if not contrast > 1:
        raise ValueError(f"contrast must be > 1 (a hot lesion), got {contrast}")
    if not fwhm_mm >= 0:
        raise ValueError(f"fwhm_mm must be >= 0 mm, got {fwhm_mm}")
    if not all(0 <= c <= n - 1 for c, n in zip(center_zyx, image.shape)):
        raise ValueError(f"center_zyx {tuple(center_zyx)} lies outside the grid {image.shape}")
    axes = semi_axes_mm(volume_ml, ratios)
    bg, bg_sd = local_background(image, sp, center_zyx, max(axes) + 5.0, max(axes) + 15.0)
    if background is not None:
        bg = float(background)
    if not bg > 0:
        raise ValueError(f"no positive background at {tuple(center_zyx)} (level {bg:.3g}): outside the body?")
    sigma_mm = fwhm_mm * _FWHM_TO_SIGMA
    reach = [a + 4.0 * sigma_mm + 2.0 * s for a, s in zip(axes, sp)]
    box = _box(center_zyx, reach, sp, image.shape)
    frac = _fraction(box, center_zyx, axes, sp, supersample)
    added = (contrast - 1.0) * bg * frac
    if sigma_mm > 0:
        added = ndi.gaussian_filter(added, [sigma_mm / s for s in sp], mode="constant")
    if noise and bg_sd > 0:
        # correlated like the image: white noise smoothed to the grain of a few voxels, scaled back to unit SD
        white = rng.standard_normal(added.shape)
        grain = [max(0.6 * fwhm_mm * _FWHM_TO_SIGMA / s, 0.5) for s in sp]
        field = ndi.gaussian_filter(white, grain)
        field /= max(float(field.std()), 1e-12)
        added = added + bg_sd * np.sqrt(np.clip(added, 0, None) / bg) * field
    out = image.astype(np.float32, copy=True)
    out[box] = np.clip(out[box] + added.astype(np.float32), 0, None)
    lesion = InsertedLesion(tuple(float(c) for c in center_zyx), axes,  # type: ignore[arg-type]
                            4.0 / 3.0 * math.pi * float(np.prod(axes)) / 1000.0, bg, float(contrast),
                            frac >= 0.5, box)
    return out, lesion


def sample_positions(allowed: np.ndarray, spacing_mm: Sequence[float], n: int, rng: np.random.Generator, *,
                     min_distance_mm: float = 40.0, avoid: Sequence[Sequence[float]] = ()) -> list[tuple[int, int, int]]:
    """Up to ``n`` voxel positions drawn uniformly from ``allowed``, each at least ``min_distance_mm`` from the
    others and from the points ``avoid`` (voxel indices)."""
    pts = np.argwhere(allowed)
    if pts.size == 0 or n <= 0:
        return []
    sp = np.asarray(spacing_mm, dtype=float)
    taken = [np.asarray(a, dtype=float) for a in avoid]
    out: list[tuple[int, int, int]] = []
    for k in rng.permutation(len(pts)):
        p = pts[k].astype(float)
        if all(np.linalg.norm((p - q) * sp) >= min_distance_mm for q in taken):
            out.append(tuple(int(x) for x in pts[k]))  # type: ignore[arg-type]
            taken.append(p)
            if len(out) == n:
                break
    return out
