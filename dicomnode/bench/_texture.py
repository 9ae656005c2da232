"""Timing of the texture families on a synthetic CT (developer tool, not a test; private).

``python -m dicomnode.bench._texture [--repeat R]`` builds a 512 x 512 x 300 int16 CT (0.8 x 0.8 x 1.5 mm)
with a ~100 mL ellipsoidal region of textured soft tissue, discretises the region with fixed bin number 32 and fixed
bin size 25 HU (from -1000 HU), and times each family with all its aggregations on the native grid. It prints the
seconds per family, the peak of numpy memory traced during the texture call (tracemalloc) and the process peak RSS.
Nothing is read from or written to disk.
"""

from __future__ import annotations

import resource
import time
import tracemalloc

import numpy as np
from scipy import ndimage as ndi

from dicomnode.analysis.features.texture import FAMILIES, texture_features

SHAPE = (300, 512, 512)
SPACING_MM = (1.5, 0.8, 0.8)
VOLUME_ML = 100.0


def synthetic_ct(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(Z, Y, X) int16 HU image and bool mask of a ~100 mL ellipsoid (a sphere in mm) at the volume centre."""
    radius_mm = (3 * VOLUME_ML * 1000 / (4 * np.pi)) ** (1 / 3)
    image = np.full(SHAPE, -1000, dtype=np.int16)
    centre = [s // 2 for s in SHAPE]
    half = [int(np.ceil(radius_mm / sp)) + 4 for sp in SPACING_MM]
    box = tuple(slice(c - h, c + h + 1) for c, h in zip(centre, half))
    grid = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    r2 = sum((g * sp) ** 2 for g, sp in zip(grid, SPACING_MM))
    mask = np.zeros(SHAPE, dtype=bool)
    mask[box] = r2 <= radius_mm ** 2
    noise = ndi.gaussian_filter(rng.normal(0.0, 1.0, size=mask[box].shape), sigma=(1.0, 1.5, 1.5))
    tissue = 40 + 180 * noise / noise.std() + 30 * rng.normal(size=noise.shape)
    image[box] = np.where(mask[box], np.clip(tissue, -1000, 3000), image[box]).astype(np.int16)
    return image, mask


def discretise(image: np.ndarray, mask: np.ndarray, *, n_bins: int | None = None,
               bin_size_hu: float | None = None, lower_hu: float = -1000.0) -> tuple[np.ndarray, int]:
    """Grey levels over the whole array (values outside the mask meaningless) and N_g."""
    roi = image[mask].astype(np.float64)
    levels = np.zeros(image.shape, dtype=np.int32)
    if n_bins is not None:
        lo, hi = roi.min(), roi.max()
        lv = np.minimum(np.floor(n_bins * (roi - lo) / (hi - lo)).astype(np.int32) + 1, n_bins)
        levels[mask] = lv
        return levels, n_bins
    lv = np.floor((roi - lower_hu) / bin_size_hu).astype(np.int32) + 1
    first = lv.min()
    levels[mask] = lv - first + 1  # a texture matrix only needs the levels the region spans
    return levels, int(lv.max() - first + 1)


def bench_texture(levels: np.ndarray, mask: np.ndarray, n_levels: int, *, repeat: int = 3) -> dict[str, float]:
    """Best-of-`repeat` seconds per family (all aggregations) and for all families in one call."""
    times: dict[str, float] = {}
    for family in FAMILIES:
        times[family] = min(_timed(lambda: texture_features(levels, mask, n_levels, families=(family,)))
                            for _ in range(repeat))
    times["all six"] = min(_timed(lambda: texture_features(levels, mask, n_levels)) for _ in range(repeat))
    return times


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str]) -> None:
    repeat = int(argv[argv.index("--repeat") + 1]) if "--repeat" in argv else 3
    rng = np.random.default_rng(20261125)
    image, mask = synthetic_ct(rng)
    voxel_ml = np.prod(SPACING_MM) / 1000
    print(f"image {SHAPE} int16, spacing {SPACING_MM} mm; region {mask.sum()} voxels = "
          f"{mask.sum() * voxel_ml:.1f} mL")
    for label, kwargs in (("FBN 32", {"n_bins": 32}), ("FBS 25 HU", {"bin_size_hu": 25.0})):
        levels, n_levels = discretise(image, mask, **kwargs)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        tracemalloc.start()
        times = bench_texture(levels, mask, n_levels, repeat=repeat)
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"\n{label}: N_g = {n_levels}")
        for family, seconds in times.items():
            print(f"  {family:8s} {seconds:6.3f} s")
        print(f"  traced numpy peak during texture: {traced_peak / 2**20:.0f} MiB; process peak RSS "
              f"{rss_before:.0f} MiB before, {rss_after:.0f} MiB after")


if __name__ == "__main__":  # pragma: no cover - developer tool
    import sys

    main(sys.argv[1:])
