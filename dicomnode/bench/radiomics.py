"""``dicomnode bench radiomics``: every IBSI-1 family on a 512 x 512 x 300 CT with a 100 mL region.

Builds a synthetic CT (float32 HU, 0.8 x 0.8 x 1.5 mm: soft tissue with noise, and a textured 100 mL sphere of
tumour-like tissue at the centre) and runs :func:`dicomnode.analysis.radiomics.extract_features` twice:

* ``native``: the native grid (no interpolation) with config C's intensity settings (re-segmentation [-1000, 400] HU,
  FBS 25 HU from -1000 HU, IVH FBS 2.5 HU), 3D texture;
* ``ibsi-config-C``: the shipped IBSI configuration C (trilinear to 2 mm, rounding, the same intensity settings).

A third round, ``filtered`` (IBSI-2), runs the native settings with only the intensity statistics, unfiltered and
then on the response map of each of three filters: a Laplacian of Gaussian (sigma 1.5 mm, 3D), a level-2 wavelet
(db3 HHH, 3D, rotation-invariant over 24 rotations, IBSI-2 config 7B) and a Gabor filter with 16 orientations
(sigma 5 mm, lambda 2 mm, gamma 1.5, dtheta pi/8, averaged over the three orthogonal planes, config 5B). Each
reports wall and CPU seconds and peak RSS; the filter's own cost is the difference to the unfiltered run. Targets:
each filter <= 3 s and <= 2 GB on 2 cores.

Each family runs alone in a fresh forked process (so its peak RSS is its own: the parent's image pages plus what
the family allocates), then all families together. Every time includes the crop (and interpolation) that the
family needs; ``preprocessing`` is the crop/interpolation/re-segmentation with only the intensity statistics.
Moran's I and Geary's C are exact (all voxel pairs, by FFT convolution).

Where MIRP is available (``import mirp`` here, or a Python given by ``--mirp-python``; by default the first of
``/tmp/mirpenv/bin/python`` and ``/tmp/texeng_venv/bin/python`` that imports it), the same image and mask are written
to a temporary folder (as NIfTI with the voxel spacing, via MIRP's own dependency itk) and MIRP extracts all its base families with the same settings in a subprocess; its wall time
and peak RSS are reported with the ratio MIRP / dicomnode (all families). MIRP runs with its default approximate
Moran's I / Geary's C (its exact form takes hours on the native grid, perf.md); the JSON says so.

Prints one JSON object. Example::

    python -m dicomnode.bench.radiomics            # or: dicomnode bench radiomics
    python -m dicomnode.bench.radiomics --no-mirp --shape 150,256,256
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

__all__ = ["main", "synthetic_ct"]

_MIRP_CANDIDATES = ("/tmp/mirpenv/bin/python", "/tmp/texeng_venv/bin/python")

_MIRP_SCRIPT = r"""
import json, resource, sys, time, warnings
import numpy as np
warnings.filterwarnings("ignore")
from mirp import extract_features
folder, case = sys.argv[1], sys.argv[2]
import itk
spacing = json.load(open(folder + "/spacing.json"))  # (z, y, x) mm
for name in ("image", "mask"):  # numpy input would mean 1 mm voxels to MIRP: give it NIfTI files with the spacing
    img = itk.GetImageFromArray(np.ascontiguousarray(np.load(folder + "/" + name + ".npy")))
    img.SetSpacing([float(v) for v in spacing[::-1]])  # itk: (x, y, z)
    itk.imwrite(img, folder + "/" + name + ".nii.gz")
kw = dict(
    image=folder + "/image.nii.gz", mask=folder + "/mask.nii.gz", image_modality="CT",
    base_feature_families="all",
    resegmentation_intensity_range=[-1000.0, 400.0],
    base_discretisation_method="fixed_bin_size", base_discretisation_bin_width=25.0,
    ivh_discretisation_method="fixed_bin_size", ivh_discretisation_bin_width=2.5,
    glcm_spatial_method=["3d_average", "3d_volume_merge"], glrlm_spatial_method=["3d_average", "3d_volume_merge"],
    glszm_spatial_method="3d", gldzm_spatial_method="3d", ngtdm_spatial_method="3d", ngldm_spatial_method="3d",
)
if case == "ibsi-config-C":
    kw.update(new_spacing=2.0, spline_order=1, anti_aliasing=False, roi_spline_order=1,
              roi_interpolation_mask_inclusion_threshold=0.5)
elif case.startswith("filtered:"):
    kw.update(json.loads(case[len("filtered:"):]))
    for key in ("glcm_spatial_method", "glrlm_spatial_method", "glszm_spatial_method", "gldzm_spatial_method",
                "ngtdm_spatial_method", "ngldm_spatial_method", "ivh_discretisation_method",
                "ivh_discretisation_bin_width"):
        kw.pop(key)
t0 = time.perf_counter()
result = extract_features(**kw)
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "n_features": int(result[0].shape[1])}))
"""


def synthetic_ct(shape: tuple[int, int, int] = (300, 512, 512),
                 spacing_mm: tuple[float, float, float] = (1.5, 0.8, 0.8), *, volume_ml: float = 100.0,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A float32 CT in integer HU and a boolean sphere of `volume_ml` mL at its centre.

    Background: soft tissue, 40 +/- 20 HU. Sphere: smoothed noise (correlation ~1.5 voxels) around 60 HU with an SD
    of 150 HU plus 30 HU white noise, so the texture families see structure; a few voxels fall outside the
    re-segmentation range [-1000, 400] HU.
    """
    image = np.empty(shape, dtype=np.float32)
    for k in range(shape[0]):  # slice by slice: no float64 temporary of the whole volume
        image[k] = rng.normal(40.0, 20.0, size=shape[1:])
    radius_mm = (3.0 * volume_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
    centre = [n // 2 for n in shape]
    half = [int(np.ceil(radius_mm / s)) + 2 for s in spacing_mm]
    box = tuple(slice(c - h, c + h + 1) for c, h in zip(centre, half))
    grid = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    inside = sum((g * s) ** 2 for g, s in zip(grid, spacing_mm)) <= radius_mm**2
    noise = ndi.gaussian_filter(rng.normal(size=inside.shape), sigma=(1.0, 1.5, 1.5))
    tissue = 60.0 + 150.0 * noise / noise.std() + rng.normal(0.0, 30.0, size=inside.shape)
    image[box] = np.where(inside, tissue, image[box])
    np.rint(image, out=image)
    mask = np.zeros(shape, dtype=bool)
    mask[box] = inside
    return image, mask


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _child(conn, image, mask, spacing, settings) -> None:
    from dicomnode.analysis.radiomics import extract_features

    try:
        t0, c0 = time.perf_counter(), time.process_time()
        values = extract_features(image, mask, spacing, settings)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        moran = [v.value for v in values if v.feature.startswith(("Moran", "Geary"))]
        conn.send({"seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3), "peak_rss_mb": round(_peak_rss_mb(), 1),
                   "n_values": len(values),
                   "n_nan": int(sum(not np.isfinite(v.value) for v in values)),
                   **({"moran_i_geary_c": [round(m, 6) for m in moran]} if moran else {})})
    except Exception as exc:  # noqa: BLE001 - reported in the JSON
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def _run_forked(image, mask, spacing, settings) -> dict:
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, image, mask, spacing, settings))
    proc.start()
    child.close()
    result = parent.recv()
    proc.join()
    return result


#: The filtered round's filters, as [filter] tables of the radiomics settings.
FILTERS: dict[str, dict] = {
    "laplacian_of_gaussian": {"kind": "laplacian_of_gaussian", "dimensionality": "3D", "sigma_mm": 1.5,
                              "truncate_sigma": 4.0},
    "wavelet_db3_HHH_level2": {"kind": "separable_wavelet", "dimensionality": "3D", "wavelet": "db3",
                               "wavelet_map": "HHH", "level": 2, "rotation_invariance": True, "pooling": "average"},
    "gabor_16_orientations": {"kind": "gabor", "dimensionality": "3D", "gabor_sigma_mm": 5.0, "gabor_lambda_mm": 2.0,
                              "gabor_gamma": 1.5, "rotation_invariance": True, "gabor_dtheta_rad": "pi/8",
                              "pooling": "average", "orthogonal_planes": True},
}
_FILTER_TARGET_SECONDS, _FILTER_TARGET_MB = 3.0, 2048.0


def _filtered_round(image, mask, spacing) -> dict:
    """Intensity statistics of the native grid, unfiltered and after each filter of :data:`FILTERS`."""
    from dicomnode.config.radiomics import settings_from_dict

    base = {"name": "filtered round", "resegmentation": {"range": [-1000, 400]},
            "features": {"families": ["intensity statistics"]}}
    plain = _run_forked(image, mask, spacing, settings_from_dict(base))
    out: dict = {"unfiltered": plain, "filters": {}}
    for name, table in FILTERS.items():
        r = _run_forked(image, mask, spacing, settings_from_dict({**base, "filter": table}))
        if "seconds" in r and "seconds" in plain:
            r["filter_seconds"] = round(r["seconds"] - plain["seconds"], 3)
            r["meets_target"] = bool(r["seconds"] <= _FILTER_TARGET_SECONDS and r["peak_rss_mb"] <= _FILTER_TARGET_MB)
        r["filter"] = table
        out["filters"][name] = r
    out["target"] = {"seconds_each": _FILTER_TARGET_SECONDS, "peak_rss_mb_each": _FILTER_TARGET_MB}
    out["meets_target"] = all(r.get("meets_target", False) for r in out["filters"].values())
    return out


def _find_mirp(explicit: str | None) -> tuple[str | None, str]:
    """(python executable that imports mirp, how it was found); (None, why not) when there is none."""
    if explicit:
        candidates = [explicit]
    else:
        try:
            import mirp  # noqa: F401
            return sys.executable, "importable in this interpreter"
        except ImportError:
            candidates = [c for c in _MIRP_CANDIDATES if Path(c).exists()]
    for python in candidates:
        probe = subprocess.run([python, "-c", "import importlib.metadata as m, mirp; print(m.version('mirp'))"],
                               capture_output=True, text=True, timeout=120)
        if probe.returncode == 0:
            return python, f"mirp {probe.stdout.strip()} via {python}"
    return None, "mirp not importable here nor in " + (", ".join(candidates) or "any known venv")


def _run_mirp(python: str, image: np.ndarray, mask: np.ndarray, spacing, case: str, timeout_s: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="dicomnode-bench-mirp-") as folder:
        np.save(Path(folder) / "image.npy", image)
        np.save(Path(folder) / "mask.npy", mask.astype(np.uint8))
        (Path(folder) / "spacing.json").write_text(json.dumps(list(spacing)))
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([python, "-c", _MIRP_SCRIPT, folder, case], capture_output=True, text=True,
                                  timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout_s} s"}
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_wall_seconds_incl_import"] = round(wall, 2)
    out["seconds"] = round(out["seconds"], 2)
    out["peak_rss_mb"] = round(out["peak_rss_mb"], 1)
    return out


# MIRP's filter parameters for the filtered round (mirp 2.x names; not verified here: MIRP is not installed on the
# development machine, so a wrong name shows as that filter's "error" in the JSON).
_MIRP_FILTERS = {
    "laplacian_of_gaussian": {"filter_kernels": "laplacian_of_gaussian", "laplacian_of_gaussian_sigma": 1.5},
    "wavelet_db3_HHH_level2": {"filter_kernels": "wavelet", "separable_wavelet_families": "db3",
                               "separable_wavelet_set": "hhh", "separable_wavelet_decomposition_level": 2,
                               "separable_wavelet_rotation_invariance": True, "separable_wavelet_pooling_method": "mean"},
    "gabor_16_orientations": {"filter_kernels": "gabor", "gabor_sigma": 5.0, "gabor_lambda": 2.0, "gabor_gamma": 1.5,
                              "gabor_theta_step": 22.5, "gabor_rotation_invariance": True,
                              "gabor_pool_theta": True, "gabor_response": "modulus"},
}


def _run_mirp_filtered(python: str, image, mask, spacing, timeout_s: float) -> dict:
    out = {}
    for name, kwargs in _MIRP_FILTERS.items():
        extra = {"response_map_feature_families": "statistics", "base_feature_families": "statistics",
                 "boundary_condition": "mirror", **kwargs}
        out[name] = _run_mirp(python, image, mask, spacing, "filtered:" + json.dumps(extra), timeout_s)
    return out


def _thread_budget() -> int:
    from dicomnode.analysis.threads import thread_budget

    return thread_budget()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print JSON to stdout; return 0 (2 on a bad argument)."""
    from dicomnode.analysis.radiomics import ALL_FAMILIES
    from dicomnode.config.radiomics import resolve_settings

    parser = argparse.ArgumentParser(prog="dicomnode bench radiomics", description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="300,512,512", help="Z,Y,X voxels (default: %(default)s)")
    parser.add_argument("--spacing-mm", default="1.5,0.8,0.8", help="dz,dy,dx in mm (default: %(default)s)")
    parser.add_argument("--volume-ml", type=float, default=100.0, help="region volume (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", default="native,ibsi-config-C,filtered",
                        help="comma-separated (default: %(default)s)")
    parser.add_argument("--no-mirp", action="store_true", help="do not time MIRP")
    parser.add_argument("--mirp-python", help="a Python that imports mirp (default: this one, or a known venv)")
    parser.add_argument("--mirp-timeout-s", type=float, default=900.0, help="per MIRP case (default: %(default)s)")
    args = parser.parse_args(argv)
    shape = tuple(int(v) for v in args.shape.split(","))
    spacing = tuple(float(v) for v in args.spacing_mm.split(","))
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if len(shape) != 3 or len(spacing) != 3 or not set(cases) <= {"native", "ibsi-config-C", "filtered"}:
        print("--shape and --spacing-mm need 3 values (z, y, x); --cases: native, ibsi-config-C, filtered",
              file=sys.stderr)
        return 2

    config_c = resolve_settings("ibsi-config-C")
    native = replace(config_c, name="native (config C intensity settings, no interpolation)",
                     interpolation=type(config_c.interpolation).NONE, spacing_mm=None, round_intensities=False)
    settings_of = {"native": native, "ibsi-config-C": config_c}

    t0 = time.perf_counter()
    image, mask = synthetic_ct(shape, spacing, volume_ml=args.volume_ml, rng=np.random.default_rng(args.seed))
    voxel_ml = float(np.prod(spacing)) / 1000.0
    report: dict = {
        "image": {"shape_zyx": list(shape), "spacing_mm_zyx": list(spacing), "dtype": "float32",
                  "mb": round(image.nbytes / 2**20, 1), "region_voxels": int(mask.sum()),
                  "region_ml": round(float(mask.sum()) * voxel_ml, 2),
                  "build_seconds": round(time.perf_counter() - t0, 2)},
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                    "load_average_1min_at_start": round(os.getloadavg()[0], 2),
                    "thread_budget": _thread_budget()},
        "parent_peak_rss_mb_after_image": round(_peak_rss_mb(), 1),
        "notes": [
            "each family alone in a fresh forked process; seconds include the crop (+ interpolation) it needs",
            "peak_rss_mb is the child's peak resident set, including the parent's image pages it shares",
            "texture: 3D aggregations ('3D, averaged', '3D, merged'; '3D'), as IBSI config C",
            "Moran's I and Geary's C: exact, all voxel pairs (FFT convolution)",
        ],
        "cases": {},
    }
    targets = {"native": 5.0, "ibsi-config-C": 2.0}
    for case in cases:
        if case == "filtered":
            report["cases"][case] = _filtered_round(image, mask, spacing)
            continue
        settings = replace(settings_of[case], dimensions=("3D",))
        fams: dict[str, dict] = {"preprocessing": _run_forked(image, mask, spacing,
                                                              replace(settings, families=("intensity statistics",)))}
        for family in ALL_FAMILIES:
            fams[family] = _run_forked(image, mask, spacing, replace(settings, families=(family,)))
        total = _run_forked(image, mask, spacing, settings)
        report["cases"][case] = {
            "settings": settings.name, "families": fams, "all_families": total,
            "target_seconds": targets[case], "target_peak_rss_mb": 2048 if case == "native" else None,
            "meets_target": bool("seconds" in total and total["seconds"] <= targets[case]
                                 and (case != "native" or total["peak_rss_mb"] <= 2048)),
        }

    if args.no_mirp:
        report["mirp"] = {"measured": False, "why": "--no-mirp"}
    else:
        python, how = _find_mirp(args.mirp_python)
        if python is None:
            report["mirp"] = {"measured": False, "why": how}
        else:
            report["mirp"] = {"measured": True, "how": how,
                              "settings": "same image and mask; base families 'all' (incl. IVH, local intensity), "
                                          "3D texture, resegmentation [-1000, 400], FBS 25, IVH FBS 2.5; "
                                          "Moran's I / Geary's C approximated (MIRP default)",
                              "cases": {}}
            for case in cases:
                if case == "filtered":
                    report["mirp"]["cases"][case] = _run_mirp_filtered(python, image, mask, spacing,
                                                                       args.mirp_timeout_s)
                    continue
                m = _run_mirp(python, image, mask, spacing, case, args.mirp_timeout_s)
                ours = report["cases"][case]["all_families"].get("seconds")
                if "seconds" in m and ours:
                    m["ratio_mirp_over_dicomnode"] = round(m["seconds"] / ours, 1)
                report["mirp"]["cases"][case] = m
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
