"""``dicomnode bench analysis``: the default CT profile on a synthetic 512 x 512 x 300 chest phantom.

Builds the phantom (0.8 x 0.8 x 1.5 mm: body with a fat layer, two lungs, a spine, a patient table, Gaussian
noise), runs a profile (default: the shipped ``ct`` profile, every step of it, through the same pipeline runner the
node uses) and prints one JSON object: per step the wall time and the peak RSS during the step, the total, the peak
RSS as a multiple of the float32 volume, and the segment volumes. Targets (issue "Analysis chain, part 1"): the
whole CT profile <= 10 s on 2 cores, peak RSS <= 6x the float32 volume.

Example::

    dicomnode bench analysis [--profile ct] [--shape 300,512,512]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

import numpy as np

__all__ = ["main", "make_ct_phantom"]

AIR_HU, SOFT_HU, FAT_HU, LUNG_HU, BONE_HU, TABLE_HU = -1000.0, 40.0, -100.0, -850.0, 700.0, 100.0


def make_ct_phantom(shape: tuple[int, int, int], spacing_mm: tuple[float, float, float], *,
                    rng: np.random.Generator, noise_hu: float = 20.0,
                    with_truth: bool = True) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A synthetic chest CT in HU with its ground truth.

    An ellipsoidal body (soft tissue 40 HU, truncated by the first and last slice) with a 10%-of-width
    subcutaneous fat layer (-100 HU), two ellipsoidal lungs (-850 HU) left and right of the midline, a
    cylindrical spine (700 HU) behind them, and a thin patient table (100 HU) under the body, separated from it by
    an air gap; air is -1000 HU; Gaussian noise of SD ``noise_hu`` on top. The geometry scales with the field of
    view. Axes (z, y, x) with the standard axial orientation (identity direction): column index increases towards
    the patient's left, row index towards posterior.

    Parameters
    ----------
    shape : (int, int, int)
        (Z, Y, X) voxels.
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x), in mm.
    rng : numpy.random.Generator
        Noise source.
    noise_hu : float, optional
        Noise SD in HU. Default 20.
    with_truth : bool, optional
        Also return the truth masks (six bool volumes). Default True.

    Returns
    -------
    image : (Z, Y, X) ndarray of float32
        HU.
    truth : dict of str to (Z, Y, X) bool ndarray
        ``body``, ``lung_left``, ``lung_right``, ``bone``, ``adipose_tissue``, ``soft_tissue``, ``table``
        (empty dict when ``with_truth`` is False).
    """
    nz, ny, nx = shape
    dz, dy, dx = spacing_mm
    fov_x, fov_y, fov_z = nx * dx, ny * dy, nz * dz
    s = min(fov_x, fov_y) / 410.0  # geometry designed for a 410 mm field of view
    ax, ay, az = 170 * s, 115 * s, 0.9 * fov_z  # body semi-axes (z: truncated by the field of view)
    fat_mm = 15 * s
    lung_ax, lung_ay, lung_az, lung_x, lung_y = 45 * s, 60 * s, 0.25 * fov_z, 80 * s, -10 * s
    spine_r, spine_y = 18 * s, 80 * s
    table_top, table_thick, table_half_w = ay + 10 * s, 8 * s, 190 * s
    x = ((np.arange(nx) - (nx - 1) / 2) * dx)[None, :]
    y = ((np.arange(ny) - (ny - 1) / 2) * dy)[:, None]
    image = np.empty(shape, dtype=np.float32)
    names = ("body", "lung_left", "lung_right", "bone", "adipose_tissue", "soft_tissue", "table")
    truth = {n: np.zeros(shape, dtype=bool) for n in names} if with_truth else {}
    for k in range(nz):
        z = (k - (nz - 1) / 2) * dz
        rz = 1 - (z / az) ** 2
        body = (x / ax) ** 2 + (y / ay) ** 2 <= rz
        inner = (x / (ax - fat_mm)) ** 2 + (y / (ay - fat_mm)) ** 2 <= 1 - (z / (az - fat_mm)) ** 2
        lz = 1 - (z / lung_az) ** 2
        lung_l = ((x - lung_x) / lung_ax) ** 2 + ((y - lung_y) / lung_ay) ** 2 <= lz  # +x: patient's left
        lung_r = ((x + lung_x) / lung_ax) ** 2 + ((y - lung_y) / lung_ay) ** 2 <= lz
        spine = (x ** 2 + (y - spine_y) ** 2 <= spine_r ** 2) & inner
        table = (np.abs(x) <= table_half_w) & (y >= table_top) & (y < table_top + table_thick)
        sl = np.full((ny, nx), AIR_HU, dtype=np.float32)
        sl[table] = TABLE_HU
        sl[body] = FAT_HU
        sl[inner] = SOFT_HU
        sl[lung_l | lung_r] = LUNG_HU
        sl[spine] = BONE_HU
        image[k] = sl
        if with_truth:
            truth["body"][k] = body
            truth["lung_left"][k] = lung_l
            truth["lung_right"][k] = lung_r
            truth["bone"][k] = spine
            truth["adipose_tissue"][k] = body & ~inner
            truth["soft_tissue"][k] = inner & ~(lung_l | lung_r | spine)
            truth["table"][k] = table
    if noise_hu > 0:
        for k in range(nz):  # slice by slice: no float64 or full-size temporary
            image[k] += rng.standard_normal((ny, nx), dtype=np.float32) * np.float32(noise_hu)
    return image, truth


def main(argv: Sequence[str] | None = None) -> int:
    from dicomnode.analysis.pipeline import Context, run_steps
    from dicomnode.analysis.volume import Volume
    from dicomnode.config import load_config
    from dicomnode.obs.memory import PeakRSS, rss_mb
    from dicomnode.steps import registry

    ap = argparse.ArgumentParser(prog="dicomnode bench analysis", description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="ct", help="profile name (shipped or from --config); default ct")
    ap.add_argument("--config", help="node configuration with [profiles.NAME] tables")
    ap.add_argument("--shape", default="300,512,512", help="Z,Y,X voxels")
    ap.add_argument("--spacing-mm", default="1.5,0.8,0.8", help="z,y,x mm")
    ap.add_argument("--noise-hu", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    shape = tuple(int(x) for x in a.shape.split(","))
    spacing = tuple(float(x) for x in a.spacing_mm.split(","))
    cfg = load_config(a.config)
    registry()
    profile = cfg.profiles[a.profile]
    t0 = time.perf_counter()
    image, _ = make_ct_phantom(shape, spacing, rng=np.random.default_rng(a.seed), noise_hu=a.noise_hu,
                               with_truth=False)
    image = np.round(image, out=image)  # a scanner stores integer HU (int16 + rescale): so does the phantom
    build_s = time.perf_counter() - t0
    vol = Volume(image, spacing, modality="CT", unit="HU")
    base_mb = rss_mb()
    ctx = Context(volume=vol, original=vol)
    t0 = time.perf_counter()
    records = run_steps(ctx, profile.steps, profile.params, meter=PeakRSS)
    total = time.perf_counter() - t0
    volume_mb = image.nbytes / 2**20
    peak = max([r.peak_rss_mb for r in records] + [base_mb])
    out = {
        "bench": "analysis",
        "profile": profile.name,
        "steps_in_profile": list(profile.steps),
        "shape_zyx": list(shape),
        "spacing_mm_zyx": list(spacing),
        "phantom_build_seconds": round(build_s, 3),
        "steps": [{"name": r.name, "seconds": r.seconds, "peak_rss_mb": r.peak_rss_mb, "ok": r.ok} for r in records],
        "total_seconds": round(total, 3),
        "rss_before_mb": round(base_mb, 1),
        "peak_rss_mb": round(peak, 1),
        "float32_volume_mb": round(volume_mb, 1),
        "peak_rss_over_volume": round(peak / volume_mb, 2),
        "targets": {"total_seconds": 10.0, "peak_rss_over_volume": 6.0},
        "segments_ml": {s.info.label: round(float(s.mask.sum()) * float(np.prod(spacing)) / 1000.0, 1)
                        for s in ctx.labels.segments},
        "findings": len(ctx.findings),
        "scene": (ctx.scene or {}).get("label"),
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
