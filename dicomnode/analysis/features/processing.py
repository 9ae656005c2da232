"""IBSI-1 image processing before feature extraction: interpolation, re-segmentation, outlier filtering.

Interpolation follows the IBSI grid alignment ("align grid centres"): along each axis the new grid has
``ceil(n * spacing / new_spacing)`` points and is centred on the original grid, so that its first voxel centre sits at
``(spacing * (n - 1) - new_spacing * (n_new - 1)) / 2`` mm from the original first voxel centre. Intensities beyond the
original grid are extrapolated with the nearest boundary value. The ROI mask is interpolated like an image (linear by
default) and thresholded at a partial-volume fraction (IBSI: 0.5). Everything stays float32 or better.

Re-segmentation changes only the intensity mask; the morphological mask stays the (interpolated) segmentation.

References
----------
IBSI reference manual, theibsi/ibsi-doc ``docs/Image_processing.rst`` ("Interpolation", "Re-segmentation") and
``docs/05_Reference_data_sets.rst`` (configurations A-E).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "ResampledGrid",
    "check_spacing",
    "crop_to_roi",
    "outlier_mask",
    "resample",
    "resample_grid",
    "resegment",
    "roi_bounding_box",
]


class ResampledGrid(NamedTuple):
    """Geometry of a resampled block.

    spacing_mm : (z, y, x) spacing of the new grid, in mm.
    offset_mm : (z, y, x) position of the block's first voxel centre relative to the original first voxel centre,
        in mm (along the array axes).
    full_shape : shape of the whole IBSI grid the block is a part of (the block itself when not cropped).
    start : index of the block's first voxel in the whole IBSI grid.
    """

    spacing_mm: tuple[float, float, float]
    offset_mm: tuple[float, float, float]
    full_shape: tuple[int, int, int]
    start: tuple[int, int, int]


def check_spacing(spacing_mm: tuple[float, ...], ndim: int = 3) -> tuple[float, ...]:
    """Validate a voxel spacing: `ndim` finite numbers > 0, in mm. Returns it as a tuple of float."""
    spacing = tuple(float(s) for s in spacing_mm)
    if len(spacing) != ndim or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing_mm must be {ndim} positive numbers (z, y, x) in mm, got {spacing_mm}")
    return spacing


def roi_bounding_box(mask: np.ndarray, *, margin_voxels: int | tuple[int, ...] = 0) -> tuple[slice, ...]:
    """Slices of the bounding box of a mask's True voxels, grown by a margin and clamped to the array.

    Parameters
    ----------
    mask : (Z, Y, X) ndarray of bool
        ROI mask with at least one True voxel.
    margin_voxels : int or tuple of int, optional
        Voxels added on each side, per axis or for all axes. Default 0.

    Returns
    -------
    tuple of slice
        One slice per axis; ``array[box]`` is a view.

    Raises
    ------
    ValueError
        If the mask is empty or a margin is negative.
    """
    mask = np.asarray(mask, dtype=bool)
    margins = np.broadcast_to(np.asarray(margin_voxels, dtype=int), (mask.ndim,))
    if (margins < 0).any():
        raise ValueError(f"margin_voxels must be >= 0, got {margin_voxels}")
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        if idx.size == 0:
            raise ValueError("the mask is empty: no ROI voxel to crop to")
        m = int(margins[axis])
        box.append(slice(max(int(idx[0]) - m, 0), min(int(idx[-1]) + m + 1, mask.shape[axis])))
    return tuple(box)


def crop_to_roi(
    image: np.ndarray, mask: np.ndarray, *, margin_voxels: int | tuple[int, ...] = 0
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Crop image and mask to the mask's bounding box plus a margin (views, no copy).

    Returns
    -------
    image, mask : ndarray
        The cropped views.
    start : tuple of int
        Index of the crop's first voxel in the input arrays.
    """
    if image.shape != mask.shape:
        raise ValueError(f"image {image.shape} and mask {mask.shape} must have the same shape")
    box = roi_bounding_box(mask, margin_voxels=margin_voxels)
    return image[box], mask[box], tuple(s.start for s in box)


def resample_grid(
    shape: tuple[int, ...], spacing_mm: tuple[float, ...], new_spacing_mm: tuple[float, ...]
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """The IBSI-aligned new grid: its shape and the offset of its first voxel centre.

    Parameters
    ----------
    shape : tuple of int
        Original grid shape (z, y, x).
    spacing_mm, new_spacing_mm : tuple of float
        Original and new voxel spacing along (z, y, x), in mm.

    Returns
    -------
    new_shape : tuple of int
        ``ceil(n * spacing / new_spacing)`` per axis.
    offset_mm : tuple of float
        Position of the new first voxel centre relative to the original first voxel centre, in mm:
        ``(spacing * (n - 1) - new_spacing * (n_new - 1)) / 2`` (the two grids share their centre).
    """
    new_shape, offset = [], []
    for n, s, t in zip(shape, spacing_mm, new_spacing_mm):
        # Round the ratio first so that e.g. 3 * 0.7 / 0.7 does not become 3.0000000000000004 -> 4 points.
        m = max(int(math.ceil(round(n * s / t, 9))), 1)
        new_shape.append(m)
        offset.append((s * (n - 1) - t * (m - 1)) / 2.0)
    return tuple(new_shape), tuple(offset)


def resample(
    image: np.ndarray,
    mask: np.ndarray,
    spacing_mm: tuple[float, float, float],
    *,
    new_spacing_mm: float | tuple[float, float, float],
    order: int = 1,
    in_plane_only: bool = False,
    pv_threshold: float = 0.5,
    round_intensities: bool = False,
    mask_order: int = 1,
    crop_margin_mm: float | None = None,
) -> tuple[np.ndarray, np.ndarray, ResampledGrid]:
    """Interpolate an image and its ROI mask to a new voxel spacing on the IBSI-aligned grid.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Intensities in the image's unit (HU for CT).
    mask : (Z, Y, X) ndarray of bool
        ROI mask on the same grid.
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x), in mm.
    new_spacing_mm : float or tuple of 3 float
        New spacing, in mm: one number for isotropic voxels, or (z, y, x).
    order : int, optional
        Image interpolation: 0 nearest, 1 (tri/bi)linear, 3 cubic spline. Default 1.
    in_plane_only : bool, optional
        2D interpolation (IBSI config B): keep the slices, resample only y and x. Default False.
    pv_threshold : float, optional
        Partial-volume threshold in (0, 1]: a new voxel belongs to the ROI when the interpolated mask is >= it.
        Default 0.5.
    round_intensities : bool, optional
        Round interpolated intensities to the nearest integer (calibrated, discrete CT). Default False.
    mask_order : int, optional
        Mask interpolation order, 0, 1 or 3. Default 1 (IBSI: trilinear).
    crop_margin_mm : float, optional
        When given, compute only the block of the new grid that covers the ROI's bounding box plus this margin
        (in mm; e.g. the local-intensity radius or a filter's support). The block is exactly the corresponding part
        of the whole IBSI grid; `ResampledGrid.start` says where. Default None: the whole grid.

    Returns
    -------
    image : ndarray of float32
        Interpolated intensities, in the image's unit.
    mask : ndarray of bool
        Interpolated ROI mask.
    grid : ResampledGrid
        New spacing (mm), position of the first voxel centre (mm) and, for a crop, where it sits in the whole grid.

    Raises
    ------
    ValueError
        On shape mismatch, invalid spacing, order or threshold.
    """
    spacing = check_spacing(spacing_mm)
    new = (float(new_spacing_mm),) * 3 if np.isscalar(new_spacing_mm) else tuple(float(s) for s in new_spacing_mm)
    new = check_spacing(new)
    if order not in (0, 1, 2, 3, 4, 5) or mask_order not in (0, 1, 2, 3, 4, 5):
        raise ValueError(f"order and mask_order must be spline orders 0..5, got {order}, {mask_order}")
    if not 0 < pv_threshold <= 1:
        raise ValueError(f"pv_threshold must be in (0, 1], got {pv_threshold}")
    if crop_margin_mm is not None and crop_margin_mm < 0:
        raise ValueError(f"crop_margin_mm must be >= 0 mm, got {crop_margin_mm}")
    if image.ndim != 3 or image.shape != mask.shape:
        raise ValueError(f"image {image.shape} and mask {mask.shape} must be the same 3-D shape")
    if in_plane_only:
        new = (spacing[0], new[1], new[2])
    full_shape, offset = resample_grid(image.shape, spacing, new)
    start = [0, 0, 0]
    out_shape = list(full_shape)
    if crop_margin_mm is not None:
        box = roi_bounding_box(mask)
        for ax in range(3):
            lo_mm = box[ax].start * spacing[ax] - crop_margin_mm  # mm from the original first voxel centre
            hi_mm = (box[ax].stop - 1) * spacing[ax] + crop_margin_mm
            first = max(int(math.floor((lo_mm - offset[ax]) / new[ax])), 0)
            last = min(int(math.ceil((hi_mm - offset[ax]) / new[ax])), full_shape[ax] - 1)
            start[ax], out_shape[ax] = first, last - first + 1
    # New voxel k sits at original (fractional) index (offset + (start + k) * new) / spacing.
    scale = np.array(new) / np.array(spacing)
    shift = (np.array(offset) + np.array(start) * np.array(new)) / np.array(spacing)
    # Interpolate only the input block the output block needs (plus a spline margin): same values, less work.
    pad = 12 if max(order, mask_order) > 1 else 2
    in_lo = np.maximum(np.floor(shift).astype(int) - pad, 0)
    in_hi = np.minimum(np.ceil(shift + scale * (np.array(out_shape) - 1)).astype(int) + pad + 1, image.shape)
    in_box = tuple(slice(int(a), int(b)) for a, b in zip(in_lo, in_hi))
    sub_image = np.asarray(image[in_box], dtype=np.float32)
    sub_mask = np.asarray(mask[in_box], dtype=np.float32)
    sub_shift = shift - in_lo
    # Interpolate in float64 and round before storing float32, so that rounding ties (x.5) are decided on the
    # exact interpolated value, not on its float32 approximation.
    new_image = _affine(sub_image, scale, sub_shift, out_shape, order)
    if round_intensities:
        np.rint(new_image, out=new_image)
    new_image = new_image.astype(np.float32)
    # A mask value that ties with the threshold in exact arithmetic (common: 0.5 half-way between two voxels)
    # comes out as 0.5 +/- round-off; count it as inside, as ">= threshold" means.
    new_mask = _affine(sub_mask, scale, sub_shift, out_shape, mask_order) >= pv_threshold - 1e-9
    grid_offset = tuple(float(o + s * n) for o, s, n in zip(offset, start, new))
    return new_image, new_mask, ResampledGrid(new, grid_offset, full_shape, tuple(start))


def _affine(array: np.ndarray, scale: np.ndarray, shift: np.ndarray, shape: list[int], order: int) -> np.ndarray:
    if np.allclose(scale, 1.0) and np.allclose(shift, np.round(shift)) and order <= 1:
        # Same grid, integer shift: plain copy with edge extension (no interpolation error at all).
        idx = [np.clip(np.arange(n) + int(round(s)), 0, a - 1) for n, s, a in zip(shape, shift, array.shape)]
        return array[np.ix_(*idx)].astype(np.float64)
    return ndi.affine_transform(
        array, scale, offset=shift, output_shape=tuple(shape), order=order, mode="nearest", prefilter=order > 1,
        output=np.float64,
    )


def resegment(
    image: np.ndarray,
    intensity_mask: np.ndarray,
    *,
    lower: float | None = None,
    upper: float | None = None,
    n_sd: float | None = None,
) -> np.ndarray:
    """Re-segmentation of the intensity mask by an intensity range and/or outliers (mean +/- n_sd SD).

    When both are given (IBSI config E), the outlier bounds are computed from the ROI as passed in (before the
    range is applied) and the two intervals are intersected, as MIRP does; IBSI leaves the order open.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Intensities, in the image's unit (HU for CT).
    intensity_mask : (Z, Y, X) ndarray of bool
        Current intensity mask (normally the interpolated morphological mask).
    lower, upper : float, optional
        Range bounds in the image's unit, inclusive; None leaves that side open (IBSI config A: -500, 400 HU).
    n_sd : float, optional
        Outlier filtering: keep mean +/- n_sd population standard deviations of the ROI intensities (IBSI: 3).

    Returns
    -------
    (Z, Y, X) ndarray of bool
        The new intensity mask (the morphological mask is not changed).

    Raises
    ------
    ValueError
        On an inverted range, n_sd <= 0, shape mismatch, or an empty mask with n_sd.
    """
    if lower is not None and upper is not None and upper < lower:
        raise ValueError(f"upper ({upper}) must be >= lower ({lower})")
    if image.shape != intensity_mask.shape:
        raise ValueError(f"image {image.shape} and intensity_mask {intensity_mask.shape} must have the same shape")
    mask = np.asarray(intensity_mask, dtype=bool)
    lo = -math.inf if lower is None else float(lower)
    hi = math.inf if upper is None else float(upper)
    if n_sd is not None:
        if not n_sd > 0:
            raise ValueError(f"n_sd must be > 0, got {n_sd}")
        values = np.asarray(image[mask], dtype=np.float64)
        if values.size == 0:
            raise ValueError("the intensity mask is empty: no ROI intensities for outlier filtering")
        mean, sd = float(values.mean()), float(values.std())
        lo, hi = max(lo, mean - n_sd * sd), min(hi, mean + n_sd * sd)
    out = mask.copy()
    if lo > -math.inf:
        out &= image >= lo
    if hi < math.inf:
        out &= image <= hi
    return out


def outlier_mask(image: np.ndarray, intensity_mask: np.ndarray, *, n_sd: float = 3.0) -> np.ndarray:
    """Outlier re-segmentation alone: ``resegment(image, intensity_mask, n_sd=n_sd)``.

    Returns
    -------
    (Z, Y, X) ndarray of bool
        The ROI voxels within mean +/- n_sd standard deviations of the ROI intensities.
    """
    return resegment(image, intensity_mask, n_sd=n_sd)
