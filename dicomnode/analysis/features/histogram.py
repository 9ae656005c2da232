"""IBSI-1 intensity histogram and intensity-volume histogram (IVH) features.

References
----------
IBSI reference manual (theibsi/ibsi-doc ``docs/03_Image_features.rst``), sections "Intensity histogram features" and
"Intensity-volume histogram features".
"""

from __future__ import annotations

import numpy as np

from dicomnode.analysis.features.base import FeatureValue
from dicomnode.analysis.features.discretise import (
    discretise_fixed_bin_size,
    fixed_bin_size_centres,
)
from dicomnode.analysis.features.intensity import _moments_and_quantiles, _uses_histogram

__all__ = ["histogram_features", "ivh_curve", "ivh_features"]

_IH = "intensity histogram"
_IVH = "intensity-volume histogram"


def histogram_features(levels: np.ndarray, n_levels: int) -> list[FeatureValue]:
    """The 23 IBSI intensity histogram features of discretised grey levels.

    Parameters
    ----------
    levels : (N,) ndarray of int
        Grey levels (1..n_levels) of the N voxels of the ROI intensity mask, from :mod:`.discretise`.
    n_levels : int
        Number of grey levels N_g of the histogram: bins 1..n_levels, empty ones included (the histogram gradient
        sees them). For fixed bin number use the bin number; for fixed bin size or "none" use ``levels.max()``.

    Returns
    -------
    list of FeatureValue
        Family "intensity histogram", in grey-level units: mean, variance, skewness, (excess) kurtosis, median,
        minimum, 10th/90th percentile, maximum, mode (the most frequent level; ties go to the level closest to the
        mean), interquartile range, range, mean/robust mean/median absolute deviation, coefficient of variation,
        quartile coefficient of dispersion, entropy (log2), uniformity, maximum/minimum histogram gradient (voxel
        counts per level) and the level where each occurs.

    Raises
    ------
    ValueError
        If `levels` is empty, not integer, or outside 1..n_levels.
    """
    x = np.asarray(levels)
    if x.size == 0:
        raise ValueError("no ROI voxels: the intensity mask is empty")
    if int(n_levels) != n_levels or n_levels < 1:
        raise ValueError(f"n_levels must be an integer >= 1, got {n_levels}")
    if not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"levels must be integer grey levels, got dtype {x.dtype}")
    x = x.ravel()
    x_min, x_max = x.min(), x.max()
    if x_min < 1 or x_max > n_levels:
        raise ValueError(f"levels must lie in 1..{n_levels}, got {x_min}..{x_max}")
    counts = np.zeros(n_levels + 1, dtype=np.int64)
    for i in range(0, x.size, 1 << 20):  # chunked: bincount would copy all levels to intp at once
        counts += np.bincount(x[i:i + (1 << 20)], minlength=n_levels + 1)
    # the shared features' histogram (``_integer_histogram``: the levels present, ascending, and their counts, where
    # ``_uses_histogram`` says it is used) is this one's non-empty bins: not counted again
    hist = None
    if _uses_histogram(x.size, float(x_max) - float(x_min)):
        present = np.flatnonzero(counts)
        hist = (present.astype(np.float64), counts[present].astype(np.float64))
    counts = counts[1:].astype(np.float64)
    p = counts / x.size
    shared = dict(_moments_and_quantiles(x, histogram=hist))
    nonzero = p[p > 0]
    if n_levels > 1:
        grad = np.gradient(counts)  # central differences inside, one-sided (n2 - n1, nN - nN-1) at the ends
    else:
        grad = np.zeros(1)
    order = [
        "mean", "variance", "skewness", "(excess) kurtosis", "median", "minimum", "10th percentile",
        "90th percentile", "maximum",
    ]
    out = [FeatureValue(_IH, name, "", shared[name]) for name in order]
    # Mode: the most frequent level; among equally frequent ones the closest to the mean (as MIRP), then the lowest.
    tied = np.flatnonzero(counts == counts.max()) + 1
    mode = tied[np.argmin(np.abs(tied - shared["mean"]))]
    out.append(FeatureValue(_IH, "mode", "", float(mode)))
    out += [
        FeatureValue(_IH, name, "", shared[name])
        for name in (
            "interquartile range", "range", "mean absolute deviation", "robust mean absolute deviation",
            "median absolute deviation", "coefficient of variation", "quartile coefficient of dispersion",
        )
    ]
    out += [
        FeatureValue(_IH, "entropy", "", float(-np.sum(nonzero * np.log2(nonzero)))),
        FeatureValue(_IH, "uniformity", "", float(np.sum(p * p))),
        FeatureValue(_IH, "maximum histogram gradient", "", float(grad.max())),
        FeatureValue(_IH, "maximum histogram gradient intensity", "", float(np.argmax(grad) + 1)),
        FeatureValue(_IH, "minimum histogram gradient", "", float(grad.min())),
        FeatureValue(_IH, "minimum histogram gradient intensity", "", float(np.argmin(grad) + 1)),
    ]
    return out


def ivh_curve(
    values: np.ndarray,
    *,
    bin_width: float | None = None,
    lower: float | None = None,
    upper: float | None = None,
    n_bins: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The cumulative intensity-volume histogram, evaluated at every discretised intensity of the total range.

    Three IBSI discretisation modes, chosen by the keywords:

    * ``n_bins`` given: arbitrary units. Fixed bin number over min..max of `values`; the intensities are the bin
      numbers 1..n_bins (interval 1). `bin_width`, `lower`, `upper` must be None.
    * ``bin_width`` given (and no ``n_bins``): continuous calibrated intensities. Fixed bin size from `lower`
      (default: the ROI minimum); intensities are bin centres ``lower + (k - 0.5) * bin_width``; total range
      ``[lower + w/2, upper - w/2]`` (`upper` default: the ROI maximum).
    * neither: discrete calibrated intensities (CT in HU, the IBSI phantom). The values themselves, interval 1;
      total range `lower`..`upper` (the re-segmentation range), each defaulting to the ROI min / max.

    Parameters
    ----------
    values : (N,) ndarray
        Intensities of the ROI intensity mask, in the image's unit.
    bin_width : float, optional
        Fixed bin size, in the image's unit (IBSI config C: 2.5 HU).
    lower, upper : float, optional
        Total range (re-segmentation range), in the image's unit.
    n_bins : int, optional
        Fixed bin number (IBSI config E: 1000).

    Returns
    -------
    intensities : (K,) ndarray of float64
        Discretised intensities i of the total range, ascending, in the image's unit (bin numbers for `n_bins`).
    intensity_fraction : (K,) ndarray of float64
        gamma_i = (i - min G) / (max G - min G), dimensionless.
    volume_fraction : (K,) ndarray of float64
        nu_i, the fraction of ROI voxels with discretised intensity >= i.

    Raises
    ------
    ValueError
        On conflicting or invalid settings, or empty `values`.
    """
    x = np.asarray(values).ravel()  # counted in chunks below: no full-size float64 temporaries of a large ROI
    if x.size == 0:
        raise ValueError("no ROI voxels: the intensity mask is empty")
    lo_all, hi_all = float(x.min()), float(x.max())
    if not (np.isfinite(lo_all) and np.isfinite(hi_all)):
        raise ValueError("values holds NaN or infinite intensities; mask them out first")
    chunk = 1 << 20  # 8 MiB of float64: stays in cache (4 Mi values were slower)

    def chunks():
        for i in range(0, x.size, chunk):
            yield x[i:i + chunk].astype(np.float64)

    if n_bins is not None:
        if bin_width is not None or lower is not None or upper is not None:
            raise ValueError("n_bins (arbitrary units) takes no bin_width, lower or upper")
        if int(n_bins) != n_bins or n_bins < 1:
            raise ValueError(f"n_bins must be an integer >= 1, got {n_bins}")

        def discretised(c: np.ndarray) -> np.ndarray:  # discretise_fixed_bin_number over the whole ROI's range
            if hi_all == lo_all:
                return np.ones(c.shape)
            return np.minimum(np.floor(n_bins * (c - lo_all) / (hi_all - lo_all)) + 1, n_bins)

        g_min, g_max, step = 1.0, float(n_bins), 1.0
    elif bin_width is not None:
        lo = lo_all if lower is None else float(lower)
        hi = hi_all if upper is None else float(upper)

        def discretised(c: np.ndarray) -> np.ndarray:
            return fixed_bin_size_centres(discretise_fixed_bin_size(c, bin_size=bin_width, lower=lo),
                                          bin_size=bin_width, lower=lo)

        g_min, g_max, step = lo + 0.5 * bin_width, hi - 0.5 * bin_width, float(bin_width)
    else:
        for c in chunks():
            if not np.array_equal(c, np.rint(c)):
                raise ValueError("values are not discrete: give bin_width (calibrated) or n_bins (arbitrary units)")
        g_min = lo_all if lower is None else float(lower)
        g_max = hi_all if upper is None else float(upper)

        def discretised(c: np.ndarray) -> np.ndarray:
            return c

        step = 1.0
    if g_max < g_min:
        raise ValueError(f"upper ({g_max}) must not be below lower ({g_min})")
    n_steps = int(round((g_max - g_min) / step)) + 1
    counts = np.zeros(n_steps, dtype=np.int64)
    for c in chunks():
        if n_bins is not None and hi_all > lo_all:
            # the same bin as below (bin number floor(n (c - lo) / span) + 1, capped at n, minus 1), in place in
            # the float64 chunk: a third of the passes over it
            c -= lo_all
            c *= n_bins
            c /= hi_all - lo_all
            np.floor(c, out=c)
            k = c.astype(np.int64)
            np.minimum(k, n_steps - 1, out=k)
        else:
            k = np.clip(np.rint((discretised(c) - g_min) / step).astype(np.int64), 0, n_steps - 1)
        counts += np.bincount(k, minlength=n_steps)
    below = np.concatenate(([0], np.cumsum(counts)[:-1]))
    volume_fraction = 1.0 - below / x.size
    intensities = g_min + step * np.arange(n_steps)
    span = g_max - g_min
    intensity_fraction = (intensities - g_min) / span if span > 0 else np.zeros(n_steps)
    return intensities, intensity_fraction, volume_fraction


def ivh_features(
    values: np.ndarray,
    *,
    bin_width: float | None = None,
    lower: float | None = None,
    upper: float | None = None,
    n_bins: int | None = None,
) -> list[FeatureValue]:
    """IBSI intensity-volume histogram features (V10, V90, I10, I90, their differences, area under the curve).

    Parameters
    ----------
    values : (N,) ndarray
        Intensities of the ROI intensity mask, in the image's unit.
    bin_width, lower, upper, n_bins
        The IVH's own discretisation, see :func:`ivh_curve`.

    Returns
    -------
    list of FeatureValue
        Family "intensity-volume histogram": volume fractions at 10 % / 90 % intensity (largest nu with
        gamma >= x), intensities at 10 % / 90 % volume (smallest i with nu <= x; in the image's unit), the two
        differences and "area under the IVH curve" (trapezoidal over gamma).
    """
    intensities, gamma, nu = ivh_curve(values, bin_width=bin_width, lower=lower, upper=upper, n_bins=n_bins)

    def volume_at(fraction: float) -> float:
        sel = gamma >= fraction - 1e-12
        return float(nu[sel].max()) if sel.any() else 0.0

    def intensity_at(fraction: float) -> float:
        sel = nu <= fraction + 1e-12
        # No intensity of the range leaves at most `fraction` of the volume: the top of the range plus one step.
        step = intensities[1] - intensities[0] if intensities.size > 1 else 1.0
        return float(intensities[sel].min()) if sel.any() else float(intensities[-1] + step)

    v10, v90 = volume_at(0.10), volume_at(0.90)
    i10, i90 = intensity_at(0.10), intensity_at(0.90)
    auc = float(np.trapezoid(nu, gamma)) if intensities.size > 1 and gamma[-1] > 0 else 0.0
    return [
        FeatureValue(_IVH, "volume fraction at 10% intensity", "", v10),
        FeatureValue(_IVH, "volume fraction at 90% intensity", "", v90),
        FeatureValue(_IVH, "intensity at 10% volume", "", i10),
        FeatureValue(_IVH, "intensity at 90% volume", "", i90),
        FeatureValue(_IVH, "volume fraction difference between 10% and 90% intensity", "", v10 - v90),
        FeatureValue(_IVH, "intensity difference between 10% and 90% volume", "", i10 - i90),
        FeatureValue(_IVH, "area under the IVH curve", "", auc),
    ]
