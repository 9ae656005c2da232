"""Timing of the IBSI non-texture families on a CT-sized synthetic case.

Run ``python -m dicomnode.bench.radiomics_nontexture`` (add ``--help`` for options). Builds a 512x512x300 float32
CT-like volume (0.8 x 0.8 x 1.5 mm, noise around soft tissue, a textured 100 mL sphere) and times each family on the
native grid and after IBSI config-C-style processing (3D, 2 mm, trilinear, rounding, re-segmentation
[-1000, 400] HU, FBS 25 HU, IVH FBS 2.5 HU). Prints seconds per step and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable

import numpy as np

from dicomnode.analysis.features.discretise import discretise_fixed_bin_size
from dicomnode.analysis.features.histogram import histogram_features, ivh_features
from dicomnode.analysis.features.intensity import PEAK_RADIUS_MM, local_intensity_features, statistics_features
from dicomnode.analysis.features.morphology import morphology_features
from dicomnode.analysis.features.processing import crop_to_roi, resample, resegment


def synthetic_ct(
    shape: tuple[int, int, int] = (300, 512, 512),
    spacing_mm: tuple[float, float, float] = (1.5, 0.8, 0.8),
    *,
    volume_ml: float = 100.0,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """A float32 CT-like volume in HU and a boolean sphere mask of `volume_ml` mL at its centre."""
    image = np.empty(shape, dtype=np.float32)
    for k in range(shape[0]):  # slice by slice: no float64 temporary of the whole volume
        image[k] = rng.normal(40.0, 20.0, size=shape[1:])
    radius_mm = (3.0 * volume_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
    centre = [(n - 1) / 2.0 for n in shape]
    axes = [(((np.arange(n) - c) * s) ** 2).astype(np.float32) for n, c, s in zip(shape, centre, spacing_mm)]
    mask = np.empty(shape, dtype=bool)
    for k in range(shape[0]):  # slice by slice: no 78M-voxel float temporary
        mask[k] = axes[0][k] + axes[1][:, None] + axes[2][None, :] <= radius_mm**2
    image[mask] += rng.normal(60.0, 80.0, size=int(mask.sum())).astype(np.float32)
    np.rint(image, out=image)
    return image, mask


def _timed(label: str, fn: Callable[[], object], timings: list[tuple[str, float]]) -> object:
    start = time.perf_counter()
    result = fn()
    timings.append((label, time.perf_counter() - start))
    return result


def run_case(image: np.ndarray, mask: np.ndarray, spacing: tuple[float, float, float], *, resample_mm: float | None):
    """Time all non-texture families on one case; returns [(step, seconds)]."""
    timings: list[tuple[str, float]] = []
    if resample_mm is not None:
        image, mask, grid = _timed(
            "resample (crop + trilinear + pv 0.5 + rounding)",
            lambda: resample(image, mask, spacing, new_spacing_mm=resample_mm, order=1, round_intensities=True,
                             crop_margin_mm=PEAK_RADIUS_MM + 2 * resample_mm),
            timings,
        )
        spacing = grid.spacing_mm
    else:
        margin = tuple(int(np.ceil(PEAK_RADIUS_MM / s)) + 1 for s in spacing)
        image, mask, _ = _timed("crop to ROI + margin", lambda: crop_to_roi(image, mask, margin_voxels=margin),
                                timings)
    imask = _timed("re-segmentation [-1000, 400] HU", lambda: resegment(image, mask, lower=-1000, upper=400), timings)
    values = image[imask]
    _timed("morphology (incl. exact Moran/Geary)",
           lambda: morphology_features(mask, spacing, image=image, intensity_mask=imask), timings)
    _timed("local intensity", lambda: local_intensity_features(image, imask, spacing), timings)
    _timed("intensity statistics", lambda: statistics_features(values), timings)

    def hist():
        levels = discretise_fixed_bin_size(values, bin_size=25.0, lower=-1000.0)
        return histogram_features(levels, int(levels.max()))

    _timed("intensity histogram (FBS 25 HU)", hist, timings)
    _timed("IVH (FBS 2.5 HU from -1000)", lambda: ivh_features(values, bin_width=2.5, lower=-1000, upper=400),
           timings)
    return timings, int(mask.sum())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volume-ml", type=float, default=100.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full-grid", action="store_true",
                        help="also time resampling the whole volume without cropping (trilinear and tricubic)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    spacing = (1.5, 0.8, 0.8)
    t0 = time.perf_counter()
    image, mask = synthetic_ct(spacing_mm=spacing, volume_ml=args.volume_ml, rng=rng)
    print(f"synthetic volume {image.shape} {image.dtype}, ROI {int(mask.sum())} voxels, built in "
          f"{time.perf_counter() - t0:.2f} s; peak RSS so far {_peak_rss_gb():.2f} GB")
    for label, res in (("native 0.8x0.8x1.5 mm", None), ("resampled to 2 mm (config C style)", 2.0)):
        timings, n = run_case(image, mask, spacing, resample_mm=res)
        total = sum(t for _, t in timings)
        print(f"\n{label}: ROI {n} voxels, total {total:.3f} s")
        for step, seconds in timings:
            print(f"  {step:<50s} {seconds:7.3f} s")
    if args.full_grid:
        for order in (1, 3):
            start = time.perf_counter()
            out, _, _ = resample(image, mask, spacing, new_spacing_mm=2.0, order=order, round_intensities=True)
            print(f"whole-volume resample to 2 mm, order {order}, no crop: {time.perf_counter() - start:.2f} s, "
                  f"output {out.shape}")
            del out
    print(f"\npeak RSS (whole process, incl. the 300 MB input volume and its mask): {_peak_rss_gb():.2f} GB")


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


if __name__ == "__main__":
    main()
