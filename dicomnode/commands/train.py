"""``dicomnode train``: train a classifier from labelled series and save it as a dicomnode model file.

::

    dicomnode train --labels labels.csv --task scene --out scene.skops [--phantoms 20] [--seed 0]
    dicomnode train --task findings --cases CASES.toml --out findings.json [--data-root DIR] [--cache DIR]
                    [--inserted TABLE]

``labels.csv`` has one row per series: ``folder,label[,patient]`` (a header row ``folder,label,patient`` is
allowed; relative folders are taken from the CSV's own folder). ``folder`` is a folder of one DICOM series, or a
NIfTI file (``.nii``/``.nii.gz``, values taken as HU when the voxel values reach below -500, for CT volumes).

Tasks:

* ``scene``: body region. Each series is cut into 60 mm axial slabs (every 30 mm); each slab's scene descriptors
  (:mod:`dicomnode.analysis.scene`) are one sample (a series labelled as a whole gives its middle 70 %). ``--phantoms
  N`` adds N synthetic slabs per (region, modality) (:mod:`dicomnode.analysis.scene_phantoms`) to every training
  fold; they are never scored. Fitted by :func:`dicomnode.scene_training.fit_scene` as the shipped model is, with
  calibration temperatures from held-out posteriors on the card (:func:`train_scene`).
* ``findings``: the finding probabilities (``[detect] model = "calibrated"``). Needs ``--cases CASES.toml`` (the
  case file of ``dicomnode evaluate``) instead of ``--labels``: the detect candidates of its cases with lesion truth
  are scored against it and the calibration of :mod:`dicomnode.findings_training` is fitted, its
  leave-one-patient-out figures printed, and written to ``--out NAME.json`` (a profile uses it with ``model =
  "NAME.json"``). ``--inserted TABLE`` adds a table of inserted-lesion PET candidates
  (:mod:`dicomnode.evaluation.inserted`; the shipped ``dicomnode/models/findings_pet_inserted.json`` or one made
  from the site's own PETs) to the PET map's slope (its intercept stays fitted on the real candidates).
* any other name: a per-series classifier on the whole-series scene descriptors plus body intensity percentiles
  (one sample per series), e.g. to tell two protocols apart.

The classifier is multinomial logistic regression after standardisation (``make_scene_estimator``). The command
prints the cross-validated accuracy (leave-one-patient-out when patients are given, else leave-one-series-out;
samples of one patient are never scored by a model that saw that patient) and the confusion matrix, then fits on
everything and saves with :func:`dicomnode.modelio.save_model`, the card carrying the CV figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dicomnode.analysis.volume import Volume
from dicomnode.errors import DicomnodeError
from dicomnode.io.volumes import load_volume, read_nifti
from dicomnode.scene_training import SLAB_MM, STRIDE_MM, make_scene_estimator, phantom_samples

__all__ = [
    "LabelledSeries",
    "add_parser",
    "confusion_text",
    "load_volume",
    "make_scene_estimator",
    "read_labels",
    "read_nifti",
    "series_samples",
    "train",
    "train_scene",
]

@dataclass(frozen=True, slots=True)
class LabelledSeries:
    path: Path
    label: str
    patient: str


def read_labels(csv_path: Path | str) -> list[LabelledSeries]:
    """Rows of ``folder,label[,patient]``; relative folders are resolved against the CSV's folder.

    Raises :class:`DicomnodeError` naming the line when a row is malformed or a folder does not exist.
    """
    csv_path = Path(csv_path)
    rows: list[LabelledSeries] = []
    with csv_path.open(newline="") as f:
        for i, row in enumerate(csv.reader(f), start=1):
            row = [c.strip() for c in row]
            if not row or not any(row) or row[0].startswith("#"):
                continue
            if i == 1 and row[0].lower() == "folder":
                continue
            if len(row) < 2 or not row[0] or not row[1]:
                raise DicomnodeError(f"{csv_path}:{i}: expected 'folder,label[,patient]', got {row!r}")
            p = Path(row[0])
            p = p if p.is_absolute() else (csv_path.parent / p)
            if not p.exists():
                raise DicomnodeError(f"{csv_path}:{i}: {p} does not exist; give a series folder or a NIfTI file")
            patient = row[2] if len(row) > 2 and row[2] else str(p)
            rows.append(LabelledSeries(p, row[1], patient))
    if not rows:
        raise DicomnodeError(f"{csv_path}: no labelled series; add rows 'folder,label[,patient]'")
    return rows


def series_samples(volume: Volume, task: str, *, keep: tuple[float, float] = (0.0, 1.0)) -> tuple[
        np.ndarray, tuple[str, ...]]:
    """The training samples (rows) of one volume for ``task`` and the feature names.

    ``scene``: one row per axial slab (:func:`~dicomnode.analysis.scene.slab_descriptors`); ``keep`` limits the
    slabs to a fraction of the axial extent. Other tasks: one row, whole-series descriptors plus body intensity
    percentiles.
    """
    from dicomnode.analysis.scene import MODEL_FEATURES, descriptor_vector, scene_descriptors, slab_descriptors

    v = volume
    if task == "scene":
        descs = slab_descriptors(v.array, v.spacing_mm, direction=v.direction, modality=v.modality, unit=v.unit,
                                 slab_mm=SLAB_MM, stride_mm=STRIDE_MM, keep=keep)
        return np.array([descriptor_vector(d) for d in descs]).reshape(-1, len(MODEL_FEATURES)), MODEL_FEATURES
    d = scene_descriptors(v.array, v.spacing_mm, direction=v.direction, modality=v.modality, unit=v.unit)
    arr = v.array[:: max(1, v.shape[0] // 24), ::4, ::4]
    q = np.percentile(arr, [5, 25, 50, 75, 95])
    names = MODEL_FEATURES + ("p05", "p25", "p50", "p75", "p95")
    return np.concatenate([descriptor_vector(d), q])[None, :], names


def confusion_text(y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str]) -> str:
    """A confusion matrix as text: rows true class, columns predicted class."""
    w = max(8, *(len(c) for c in classes))
    lines = ["true \\ predicted".ljust(w + 2) + " ".join(c.rjust(w) for c in classes)]
    for t in classes:
        counts = [sum(1 for a, b in zip(y_true, y_pred) if a == t and b == p) for p in classes]
        lines.append(t.ljust(w + 2) + " ".join(str(c).rjust(w) for c in counts))
    return "\n".join(lines)


def train(rows: Sequence[LabelledSeries], task: str, out: Path | str, *, phantoms: int = 0, seed: int = 0,
          training_data: str = "", extra_samples: tuple[np.ndarray, np.ndarray] | None = None,
          print_fn=print) -> dict:
    """Compute samples, cross-validate by patient, fit on everything, save. Returns the card's figures.

    ``scene`` (without ``extra_samples``) is fitted by :func:`dicomnode.scene_training.fit_scene`, the code that
    fits the shipped model: see :func:`train_scene`.
    """
    if task == "scene" and extra_samples is None:
        return train_scene(rows, out, phantoms=phantoms, seed=seed, training_data=training_data, print_fn=print_fn)
    from sklearn.metrics import accuracy_score

    from dicomnode.analysis.classify import grouped_cross_validation
    from dicomnode.modelio import ModelCard, save_model

    Xs, ys, gs, series_of = [], [], [], []
    names: tuple[str, ...] = ()
    for r in rows:
        X, names = series_samples(load_volume(r.path), task)
        if len(X) == 0:
            print_fn(f"warning: {r.path} gave no sample (too short?)")
            continue
        Xs.append(X)
        ys += [r.label] * len(X)
        gs += [r.patient] * len(X)
        series_of += [str(r.path)] * len(X)
    if not Xs:
        raise DicomnodeError("no training sample could be made from the labelled series")
    X = np.concatenate(Xs)
    y = np.array(ys)
    g = np.array(gs, dtype=object)
    scored = np.ones(len(y), dtype=bool)
    n_real = len(y)
    if task == "scene" and phantoms > 0:
        regions = sorted(set(ys))
        from dicomnode.analysis.scene_phantoms import PHANTOM_REGIONS
        regions = [r for r in regions if r in PHANTOM_REGIONS]
        Xp, yp = phantom_samples(phantoms, regions, seed)
        if len(Xp):
            X = np.concatenate([X, Xp])
            y = np.concatenate([y, yp])
            g = np.concatenate([g, np.array(["phantom"] * len(yp), dtype=object)])
            scored = np.concatenate([scored, np.zeros(len(yp), dtype=bool)])
    if extra_samples is not None:
        Xe, ye = extra_samples
        X = np.concatenate([X, Xe])
        y = np.concatenate([y, ye])
        g = np.concatenate([g, np.array(["extra"] * len(ye), dtype=object)])
        scored = np.concatenate([scored, np.zeros(len(ye), dtype=bool)])
    classes = [str(c) for c in np.unique(y)]
    patients = sorted(set(gs))
    cv_acc = None
    figures: dict = {"classes": classes, "n_samples": int(n_real), "n_patients": len(patients)}
    if len(patients) >= 2:
        pred, _ = grouped_cross_validation(make_scene_estimator, X, y, g, scored=scored)
        yt, yp_ = y[scored].tolist(), pred[scored].tolist()
        cv_acc = float(accuracy_score(yt, yp_))
        per_patient = {}
        for p in patients:
            m = g[:n_real] == p
            per_patient[p] = {"label": str(y[:n_real][m][0]), "samples": int(m.sum()),
                              "correct": int((pred[:n_real][m] == y[:n_real][m]).sum())}
        figures.update(cv_accuracy=cv_acc, per_patient=per_patient,
                       confusion=[[sum(1 for a, b in zip(yt, yp_) if a == t and b == q) for q in classes]
                                  for t in classes])
        print_fn(f"cross-validated accuracy (leave one patient out, {len(patients)} patients, {n_real} samples"
                 f"{', phantoms in training folds only' if not scored.all() else ''}): {cv_acc:.3f}")
        print_fn(confusion_text(yt, yp_, classes))
    else:
        print_fn("cross-validation needs at least 2 patients: none done (the card says so)")
    est = make_scene_estimator().fit(X, y)
    card = ModelCard(
        task=task, classes=tuple(str(c) for c in est.classes_), feature_names=tuple(names),
        training_data=training_data or (f"{len(rows)} labelled series of {len(patients)} patients, {n_real} samples"
                                        + (f", plus {phantoms} phantom slabs per region and modality"
                                           if task == "scene" and phantoms else "")),
        cv_accuracy=cv_acc,
        cv_scheme=(f"leave-one-patient-out over {len(patients)} patients; slabs of {SLAB_MM:g} mm every "
                   f"{STRIDE_MM:g} mm" if task == "scene" else f"leave-one-patient-out over {len(patients)} patients")
        if cv_acc is not None else "none (fewer than 2 patients)",
        extra={k: v for k, v in figures.items() if k != "classes"},
    )
    save_model(out, est, card)
    print_fn(f"saved {out}")
    return figures


def train_scene(rows: Sequence[LabelledSeries], out: Path | str, *, phantoms: int = 0, seed: int = 0,
                training_data: str = "", print_fn=print) -> dict:
    """The scene model of labelled series, fitted as the shipped one is (:func:`dicomnode.scene_training.fit_scene`).

    Each series is labelled as a whole (its middle 70 % along z; its ends may show the neighbouring region);
    ``phantoms`` synthetic slabs per (region, modality) join every fit. Every patient is held out once: the
    held-out slab posteriors give the cross-validated slab accuracy, the confusion matrix and the calibration
    temperatures (CT and other modalities) written on the card, which the ``scene`` step applies; each series is
    then run through :func:`~dicomnode.analysis.scene.recognise` with a model that did not see its patient, and the
    card lists the outcome (``series_lopo``, ``series_figures``). With a single patient nothing can be held out: the
    temperatures are 1 and the card says so.
    """
    from dicomnode.analysis.scene import BODY_ORDER
    from dicomnode.scene_training import example_from_volume, fit_scene, save_scene_model

    bad = sorted({r.label for r in rows} - set(BODY_ORDER))
    if bad:
        raise DicomnodeError(f"scene labels must be among {', '.join(BODY_ORDER)}; got {', '.join(bad)}: fix the "
                             "label column of the CSV")
    examples = []
    for r in rows:
        e = example_from_volume(load_volume(r.path), str(r.path), r.patient, scene=r.label)
        if not any(lab is not None for lab in e.slab_labels):
            print_fn(f"warning: {r.path} gave no sample (too short?)")
            continue
        examples.append(e)
    if not examples:
        raise DicomnodeError("no training sample could be made from the labelled series")
    regions = sorted({r.label for r in rows})
    from dicomnode.analysis.scene_phantoms import PHANTOM_REGIONS
    Xp, yp = (phantom_samples(phantoms, [r for r in regions if r in PHANTOM_REGIONS], seed) if phantoms > 0
              else (np.zeros((0, len(examples[0].all_rows()[0]))), np.zeros(0, dtype=object)))
    fitted = fit_scene(examples, (Xp, yp))
    patients = fitted.patients
    figures: dict = {"classes": list(fitted.classes), "n_samples": fitted.n_slabs, "n_patients": len(patients),
                     "temperature_ct": fitted.temperature_ct, "temperature_other": fitted.temperature_other}
    if fitted.slab_accuracy is not None:
        yt, yp_ = fitted.slab_truth, fitted.slab_predicted
        print_fn(f"cross-validated accuracy (leave one patient out, {len(patients)} patients, {fitted.n_slabs} slabs"
                 f"{', phantoms in training folds only' if len(Xp) else ''}): {fitted.slab_accuracy:.3f}")
        print_fn(confusion_text(yt, yp_, fitted.classes))
        figures["confusion"] = [[sum(1 for a, b in zip(yt, yp_) if a == t and b == q) for q in fitted.classes]
                                for t in fitted.classes]
        print_fn("series, leave one patient out (slab model, landmarks and calibration, as the scene step runs):")
        for h in fitted.held_out:
            tag = "right" if h["right"] else "unknown" if h["abstained"] else "WRONG"
            print_fn(f"  {tag:7s} {h['series']} (truth {h['truth']}) -> {h['label']} p={h['p']:.2f}")
        figures["series_figures"] = {
            "series": len(fitted.held_out), "right": sum(h["right"] for h in fitted.held_out),
            "unknown": sum(h["abstained"] for h in fitted.held_out),
            "wrong_with_p_ge_0.5": sum(h["wrong_confident"] for h in fitted.held_out)}
        print_fn(f"calibration temperatures (fitted on held-out posteriors): CT {fitted.temperature_ct:.2f}, "
                 f"other modalities {fitted.temperature_other:.2f}")
    else:
        print_fn("cross-validation needs at least 2 patients: none done, calibration temperatures 1 (the card says "
                 "so)")
    save_scene_model(out, fitted, write_card_json=False, training_data=training_data or (
        f"{len(examples)} labelled series of {len(patients)} patients, {fitted.n_slabs} slabs of {SLAB_MM:g} mm every "
        f"{STRIDE_MM:g} mm" + (f", plus {phantoms} phantom slabs per region and modality" if len(Xp) else "")),
        extra={"series_lopo": fitted.held_out, **({"series_figures": figures["series_figures"]}
                                                  if "series_figures" in figures else {})})
    print_fn(f"saved {out}")
    return figures


def train_findings(cases: Path | str, out: Path | str, *, data_root: Path | str | None = None,
                   config: Path | str | None = None, cache: Path | str | None = None,
                   inserted: Path | str | None = None, print_fn=print) -> dict:
    """``--task findings``: fit the findings calibration (:mod:`dicomnode.findings_training`) on the detect candidates
    of a case file's lesion truths, print its leave-one-patient-out figures and write it to ``out`` (JSON; a
    profile uses it with ``[detect] model = "OUT.json"``). ``inserted``: a table of inserted-lesion PET candidates
    (:mod:`dicomnode.evaluation.inserted`) the PET map's slope is fitted with too. Returns the figures."""
    from dicomnode.config import load_config
    from dicomnode.evaluation.cases import load_cases
    from dicomnode.findings_training import (CandidateCache, collect_candidates, fit_findings, leave_one_patient_out,
                                             reliability, score_series)

    out = Path(out)
    if out.suffix.lower() != ".json":
        raise DicomnodeError(f"{out}: the findings calibration is a .json file; give --out NAME.json")
    case_file = load_cases(cases, data_root=data_root)
    cands = collect_candidates(case_file, load_config(config), cache=CandidateCache(cache) if cache else None,
                               print_fn=print_fn)
    patients = sorted({c.patient for c in cands})
    extra = []
    if inserted is not None:
        from dicomnode.evaluation.inserted import is_current, read_table

        try:
            table = read_table(inserted)
        except ValueError as e:
            raise DicomnodeError(str(e)) from None
        if not is_current(table):
            raise DicomnodeError(f"{inserted}: this table of inserted-lesion candidates was made by other analysis "
                                 "code than this node's (its 'code' hash differs), so its candidates may not be the "
                                 "node's; regenerate it with python3 -m dicomnode.evaluation.inserted")
        extra = table.candidates
        print_fn(f"inserted-lesion candidates: {len(extra)}, {sum(c.true for c in extra)} true")
    if not any(c.true for c in cands):
        raise DicomnodeError(f"{cases}: no detect candidate lies inside a lesion truth: nothing to fit; give cases "
                             "with lesion truth (rtstruct, seg or voc)")
    figures: dict = {"patients": len(patients), "candidates": len(cands), "true": sum(c.true for c in cands)}
    if len(patients) >= 2:
        series = score_series(cands, leave_one_patient_out(cands, inserted=extra))
        figures["lopo"] = {k: {kk: v for kk, v in s.items() if kk != "reported"} for k, s in series.items()}
        figures["reliability"] = reliability(series)
        print_fn(f"leave one patient out over {len(patients)} patients: top finding true in "
                 f"{sum(s['top_true'] for s in series.values())} of {len(series)} series, "
                 f"{sum(s['false_findings'] for s in series.values())} false findings reported")
        for b in figures["reliability"]:
            if b["count"]:
                o = b["observed"]
                print_fn(f"  p {b['low']:.2f}-{b['high']:.2f}: {b['count']} finding(s), mean {b['mean_predicted']:.2f}, "
                         f"true {o['successes']}/{o['trials']} (95 % CI {o['wilson95'][0]:.2f}-{o['wilson95'][1]:.2f})")
    else:
        print_fn("one patient only: no leave-one-patient-out figures")
    fitted = fit_findings(cands, inserted=extra)
    out.write_text(json.dumps({**fitted.as_dict(), "case_file": str(Path(cases).name), **figures}, indent=1))
    print_fn(f"saved {out}")
    return figures


def _run(a: argparse.Namespace) -> int:
    try:
        if a.task == "findings":
            if not a.cases:
                raise DicomnodeError("--task findings needs --cases CASES.toml (the case file of "
                                     "`dicomnode evaluate`, with lesion truth)")
            train_findings(a.cases, a.out, data_root=a.data_root, config=a.config, cache=a.cache,
                           inserted=a.inserted)
            return 0
        if not a.labels:
            raise DicomnodeError(f"--task {a.task} needs --labels LABELS.csv (rows folder,label[,patient])")
        rows = read_labels(a.labels)
        train(rows, a.task, a.out, phantoms=a.phantoms, seed=a.seed)
    except DicomnodeError as e:
        print(f"dicomnode train: {e}", file=sys.stderr)
        return 1
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a classifier from labelled series (folder,label[,patient])",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--labels", help="CSV with rows folder,label[,patient] (every task but findings)")
    p.add_argument("--task", required=True,
                   help="task name: 'scene' (body region), 'findings' (finding probabilities) or any other name")
    p.add_argument("--out", required=True, help="model file to write (.skops; findings: .json)")
    p.add_argument("--cases", help="findings task: the case file (as for `dicomnode evaluate`) with lesion truth")
    p.add_argument("--data-root", help="findings task: the folder the case paths are relative to")
    p.add_argument("--config", help="findings task: node configuration whose profiles run (default: built-in)")
    p.add_argument("--cache", help="findings task: a folder caching the scored candidates per series")
    p.add_argument("--inserted", help="findings task: a table of inserted-lesion PET candidates (e.g. the shipped "
                                      "dicomnode/models/findings_pet_inserted.json) the PET map is fitted with too")
    p.add_argument("--phantoms", type=int, default=0,
                   help="scene task: synthetic slabs per region and modality added to training (never scored)")
    p.add_argument("--seed", type=int, default=0, help="seed of the phantoms")
    p.set_defaults(func=_run)
