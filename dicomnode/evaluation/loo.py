"""Leave one patient out for ``dicomnode evaluate --leave-one-patient-out``: a model per held-out patient.

For every patient of the cases to run, each *fitted* model a profile uses is fitted again without that patient's
data and the patient's cases run with it; the other steps are the shipped ones. Fitted models:

* the scene model (the ``scene`` step with the shipped ``model = "scene"``): refitted by
  :func:`dicomnode.scene_training.fit_scene` (the code that fits the shipped model) on the scene examples of the
  case file's truths (:func:`dicomnode.scene_training.case_examples`) without the patient, temperatures included;
* the findings calibration (``detect`` with ``model = "calibrated"``, the shipped profiles'): refitted by
  :func:`dicomnode.findings_training.fit_findings` (the code that fits the shipped one) on the scored detect
  candidates of the case file's lesion truths (:func:`dicomnode.findings_training.collect_candidates`) and the
  shipped table of inserted-lesion PET candidates (:mod:`dicomnode.evaluation.inserted`), both without the
  patient; the fold's calibration is written to ``DIR/models/findings-fold-<hash>.json`` and the case's ``detect``
  runs with ``model`` = that file;
* the logistic findings model (``model = "findings"``) or a ``.skops`` path is *not* refitted: such cases say so in
  their notes and the summary lists the model under ``models_in_sample``. ``"hand-set"`` fits nothing.

A scene step that names a model of its own (a path) is the site's model: it is used as it is, and listed in-sample.
Scene descriptors and detect candidates are cached per series under ``DIR/cache/`` (keyed by the files and the
code), so a second run costs the fits only (under a second each).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from dicomnode.config import NodeConfig, Profile
from dicomnode.evaluation.cases import Case, CaseFile

__all__ = ["FoldModels", "fold_name", "fold_profile", "patient_of", "prepare_folds", "scene_folds"]

#: Model names of the ``scene`` step that mean the shipped model (refitted per fold).
_SHIPPED_SCENE = ("scene",)
#: ``detect`` models that fit nothing.
_UNFITTED_DETECT = ("hand-set",)
#: ``detect`` models refitted per fold (:mod:`dicomnode.findings_training`).
_REFITTED_DETECT = ("calibrated",)


@dataclass
class FoldModels:
    """The models of every fold: patient -> scene model file; what was refitted and what was used in-sample."""

    scene: dict[str, Path] = field(default_factory=dict)
    findings: dict[str, Path] = field(default_factory=dict)
    figures: dict[str, dict] = field(default_factory=dict)

    def describe(self) -> dict:
        return {"scene_models": len(self.scene), "findings_calibrations": len(self.findings), "folds": self.figures}


def patient_of(case: Case) -> str:
    """A case's patient: its ``patient`` key, else its series folder (a series is then its own patient)."""
    return case.patient or str(case.series)


def fold_name(patient: str) -> str:
    """A fold's name in file names and reports: a hash of the patient (never the patient's id)."""
    return hashlib.sha256(patient.encode()).hexdigest()[:12]


def scene_folds(case_file: CaseFile, patients: Sequence[str], out_dir: Path,
                print_fn: Callable[[str], None] | None = None) -> tuple[dict[str, Path], dict[str, dict]]:
    """The scene model fitted once per patient in ``patients`` without that patient (the shipped model's code,
    :func:`dicomnode.scene_training.fit_scene`, on the case file's scene examples), written to
    ``out_dir/models/scene-fold-<hash>.skops``. Returns patient -> model file and fold name -> figures."""
    from dicomnode.scene_training import FeatureCache, case_examples, fit_scene, phantom_rows, save_scene_model

    cache = FeatureCache(out_dir / "cache")
    examples = case_examples(case_file, cache=cache, print_fn=print_fn)
    phantoms = phantom_rows(cache=cache)
    models: dict[str, Path] = {}
    figures: dict[str, dict] = {}
    for patient in sorted(set(patients)):
        fitted = fit_scene(examples, phantoms, exclude=patient)
        name = fold_name(patient)
        models[patient] = save_scene_model(out_dir / "models" / f"scene-fold-{name}.skops", fitted,
                                           training_data=f"{len(fitted.patients)} patients of {case_file.path.name} "
                                                         "without the held-out one")
        figures[name] = {"training_patients": len(fitted.patients), "training_slabs": fitted.n_slabs,
                         "temperature_ct": round(fitted.temperature_ct, 3),
                         "temperature_other": round(fitted.temperature_other, 3)}
        if print_fn:
            print_fn(f"fold {name}: scene model fitted on {len(fitted.patients)} other patients "
                     f"({fitted.n_slabs} slabs), temperatures CT {fitted.temperature_ct:.2f}, "
                     f"other {fitted.temperature_other:.2f}")
    return models, figures


def prepare_folds(case_file: CaseFile, cases: Sequence[Case], out_dir: Path,
                  print_fn: Callable[[str], None] | None = None, *, config: NodeConfig | None = None) -> FoldModels:
    """Fit the scene model and the findings calibration once per patient of ``cases``, without that patient; write
    them under DIR/models/. ``config`` chooses each case's profile (default: the built-in configuration)."""
    folds = FoldModels()
    folds.scene, folds.figures = scene_folds(case_file, [patient_of(c) for c in cases], out_dir, print_fn)
    _prepare_findings(case_file, cases, out_dir, folds, print_fn, config)
    return folds


def _prepare_findings(case_file: CaseFile, cases: Sequence[Case], out_dir: Path, folds: FoldModels,
                      print_fn: Callable[[str], None] | None, config: NodeConfig | None) -> None:
    """One findings calibration per patient of ``cases``, fitted on the candidates of the other patients."""
    from dicomnode.evaluation.inserted import DEFAULT_TABLE, is_current, read_table
    from dicomnode.findings_training import CandidateCache, collect_candidates, fit_findings

    candidates = collect_candidates(case_file, config, cache=CandidateCache(out_dir / "cache"), print_fn=print_fn)
    table = read_table(DEFAULT_TABLE)
    inserted = table.candidates
    if print_fn:
        print_fn(f"findings: {len(inserted)} inserted-lesion PET candidates ({sum(c.true for c in inserted)} true) "
                 f"from {DEFAULT_TABLE.name}; each fold leaves its patient's out"
                 + ("" if is_current(table) else " (the table was made by other analysis code: regenerate it with "
                                                  "python3 -m dicomnode.evaluation.inserted)"))
    if not any(c.true for c in candidates):
        if print_fn:
            print_fn("findings: no true detect candidate in the case file's lesion truths: the calibration is not "
                     "refitted (cases using it run in-sample)")
        return
    for patient in sorted({patient_of(c) for c in cases}):
        name = fold_name(patient)
        try:
            fitted = fit_findings(candidates, exclude=patient, inserted=inserted)
        except ValueError as e:
            if print_fn:
                print_fn(f"fold {name}: findings calibration not refitted ({e})")
            continue
        folds.findings[patient] = fitted.save(out_dir / "models" / f"findings-fold-{name}.json")
        m, pet = fitted.mapping, fitted.for_modality("PT")
        folds.figures.setdefault(name, {})["findings"] = {"training_patients": len(fitted.patients),
                                                          "candidates": fitted.candidates, "hits": fitted.hits,
                                                          "inserted_candidates": fitted.inserted_candidates,
                                                          "inserted_hits": fitted.inserted_hits}
        if print_fn:
            print_fn(f"fold {name}: findings calibration fitted on {len(fitted.patients)} other patients "
                     f"({fitted.candidates} candidates, {fitted.hits} true): slope {m.slope:.3g}, top weight "
                     f"{m.top_weight:.3g}, intercept {m.intercept:.3g} (PET: {pet.slope:.3g}, {pet.top_weight:.3g}, "
                     f"{pet.intercept:.3g})")


def fold_profile(profile: Profile, case: Case, folds: FoldModels) -> tuple[Profile, list[str], list[str]]:
    """The profile a case runs with in its fold, the models refitted for it and those used in-sample."""
    params = {k: dict(v) for k, v in profile.params.items()}
    refitted: list[str] = []
    in_sample: list[str] = []
    if "scene" in profile.steps:
        model = str(params.get("scene", {}).get("model", "scene"))
        if model in _SHIPPED_SCENE:
            params.setdefault("scene", {})["model"] = str(folds.scene[patient_of(case)])
            refitted.append("scene")
        else:
            in_sample.append(f"scene ({model})")
    if "detect" in profile.steps:
        model = str(params.get("detect", {}).get("model", "hand-set"))
        if model in _REFITTED_DETECT and patient_of(case) in folds.findings:
            params.setdefault("detect", {})["model"] = str(folds.findings[patient_of(case)])
            refitted.append("findings")
        elif model not in _UNFITTED_DETECT:
            in_sample.append(f"findings ({model})")
    return replace(profile, params=params), refitted, in_sample
