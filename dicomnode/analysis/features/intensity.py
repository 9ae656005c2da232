"""IBSI-1 local intensity and intensity-based statistical features.

Local intensity features look at the whole image around the ROI (a 1 cm^3 sphere may reach outside the ROI);
statistical features see only the intensities of the ROI intensity mask.

References
----------
Zwanenburg A. et al., "The Image Biomarker Standardization Initiative", Radiology 2020;295:328-338;
IBSI reference manual (theibsi/ibsi-doc ``docs/03_Image_features.rst``), sections "Local intensity features" and
"Intensity-based statistical features".
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from scipy import fft as sfft

from dicomnode.analysis.features.base import FeatureValue
from dicomnode.analysis.features.processing import check_spacing, roi_bounding_box
from dicomnode.analysis.threads import thread_budget

__all__ = ["PEAK_RADIUS_MM", "local_intensity_features", "sphere_mean", "statistics_features"]

#: Radius of a 1 cm^3 sphere, in mm: (3 / (4 pi))^(1/3) cm.
PEAK_RADIUS_MM = 10.0 * (3.0 / (4.0 * np.pi)) ** (1.0 / 3.0)

_STAT = "intensity statistics"
_LOCAL = "local intensity"


def statistics_features(values: np.ndarray, *, workers: int | None = None) -> list[FeatureValue]:
    """The 18 IBSI intensity-based statistical features.

    Parameters
    ----------
    values : (N,) ndarray
        Intensities of the N voxels of the ROI intensity mask, in the image's unit (HU for CT; never rescaled).
    workers : int, optional
        Threads over the chunks of a large non-integer ROI (default
        :func:`~dicomnode.analysis.threads.thread_budget`); the values do not depend on it.

    Returns
    -------
    list of FeatureValue
        Family "intensity statistics": mean, variance (no bias correction), skewness, (excess) kurtosis, median,
        minimum, 10th/90th percentile, maximum, interquartile range, range, mean absolute deviation, robust mean
        absolute deviation (10-90th percentile values), median absolute deviation (mean distance to the median),
        coefficient of variation, quartile coefficient of dispersion, energy (sum of squares, unit^2) and root mean
        square. Percentiles interpolate linearly (numpy's default). Skewness and kurtosis are 0 when the variance is.

    Raises
    ------
    ValueError
        If `values` is empty or holds NaN/inf.
    """
    x = _check_values(values)
    shared = _moments_and_quantiles(x, workers=workers)
    energy = dict(shared)[_ENERGY]
    return [FeatureValue(_STAT, name, "", value) for name, value in shared if name != _ENERGY] + [
        FeatureValue(_STAT, "energy", "", energy),
        FeatureValue(_STAT, "root mean square", "", float(np.sqrt(energy / x.size))),
    ]


_ENERGY = "_energy"  # sum of squares, passed along with the shared features


def _check_values(values: np.ndarray) -> np.ndarray:
    """The values as a flat numeric array, in their own dtype (no float64 copy of a large ROI)."""
    x = np.asarray(values).ravel()
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        x = x.astype(np.float64)
    if x.size == 0:
        raise ValueError("no ROI voxels: the intensity mask is empty")
    if not np.isfinite(x).all():
        raise ValueError("values holds NaN or infinite intensities; mask them out first")
    return x


def _weighted_quantiles(vals: np.ndarray, counts: np.ndarray, qs: list[float]) -> list[float]:
    """``np.percentile(x, qs)`` (linear interpolation) of the data given as sorted unique values and counts."""
    n = int(counts.sum())
    cum = np.cumsum(counts)
    out = []
    for q in qs:
        pos = q / 100.0 * (n - 1)
        lo_i = int(np.floor(pos))
        frac = pos - lo_i
        v_lo = vals[np.searchsorted(cum, lo_i + 1)]
        v_hi = vals[np.searchsorted(cum, min(lo_i + 2, n))]
        out.append(float(v_lo + frac * (v_hi - v_lo)))
    return out


#: :func:`_moments_and_quantiles` works on a histogram of integer values for more than this many values ...
_HISTOGRAM_MIN_VALUES = 100_000
#: ... spanning at most this range (:func:`_integer_histogram`)
_HISTOGRAM_MAX_RANGE = 2_000_000


def _uses_histogram(n_values: int, value_range: float) -> bool:
    """Whether :func:`_moments_and_quantiles` reduces ``n_values`` integer values spanning ``value_range`` to their
    histogram (the rule of its own counting, for a caller that has counted them already)."""
    return n_values > _HISTOGRAM_MIN_VALUES and value_range <= _HISTOGRAM_MAX_RANGE


def _integer_histogram(x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(sorted unique values, counts) when ``x`` holds integers over a modest range, else None."""
    lo, hi = float(x.min()), float(x.max())
    if hi - lo > _HISTOGRAM_MAX_RANGE:
        return None
    if not np.issubdtype(x.dtype, np.integer):
        # chunked, so that checking a large ROI costs no full-size temporaries
        step = 1 << 20  # 8 MiB int64 copies stay in cache (4 Mi values were twice as slow)
        for i in range(0, x.size, step):
            c = x[i:i + step]
            if not np.array_equal(c, np.round(c)):
                return None
        counts = np.zeros(int(hi - lo) + 1, dtype=np.int64)
        for i in range(0, x.size, step):
            counts += np.bincount((x[i:i + step] - lo).astype(np.int64), minlength=counts.size)
    else:
        counts = np.zeros(int(hi - lo) + 1, dtype=np.int64)
        for i in range(0, x.size, 1 << 20):
            counts += np.bincount(x[i:i + (1 << 20)].astype(np.int64) - int(lo), minlength=counts.size)
    nz = np.flatnonzero(counts)
    return (nz + lo).astype(np.float64), counts[nz].astype(np.float64)


_CHUNK = 1 << 20  # values per pass: a float64 chunk (8 MiB) stays in cache, no full-size float64 temporaries


def _order_statistics(x: np.ndarray, qs: list[float]) -> tuple[float, float, list[float]]:
    """(minimum, maximum, ``np.percentile(x, qs)``) of ``x``, exact.

    The order statistics are exact: a large ROI is first counted into :data:`_SELECT_BINS` equal-width bins
    between its minimum and maximum (the bin of a value is monotone in the value), then only the values of the few
    bins that hold a wanted rank are partitioned (in their own dtype), instead of the whole ROI with several
    ranks; the linear interpolation between two neighbours is numpy's, in float64.
    """
    n = x.size
    pos = [q / 100.0 * (n - 1) for q in qs]
    ranks = sorted({int(np.floor(p)) for p in pos} | {min(int(np.floor(p)) + 1, n - 1) for p in pos})
    lo, hi = x.min(), x.max()
    if n <= _SELECT_MIN or not lo < hi:
        kth = sorted({0, n - 1} | set(ranks))
        part = np.partition(x, kth)
        value = {r: part[r] for r in kth}
    else:
        value = _select_ranks(x, ranks, lo, hi)
    out = []
    for p in pos:
        i = int(np.floor(p))
        a = float(value[i])
        b = float(value[min(i + 1, n - 1)])
        t = p - i
        diff = b - a
        out.append(b - diff * (1.0 - t) if t >= 0.5 else a + diff * t)
    return float(lo), float(hi), out


_SELECT_BINS = 1 << 16   # bins of the first, counting pass of :func:`_select_ranks`
_SELECT_MIN = 200_000    # below this many values one partition of the whole ROI is as quick


def _bin_of(c: np.ndarray, lo: float, scale: float) -> np.ndarray:
    """Bin index (0 .. _SELECT_BINS - 1) of the values ``c``: monotone non-decreasing in the value."""
    b = (c.astype(np.float64) - lo) * scale
    np.minimum(b, _SELECT_BINS - 1, out=b)
    return b.astype(np.int32)


def _bits_binning(x: np.ndarray, lo: Any, hi: Any) -> Any:
    """For float32 or float64 values all above 0 (``lo``, ``hi``: their minimum and maximum), the function giving
    the bin (0 .. _SELECT_BINS - 1) of a chunk of them from their bit patterns: ``(bits - bits(lo)) >> shift``, with
    the smallest shift that maps ``hi`` below _SELECT_BINS. The bit pattern of a positive float grows with its
    value, so the bin is monotone non-decreasing in the value. None for other values."""
    if x.dtype == np.float32:
        utype: Any = np.uint32
    elif x.dtype == np.float64:
        utype = np.uint64
    else:
        return None
    if not lo > 0:
        return None
    base = int(np.asarray(lo, dtype=x.dtype).view(utype))
    top = int(np.asarray(hi, dtype=x.dtype).view(utype))
    shift = 0
    while (top - base) >> shift >= _SELECT_BINS:
        shift += 1
    ubase = utype(base)

    def bits_bin_of(c: np.ndarray) -> np.ndarray:
        k = np.subtract(c.view(utype), ubase)
        np.right_shift(k, shift, out=k)
        return k if utype is np.uint32 else k.view(np.int64)  # bincount takes no uint64

    return bits_bin_of


def _select_ranks(x: np.ndarray, ranks: list[int], lo: float, hi: float) -> dict[int, Any]:
    """The values of rank ``ranks`` (0-based, in ascending order) of ``x``, exactly as ``np.partition`` gives them.

    One counting pass into bins (chunked: no full-size temporaries), then the values of the bins that
    hold a wanted rank, partitioned at those ranks (shifted by the count of the bins below).

    Any bin of a value that is monotone in it finds the same values: the partition returns the value of each rank,
    and where equal values are the same float (no +0 beside -0) that value is one float whichever bins the values
    were counted in. Floats all above 0 (PET, MR) are binned on their bit patterns, which grow with the value
    (:func:`_bits_binning`: an integer subtraction and shift, not a float64 copy, scaling and conversion);
    other values on equal-width bins of the float range."""
    bin_of = _bits_binning(x, lo, hi)
    if bin_of is None:
        scale = _SELECT_BINS / (float(hi) - float(lo))

        def bin_of(c: np.ndarray) -> np.ndarray:
            return _bin_of(c, float(lo), scale)
    counts = np.zeros(_SELECT_BINS, dtype=np.int64)
    for i in range(0, x.size, _CHUNK):
        counts += np.bincount(bin_of(x[i:i + _CHUNK]), minlength=_SELECT_BINS)
    upper = np.cumsum(counts)            # ranks below upper[b] lie in bins 0..b
    bins = np.searchsorted(upper, np.asarray(ranks), side="right")
    wanted = np.zeros(_SELECT_BINS, dtype=bool)
    wanted[bins] = True
    picked = np.concatenate([c[wanted[bin_of(c)]] for c in (x[i:i + _CHUNK] for i in range(0, x.size, _CHUNK))])
    below = upper - counts               # how many values lie in lower bins
    offset = {}                          # rank -> position in ``picked`` (bins concatenated in ascending order)
    start = 0
    for b in np.flatnonzero(wanted):
        offset[int(b)] = start - int(below[b])
        start += int(counts[b])
    # ``picked`` holds each wanted bin's values in the order they come; sort key: bin first (ascending), so a
    # partition of the whole of ``picked`` at the shifted ranks gives the global order statistics
    local = sorted({int(r) + offset[int(b)] for r, b in zip(ranks, bins)})
    part = np.partition(picked, local)
    return {int(r): part[int(r) + offset[int(b)]] for r, b in zip(ranks, bins)}


def _at_least(dtype: np.dtype, t: float) -> Any:
    """The smallest value of the float ``dtype`` that is >= ``t``: for ``v`` of that dtype, ``v >= t`` (compared
    in float64) exactly when ``v >= _at_least(dtype, t)`` and ``v < t`` exactly when ``v < _at_least(dtype, t)``."""
    v = dtype.type(t)
    if float(v) < t:
        v = np.nextafter(v, dtype.type(np.inf))
    return v


def _at_most(dtype: np.dtype, t: float) -> Any:
    """The largest value of the float ``dtype`` that is <= ``t`` (``v <= t`` exactly when ``v <= _at_most(...)``)."""
    v = dtype.type(t)
    if float(v) > t:
        v = np.nextafter(v, dtype.type(-np.inf))
    return v


def _float_moments(x: np.ndarray, workers: int | None = None) -> tuple[float, ...]:
    """The shared features of non-integer data, in chunks of :data:`_CHUNK` values converted to float64.

    One pass gathers the power sums of the deviations from the median (known first, from the order statistics) and
    the absolute deviations from it; the central moments follow from the power sums about that nearby centre
    (binomial expansion: no cancellation worth the name when the centre is within a few SD of the mean). A second,
    lighter pass sums only the values below the mean and below the robust mean: with ``t`` the mean of a set,
    ``sum |v - t| = 2 sum_{v < t} (t - v)`` (plus the set's own sum of ``v - t``, zero up to rounding). Comparisons
    run in the values' own float type against thresholds rounded to it in the safe direction, so every set holds
    the values the float64 comparison selects. Same definitions as the whole-array formulas; relative differences
    from them are ~1e-12 (summation order).

    ``workers``: threads over the chunks (default :func:`~dicomnode.analysis.threads.thread_budget`); each chunk's
    sums are the same whichever thread makes them and are added in chunk order, so the result does not depend on it.
    """
    n = x.size
    lo, hi, (p10, p25, median, p75, p90) = _order_statistics(x, [10, 25, 50, 75, 90])
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)  # float16 and the like: compared and summed in float64
    dt = x.dtype
    r_lo, r_hi = _at_least(dt, p10), _at_most(dt, p90)
    starts = range(0, n, _CHUNK)
    # The chunks' sums are made in threads when there are several chunks and threads to spare (numpy's array
    # passes and the BLAS dot products release the GIL), then added in chunk order: the same float64 additions as
    # one chunk after the other.
    workers = min(thread_budget() if workers is None else int(workers), len(starts))
    local = threading.local()

    def first(i: int) -> tuple[float, float, float, float, float, float, int]:
        c = x[i:i + _CHUNK]
        m = c.size
        if getattr(local, "d", None) is None:
            local.d = np.empty(min(n, _CHUNK), dtype=np.float64)
            local.w = np.empty_like(local.d)
        dv, wv = local.d[:m], local.w[:m]
        np.subtract(c, median, out=dv, dtype=np.float64)  # c - median in float64
        c1 = float(dv.sum())
        cmed = float(np.abs(dv, out=wv).sum())
        np.multiply(dv, dv, out=wv)
        c2 = float(wv.sum())
        c3 = float(np.dot(wv, dv))
        c4 = float(np.dot(wv, wv))
        r = c[(c >= r_lo) & (c <= r_hi)]
        return c1, cmed, c2, c3, c4, float(np.add.reduce(r, dtype=np.float64)), r.size

    pool = ThreadPoolExecutor(workers) if workers > 1 else None
    try:
        parts = list(pool.map(first, starts)) if pool is not None else [first(i) for i in starts]
        s1 = s2 = s3 = s4 = smed = rsum = 0.0
        rcount = 0
        for c1, cmed, c2, c3, c4, crsum, crcount in parts:
            s1 += c1
            smed += cmed
            s2 += c2
            s3 += c3
            s4 += c4
            rsum += crsum
            rcount += crcount
        del parts
        local = None
        a = s1 / n                                    # mean - median
        mean = median + a
        m2, m3, m4 = s2 / n, s3 / n, s4 / n
        var = max(m2 - a * a, 0.0)
        mu3 = m3 - 3.0 * a * m2 + 2.0 * a**3
        mu4 = m4 - 4.0 * a * m3 + 6.0 * a * a * m2 - 3.0 * a**4
        energy = s2 + 2.0 * median * s1 + n * median * median   # sum of c^2 = sum of (median + d)^2
        rmean = rsum / rcount if rcount else float("nan")  # no value in [P10, P90] (two values): undefined
        t_mean, t_rmean = _at_least(dt, mean), _at_least(dt, rmean)

        def second(i: int) -> tuple[float, float]:
            c = x[i:i + _CHUNK]
            v = c[c < t_mean]
            below = float(v.size * mean - np.add.reduce(v, dtype=np.float64))
            v = c[(c >= r_lo) & (c < t_rmean)]
            return below, float(v.size * rmean - np.add.reduce(v, dtype=np.float64))

        below_mean = below_rmean = 0.0                # sum (t - v) over the values below each centre t
        for b_mean, b_rmean in (pool.map(second, starts) if pool is not None else map(second, starts)):
            below_mean += b_mean
            below_rmean += b_rmean
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    sabs = 2.0 * below_mean + (s1 - n * a)
    rabs = 2.0 * below_rmean + (rsum - rcount * rmean)
    if var > 0:
        skew = mu3 / var**1.5
        kurt = mu4 / var**2 - 3.0
    else:
        skew = kurt = 0.0
    rmad = rabs / rcount if rcount else float("nan")
    return (mean, var, skew, kurt, p10, p25, median, p75, p90, lo, hi, rmad, sabs / n, smed / n, energy)


_COUNT = object()  # :func:`_moments_and_quantiles`: count the histogram of the values itself


def _moments_and_quantiles(x: np.ndarray, *, workers: int | None = None,
                           histogram: Any = _COUNT) -> list[tuple[str, float]]:
    """Features shared by intensity statistics and the intensity histogram, in the manual's order (no mode).

    Integer-valued data (HU, discretised grey levels) are reduced to a histogram first, on which every value is
    computed exactly in O(N + range) instead of several passes and a partition over all N values. ``histogram``:
    what ``_integer_histogram(x) if x.size > _HISTOGRAM_MIN_VALUES else None`` gives, when the caller has already
    counted it.
    """
    if histogram is _COUNT:
        hist = _integer_histogram(x) if x.size > _HISTOGRAM_MIN_VALUES else None
    else:
        hist = histogram
    if hist is not None:
        vals, counts = hist
        n = counts.sum()
        mean = float(np.dot(vals, counts) / n)
        dev = vals - mean
        dev2 = dev * dev
        var = float(np.dot(dev2, counts) / n)
        if var > 0:
            skew = float(np.dot(dev2 * dev, counts) / n / var**1.5)
            kurt = float(np.dot(dev2 * dev2, counts) / n / var**2 - 3.0)
        else:
            skew = kurt = 0.0
        p10, p25, median, p75, p90 = _weighted_quantiles(vals, counts, [10, 25, 50, 75, 90])
        lo, hi = float(vals[0]), float(vals[-1])
        sel = (vals >= p10) & (vals <= p90)
        rv, rc = vals[sel], counts[sel]
        if rc.sum() > 0:
            rmean = float(np.dot(rv, rc) / rc.sum())
            rmad = float(np.dot(np.abs(rv - rmean), rc) / rc.sum())
        else:  # no value in [P10, P90] (two values far apart): the robust mean absolute deviation is undefined
            rmad = float("nan")
        mad = float(np.dot(np.abs(dev), counts) / n)
        medad = float(np.dot(np.abs(vals - median), counts) / n)
        energy = float(np.dot(vals * vals, counts))
    else:
        mean, var, skew, kurt, p10, p25, median, p75, p90, lo, hi, rmad, mad, medad, energy = _float_moments(x, workers)
    return [
        ("mean", mean),
        ("variance", var),
        ("skewness", skew),
        ("(excess) kurtosis", kurt),
        ("median", median),
        ("minimum", lo),
        ("10th percentile", p10),
        ("90th percentile", p90),
        ("maximum", hi),
        ("interquartile range", p75 - p25),
        ("range", hi - lo),
        ("mean absolute deviation", mad),
        ("robust mean absolute deviation", rmad),
        ("median absolute deviation", medad),
        ("coefficient of variation", float(np.sqrt(var) / mean) if mean != 0 else float("nan")),
        ("quartile coefficient of dispersion", (p75 - p25) / (p75 + p25) if p75 + p25 != 0 else float("nan")),
        (_ENERGY, energy),
    ]


def sphere_mean(
    image: np.ndarray, spacing_mm: tuple[float, float, float], *, radius_mm: float = PEAK_RADIUS_MM
) -> np.ndarray:
    """Mean intensity in a sphere around every voxel (voxel centres within `radius_mm`, the centre included).

    Near the image border the mean is over the voxels that exist (no padding values enter it). Computed as two
    FFT convolutions, so the cost does not grow with the sphere's voxel count; crop to the region of interest plus
    `radius_mm` first.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Intensities, in the image's unit.
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x), in mm.
    radius_mm : float, optional
        Sphere radius, in mm. Default: 1 cm^3 sphere, ~6.2 mm.

    Returns
    -------
    (Z, Y, X) ndarray of float64
        Sphere means, in the image's unit.
    """
    if radius_mm <= 0:
        raise ValueError(f"radius_mm must be > 0 mm, got {radius_mm}")
    kernel = _sphere_kernel(check_spacing(spacing_mm), radius_mm)
    sums = _fft_convolve_same(np.asarray(image, dtype=np.float64), kernel)
    counts = _fft_convolve_same(np.ones(image.shape, dtype=np.float64), kernel)
    return sums / np.rint(counts)


def local_intensity_features(
    image: np.ndarray, intensity_mask: np.ndarray, spacing_mm: tuple[float, float, float]
) -> list[FeatureValue]:
    """IBSI local and global intensity peak.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        The whole image (or the ROI's bounding box plus at least 6.2 mm where the image extends that far), in the
        image's unit: the sphere draws on voxels outside the ROI too.
    intensity_mask : (Z, Y, X) ndarray of bool
        ROI intensity mask; only its voxels serve as sphere centres.
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x), in mm.

    Returns
    -------
    list of FeatureValue
        "local intensity peak": the highest sphere mean among the ROI voxels of maximum intensity;
        "global intensity peak": the highest sphere mean among all ROI voxels. Both in the image's unit.

    Raises
    ------
    ValueError
        If shapes differ, the spacing is not 3 positive numbers or the mask is empty.
    """
    spacing = check_spacing(spacing_mm)
    mask = np.asarray(intensity_mask, dtype=bool)
    if image.shape != mask.shape or image.ndim != 3:
        raise ValueError(f"image {image.shape} and intensity_mask {mask.shape} must be the same 3-D shape")
    if not mask.any():
        raise ValueError("no ROI voxels: the intensity mask is empty")
    # Crop to the ROI bounding box plus the sphere radius: voxels farther away never enter a mean.
    margin = np.floor(PEAK_RADIUS_MM / np.asarray(spacing)).astype(int)
    box = roi_bounding_box(mask, margin_voxels=tuple(int(m) for m in margin))
    sub_image = np.asarray(image[box], dtype=np.float64)
    sub_mask = mask[box]
    means = sphere_mean(sub_image, spacing)
    roi_values = sub_image[sub_mask]
    roi_means = means[sub_mask]
    local = float(roi_means[roi_values == roi_values.max()].max())
    return [
        FeatureValue(_LOCAL, "local intensity peak", "", local),
        FeatureValue(_LOCAL, "global intensity peak", "", float(roi_means.max())),
    ]


def _sphere_kernel(spacing_mm: tuple[float, float, float], radius_mm: float) -> np.ndarray:
    half = np.floor(radius_mm / np.asarray(spacing_mm, dtype=float)).astype(int)
    axes = [np.arange(-h, h + 1) * s for h, s in zip(half, spacing_mm)]
    dz, dy, dx = np.meshgrid(*axes, indexing="ij")
    # A tiny relative slack keeps voxels exactly on the sphere surface inside despite rounding.
    return (dz**2 + dy**2 + dx**2 <= radius_mm**2 * (1 + 1e-12)).astype(np.float64)


def _fft_convolve_same(array: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Linear convolution with an odd-sized, centred kernel; output aligned with `array` (zero outside)."""
    shape = [a + k - 1 for a, k in zip(array.shape, kernel.shape)]
    fshape = [sfft.next_fast_len(n, real=True) for n in shape]
    spec = sfft.rfftn(array, fshape, workers=thread_budget()) * sfft.rfftn(kernel, fshape, workers=thread_budget())
    full = sfft.irfftn(spec, fshape, workers=thread_budget())
    start = [k // 2 for k in kernel.shape]
    return full[tuple(slice(s, s + n) for s, n in zip(start, array.shape))]
