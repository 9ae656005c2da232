"""Run the cases of a case file as the node would and score the results against their truth.

For each case the series' files go through :func:`dicomnode.jobs.chain.run_chain` with the profile the node's routing
chooses for them (:func:`dicomnode.routing.route` on the first file's header; a case's ``profile`` overrides it).
The chain writes its SEG, SR and ``results.json`` under ``DIR/cases/<id>/`` exactly as a job does; the scoring
reads that ``results.json`` (and the SEG, for the masks of the findings), never the chain's internals.

Definitions (docs/evaluation.md):

* a **finding is true** when its centroid lies inside a truth lesion, and a **lesion is found** when the centroid of
  a reported finding lies inside it;
* **reported** findings are those at or above the profile's ``detect.probability_threshold`` (default 0.5);
  **false findings** are the reported findings that are not true, counted on cases with lesion truth only;
* the **rank of the first true finding** orders every finding in ``results.json`` by decreasing probability;
* **Dice** is that of the best finding (highest Dice) against the union of the case's contoured lesions;
* the **scene** is right when ``scene.label`` equals the expected label; it is *confidently wrong* when it is
  another label than ``unknown`` with probability >= 0.5. **Regions** are scored as the fraction of the expected
  regions' z extent covered by a predicted region of the same label (``scene.regions`` when the results have it,
  else the series' z extent with ``scene.label``);
* **visibility** of each truth lesion (``lesions[*].contrast``, evaluation.json only):
  :func:`dicomnode.evaluation.metrics.lesion_contrast` of the loaded series against the 5-10 mm shell around it;
* **lungs found** (CT cases whose truth says chest): a segment whose label starts with ``lung``, volume > 0.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dicomnode.config import NodeConfig, Profile
from dicomnode.errors import DicomnodeError
from dicomnode.evaluation.cases import Case, CaseFile, TruthKind
from dicomnode.evaluation.metrics import (Proportion, dice, first_true_rank, lesion_contrast, region_agreement,
                                         reliability_table)

if TYPE_CHECKING:
    from dicomnode.evaluation.loo import FoldModels

__all__ = ["CSV_COLUMNS", "CaseResult", "evaluate", "evaluate_case", "summarise"]

log = logging.getLogger(__name__)

#: Columns of evaluation.csv, in order (a contract: keep them).
CSV_COLUMNS = ("id", "series", "modality", "profile", "status", "scene_expected", "scene_label", "scene_probability",
               "scene_correct", "scene_confident_wrong", "regions_agreement", "lesions_total", "lesions_found",
               "first_true_rank", "findings_reported", "false_findings", "dice_best", "lungs_found", "seconds",
               "png", "message")
DEFAULT_THRESHOLD = 0.5


@dataclass
class CaseResult:
    """What one case scored. ``status``: ok, refused (the node refused the series: a result) or error (a bug)."""

    id: str
    series: str
    patient: str
    status: str = "ok"
    message: str = ""
    modality: str = ""
    profile: str = ""
    series_instance_uid: str = ""
    expect_refusal: bool = False
    scene_expected: str | None = None
    scene_label: str | None = None
    scene_probability: float | None = None
    scene_correct: bool | None = None
    scene_confident_wrong: bool | None = None
    regions_expected: list[dict[str, Any]] = field(default_factory=list)
    regions_predicted: list[dict[str, Any]] = field(default_factory=list)
    regions_agreement: float | None = None
    lesions: list[dict[str, Any]] = field(default_factory=list)
    lesions_total: int = 0
    lesions_found: int = 0
    findings: list[dict[str, Any]] = field(default_factory=list)
    reporting_threshold: float = DEFAULT_THRESHOLD
    findings_reported: int = 0
    first_true_rank: int | None = None
    false_findings: int | None = None
    dice_best: float | None = None
    dice_finding: str | None = None
    lungs_expected: bool = False
    lungs_found: bool | None = None
    seconds: float = 0.0
    png: str = ""
    notes: list[str] = field(default_factory=list)
    models_refitted: list[str] = field(default_factory=list)
    models_in_sample: list[str] = field(default_factory=list)

    @property
    def has_lesion_truth(self) -> bool:
        return self.lesions_total > 0

    def csv_row(self) -> dict[str, Any]:
        d = asdict(self)
        d["message"] = "; ".join(m for m in [self.message, *self.notes] if m)
        return {c: ("" if d.get(c) is None else d.get(c)) for c in CSV_COLUMNS}


def _profile_for(case: Case, config: NodeConfig, first_file: Path) -> Profile:
    from dicomnode.evaluation.cases import case_profile
    return case_profile(case, config, first_file)


def _z_extent(volume: Any) -> tuple[float, float]:
    nz, ny, nx = volume.shape
    corners = np.array([[z, y, x] for z in (0, nz - 1) for y in (0, ny - 1) for x in (0, nx - 1)], dtype=float)
    zs = volume.index_to_patient(corners)[:, 2]
    return float(zs.min()), float(zs.max())


def _inside(mask: np.ndarray, zyx: np.ndarray) -> bool:
    idx = tuple(int(round(v)) for v in zyx)
    return all(0 <= i < n for i, n in zip(idx, mask.shape)) and bool(mask[idx])


def evaluate_case(case: Case, config: NodeConfig, out_dir: Path, *, data_root: Path | None = None,
                  folds: FoldModels | None = None) -> CaseResult:
    """Run one case through the node's chain and score it. Never raises for a bad series: see ``status``.

    ``folds`` (:class:`dicomnode.evaluation.loo.FoldModels`): run with the models fitted without the case's patient.
    """
    from dicomnode.jobs.chain import run_chain
    from dicomnode.jobs.spec import ChainSpec as JobSpec
    from dicomnode.io.load import load_series
    from dicomnode.net.scu import iter_dicom_files

    shown = str(case.series.relative_to(data_root)) if data_root and case.series.is_relative_to(data_root) \
        else str(case.series)
    res = CaseResult(case.id, shown, case.patient, expect_refusal=case.expect_refusal, scene_expected=case.scene,
                     regions_expected=[{"label": r.label, "z_mm": [r.z_low_mm, r.z_high_mm]} for r in case.regions])
    res.lesions_total = sum(len(s.rois) + len(s.segments) + (s.kind is TruthKind.VOC) for s in case.lesions)
    res.lungs_expected = case.expects_chest
    work = out_dir / "cases" / case.id
    t0 = time.perf_counter()
    files = iter_dicom_files([case.series])
    try:
        if not files:
            raise DicomnodeError(f"{case.series}: no DICOM files")
        from dicomnode.io.headers import read_tags
        res.modality = read_tags(files[0]).get("Modality", "")
        profile = _profile_for(case, config, files[0])
        res.profile = profile.name
        if folds is not None:
            from dicomnode.evaluation.loo import fold_profile
            profile, res.models_refitted, res.models_in_sample = fold_profile(profile, case, folds)
            if res.models_in_sample:
                res.notes.append(f"leave one patient out: not refitted (in-sample): {', '.join(res.models_in_sample)}")
        res.reporting_threshold = float(profile.params.get("detect", {}).get("probability_threshold",
                                                                               DEFAULT_THRESHOLD))
        from dicomnode.evaluation.context import context_series
        context = context_series(case.series, Path(files[0]), case.context) if "scene" in profile.steps else ()
        outcome = run_chain(JobSpec(files=tuple(map(str, files)), profile=profile, out_dir=str(work),
                                    uid_root=config.node.uid_root, context=context))
    except DicomnodeError as e:
        res.status, res.message = "refused", str(e).splitlines()[0][:300]
        res.seconds = round(time.perf_counter() - t0, 2)
        _score_refusal(res, case)
        return res
    except Exception as e:  # noqa: BLE001 - a bug in a step must not stop the other cases; recorded as error
        log.exception("evaluate: case failed", extra={"case": case.id})
        res.status, res.message = "error", f"{type(e).__name__}: {e}"[:300]
        res.seconds = round(time.perf_counter() - t0, 2)
        _score_refusal(res, case)
        return res
    res.seconds = round(time.perf_counter() - t0, 2)
    results = json.loads(Path(outcome.results_json).read_text())
    res.modality = str(results.get("modality", ""))
    res.series_instance_uid = str(results.get("series_instance_uid", ""))
    if case.expect_refusal:
        res.message = "the node processed a series it should refuse"
    try:
        phase = profile.params.get("load", {}).get("phase", "first")  # the phase the chain scored (chain.py)
        series = load_series(files, phase=1 if phase == "all" else phase)
        _score(res, case, series, results, work)
    except Exception as e:  # noqa: BLE001 - a truth that does not fit is this case's problem, not the run's
        log.exception("evaluate: scoring failed", extra={"case": case.id})
        res.status, res.message = "error", f"scoring: {type(e).__name__}: {e}"[:300]
    return res


def _score_refusal(res: CaseResult, case: Case) -> None:
    if case.scene is not None and not case.expect_refusal:
        res.scene_correct, res.scene_confident_wrong = False, False
    if case.regions and not case.expect_refusal:
        res.regions_agreement = 0.0
    if res.lungs_expected and res.modality == "CT":
        res.lungs_found = False
    else:
        res.lungs_expected = False
    res.lesions = []


def _score(res: CaseResult, case: Case, series: Any, results: dict[str, Any], work: Path) -> None:
    from dicomnode.evaluation.render import MarkedFinding, render_case
    from dicomnode.evaluation.truth import load_lesions

    vol = series.volume
    scene = results.get("scene") or {}
    label = scene.get("label")
    probs = scene.get("probabilities") or {}
    res.scene_label = label
    res.scene_probability = None if label is None or label not in probs else round(float(probs[label]), 4)
    if case.scene is not None:
        res.scene_correct = label == case.scene
        res.scene_confident_wrong = (not res.scene_correct and label not in (None, "unknown")
                                     and (res.scene_probability or 0.0) >= 0.5)
    z_lo, z_hi = _z_extent(vol)
    if isinstance(scene.get("regions"), list) and scene["regions"]:
        res.regions_predicted = [{"label": r.get("label"), "z_mm": list(r.get("z_mm", [z_lo, z_hi])),
                                  "probability": r.get("probability")} for r in scene["regions"]]
    elif label is not None:
        res.regions_predicted = [{"label": label, "z_mm": [round(z_lo, 1), round(z_hi, 1)],
                                  "probability": res.scene_probability, "from": "scene.label"}]
    if case.regions:
        res.regions_agreement = region_agreement(
            [(r["label"], float(r["z_mm"][0]), float(r["z_mm"][1])) for r in res.regions_predicted],
            [(r.label, r.z_low_mm, r.z_high_mm) for r in case.regions])
        res.regions_agreement = None if res.regions_agreement is None else round(res.regions_agreement, 4)
    if res.lungs_expected and res.modality == "CT":
        res.lungs_found = any(str(s.get("label", "")).startswith("lung") and (s.get("volume_ml") or 0) > 0
                              for s in results.get("segments", []))
    else:
        res.lungs_expected = False

    lesions = load_lesions(case.lesions, series)
    res.lesions_total = len(lesions)
    findings = sorted(results.get("findings") or [], key=lambda f: -float(f.get("probability", 0.0)))
    seg_path = work / "seg.dcm"
    marked: list[MarkedFinding] = []
    voxel_ml = vol.voxel_volume_mm3 / 1000.0
    for f in findings:
        zyx = vol.patient_to_index(np.asarray(f.get("centroid_mm", [math.nan] * 3), dtype=float)[None, :])[0]
        hit = next((les.name for les in lesions if np.all(np.isfinite(zyx)) and _inside(les.mask, zyx)), None)
        p = float(f.get("probability", 0.0))
        reported = p >= res.reporting_threshold and bool(f.get("reported", True))
        mask, why = _finding_mask(seg_path, series, f)
        if why and not any(n.split("(")[0] == why.split("(")[0] for n in res.notes):
            res.notes.append(why)  # once per kind of problem, not once per finding
        res.findings.append({"label": f.get("label"), "probability": p, "reported": reported, "true": hit is not None,
                             "lesion": hit, "volume_ml": f.get("volume_ml"),
                             "centroid_mm": f.get("centroid_mm")})
        marked.append(MarkedFinding(str(f.get("label")), p, tuple(float(v) for v in zyx), mask, hit is not None))
    reported = [f for f in res.findings if f["reported"]]
    res.findings_reported = len(reported)
    everything = np.logical_or.reduce([les.mask for les in lesions]) if lesions else None
    for les in lesions:
        found_by = [f["label"] for f in reported if f["lesion"] == les.name]
        others = everything & ~les.mask if everything is not None else None
        res.lesions.append({"name": les.name, "contour": les.contour, "volume_ml": round(les.voxels * voxel_ml, 2),
                            "found": bool(found_by), "found_by": found_by,
                            "contrast": lesion_contrast(vol.array, les.mask, vol.spacing_mm,
                                                        exclude=others).as_dict()})
    res.lesions_found = sum(le["found"] for le in res.lesions)
    if lesions:
        res.first_true_rank = first_true_rank([f["probability"] for f in res.findings],
                                              [f["true"] for f in res.findings])
        res.false_findings = sum(not f["true"] for f in reported)
        contours = [les.mask for les in lesions if les.contour]
        if contours:
            union = np.logical_or.reduce(contours)
            scored = [(dice(m.mask, union), m.label) for m in marked if m.mask is not None]
            best = max(scored, default=None)
            if best is not None:
                res.dice_best, res.dice_finding = round(best[0], 4), best[1]
            elif not marked:
                res.dice_best = 0.0  # nothing found: no overlap
            else:
                res.notes.append("Dice not computed: no finding's mask could be read back from the SEG")
    png = work.parent.parent / "png" / f"{case.id}.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    z_mm = vol.index_to_patient(np.stack([np.arange(vol.shape[0]), np.zeros(vol.shape[0]),
                                          np.zeros(vol.shape[0])], axis=1).astype(float))[:, 2]
    render_case(png, vol.array, vol.spacing_mm, res.modality, title=f"{case.id} ({res.profile})",
                truth=[les.mask for les in lesions], findings=marked, z_mm=z_mm)
    res.png = str(png.relative_to(work.parent.parent))


def _finding_mask(seg_path: Path, series: Any, finding: dict[str, Any]) -> tuple[np.ndarray | None, str]:
    """The finding's segment read back from the chain's SEG, or (None, why not)."""
    number = finding.get("segment_number")
    if number is None:
        return None, "a finding has no segment_number: its outline is not drawn"
    if not seg_path.is_file():
        return None, "no seg.dcm was written: findings are not outlined and Dice is not computed"
    from dicomnode.io.roi import read_region
    try:
        return read_region(seg_path, series, number=int(number)).mask, ""
    except DicomnodeError as e:
        return None, f"SEG segments could not be read back ({str(e).split(': ', 1)[-1][:160]})"


def summarise(results: Sequence[CaseResult]) -> dict[str, Any]:
    """The summary block of evaluation.json: proportions with 95 % Wilson intervals and the reliability table."""
    scene = [r for r in results if r.scene_correct is not None]
    regions = [r.regions_agreement for r in results if r.regions_agreement is not None]
    with_truth = [r for r in results if r.has_lesion_truth and not r.expect_refusal]
    lungs = [r for r in results if r.lungs_found is not None]
    refusals = [r for r in results if r.expect_refusal]
    dices = [r.dice_best for r in with_truth if r.dice_best is not None]
    all_findings = [f for r in with_truth for f in r.findings]
    # series that ran and hold no lesion truth: what they report is of unknown status (none is known to be a lesion;
    # a phantom's is known not to be), counted apart from the false findings
    without = [r for r in results if not r.has_lesion_truth and not r.expect_refusal and r.status == "ok"]
    return {
        "cases": len(results),
        "status": {s: sum(r.status == s for r in results) for s in ("ok", "refused", "error")},
        "scene_correct": Proportion(sum(bool(r.scene_correct) for r in scene), len(scene)).as_dict(),
        "scene_confident_wrong": Proportion(sum(bool(r.scene_confident_wrong) for r in scene), len(scene)).as_dict(),
        "regions_agreement_mean": round(float(np.mean(regions)), 4) if regions else None,
        "regions_cases": len(regions),
        "lesions_found": Proportion(sum(r.lesions_found for r in with_truth),
                                    sum(r.lesions_total for r in with_truth)).as_dict(),
        "top_finding_true": Proportion(sum(r.first_true_rank == 1 for r in with_truth), len(with_truth)).as_dict(),
        "series_with_a_true_finding": Proportion(sum(r.first_true_rank is not None for r in with_truth),
                                                 len(with_truth)).as_dict(),
        "false_findings_total": sum(r.false_findings or 0 for r in with_truth),
        "false_findings_per_series": round(sum(r.false_findings or 0 for r in with_truth) / len(with_truth), 3)
        if with_truth else None,
        "series_without_truth_reporting": Proportion(sum(r.findings_reported > 0 for r in without),
                                                     len(without)).as_dict(),
        "findings_reported_without_truth": sum(r.findings_reported for r in without),
        "dice_best_mean": round(float(np.mean(dices)), 4) if dices else None,
        "dice_cases": len(dices),
        "lungs_found": Proportion(sum(bool(r.lungs_found) for r in lungs), len(lungs)).as_dict(),
        "refusals_expected_and_made": Proportion(sum(r.status == "refused" for r in refusals), len(refusals)).as_dict(),
        "reliability": [b.as_dict() for b in reliability_table([f["probability"] for f in all_findings],
                                                               [f["true"] for f in all_findings])],
        "seconds_total": round(sum(r.seconds for r in results), 1),
        "models_refitted": sorted({m for r in results for m in r.models_refitted}),
        "models_in_sample": sorted({m for r in results for m in r.models_in_sample}),
    }


def evaluate(case_file: CaseFile, config: NodeConfig, out_dir: Path | str, *, only: Sequence[str] = (),
             progress: Callable[[CaseResult], None] | None = None, leave_one_patient_out: bool = False,
             print_fn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every case (or those whose id is in ``only``), write evaluation.json/.csv and the PNGs; return the JSON.

    ``leave_one_patient_out``: every fitted model is fitted again without each case's patient
    (:mod:`dicomnode.evaluation.loo`) and the case runs with those models.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cases = [c for c in case_file.cases if not only or c.id in only]
    folds = None
    if leave_one_patient_out:
        from dicomnode.evaluation.loo import prepare_folds
        folds = prepare_folds(case_file, cases, out, print_fn=print_fn, config=config)
    results: list[CaseResult] = []
    for case in cases:
        r = evaluate_case(case, config, out, data_root=case_file.data_root, folds=folds)
        results.append(r)
        if progress is not None:
            progress(r)
    doc = {
        "case_file": str(case_file.path),
        "data_root": str(case_file.data_root),
        "dicomnode_version": _version(),
        "leave_one_patient_out": leave_one_patient_out,
        "summary": summarise(results),
        "cases": [asdict(r) for r in results],
    }
    (out / "evaluation.json").write_text(json.dumps(doc, indent=1, allow_nan=False))
    with (out / "evaluation.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS))
        w.writeheader()
        for r in results:
            w.writerow(r.csv_row())
    return doc


def _version() -> str:
    from dicomnode import __version__
    return __version__
