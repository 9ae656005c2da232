"""``dicomnode bench analysis``: time the CT analysis steps on a synthetic 512 x 512 x 300 chest phantom.

Builds the phantom (0.8 x 0.8 x 1.5 mm: body with a fat layer, two lungs, a spine, a patient table, Gaussian
noise), runs the steps named by ``--steps`` in order (default: the CT profile's ``denoise,segment,correct``), and
prints one JSON object: per step the wall time in seconds and the process's peak RSS in MB after it, plus the
segment volumes. The step list is a parameter so the pipeline's real profile can be swapped in.

Example::

    python -m dicomnode.bench.analysis --steps denoise,segment,correct
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["STEPS", "main", "make_ct_phantom"]

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


@dataclass
class _State:
    image: np.ndarray
    spacing_mm: tuple[float, float, float]
    labels: object = None
    info: dict = field(default_factory=dict)


def _step_denoise(st: _State) -> None:
    from dicomnode.analysis.denoise import gaussian

    st.image = gaussian(st.image, st.spacing_mm, sigma_mm=0.8)
    st.info["denoise"] = "gaussian sigma 0.8 mm"


def _step_segment(st: _State) -> None:
    from dicomnode.analysis.segment import segment_ct

    res = segment_ct(st.image, st.spacing_mm)
    st.labels = res.labels
    st.info["segment_notes"] = list(res.notes)


def _step_correct(st: _State) -> None:
    from dicomnode.analysis.correct import correct_labels

    st.labels, changed = correct_labels(st.labels, st.spacing_mm, min_volume_ml=0.1)
    st.info["voxels_changed"] = changed


#: name -> step; each takes the running state (image, spacing, labels) and updates it.
STEPS: dict[str, Callable[[_State], None]] = {
    "denoise": _step_denoise,
    "segment": _step_segment,
    "correct": _step_correct,
}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print JSON to stdout; return 0 (2 on a bad argument)."""
    parser = argparse.ArgumentParser(prog="dicomnode bench analysis", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="denoise,segment,correct",
                        help=f"comma-separated steps, in order, from {sorted(STEPS)} (default: %(default)s)")
    parser.add_argument("--shape", default="300,512,512", help="Z,Y,X voxels (default: %(default)s)")
    parser.add_argument("--spacing-mm", default="1.5,0.8,0.8", help="dz,dy,dx in mm (default: %(default)s)")
    parser.add_argument("--noise-hu", type=float, default=20.0, help="noise SD in HU (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        print(f"unknown step(s) {unknown}; choose from {sorted(STEPS)}", file=sys.stderr)
        return 2
    shape = tuple(int(v) for v in args.shape.split(","))
    spacing = tuple(float(v) for v in args.spacing_mm.split(","))
    if len(shape) != 3 or len(spacing) != 3:
        print("--shape and --spacing-mm need 3 comma-separated values (z, y, x)", file=sys.stderr)
        return 2

    rss0 = _peak_rss_mb()
    t0 = time.perf_counter()
    image, _ = make_ct_phantom(shape, spacing, rng=np.random.default_rng(args.seed), noise_hu=args.noise_hu,
                               with_truth=False)
    report: dict = {
        "shape_zyx": list(shape), "spacing_mm_zyx": list(spacing), "volume_mb_float32": image.nbytes / 2**20,
        "phantom_seconds": round(time.perf_counter() - t0, 3), "peak_rss_mb_before": round(rss0, 1),
        "peak_rss_mb_after_phantom": round(_peak_rss_mb(), 1), "steps": [],
    }
    st = _State(image, spacing)  # type: ignore[arg-type]
    del image  # the state owns the volume: a step that replaces it frees the old one
    total = 0.0
    for name in steps:
        t = time.perf_counter()
        STEPS[name](st)
        dt = time.perf_counter() - t
        total += dt
        report["steps"].append({"step": name, "seconds": round(dt, 3), "peak_rss_mb": round(_peak_rss_mb(), 1)})
    report["total_seconds"] = round(total, 3)
    report["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    report["peak_rss_over_volume"] = round(report["peak_rss_mb"] / report["volume_mb_float32"], 2)
    if st.labels is not None:
        vox_ml = spacing[0] * spacing[1] * spacing[2] / 1000.0
        report["volumes_ml"] = {s.info.label: round(float(np.count_nonzero(s.mask)) * vox_ml, 1)
                                for s in st.labels.segments}
        report["not_found"] = list(st.labels.not_found)
    report.update(st.info)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
