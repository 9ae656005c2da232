"""``dicomnode bench analysis``: every shipped profile on a synthetic series of its kind, in voxels per second.

Phantoms:

* ``ct``: a 512 x 512 x 300 chest CT in HU (0.8 x 0.8 x 1.5 mm: body with a fat layer, two lungs, a spine, a
  patient table, Gaussian noise);
* ``pet``: a 170 x 170 x 550 whole-body FDG PET in SUV (4.07 x 4.07 x 3.27 mm, head to feet: brain, heart, liver,
  kidneys and bladder with physiological uptake, lungs and legs, five focal lesions, noise growing with the
  activity, then the scanner's smoothing);
* ``mr``: a 384 x 384 x 160 T1-weighted abdomen MR (1 x 1 x 3 mm: bright fat, liver, spleen, kidneys, spine,
  muscle, a smooth bias field and Rician noise).

Each profile runs in a fresh Python process (so that its peak RSS is its own; with ``--warm`` first once on a
half-resolution phantom of its kind, so that modules are imported and models loaded, as in a job process of the node
from its second series on), with the job processes' allocation policy and the heap trimmed between steps
(:mod:`dicomnode.jobs.workerproc`), through the same pipeline runner the node uses: ``ct`` on the CT phantom, ``pet`` on
the PET phantom, ``mr`` and ``generic`` on the MR phantom. One JSON
object is printed: the CPU model, and per profile the per-step wall time and peak RSS, the total, voxels per second
and its ratio to the CT profile's (also per CPU second, which a machine shared with other work distorts less), the
peak RSS as a multiple of the float32 volume (of the whole process, and of
what the run added above the process before it), the process's RSS once the configuration and the step modules are
imported (``rss_after_imports_mb``, before any phantom: a fixed cost that a job process pays too, and that counts
in the whole-process figure; the libraries a step alone needs, such as scikit-learn for the segment and scene
steps, are imported when that step first runs and count in its peak from then on), and the segment volumes.

Targets (issue 13): every shipped profile >= 0.6x the CT profile's voxels per second in the same run; peak RSS <= 6x
the float32 volume.

Example::

    dicomnode bench analysis                       # all shipped profiles
    dicomnode bench analysis --profile ct [--shape 300,512,512]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence

import numpy as np

__all__ = ["PHANTOM_OF_PROFILE", "main", "make_ct_phantom", "make_mr_phantom", "make_pet_phantom"]

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


def _paint_ellipsoid(image: np.ndarray, spacing_mm: tuple[float, float, float], centre_mm: Sequence[float],
                     semi_mm: Sequence[float], value: float) -> None:
    """Set ``value`` inside an axis-aligned ellipsoid (centre and semi-axes in mm along z, y, x), in place."""
    box = []
    for c, r, s, n in zip(centre_mm, semi_mm, spacing_mm, image.shape):
        lo, hi = max(0, int((c - r) / s) - 1), min(n, int((c + r) / s) + 2)
        box.append(slice(lo, max(lo, hi)))
    grids = np.ogrid[tuple(box)]
    d = sum(((g + 0.5) * s - c) ** 2 / (r * r) for g, s, c, r in zip(grids, spacing_mm, centre_mm, semi_mm))
    image[tuple(box)][d <= 1.0] = value


def make_pet_phantom(shape: tuple[int, int, int] = (550, 170, 170),
                     spacing_mm: tuple[float, float, float] = (3.27, 4.07, 4.07), *,
                     rng: np.random.Generator) -> np.ndarray:
    """A whole-body FDG PET in SUV, feet (z index 0) to head, with physiological uptake and five lesions.

    Soft tissue SUV 0.7, muscle of the legs 0.6, lungs 0.35, liver 2.3, kidneys 4, bladder 35, myocardium 5,
    brain 9; lesions of SUV 5-10 (a lung nodule, a neck node, a liver lesion, a para-aortic node, a thigh mass).
    Poisson-like noise (SD proportional to the square root of the activity), then a 6 mm FWHM Gaussian as the
    reconstruction gives. Geometry scales with the field of view.

    Parameters
    ----------
    shape : (int, int, int)
        (Z, Y, X) voxels.
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x), in mm.
    rng : numpy.random.Generator
        Noise source.

    Returns
    -------
    (Z, Y, X) ndarray of float32
        SUV, >= 0.
    """
    from scipy import ndimage as ndi

    nz, ny, nx = shape
    dz, dy, dx = spacing_mm
    height = nz * dz                     # feet at 0 mm, top of the head at ``height``
    s = height / 1780.0                  # designed for a 1.78 m body
    cy, cx = ny * dy / 2, nx * dx / 2
    image = np.zeros(shape, dtype=np.float32)
    y = ((np.arange(ny) + 0.5) * dy - cy)[:, None]
    x = ((np.arange(nx) + 0.5) * dx - cx)[None, :]
    for k in range(nz):
        h = (k + 0.5) * dz / s
        sl = image[k]
        if h < 850:                      # legs: two limbs, thicker at the thigh
            r = 45 + 30 * min(1.0, h / 850)
            limbs = ((x - 95 * s) ** 2 + y ** 2 <= (r * s) ** 2) | ((x + 95 * s) ** 2 + y ** 2 <= (r * s) ** 2)
            sl[limbs] = 0.6
        elif h < 1460:                   # trunk with the arms beside it
            trunk = (x / (165 * s)) ** 2 + (y / (110 * s)) ** 2 <= 1
            arms = ((np.abs(x) - 215 * s) ** 2 + y ** 2 <= (40 * s) ** 2) & (h > 820)
            sl[trunk | arms] = 0.7
        elif h < 1560:                   # neck
            sl[x ** 2 + y ** 2 <= (55 * s) ** 2] = 0.8
        elif h < 1780:                   # head
            hz = (h - 1665) / 115
            sl[(x / (75 * s)) ** 2 + (y / (95 * s)) ** 2 <= max(0.0, 1 - hz * hz)] = 0.8
    organs = [  # (centre z, y, x in mm from feet / the axis; semi-axes z, y, x; SUV)
        ((1350, -5, 75), (110, 70, 55), 0.35), ((1350, -5, -75), (110, 70, 55), 0.35),   # lungs
        ((1230, 0, -60), (80, 70, 90), 2.3),                                               # liver
        ((1150, 40, 70), (55, 25, 30), 4.0), ((1150, 40, -70), (55, 25, 30), 4.0),         # kidneys
        ((920, -10, 0), (35, 35, 40), 35.0),                                               # bladder
        ((1310, -20, 20), (50, 45, 50), 5.0),                                              # myocardium
        ((1680, 0, 0), (80, 80, 62), 9.0),                                                 # brain
        ((1400, 0, -80), (8, 8, 8), 6.0),                                                  # lung nodule
        ((1500, 10, 35), (7, 7, 7), 5.0),                                                  # neck node
        ((1250, 10, -40), (12, 12, 12), 7.0),                                              # liver lesion
        ((1080, 30, 20), (10, 10, 10), 6.0),                                               # para-aortic node
        ((600, 0, 100), (30, 25, 25), 10.0),                                               # thigh mass
    ]
    for (hz, oy, ox), (rz, ry, rx), suv in organs:
        _paint_ellipsoid(image, spacing_mm, (hz * s, cy + oy * s, cx + ox * s), (rz * s, ry * s, rx * s), suv)
    for k in range(nz):                  # slice by slice: no float64 or full-size temporary
        sl = image[k]
        sl += np.sqrt(sl * np.float32(0.05)) * rng.standard_normal((ny, nx), dtype=np.float32)
    ndi.gaussian_filter(image, [2.55 / v for v in spacing_mm], output=image)  # 6 mm FWHM
    np.maximum(image, 0, out=image)
    return image


def make_mr_phantom(shape: tuple[int, int, int] = (160, 384, 384),
                    spacing_mm: tuple[float, float, float] = (3.0, 1.0, 1.0), *,
                    rng: np.random.Generator) -> np.ndarray:
    """A T1-weighted abdomen MR in arbitrary units: bright fat, organs, spine, a smooth bias field, Rician noise.

    Parameters
    ----------
    shape : (int, int, int)
        (Z, Y, X) voxels.
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x), in mm.
    rng : numpy.random.Generator
        Noise source.

    Returns
    -------
    (Z, Y, X) ndarray of float32
        Magnitude (>= 0); air near 0, fat about 900, liver 500, muscle 350.
    """
    nz, ny, nx = shape
    dz, dy, dx = spacing_mm
    s = min(ny * dy, nx * dx) / 384.0
    cz, cy, cx = nz * dz / 2, ny * dy / 2, nx * dx / 2
    image = np.zeros(shape, dtype=np.float32)
    y = ((np.arange(ny) + 0.5) * dy - cy)[:, None]
    x = ((np.arange(nx) + 0.5) * dx - cx)[None, :]
    body = (x / (170 * s)) ** 2 + (y / (120 * s)) ** 2 <= 1
    inner = (x / (150 * s)) ** 2 + (y / (100 * s)) ** 2 <= 1
    for k in range(nz):
        image[k][body] = 900.0
        image[k][inner] = 350.0
    organs = [  # (centre z, y, x offsets in mm; semi-axes; intensity)
        ((0, -10, -60), (70, 65, 75), 500.0),     # liver
        ((20, 10, 80), (45, 35, 35), 420.0),      # spleen
        ((-40, 45, 65), (50, 25, 28), 300.0),     # kidneys
        ((-40, 45, -65), (50, 25, 28), 300.0),
        ((0, 70, 0), (240, 18, 18), 650.0),       # vertebral bodies (fatty marrow)
        ((10, -20, 10), (30, 20, 20), 150.0),     # a cyst-like lesion
    ]
    for (oz, oy, ox), (rz, ry, rx), v in organs:
        _paint_ellipsoid(image, spacing_mm, (cz + oz * s, cy + oy * s, cx + ox * s), (rz * s, ry * s, rx * s), v)
    bias = (1.0 + 0.2 * np.cos(np.pi * x / (nx * dx)) * np.cos(np.pi * y / (ny * dy))).astype(np.float32)
    for k in range(nz):
        sl = image[k]
        sl *= bias
        re = sl + rng.standard_normal((ny, nx), dtype=np.float32) * np.float32(25.0)
        im = rng.standard_normal((ny, nx), dtype=np.float32) * np.float32(25.0)
        image[k] = np.sqrt(re * re + im * im)
    return image


#: Which phantom each shipped profile runs on.
PHANTOM_OF_PROFILE = {"ct": "ct", "pet": "pet", "mr": "mr", "generic": "mr"}
_MODALITY = {"ct": ("CT", "HU"), "pet": ("PT", "SUV"), "mr": ("MR", "")}
_DEFAULT_GEOMETRY = {"ct": ("300,512,512", "1.5,0.8,0.8"), "pet": ("550,170,170", "3.27,4.07,4.07"),
                     "mr": ("160,384,384", "3.0,1.0,1.0")}


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (else platform.processor())."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _parse3(text: str, what: str, kind: type) -> tuple:
    parts = text.split(",")
    if len(parts) != 3:
        raise SystemExit(f"dicomnode bench analysis: {what} {text!r}: give three comma-separated numbers Z,Y,X")
    return tuple(kind(v) for v in parts)


def _build(phantom: str, shape: tuple[int, int, int], spacing: tuple[float, float, float], rng: np.random.Generator,
           noise_hu: float) -> np.ndarray:
    if phantom == "ct":
        image, _ = make_ct_phantom(shape, spacing, rng=rng, noise_hu=noise_hu, with_truth=False)
        return np.round(image, out=image)  # a scanner stores integer HU (int16 + rescale): so does the phantom
    if phantom == "pet":
        return make_pet_phantom(shape, spacing, rng=rng)
    return make_mr_phantom(shape, spacing, rng=rng)


def run_one(profile_name: str, phantom: str, shape: tuple[int, int, int], spacing: tuple[float, float, float], *,
            config: str | None = None, seed: int = 0, noise_hu: float = 20.0, warm: bool = False) -> dict:
    """Build one phantom and run one profile over it in this process; return its figures.

    With ``warm`` the profile first runs once over the same kind of phantom at half the resolution
    (an eighth of the voxels; a series under 64 voxels along an axis at its own size; its wall time is reported as
    ``warmup_seconds``), so that the timed run sees what a
    job process of the node sees from its second series on: modules imported, models loaded and cached."""
    from dicomnode.analysis.pipeline import Context, run_steps
    from dicomnode.analysis.threads import pin_blas_threads
    from dicomnode.analysis.volume import Volume
    from dicomnode.config import load_config
    from dicomnode.jobs.workerproc import release_free_memory, tune_malloc
    from dicomnode.obs.memory import PeakRSS, rss_mb
    from dicomnode.steps import registry

    tune_malloc()  # as a job process (jobs.chain.run_chain): its allocation policy, and the heap trimmed between steps
    pin_blas_threads()  # as a job process: one BLAS thread
    cfg = load_config(config)
    registry()
    imports_mb = rss_mb()  # the process with the configuration and every step module imported, before any phantom
    if profile_name not in cfg.profiles:
        raise SystemExit(f"dicomnode bench analysis: --profile {profile_name!r}: no such profile; use one of "
                         f"{', '.join(sorted(cfg.profiles))}")
    profile = cfg.profiles[profile_name]
    modality, unit = _MODALITY[phantom]
    warmup_s, warmup_error = None, None
    if warm:
        half = tuple(n // 2 for n in shape)
        small = half if min(half) >= 32 else shape  # a tiny series (tests) warms up on its own size
        small_sp = tuple(s * n / m for s, n, m in zip(spacing, shape, small))
        img_w = _build(phantom, small, small_sp, np.random.default_rng(seed + 1), noise_hu)
        vol_w = Volume(img_w, small_sp, modality=modality, unit=unit)
        t0 = time.perf_counter()
        try:
            run_steps(Context(volume=vol_w, original=vol_w), profile.steps, profile.params,
                      between_steps=release_free_memory)
        except Exception as e:  # noqa: BLE001 - the timed run below reports a real failure; this one is noted
            warmup_error = f"{type(e).__name__}: {e}"
        warmup_s = round(time.perf_counter() - t0, 3)
        del img_w, vol_w
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    image = _build(phantom, shape, spacing, rng, noise_hu)
    build_s = time.perf_counter() - t0
    vol = Volume(image, spacing, modality=modality, unit=unit)
    base_mb = rss_mb()
    ctx = Context(volume=vol, original=vol)
    cpu: list[float] = []

    class Meter(PeakRSS):
        """PeakRSS that also records the process CPU time of the step (all threads), for a busy machine."""

        def __enter__(self) -> "Meter":
            self._cpu0 = time.process_time()
            return super().__enter__()

        def __exit__(self, *exc: object) -> None:
            super().__exit__(*exc)
            cpu.append(time.process_time() - self._cpu0)

    t0 = time.perf_counter()
    c0 = time.process_time()
    records = run_steps(ctx, profile.steps, profile.params, meter=Meter, between_steps=release_free_memory)
    total = time.perf_counter() - t0
    total_cpu = time.process_time() - c0
    volume_mb = image.nbytes / 2**20
    peak = max([r.peak_rss_mb for r in records] + [base_mb])
    voxels = int(np.prod(shape))
    return {
        "profile": profile.name,
        "phantom": phantom,
        "steps_in_profile": list(profile.steps),
        "shape_zyx": list(shape),
        "spacing_mm_zyx": list(spacing),
        "voxels": voxels,
        "phantom_build_seconds": round(build_s, 3),
        "warm": warm,
        "warmup_seconds": warmup_s,
        "warmup_error": warmup_error,
        "steps": [{"name": r.name, "seconds": r.seconds, "cpu_seconds": round(c, 3), "peak_rss_mb": r.peak_rss_mb,
                   "ok": r.ok} for r, c in zip(records, cpu)],
        "total_seconds": round(total, 3),
        "total_cpu_seconds": round(total_cpu, 3),
        "voxels_per_second": round(voxels / total),
        "voxels_per_cpu_second": round(voxels / total_cpu),
        "rss_after_imports_mb": round(imports_mb, 1),
        "imports_over_volume": round(imports_mb / volume_mb, 2),
        "rss_before_mb": round(base_mb, 1),
        "peak_rss_mb": round(peak, 1),
        "float32_volume_mb": round(volume_mb, 1),
        "peak_rss_over_volume": round(peak / volume_mb, 2),
        "added_rss_over_volume": round((peak - base_mb) / volume_mb, 2),
        "segments_ml": {s.info.label: round(float(s.mask.sum()) * float(np.prod(spacing)) / 1000.0, 1)
                        for s in ctx.labels.segments},
        "findings": len(ctx.findings),
        "scene": (ctx.scene or {}).get("label"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="dicomnode bench analysis", description=__doc__.splitlines()[0])
    ap.add_argument("--profile", action="append", default=[],
                    help="profile to run (repeatable; shipped or from --config); default: ct, pet, mr, generic")
    ap.add_argument("--phantom", choices=("ct", "pet", "mr"),
                    help="phantom for every --profile (default: ct for ct, pet for pet, mr for the others)")
    ap.add_argument("--config", help="node configuration with [profiles.NAME] tables")
    ap.add_argument("--shape", help="Z,Y,X voxels of the CT phantom (default 300,512,512)")
    ap.add_argument("--spacing-mm", help="z,y,x mm of the CT phantom (default 1.5,0.8,0.8)")
    ap.add_argument("--pet-shape", default=_DEFAULT_GEOMETRY["pet"][0])
    ap.add_argument("--pet-spacing-mm", default=_DEFAULT_GEOMETRY["pet"][1])
    ap.add_argument("--mr-shape", default=_DEFAULT_GEOMETRY["mr"][0])
    ap.add_argument("--mr-spacing-mm", default=_DEFAULT_GEOMETRY["mr"][1])
    ap.add_argument("--noise-hu", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warm", action="store_true",
                    help="run each profile once on a half-resolution phantom first, so that the timed run does not "
                         "pay the first imports and model loads (a job process of the node from its second series "
                         "on); default: a fresh process, as the figures of issue 13 were measured")
    ap.add_argument("--in-process", action="store_true",
                    help="run the profiles in this process (peak RSS then includes the earlier runs)")
    ap.add_argument("--_one", help=argparse.SUPPRESS)  # internal: one profile in a fresh process, JSON out
    a = ap.parse_args(argv)
    geometry = {"ct": (_parse3(a.shape or _DEFAULT_GEOMETRY["ct"][0], "--shape", int),
                       _parse3(a.spacing_mm or _DEFAULT_GEOMETRY["ct"][1], "--spacing-mm", float)),
                "pet": (_parse3(a.pet_shape, "--pet-shape", int), _parse3(a.pet_spacing_mm, "--pet-spacing-mm", float)),
                "mr": (_parse3(a.mr_shape, "--mr-shape", int), _parse3(a.mr_spacing_mm, "--mr-spacing-mm", float))}
    if a._one:
        name, phantom = a._one.split(":")
        print(json.dumps(run_one(name, phantom, *geometry[phantom], config=a.config, seed=a.seed,
                                 noise_hu=a.noise_hu, warm=a.warm)))
        return 0
    profiles = a.profile or list(PHANTOM_OF_PROFILE)
    runs = []
    for name in profiles:
        phantom = a.phantom or PHANTOM_OF_PROFILE.get(name, "mr")
        if a.in_process:
            runs.append(run_one(name, phantom, *geometry[phantom], config=a.config, seed=a.seed, noise_hu=a.noise_hu,
                                warm=a.warm))
            continue
        cmd = [sys.executable, "-m", "dicomnode.bench.analysis", "--_one", f"{name}:{phantom}", "--seed", str(a.seed),
               "--noise-hu", str(a.noise_hu)] + (["--warm"] if a.warm else [])
        for opt, val in (("--shape", a.shape), ("--spacing-mm", a.spacing_mm), ("--pet-shape", a.pet_shape),
                         ("--pet-spacing-mm", a.pet_spacing_mm), ("--mr-shape", a.mr_shape),
                         ("--mr-spacing-mm", a.mr_spacing_mm), ("--config", a.config)):
            if val:
                cmd += [opt, val]
        p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if p.returncode != 0:
            print(p.stderr, file=sys.stderr)
            return p.returncode
        runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
    ct_vps = next((r["voxels_per_second"] for r in runs if r["profile"] == "ct"), None)
    ct_cpu = next((r["voxels_per_cpu_second"] for r in runs if r["profile"] == "ct"), None)
    for r in runs:
        r["ratio_to_ct"] = round(r["voxels_per_second"] / ct_vps, 3) if ct_vps else None
        r["cpu_ratio_to_ct"] = round(r["voxels_per_cpu_second"] / ct_cpu, 3) if ct_cpu else None
    out = {
        "bench": "analysis",
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),  # a busy machine stretches wall times: see cpu_seconds
        "python": platform.python_version(),
        "numpy": np.__version__,
        "warm": a.warm,
        "runs": runs,
        "targets": {"ratio_to_ct_min": 0.6, "peak_rss_over_volume_max": 6.0},
        "met": {r["profile"]: {"ratio_to_ct": None if r["ratio_to_ct"] is None else r["ratio_to_ct"] >= 0.6,
                               "peak_rss_over_volume": r["peak_rss_over_volume"] <= 6.0} for r in runs},
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
