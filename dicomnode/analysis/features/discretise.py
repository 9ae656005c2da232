"""Intensity discretisation into grey levels (IBSI-1, "Intensity discretisation").

Grey levels start at 1. Two IBSI methods plus "none":

* fixed bin size (FBS): ``floor((x - lower) / bin_size) + 1``, bins anchored at a lower bound (the lower bound of the
  re-segmentation range for calibrated images, e.g. -500 HU), so a bin means the same intensities in every image;
* fixed bin number (FBN): ``floor(n_bins * (x - min) / (max - min)) + 1`` over the ROI's own min..max, with the
  maximum put in the last bin;
* none: the values already are integer grey levels (the IBSI digital phantom) and are used as they are, empty levels
  included.

References
----------
Zwanenburg A. et al., "Image biomarker standardisation initiative", arXiv:1612.07003, section 2.7 (discretisation);
theibsi/ibsi-doc ``docs/Image_processing.rst``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "discretise_fixed_bin_number",
    "discretise_fixed_bin_size",
    "discretise_none",
    "fixed_bin_size_centres",
]


_CHUNK = 1 << 20  # values per chunk of float64 arithmetic (8 MiB: stays in cache; 4 Mi values were slower)

def discretise_fixed_bin_size(values: np.ndarray, *, bin_size: float, lower: float) -> np.ndarray:
    """Fixed bin size discretisation.

    Parameters
    ----------
    values : ndarray
        Intensities of the ROI voxels (any shape), in the image's unit (HU for CT).
    bin_size : float
        Bin width, in the image's unit (e.g. 25 HU). Must be > 0.
    lower : float
        Lower bound of the first bin, in the image's unit (IBSI: the lower bound of the re-segmentation range, or the
        ROI minimum when there is none).

    Returns
    -------
    ndarray of int32, same shape as `values`
        Grey levels, 1 for ``[lower, lower + bin_size)``, and so on. Values below `lower` give levels < 1: re-segment
        first.

    Raises
    ------
    ValueError
        If `bin_size` is not a positive finite number or `lower` is not finite.
    """
    if not np.isfinite(bin_size) or bin_size <= 0:
        raise ValueError(f"bin_size must be a finite number > 0, got {bin_size}")
    if not np.isfinite(lower):
        raise ValueError(f"lower must be finite, got {lower}")
    x = np.asarray(values)
    out = np.empty(x.shape, dtype=np.int32)
    flat_in, flat_out = x.reshape(-1), out.reshape(-1)
    # float64 arithmetic, chunked: no full-size temporaries; each step in place in one float64 buffer (the same
    # operations as ``np.floor((c - lower) / bin_size) + 1`` on the chunk, each rounded alike, without a new
    # temporary per operation)
    buf = np.empty(min(flat_in.size, _CHUNK), dtype=np.float64)
    for i in range(0, flat_in.size, _CHUNK):
        c = buf[:flat_in[i:i + _CHUNK].size]
        c[...] = flat_in[i:i + _CHUNK]
        c -= lower
        c /= bin_size
        np.floor(c, out=c)
        c += 1
        flat_out[i:i + _CHUNK] = c
    return out


def fixed_bin_size_centres(levels: np.ndarray, *, bin_size: float, lower: float) -> np.ndarray:
    """Intensity at the centre of fixed-size bins: ``lower + (level - 0.5) * bin_size`` (IBSI IVH, calibrated data).

    Parameters
    ----------
    levels : ndarray of int
        Grey levels from :func:`discretise_fixed_bin_size`.
    bin_size, lower : float
        The same settings as used for discretising, in the image's unit.

    Returns
    -------
    ndarray of float64, same shape as `levels`
        Bin centres, in the image's unit.
    """
    if not np.isfinite(bin_size) or bin_size <= 0:
        raise ValueError(f"bin_size must be a finite number > 0, got {bin_size}")
    return lower + (np.asarray(levels, dtype=np.float64) - 0.5) * bin_size


def discretise_fixed_bin_number(values: np.ndarray, *, n_bins: int) -> np.ndarray:
    """Fixed bin number discretisation over the values' own range.

    Parameters
    ----------
    values : ndarray
        Intensities of the ROI voxels (any shape, at least one value), in any unit.
    n_bins : int
        Number of bins N_g (e.g. 32). Must be >= 1.

    Returns
    -------
    ndarray of int32, same shape as `values`
        Grey levels in 1..n_bins; the maximum goes into bin n_bins. All ones when every value is equal.

    Raises
    ------
    ValueError
        If `n_bins` < 1, `values` is empty or holds non-finite values.
    """
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be an integer >= 1, got {n_bins}")
    x = np.asarray(values)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    if x.size == 0:
        raise ValueError("values is empty: fixed bin number needs at least one ROI voxel")
    lo, hi = float(x.min()), float(x.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("values holds NaN or infinite intensities; mask them out first")
    if hi == lo:
        return np.ones(x.shape, dtype=np.int32)
    levels = np.empty(x.shape, dtype=np.int32)
    flat_in, flat_out = x.reshape(-1), levels.reshape(-1)
    span = hi - lo
    buf = np.empty(min(flat_in.size, _CHUNK), dtype=np.float64)
    for i in range(0, flat_in.size, _CHUNK):  # ``np.floor(n_bins * (c - lo) / span) + 1``, in place (as above)
        c = buf[:flat_in[i:i + _CHUNK].size]
        c[...] = flat_in[i:i + _CHUNK]
        c -= lo
        c *= n_bins
        c /= span
        np.floor(c, out=c)
        c += 1
        flat_out[i:i + _CHUNK] = c
    np.minimum(levels, n_bins, out=levels)
    return levels


def discretise_none(values: np.ndarray) -> np.ndarray:
    """Use integer intensities as grey levels, unchanged (no re-indexing, empty levels kept).

    Parameters
    ----------
    values : ndarray
        Integer-valued intensities >= 1 (any dtype).

    Returns
    -------
    ndarray of int32, same shape as `values`

    Raises
    ------
    ValueError
        If a value is not an integer or is < 1 (grey levels start at 1; use fixed bin size with bin_size=1 and a
        lower bound to shift other ranges).
    """
    x = np.asarray(values)
    levels = np.rint(x).astype(np.int32)
    if x.size and (not np.array_equal(levels, x) or levels.min() < 1):
        raise ValueError("discretisation 'none' needs integer intensities >= 1; use discretise_fixed_bin_size instead")
    return levels
