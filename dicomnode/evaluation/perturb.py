"""Scene recognition under perturbations that keep the truth: a stand-in for the series the node has never seen.

The scene model and its landmarks are built on the few series of ``../shared/data``. Series from other sites differ
in ways that do not change what body region they show: the slices may run feet first, the field of view may be a
tight crop inside the body, the slices thicker, the noise higher, and a CT's reconstruction circle may be padded
with a value the header does not name. Each perturbation here changes one such thing on a shared series and keeps
its patient coordinates, so the expected scene label stays the case's own. A perturbed series must be right or
``unknown``, never wrong with p >= 0.5 (issue 13's rule).

Run with ``python3 -m dicomnode.evaluation.perturb [--out FILE.json]``: every case of
``conf/evaluation/shared.toml`` with an expected ``scene`` label, each with the scene model fitted without the
case's patient (leave one patient out, :func:`dicomnode.scene_training.fit_scene`), unless ``--in-sample``.

Perturbations (:data:`PERTURBATIONS`), each a pure function of the volume (numpy, explicit geometry):

* ``feet_first``: the slices in the opposite order, the z axis of the direction cosines reversed (same anatomy, same
  patient coordinates; a feet-first acquisition as GE and others store it);
* ``flip_rows``: the rows in the opposite order, the column direction cosine reversed (a prone acquisition or a
  vendor that stores posterior first: the same patient coordinates, the image upside down);
* ``fov_200``: the in-plane field of view cut to 200 mm around the body's centre (a targeted reconstruction, like
  the cropped chest CT of issue 13); not applied when the field is already <= 240 mm;
* ``thick_slices``: neighbouring slices averaged in pairs (twice the slice thickness);
* ``noise``: Gaussian noise (CT 25 HU; other modalities 5 % of the 99th percentile inside the body), fixed seed;
* ``pad_circle`` (CT): voxels outside the largest centred circle set to -3024 HU (a reconstruction circle padded
  with a value the header does not give as PixelPaddingValue);
* ``mr_scale`` (MR): every value times 4 (MR intensities have no unit; another scanner or coil scales them);
* ``crop_region``: for a case whose truth lists regions along z (the whole-body series), each region alone
  (:func:`crop_z`), expected to be that region: a series that shows only it, without the landmarks of the others.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from dicomnode.analysis.volume import Volume

__all__ = ["PERTURBATIONS", "PerturbedScene", "fov_box", "perturb", "perturb_mask", "scene_under_perturbations",
           "summarise"]

#: Perturbation names, in report order ("original" is the series as stored).
PERTURBATIONS = ("original", "feet_first", "flip_rows", "fov_200", "thick_slices", "noise", "pad_circle", "mr_scale",
                 "crop_region")
#: A wrong label at or above this probability is a confident error (issue 13).
CONFIDENT = 0.5
FOV_MM = 200.0


def _body(v: Volume) -> np.ndarray:
    a = v.array
    if v.modality == "CT":
        return a > -500.0
    finite = a[np.isfinite(a)]
    thr = 0.1 * float(np.percentile(finite, 99)) if finite.size else 0.0
    return a > thr


def _shift(v: Volume, iz: float, iy: float, ix: float) -> tuple[float, float, float]:
    """The patient position of voxel (iz, iy, ix) of ``v`` (mm)."""
    d = np.asarray(v.direction, dtype=float)
    sz, sy, sx = v.spacing_mm
    p = np.asarray(v.origin_mm, dtype=float) + d[:, 0] * ix * sx + d[:, 1] * iy * sy + d[:, 2] * iz * sz
    return float(p[0]), float(p[1]), float(p[2])


def fov_box(v: Volume, centre_yx: tuple[float, float] | None = None) -> tuple[int, int, int, int] | None:
    """The rows and columns ``fov_200`` keeps, ``(y0, x0, ny, nx)``: a :data:`FOV_MM` square centred on
    ``centre_yx`` (row, column indices; default the centre of the body seen along z), shifted to lie inside the
    image. None when the field is already <= 1.2 x :data:`FOV_MM` or no body is seen."""
    a = v.array
    _, sy, sx = v.spacing_mm
    ny, nx = int(round(FOV_MM / sy)), int(round(FOV_MM / sx))
    if a.shape[1] * sy <= FOV_MM * 1.2 or a.shape[2] * sx <= FOV_MM * 1.2:
        return None
    if centre_yx is None:
        body = _body(v).any(axis=0)
        if not body.any():
            return None
        cy, cx = (int(round(float(c.mean()))) for c in np.nonzero(body))
    else:
        cy, cx = (int(round(float(c))) for c in centre_yx)
    y0 = min(max(cy - ny // 2, 0), a.shape[1] - ny)
    x0 = min(max(cx - nx // 2, 0), a.shape[2] - nx)
    return y0, x0, ny, nx


def perturb(v: Volume, name: str, *, seed: int = 0, centre_yx: tuple[float, float] | None = None) -> Volume | None:
    """``v`` perturbed by ``name`` (:data:`PERTURBATIONS`), its anatomy at the same patient coordinates; None when the
    perturbation does not apply to this volume (e.g. ``fov_200`` on a field already that small). ``centre_yx``
    centres ``fov_200`` on these (row, column) indices instead of the body (:func:`fov_box`)."""
    a = v.array
    if name == "original":
        return v
    if name == "crop_region":
        return None  # needs the truth's regions: scene_under_perturbations
    if name == "feet_first":
        d = np.asarray(v.direction, dtype=float).copy()
        origin = _shift(v, a.shape[0] - 1, 0, 0)
        d[:, 2] = -d[:, 2]
        return replace(v, array=np.ascontiguousarray(a[::-1]), origin_mm=origin, direction=d)
    if name == "flip_rows":
        d = np.asarray(v.direction, dtype=float).copy()
        origin = _shift(v, 0, a.shape[1] - 1, 0)
        d[:, 1] = -d[:, 1]
        return replace(v, array=np.ascontiguousarray(a[:, ::-1]), origin_mm=origin, direction=d)
    if name == "mr_scale":
        return replace(v, array=(a * 4.0).astype(a.dtype)) if v.modality == "MR" else None
    if name == "fov_200":
        box = fov_box(v, centre_yx)
        if box is None:
            return None
        y0, x0, ny, nx = box
        return replace(v, array=np.ascontiguousarray(a[:, y0:y0 + ny, x0:x0 + nx]), origin_mm=_shift(v, 0, y0, x0))
    if name == "thick_slices":
        k = a.shape[0] // 2
        if k < 8:
            return None
        thick = (0.5 * (a[0:2 * k:2].astype(np.float32) + a[1:2 * k:2])).astype(a.dtype)
        sz, sy, sx = v.spacing_mm
        return replace(v, array=thick, spacing_mm=(2 * sz, sy, sx), origin_mm=_shift(v, 0.5, 0, 0))
    if name == "noise":
        rng = np.random.default_rng(seed)
        if v.modality == "CT":
            sd = 25.0
        else:
            inside = a[_body(v)]
            sd = 0.05 * float(np.percentile(inside, 99)) if inside.size else 0.0
        noisy = a.astype(np.float32) + rng.normal(0.0, sd, a.shape).astype(np.float32)
        if v.modality != "CT":
            np.maximum(noisy, 0.0, out=noisy)  # PET and MR values are not negative
        return replace(v, array=noisy)
    if name == "pad_circle":
        if v.modality != "CT":
            return None
        ny, nx = a.shape[1:]
        yy, xx = np.ogrid[:ny, :nx]
        r = min(ny, nx) / 2.0
        outside = (yy - (ny - 1) / 2.0) ** 2 + (xx - (nx - 1) / 2.0) ** 2 > r * r
        out = a.copy()
        out[:, outside] = -3024.0
        return replace(v, array=out)
    raise ValueError(f"perturbation {name!r} is unknown; choose one of {', '.join(PERTURBATIONS)}")


def perturb_mask(mask: np.ndarray, v: Volume, name: str, *,
                 centre_yx: tuple[float, float] | None = None) -> np.ndarray | None:
    """A boolean mask on the grid of ``v`` through the same array operation as :func:`perturb` applies to ``v``
    (the values' perturbations, ``noise``, ``pad_circle`` and ``mr_scale``, leave it as it is); None where
    :func:`perturb` gives None. ``thick_slices``: a voxel of a pair of slices is in when either is."""
    m = np.asarray(mask, dtype=bool)
    if m.shape != v.shape:
        raise ValueError(f"mask shape {m.shape} is not the volume's {v.shape}")
    if name in ("original", "noise"):
        return m
    if name == "pad_circle":
        return m if v.modality == "CT" else None
    if name == "mr_scale":
        return m if v.modality == "MR" else None
    if name == "feet_first":
        return np.ascontiguousarray(m[::-1])
    if name == "flip_rows":
        return np.ascontiguousarray(m[:, ::-1])
    if name == "fov_200":
        box = fov_box(v, centre_yx)
        if box is None:
            return None
        y0, x0, ny, nx = box
        return np.ascontiguousarray(m[:, y0:y0 + ny, x0:x0 + nx])
    if name == "thick_slices":
        k = m.shape[0] // 2
        return None if k < 8 else (m[0:2 * k:2] | m[1:2 * k:2])
    raise ValueError(f"perturbation {name!r} has no mask transform; choose one of {', '.join(PERTURBATIONS[:-1])}")


def crop_z(v: Volume, z_low_mm: float, z_high_mm: float) -> Volume | None:
    """The slices of ``v`` whose patient z lies in [z_low_mm, z_high_mm] (a series that shows only that stretch);
    None when fewer than 8 slices lie there."""
    d = np.asarray(v.direction, dtype=float)
    z = np.asarray(v.origin_mm, dtype=float)[2] + d[2, 2] * v.spacing_mm[0] * np.arange(v.shape[0])
    idx = np.flatnonzero((z >= min(z_low_mm, z_high_mm)) & (z <= max(z_low_mm, z_high_mm)))
    if idx.size < 8:
        return None
    i0, i1 = int(idx.min()), int(idx.max()) + 1
    return replace(v, array=np.ascontiguousarray(v.array[i0:i1]), origin_mm=_shift(v, i0, 0, 0))


@dataclass(frozen=True)
class PerturbedScene:
    """The scene of one case under one perturbation, scored against the case's expected label."""

    case: str
    perturbation: str
    expected: str
    label: str
    probability: float
    verdict: str  # "right", "unknown", "wrong" (p < CONFIDENT) or "wrong_confident"


def _verdict(expected: str, label: str, p: float) -> str:
    if label == expected:
        return "right"
    if label == "unknown":
        return "unknown"
    return "wrong_confident" if p >= CONFIDENT else "wrong"


def scene_under_perturbations(case_file_path: Path | str, *, out_dir: Path, in_sample: bool = False,
                              only: Sequence[str] = (), perturbations: Sequence[str] = PERTURBATIONS,
                              print_fn: Callable[[str], None] | None = None) -> list[PerturbedScene]:
    """Run the scene step of each case's profile on each perturbation of its series (see the module docstring)."""
    from dicomnode.analysis.pipeline import Context, run_steps
    from dicomnode.config import load_config
    from dicomnode.evaluation.cases import load_cases
    from dicomnode.evaluation.loo import patient_of, scene_folds
    from dicomnode.evaluation.cases import case_profile
    from dicomnode.io.load import load_series
    from dicomnode.io.headers import header_strings
    from dicomnode.net.scu import iter_dicom_files
    from dicomnode.steps import registry

    registry()
    config = load_config(None)
    case_file = load_cases(case_file_path)
    cases = [c for c in case_file.cases if (c.scene or c.regions) and not c.expect_refusal
             and (not only or c.id in only)]
    models: dict[str, Path] = {}
    if not in_sample:
        models, _ = scene_folds(case_file, [patient_of(c) for c in cases], out_dir)
    rows: list[PerturbedScene] = []
    for case in cases:
        files = iter_dicom_files([case.series])
        profile = case_profile(case, config, files[0])
        if "scene" not in profile.steps:
            continue
        phase = profile.params.get("load", {}).get("phase", "first")
        series = load_series(files, phase=1 if phase == "all" else phase)
        header = header_strings(series.headers[0])
        params = dict(profile.params.get("scene", {}))
        if models:
            params["model"] = str(models[patient_of(case)])
        trials: list[tuple[str, str, Volume | None]] = []
        if case.scene:
            trials += [(name, case.scene, perturb(series.volume, name)) for name in perturbations]
        if "crop_region" in perturbations:  # each region of the truth alone: a series that shows only it
            trials += [(f"crop_{r.label}", r.label, crop_z(series.volume, r.z_low_mm, r.z_high_mm))
                       for r in case.regions]
        for name, expected, pv in trials:
            if pv is None:
                continue
            ctx = Context(volume=pv, original=pv, header=header)
            run_steps(ctx, ["scene"], {"scene": params})
            scene = ctx.scene or {}
            label = str(scene.get("label", "unknown"))
            p = float((scene.get("probabilities") or {}).get(label, 0.0)) if label != "unknown" else 0.0
            row = PerturbedScene(case.id, name, expected, label, round(p, 4), _verdict(expected, label, p))
            rows.append(row)
            if print_fn:
                print_fn(f"{case.id:24s} {name:13s} {label:10s} p={p:.2f} {row.verdict}")
    return rows


def summarise(rows: Sequence[PerturbedScene]) -> dict[str, dict[str, int]]:
    """Counts of each verdict per perturbation."""
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        d = out.setdefault(r.perturbation, {"right": 0, "unknown": 0, "wrong": 0, "wrong_confident": 0})
        d[r.verdict] += 1
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m dicomnode.evaluation.perturb",
                                 description="Scene recognition on the shared cases under perturbations that keep "
                                             "their truth (feet first, a 200 mm field of view, thick slices, "
                                             "noise, a padded CT circle).")
    ap.add_argument("--cases", type=Path,
                    default=Path(__file__).resolve().parents[2] / "conf" / "evaluation" / "shared.toml")
    ap.add_argument("--out", type=Path, default=None, help="write the rows and the summary as JSON here")
    ap.add_argument("--work", type=Path, default=Path("/tmp/dicomnode-perturb"),
                    help="folder for the fold models and the descriptor cache")
    ap.add_argument("--in-sample", action="store_true", help="use the shipped scene model (not leave one patient "
                                                              "out)")
    ap.add_argument("--case", action="append", default=[], help="only this case id (repeatable)")
    a = ap.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    rows = scene_under_perturbations(a.cases, out_dir=a.work, in_sample=a.in_sample, only=a.case,
                                     print_fn=lambda s: print(s, file=sys.stderr))
    summary = summarise(rows)
    doc = {"rows": [asdict(r) for r in rows], "summary": summary}
    if a.out:
        a.out.write_text(json.dumps(doc, indent=1))
    print(json.dumps(summary, indent=1))
    return 1 if any(r.verdict == "wrong_confident" for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
