#!/usr/bin/env python3
"""Score the ``detect`` step's candidates against the truths and fit the findings models (docs/models.md).

    python scripts/evaluate_findings.py [--cases conf/evaluation/shared.toml] [--cache DIR] [--json out.json]
                                        [--write-model] [--inserted TABLE] [--no-whole-body]

Candidates come from :func:`dicomnode.findings_training.collect_candidates`: every case of the case file with lesion
truth runs its profile up to ``detect`` with the limits opened and the hand-set ranking score; a candidate is true
when its centroid lies inside a truth lesion (as ``dicomnode evaluate`` scores a finding). Scored leave one patient
out (a patient's candidates by a model fitted without them), printed per series as ``dicomnode evaluate`` would
report it (reported = p >= 0.5, at most the profile's number; top finding true; false findings; the probability of
the first true candidate), with the reliability table of the reported findings:

* ``calibrated``: :func:`dicomnode.findings_training.fit_findings` (the shipped profiles' ``model = "calibrated"``),
  its PET map's slope fitted with the table of inserted-lesion PET candidates too (:mod:`dicomnode.evaluation.inserted`,
  each fold without its patient's; ``--no-whole-body``: without the insertions into the whole-body PET);
* ``calibrated without inserted``: the same fit on the real candidates only (as before branch petcal);
* ``hand-set``: the naive Bayes ranking score itself;
* ``logistic`` (tissue method only): a standardised logistic regression on scale-free features
  (:data:`FEATURES`), ``model = "findings"``.

``--write-model`` fits both on every patient and writes ``dicomnode/models/findings.skops`` and its card: the
logistic regression is the estimator; the card's ``extra.calibration`` is the calibration ``model = "calibrated"``
reads, with its held-out figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dicomnode.analysis.detect import FittedModel  # noqa: E402
from dicomnode.findings_training import (Candidate, CandidateCache, collect_candidates, fit_findings,  # noqa: E402
                                         key, leave_one_patient_out, reliability, score_series)

#: Scale-free features of a tissue-method candidate the logistic model uses.
FEATURES = ("log10_volume_ml", "compactness", "elongation", "log10_cnr", "truncation", "enclosure", "polarity",
            "log2_to_reference", "mirror_uptake", "midline_offset", "log2_peak_to_percist")
#: Fill values that are not the training mean: a PET without the liver in view (a crop) has no PERCIST level; its
#: candidates count as at the level (log2 ratio 0), neither above nor below.
FIXED_FILL = {"log2_peak_to_percist": 0.0}


def fit_logistic(rows: list[Candidate]) -> FittedModel:
    """A standardised logistic regression on FEATURES, and the fill values of missing features (training means)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    fill = {}
    for name in FEATURES:
        vals = [r.features[name] for r in rows if name in r.features]
        fill[name] = FIXED_FILL.get(name, float(np.mean(vals)) if vals else 0.0)
    proto = FittedModel(None, FEATURES, fill)
    X = np.array([proto.vector(r.features) for r in rows])
    y = np.array([r.true for r in rows], dtype=int)
    est = make_pipeline(StandardScaler(), LogisticRegression(C=0.3, max_iter=1000)).fit(X, y)
    return FittedModel(est, FEATURES, fill)


def with_rule(p: float, features: dict) -> float:
    """The detect step's hand-set rules on top of the logistic model: symmetric or paired regions x 0.1, and
    physiological uptake told by organ context x 0.1 again."""
    p = p * 0.1 if features.get("symmetric") else p
    return p * 0.1 if features.get("physiological") else p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=str(REPO / "conf" / "evaluation" / "shared.toml"), help="the case file")
    ap.add_argument("--data-root", help="the folder the case paths are relative to (default: the case file's)")
    ap.add_argument("--cache", help="a folder to cache the scored candidates in (per series)")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--write-model", action="store_true", help="fit on all patients, write dicomnode/models/findings")
    ap.add_argument("--inserted", default=None,
                    help="the table of inserted-lesion PET candidates (default: the shipped "
                         "dicomnode/models/findings_pet_inserted.json; regenerate with python3 -m "
                         "dicomnode.evaluation.inserted)")
    ap.add_argument("--no-whole-body", action="store_true",
                    help="leave out the table's insertions into the whole-body PET (the bench's patient)")
    a = ap.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    from dicomnode.evaluation.cases import load_cases

    case_file = load_cases(a.cases, data_root=a.data_root)
    cands = collect_candidates(case_file, cache=CandidateCache(a.cache) if a.cache else None, print_fn=print)
    tissue = [c for c in cands if c.group.startswith("tissue_model/")]
    from dicomnode.evaluation.inserted import DEFAULT_TABLE, is_current, read_table

    table = read_table(a.inserted or DEFAULT_TABLE)
    if a.no_whole_body:
        table = table.without_whole_body()
    if a.write_model and not is_current(table):
        raise SystemExit(f"{a.inserted or DEFAULT_TABLE}: the table of inserted-lesion candidates was made by other "
                         "analysis code (its 'code' hash differs): --write-model would fit the shipped calibration to "
                         "candidates the node no longer makes; regenerate it first with python3 -m "
                         "dicomnode.evaluation.inserted")
    inserted = table.candidates
    print(f"inserted-lesion PET candidates: {len(inserted)}, {sum(c.true for c in inserted)} true, from "
          f"{len(table.sources or [])} series" + ("" if is_current(table) else
                                                 " (made by other analysis code: regenerate the table)"))

    def logistic_fold(rows, held):
        model = fit_logistic([c for c in rows if c.patient != held and c.group.startswith("tissue_model/")])
        return lambda c: (with_rule(model.posterior(c.features), c.features) if c.group.startswith("tissue_model/")
                          else c.score)  # the lung method has the hand-set model only

    probs = {"calibrated": leave_one_patient_out(cands, inserted=inserted),
             "calibrated without inserted": leave_one_patient_out(cands),
             "hand-set": {key(c): c.score for c in cands},
             "logistic": leave_one_patient_out(cands, logistic_fold)}
    scored = {name: score_series(cands, p) for name, p in probs.items()}
    print(f"{'case':18s} " + " | ".join(f"{n}: top true, false, p(first true)" for n in scored))
    for case in scored["calibrated"]:
        print(f"{case:18s} " + " | ".join(f"{'yes' if s[case]['top_true'] else 'no ':3s} {s[case]['false_findings']} "
                                          f"({s[case]['first_true_probability']})" for s in scored.values()))
    figures = {}
    for name, s in scored.items():
        rel = reliability(s)
        figures[name] = {"series": s, "reliability": rel,
                         "top_true": sum(v["top_true"] for v in s.values()),
                         "false_findings": sum(v["false_findings"] for v in s.values())}
        print(f"{name}: top finding true in {figures[name]['top_true']} of {len(s)} series, "
              f"{figures[name]['false_findings']} false findings reported; reliability of the reported findings:")
        for b in rel:
            o = b["observed"]
            print(f"  {b['low']:.2f}-{b['high']:.2f} n={b['count']:3d} mean p={b['mean_predicted']} "
                  f"true {o['successes']}/{o['trials']} (95 % CI {o['wilson95'][0]:.2f}-{o['wilson95'][1]:.2f})")
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=1))
    if a.write_model:
        from dicomnode.modelio import MODELS_DIR, ModelCard, save_model

        model = fit_logistic(tissue)
        calibration = fit_findings(cands, inserted=inserted)
        lr = model.estimator[-1]
        tissue_cases = sorted({c.case for c in tissue})
        card = ModelCard(
            task="findings", classes=("other", "target"), feature_names=FEATURES,
            training_data=(f"detect candidates of the cases with lesion truth of {Path(a.cases).name} "
                           f"({len({c.case for c in cands})} series of {len({c.patient for c in cands})} patients: "
                           "sts STS_001/002/003 CT, MR T1, PET and the whole-body PET and T2 MR of STS_001 "
                           "(GTV_Mass), the chest CT A0002 in two kernels (boxes)); "
                           f"{len(cands)} candidates, {sum(c.true for c in cands)} true; the logistic regression "
                           f"on the {len(tissue)} tissue-method candidates"),
            cv_accuracy=round(sum(scored["logistic"][k]["top_true"] for k in tissue_cases) / len(tissue_cases), 3),
            cv_scheme=(f"leave-one-patient-out over {len({c.patient for c in tissue})} patients; cv_accuracy = "
                       f"fraction of the {len(tissue_cases)} tissue-method series whose top reported finding is the "
                       "tumour (logistic model)"),
            extra={"fill": model.fill, "lopo": {k: _brief(scored["logistic"][k]) for k in tissue_cases},
                   "reliability": figures["logistic"]["reliability"],
                   "calibration": {**calibration.as_dict(),
                                   "inserted_table": {"file": Path(a.inserted).name if a.inserted else
                                                      "findings_pet_inserted.json", "code": table.code,
                                                      "whole_body": not a.no_whole_body,
                                                      "sources": table.sources},
                                   "lopo": {k: _brief(v) for k, v in scored["calibrated"].items()},
                                   "reliability": figures["calibrated"]["reliability"]},
                   "coefficients": dict(zip(FEATURES, [round(float(c), 4) for c in lr.coef_[0]])),
                   "intercept": round(float(lr.intercept_[0]), 4),
                   "limits": "4 patients (3 sarcoma, 1 lung cancer); every training series holds a tumour; no "
                             "physiological-uptake negatives outside STS_001's whole-body PET; isodense CT sarcoma "
                             "and T1-only MR are not separable (docs/models.md)"})
        save_model(MODELS_DIR / "findings.skops", model.estimator, card)
        print(f"wrote {MODELS_DIR / 'findings.skops'}")
    return 0


def _brief(s: dict) -> dict:
    return {k: v for k, v in s.items() if k != "reported"} | {"reported": len(s["reported"])}


if __name__ == "__main__":
    raise SystemExit(main())
