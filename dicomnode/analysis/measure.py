"""Basic per-segment measurements: volume (mL), mean and standard deviation of the intensities."""

from __future__ import annotations

import numpy as np

from dicomnode.analysis.volume import Code, Measurement

VOLUME = Code("118565006", "SCT", "Volume")
MEAN = Code("373098007", "SCT", "Mean")
STANDARD_DEVIATION = Code("386136009", "SCT", "Standard deviation")


def basic_measurements(image: np.ndarray, mask: np.ndarray, spacing_mm: tuple[float, float, float], *,
                       unit: str = "") -> list[Measurement]:
    """Volume by voxel counting, mean and (population) standard deviation of ``image`` inside ``mask``.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Intensities in the series' unit (HU for CT).
    mask : (Z, Y, X) bool ndarray
        The region.
    spacing_mm : tuple of 3 float
        Voxel spacing (z, y, x) in mm.
    unit : str, optional
        The intensities' unit: "HU" becomes UCUM ``[hnsf'U]``, "SUV" ``{SUVbw}g/ml``, anything else ``1``.

    Returns
    -------
    list of Measurement
        ``volume_ml`` (unit ``ml``), ``mean`` and ``sd`` (unit of the image). An empty mask gives volume 0 and
        NaN statistics.
    """
    if image.shape != mask.shape:
        raise ValueError(f"image shape {image.shape} and mask shape {mask.shape} differ")
    n = int(np.count_nonzero(mask))
    return measurements_of_values(image[mask] if n else image[:0, 0, 0], spacing_mm, unit=unit)


def measurements_of_values(vals: np.ndarray, spacing_mm: tuple[float, float, float], *,
                           unit: str = "") -> list[Measurement]:
    """:func:`basic_measurements` from the segment's intensities ``image[mask]`` (N,) already gathered."""
    n = int(vals.size)
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    if n:
        mean = float(vals.mean(dtype=np.float64))
        ss = 0.0
        for i in range(0, vals.size, 1 << 22):  # chunked: no full-size float64 temporary
            d = vals[i:i + (1 << 22)].astype(np.float64) - mean
            ss += float(np.dot(d, d))
        sd = float(np.sqrt(ss / n))
    else:
        mean = sd = float("nan")
    ucum = {"HU": "[hnsf'U]", "SUV": "{SUVbw}g/ml"}.get(unit, "1")
    return [
        Measurement("volume_ml", n * voxel_ml, "ml", VOLUME, "voxel counting"),
        Measurement("mean", mean, ucum, MEAN),
        Measurement("sd", sd, ucum, STANDARD_DEVIATION),
    ]
