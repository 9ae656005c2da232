"""Findings under perturbations that keep the truth: the findings counterpart of :mod:`dicomnode.evaluation.perturb`.

The findings were built on the few series of ``../shared/data``; the plain evaluation scores them on those very
series. Here every case of ``conf/evaluation/shared.toml`` with a lesion truth runs again on each perturbation of its
series (:func:`dicomnode.evaluation.perturb.perturb`: feet first, rows flipped, a 200 mm field of view, thick
slices, noise, a padded CT circle, MR scaled), with the truth put through the same array operation
(:func:`dicomnode.evaluation.perturb.perturb_mask`), and is scored as ``dicomnode evaluate`` scores it
(:mod:`dicomnode.evaluation.run`):

* a finding is **true** when its centroid lies inside a truth lesion (of the perturbed grid); a lesion is **found**
  when a reported finding is true on it;
* **reported**: probability >= the profile's ``detect.probability_threshold`` (default 0.5); **false findings**:
  reported findings that are not true;
* **top true**: the most probable finding is true (rank 1 of :func:`dicomnode.evaluation.metrics.first_true_rank`).

Besides the body-centred ``fov_200``, ``fov_200_lesion`` cuts the same 200 mm field of view centred on the truth's
centroid (the union of the case's lesions, seen along z): a targeted reconstruction is centred on what the
radiologist wants to see, and the body-centred crop may cut the lesion away. It runs wherever ``fov_200`` applies.
A perturbation whose crop leaves no truth voxel is scored ``truth_in_view = False`` and left out of the summary.

Each case runs its profile as ``evaluate`` does (the routing's profile, the case's study context), with the models
fitted without the case's patient (:func:`dicomnode.evaluation.loo.prepare_folds`, :func:`fold_profile`) unless
``--in-sample``; the steps after ``detect`` (features, match, synthesize) are not run: they do not change the
findings.

Run with ``python3 -m dicomnode.evaluation.perturb_findings --work DIR --out FILE.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dicomnode.evaluation.perturb import PERTURBATIONS, perturb, perturb_mask

__all__ = ["FINDINGS_PERTURBATIONS", "PerturbedFindings", "findings_under_perturbations", "summarise"]

#: Perturbations of the findings tool, in report order: the scene tool's (without ``crop_region``) and
#: ``fov_200_lesion``.
FINDINGS_PERTURBATIONS = tuple(p for p in PERTURBATIONS if p != "crop_region") + ("fov_200_lesion",)
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class PerturbedFindings:
    """The findings of one case under one perturbation, scored against the perturbed truth."""

    case: str
    perturbation: str
    modality: str
    truth_in_view: bool
    truth_ml: float                 # truth volume left in view (mL)
    lesions_total: int              # truth lesions with a voxel in view
    lesions_found: int
    top_true: bool
    first_true_rank: int | None
    findings: int                   # every finding, reported or not
    findings_reported: int
    false_findings: int
    top_probability: float | None
    top_volume_ml: float | None
    scene_label: str | None
    seconds: float
    error: str = ""


def _centre_yx(masks: Sequence[np.ndarray]) -> tuple[float, float] | None:
    union = np.logical_or.reduce([m.any(axis=0) for m in masks]) if masks else None
    if union is None or not union.any():
        return None
    ys, xs = np.nonzero(union)
    return float(ys.mean()), float(xs.mean())


def _score(case_id: str, name: str, vol, masks: Sequence[np.ndarray], findings: Sequence[dict], threshold: float,
           scene: dict | None, seconds: float) -> PerturbedFindings:
    from dicomnode.evaluation.metrics import first_true_rank
    from dicomnode.evaluation.run import _inside

    masks = [m for m in masks if m.any()]
    voxel_ml = vol.voxel_volume_mm3 / 1000.0
    ordered = sorted(findings, key=lambda f: -float(f.get("probability", 0.0)))
    hits: list[int | None] = []
    for f in ordered:
        zyx = vol.patient_to_index(np.asarray(f.get("centroid_mm", [np.nan] * 3), dtype=float)[None, :])[0]
        hits.append(next((k for k, m in enumerate(masks) if np.all(np.isfinite(zyx)) and _inside(m, zyx)), None))
    reported = [p >= threshold and bool(f.get("reported", True))
                for p, f in ((float(f.get("probability", 0.0)), f) for f in ordered)]
    found = {h for h, r in zip(hits, reported) if r and h is not None}
    rank = first_true_rank([float(f.get("probability", 0.0)) for f in ordered], [h is not None for h in hits]) \
        if masks else None
    label = (scene or {}).get("label")
    return PerturbedFindings(
        case_id, name, vol.modality, bool(masks), round(sum(int(m.sum()) for m in masks) * voxel_ml, 2), len(masks),
        len(found), rank == 1, rank, len(ordered), sum(reported),
        sum(r and h is None for h, r in zip(hits, reported)),
        round(float(ordered[0]["probability"]), 4) if ordered else None,
        ordered[0].get("volume_ml") if ordered else None, label, round(seconds, 1))


def findings_under_perturbations(case_file_path: Path | str, *, out_dir: Path, in_sample: bool = False,
                                 only: Sequence[str] = (), perturbations: Sequence[str] = FINDINGS_PERTURBATIONS,
                                 print_fn: Callable[[str], None] | None = None) -> list[PerturbedFindings]:
    """Run each lesion case's profile up to ``detect`` on each perturbation of its series and score the findings
    against the truth put through the same array operation (see the module docstring)."""
    from dicomnode.analysis.pipeline import Context, run_steps
    from dicomnode.config import load_config
    from dicomnode.evaluation.cases import case_profile, load_cases
    from dicomnode.evaluation.context import context_series
    from dicomnode.evaluation.loo import fold_profile, prepare_folds
    from dicomnode.evaluation.truth import load_lesions
    from dicomnode.io.headers import header_strings
    from dicomnode.io.load import load_series
    from dicomnode.jobs.chain import study_siblings
    from dicomnode.net.scu import iter_dicom_files
    from dicomnode.steps import registry

    unknown = set(perturbations) - set(FINDINGS_PERTURBATIONS)
    if unknown:
        raise ValueError(f"perturbation(s) {sorted(unknown)} unknown; choose from {', '.join(FINDINGS_PERTURBATIONS)}")
    registry()
    config = load_config(None)
    case_file = load_cases(case_file_path)
    cases = [c for c in case_file.cases if c.lesions and not c.expect_refusal and (not only or c.id in only)]
    folds = None if in_sample else prepare_folds(case_file, cases, out_dir, print_fn=print_fn, config=config)
    rows: list[PerturbedFindings] = []
    for case in cases:
        files = iter_dicom_files([case.series])
        profile = case_profile(case, config, files[0])
        if folds is not None:
            profile, _, _ = fold_profile(profile, case, folds)
        if "detect" not in profile.steps:
            continue
        steps = list(profile.steps[:profile.steps.index("detect") + 1])
        threshold = float(profile.params.get("detect", {}).get("probability_threshold", DEFAULT_THRESHOLD))
        phase = profile.params.get("load", {}).get("phase", "first")
        series = load_series(files, phase=1 if phase == "all" else phase)
        header = header_strings(series.headers[0])
        context = context_series(case.series, Path(files[0]), case.context) if "scene" in profile.steps else ()
        truth = [les.mask for les in load_lesions(case.lesions, series)]
        vol = series.volume
        for name in perturbations:
            kind, centre = name, None
            if name == "fov_200_lesion":
                kind, centre = "fov_200", _centre_yx(truth)
                if centre is None:
                    continue
            pv = perturb(vol, kind, centre_yx=centre)
            if pv is None:
                continue
            masks = [perturb_mask(m, vol, kind, centre_yx=centre) for m in truth]
            t0 = time.perf_counter()
            ctx = Context(volume=pv, original=pv, header=header,
                          siblings=study_siblings(context, series, uid_root=config.node.uid_root))
            ctx.notes.extend(series.notes)
            err = ""
            try:
                run_steps(ctx, steps, profile.params)
            except Exception as e:  # noqa: BLE001 - a step failing on a perturbed series is a result, recorded
                err = f"{type(e).__name__}: {e}"[:300]
            row = _score(case.id, name, pv, masks, ctx.findings, threshold, ctx.scene, time.perf_counter() - t0)
            if err:
                row = PerturbedFindings(**{**asdict(row), "error": err})
            rows.append(row)
            if print_fn:
                print_fn(f"{case.id:18s} {name:15s} truth {row.truth_ml:7.1f} mL  found {row.lesions_found}/"
                         f"{row.lesions_total}  top_true {str(row.top_true):5s} rank {row.first_true_rank}  "
                         f"false {row.false_findings}  top p={row.top_probability}  scene {row.scene_label}  "
                         f"{row.seconds:.0f} s{'  ' + err if err else ''}")
    return rows


def summarise(rows: Sequence[PerturbedFindings]) -> dict[str, dict[str, int]]:
    """Per perturbation, over the rows whose truth is in view: series, top finding true, series with a true
    finding, lesions found / total, false findings at the reporting threshold, step errors."""
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        d = out.setdefault(r.perturbation, {"series": 0, "top_true": 0, "with_true_finding": 0, "lesions_found": 0,
                                            "lesions_total": 0, "false_findings": 0, "errors": 0,
                                            "truth_out_of_view": 0})
        if not r.truth_in_view:
            d["truth_out_of_view"] += 1
            continue
        d["series"] += 1
        d["top_true"] += r.top_true
        d["with_true_finding"] += r.first_true_rank is not None
        d["lesions_found"] += r.lesions_found
        d["lesions_total"] += r.lesions_total
        d["false_findings"] += r.false_findings
        d["errors"] += bool(r.error)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m dicomnode.evaluation.perturb_findings",
                                 description="Findings of the shared lesion cases under perturbations that keep "
                                             "their truth, scored leave one patient out.")
    ap.add_argument("--cases", type=Path,
                    default=Path(__file__).resolve().parents[2] / "conf" / "evaluation" / "shared.toml")
    ap.add_argument("--out", type=Path, default=None, help="write the rows and the summary as JSON here")
    ap.add_argument("--work", type=Path, default=Path("/tmp/dicomnode-perturb-findings"),
                    help="folder for the fold models and the candidate/descriptor caches")
    ap.add_argument("--in-sample", action="store_true", help="use the shipped models (not leave one patient out)")
    ap.add_argument("--case", action="append", default=[], help="only this case id (repeatable)")
    ap.add_argument("--perturbation", action="append", default=[], choices=FINDINGS_PERTURBATIONS,
                    help="only this perturbation (repeatable)")
    a = ap.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    rows = findings_under_perturbations(a.cases, out_dir=a.work, in_sample=a.in_sample, only=a.case,
                                        perturbations=a.perturbation or FINDINGS_PERTURBATIONS,
                                        print_fn=lambda s: print(s, file=sys.stderr))
    summary = summarise(rows)
    if a.out:
        a.out.write_text(json.dumps({"rows": [asdict(r) for r in rows], "summary": summary}, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
