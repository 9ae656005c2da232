#!/usr/bin/env python3
"""Score the ``detect`` step against the physicians' truths and fit the findings model (docs/models.md).

    python scripts/evaluate_findings.py [--data ../shared/data] [--json out.json] [--write-model]

Series (each with the profile of its modality, run as the node does up to ``detect``, with the detect limits opened:
``probability_threshold = 0``, ``max_findings = 50``, so that every candidate is seen):

* ``sts/STS_00{1,2,3}/{CT,MR_T1,PET}``: RTSTRUCT ``GTV_Mass`` (:func:`dicomnode.io.roi.read_region`);
* ``wholebody-pet-mr/PET`` (Bq/ml; the loader gives SUV body weight) and
  ``wholebody-pet-mr/MR_T2``: ``GTV_Mass``. Same patient as STS_001: one patient in the leave-one-out folds;
* ``chest-ct/A0002_B40f``: the radiologists' boxes (lung method; hand-set model: one patient cannot be left out).

A candidate *hits* when its centroid lies inside the truth and more than 30 % of it is tumour.

The tissue-method model (:class:`dicomnode.analysis.detect.FittedModel`): a logistic regression on standardised,
scale-free candidate features (:data:`FEATURES`), fitted to the candidates of the *other* patients (leave one
patient out) and scored on the held-out patient's series. Printed per series: whether the most probable candidate
hits, the rank of the first hit and its probability, and the false findings at the reporting threshold (0.3); then a
reliability table of the held-out probabilities. ``--write-model`` fits on all patients and writes
``dicomnode/models/findings.skops`` and its card.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dicomnode.analysis.detect import FittedModel  # noqa: E402
from dicomnode.analysis.pipeline import Context, run_steps  # noqa: E402
from dicomnode.config import load_default_profiles  # noqa: E402
from dicomnode.io.load import load_series  # noqa: E402
from dicomnode.io.roi import read_region  # noqa: E402
from dicomnode.steps import registry  # noqa: E402

#: Scale-free features of a tissue-method candidate the model uses.
FEATURES = ("log10_volume_ml", "compactness", "elongation", "log10_cnr", "truncation", "enclosure", "polarity",
            "log2_to_reference", "mirror_uptake", "midline_offset", "log2_peak_to_percist")
#: Fill values that are not the training mean: a PET without the liver in view (a crop) has no PERCIST level; its
#: candidates count as at the level (log2 ratio 0), neither above nor below.
FIXED_FILL = {"log2_peak_to_percist": 0.0}
THRESHOLD = 0.5  # the shipped profiles' reporting threshold (conf/profiles/*.toml)


def _boxes(series, annotations: Path) -> np.ndarray:
    uids = [u for u, _ in series.frames]
    mask = np.zeros(series.volume.shape, dtype=bool)
    for xml in annotations.glob("*.xml"):
        k = uids.index(xml.stem)
        for obj in ET.parse(xml).getroot().iter("object"):
            b = obj.find("bndbox")
            x0, x1, y0, y1 = (int(b.findtext(t)) for t in ("xmin", "xmax", "ymin", "ymax"))
            mask[k, y0:y1 + 1, x0:x1 + 1] = True
    return mask


def cases(data: Path) -> list[tuple[str, str, Path, str, object]]:
    """(case name, patient, series folder, profile, truth) with truth = (RTSTRUCT path, ROI) or a boxes folder."""
    out = []
    for p in ("STS_001", "STS_002", "STS_003"):
        for mod, prof in (("CT", "ct"), ("MR_T1", "mr"), ("PET", "pet")):
            out.append((f"{p}/{mod}", p, data / "sts" / p / mod, prof,
                        (next((data / "sts" / p / f"{mod}_rtstruct").glob("*.dcm")), "GTV_Mass")))
    wb = data / "wholebody-pet-mr"
    for mod, prof in (("PET", "pet"), ("MR_T2", "mr")):
        out.append((f"wholebody/{mod}", "STS_001", wb / mod, prof, (next((wb / f"{mod}_rtstruct").glob("*.dcm")),
                                                                     "GTV_Mass")))
    chest = data / "chest-ct" / "A0002_B40f"
    out.append(("A0002/CT", "A0002", chest, "ct", chest / "annotations"))
    return out


def candidates(folder: Path, profile, truth) -> list[dict]:
    """Every detect candidate of one series with its features, probability and whether it hits."""
    paths = sorted(p for p in folder.iterdir() if p.suffix == ".dcm")
    series = load_series(paths)  # the whole-body PET in Bq/ml comes out in SUV (body weight)
    volume = series.volume
    mask = _boxes(series, truth) if isinstance(truth, Path) else read_region(truth[0], series, name=truth[1]).mask
    steps = list(profile.steps[:profile.steps.index("detect") + 1])
    params = {k: dict(v) for k, v in profile.params.items()}
    params["detect"] = {**params.get("detect", {}), "probability_threshold": 0.0, "max_findings": 50}
    params["detect"]["model"] = "hand-set"  # the candidates' own features are scored here, not the shipped model
    ctx = Context(volume=volume, original=volume, header={})
    run_steps(ctx, steps, params)
    out = []
    for f in ctx.findings:
        m = ctx.labels.by_label(f["label"]).mask
        centre = tuple(int(round(c)) for c in np.argwhere(m).mean(axis=0))
        tumour = float((m & mask).sum() / m.sum())
        out.append({"label": f["label"], "probability": f["probability"], "hit": bool(mask[centre]) and tumour > 0.3,
                    "tumour_fraction": round(tumour, 3), "volume_ml": f["volume_ml"],
                    "features": f["detect_features"]})
    return out


def fit(rows: list[dict]):
    """A standardised logistic regression on FEATURES, and the fill values of missing features (training means)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    fill = {}
    for name in FEATURES:
        vals = [r["features"][name] for r in rows if name in r["features"]]
        fill[name] = FIXED_FILL.get(name, float(np.mean(vals)) if vals else 0.0)
    proto = FittedModel(None, FEATURES, fill)
    X = np.array([proto.vector(r["features"]) for r in rows])
    y = np.array([r["hit"] for r in rows], dtype=int)
    est = make_pipeline(StandardScaler(), LogisticRegression(C=0.3, max_iter=1000)).fit(X, y)
    return FittedModel(est, FEATURES, fill)


def with_rule(p: float, features: dict) -> float:
    """The detect step's hand-set rules on top of the model (detect_tissue): symmetric or paired regions x 0.1, and
    physiological uptake told by organ context (heart, brain, kidneys, bladder, mirror twins) x 0.1 again."""
    p = p * 0.1 if features.get("symmetric") else p
    return p * 0.1 if features.get("physiological") else p


def _logit(p) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=float), 1e-9, 1 - 1e-9)
    return np.log(q / (1 - q))


def fit_platt(rows: list[dict]) -> tuple[float, float]:
    """Platt scaling of the hand-set ranking score (rules included): a logistic regression on its logit."""
    from sklearn.linear_model import LogisticRegression

    x = _logit([r["probability"] for r in rows])[:, None]
    y = np.array([r["hit"] for r in rows], dtype=int)
    lr = LogisticRegression(C=1.0, max_iter=1000).fit(x, y)
    return float(lr.coef_[0, 0]), float(lr.intercept_[0])


def score(results: dict[str, list[dict]], probs: dict[str, np.ndarray]) -> dict[str, dict]:
    out = {}
    for key, cands in results.items():
        pr = np.asarray(probs[key], dtype=float)
        hits = np.array([c["hit"] for c in cands], dtype=bool)
        order = np.argsort(-pr, kind="stable")
        rank = next((i + 1 for i, j in enumerate(order) if hits[j]), None)
        out[key] = {"candidates": len(cands), "top_hits": bool(len(cands) and hits[order[0]]),
                    "rank_of_first_hit": rank,
                    "its_probability": round(float(pr[order[rank - 1]]), 3) if rank else None,
                    "false_at_threshold": int(np.sum((pr >= THRESHOLD) & ~hits)),
                    "true_at_threshold": int(np.sum((pr >= THRESHOLD) & hits))}
    return out


def reliability(results: dict, probs: dict, bins=(0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0001)) -> list[dict]:
    p = np.concatenate([np.asarray(probs[k], dtype=float) for k in results])
    h = np.concatenate([[c["hit"] for c in results[k]] for k in results]).astype(float)
    out = []
    for lo, hi in zip(bins[:-1], bins[1:]):
        sel = (p >= lo) & (p < hi)
        out.append({"bin": f"{lo:.1f}-{min(hi, 1):.1f}", "n": int(sel.sum()),
                    "mean_probability": round(float(p[sel].mean()), 3) if sel.any() else None,
                    "fraction_hits": round(float(h[sel].mean()), 3) if sel.any() else None})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="the shared data folder")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--write-model", action="store_true", help="fit on all patients, write dicomnode/models/findings")
    ap.add_argument("--candidates", help="a JSON file of the scored candidates: read when it exists (no series is "
                                         "run), else written")
    a = ap.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    data = Path(a.data)
    registry()
    profiles = load_default_profiles()
    todo = cases(data)
    patient = {name: p for name, p, *_ in todo}
    cache = Path(a.candidates) if a.candidates else None
    if cache is not None and cache.is_file():
        results = json.loads(cache.read_text())
    else:
        results = {name: candidates(folder, profiles[prof], truth) for name, _, folder, prof, truth in todo}
        if cache is not None:
            cache.write_text(json.dumps(results))
    tissue = [k for k in results if not k.startswith("A0002")]
    hand = score(results, {k: [c["probability"] for c in v] for k, v in results.items()})
    lopo_probs = {}
    for held in sorted({patient[k] for k in tissue}):
        train = [c for k in tissue if patient[k] != held for c in results[k]]
        model = fit(train)
        for k in tissue:
            if patient[k] == held:
                lopo_probs[k] = [with_rule(model.posterior(c["features"]), c["features"]) for c in results[k]]
    for k in results:
        lopo_probs.setdefault(k, [c["probability"] for c in results[k]])  # lung method: hand-set
    lopo = score(results, lopo_probs)
    # the hand-set ranking with its probabilities Platt-scaled, leave one patient out (model = "calibrated")
    from dicomnode.analysis.detect import platt

    platt_probs = {}
    for held in sorted({patient[k] for k in tissue}):
        cal = fit_platt([c for k in tissue if patient[k] != held for c in results[k]])
        for k in tissue:
            if patient[k] == held:
                platt_probs[k] = [platt(c["probability"], cal) for c in results[k]]
    for k in results:
        platt_probs.setdefault(k, [c["probability"] for c in results[k]])
    calibrated = score(results, platt_probs)

    def fmt(r: dict) -> str:
        return (f"{'yes' if r['top_hits'] else 'no ':3s} {str(r['rank_of_first_hit']):>4s} ({r['its_probability']}) "
                f"FP@{THRESHOLD:g}={r['false_at_threshold']}")

    print(f"{'series':16s} {'cands':>5s} | hand-set: top hits, rank of first hit (p), false at {THRESHOLD:g} "
          "| LOPO logistic | LOPO calibrated hand-set")
    for key in results:
        print(f"{key:16s} {hand[key]['candidates']:5d} | {fmt(hand[key]):34s} | {fmt(lopo[key]):34s} | "
              f"{fmt(calibrated[key])}")
    for label, s in (("hand-set", hand), ("LOPO logistic", lopo), ("LOPO calibrated", calibrated)):
        print(f"{label}: top candidate is the tumour in {sum(v['top_hits'] for v in s.values())} of {len(s)}; "
              f"reported (top and p >= {THRESHOLD:g}) in "
              f"{sum(1 for v in s.values() if v['top_hits'] and v['its_probability'] >= THRESHOLD)}; "
              f"false findings at {THRESHOLD:g}: {sum(v['false_at_threshold'] for v in s.values())}")
    pet = [k for k in results if k.endswith("/PET")]
    for label, probs in (("hand-set", {k: [c["probability"] for c in v] for k, v in results.items()}),
                         ("LOPO logistic", lopo_probs), ("LOPO calibrated", platt_probs)):
        found = sum(1 for k in pet if any(c["hit"] and p >= THRESHOLD for c, p in zip(results[k], probs[k])))
        worst = max(int(sum(1 for c, p in zip(results[k], probs[k]) if p >= THRESHOLD and not c["hit"])) for k in pet)
        print(f"{label}: PET tumours (one per series, all >= 1 mL) reported at {THRESHOLD:g}: {found} of {len(pet)}, "
              f"most false findings in one PET series: {worst}")
    rel = reliability({k: results[k] for k in tissue}, lopo_probs)
    rel_cal = reliability({k: results[k] for k in tissue}, platt_probs)
    for label, rr in (("LOPO logistic", rel), ("LOPO calibrated hand-set", rel_cal)):
        print(f"reliability of the {label} probabilities (tissue method):")
        for r in rr:
            print(f"  {r['bin']:8s} n={r['n']:4d} mean p={r['mean_probability']} hits={r['fraction_hits']}")
    if a.json:
        Path(a.json).write_text(json.dumps({"hand_set": hand, "lopo_logistic": lopo, "reliability": rel,
                                            "lopo_calibrated": calibrated, "reliability_calibrated": rel_cal},
                                           indent=1))
    if a.write_model:
        from dicomnode.modelio import MODELS_DIR, ModelCard, save_model

        model = fit([c for k in tissue for c in results[k]])
        slope, intercept = fit_platt([c for k in tissue for c in results[k]])
        lr = model.estimator[-1]
        card = ModelCard(
            task="findings", classes=("other", "target"), feature_names=FEATURES,
            training_data=("detect candidates (tissue method) of sts STS_001/002/003 CT, MR T1, PET and the "
                           "whole-body PET and T2 MR of STS_001, scored against the GTV_Mass RTSTRUCTs; "
                           f"{sum(len(results[k]) for k in tissue)} candidates, "
                           f"{sum(c['hit'] for k in tissue for c in results[k])} hits"),
            cv_accuracy=round(sum(lopo[k]["top_hits"] for k in tissue) / len(tissue), 3),
            cv_scheme=("leave-one-patient-out over 3 patients; cv_accuracy = fraction of the 11 series whose top "
                       "candidate is the tumour (logistic model)"),
            extra={"fill": model.fill, "lopo": {k: lopo[k] for k in tissue}, "reliability": rel,
                   "hand_set_calibration": {
                       "slope": round(slope, 4), "intercept": round(intercept, 4),
                       "what": "Platt scaling of the hand-set naive Bayes ranking score (symmetry and organ-context "
                               "rules included): p = 1 / (1 + exp(-(slope * logit(score) + intercept))); detect "
                               "model = \"calibrated\"",
                       "lopo": {k: calibrated[k] for k in tissue}, "reliability": rel_cal},
                   "coefficients": dict(zip(FEATURES, [round(float(c), 4) for c in lr.coef_[0]])),
                   "intercept": round(float(lr.intercept_[0]), 4),
                   "limits": "3 patients; no physiological-uptake negatives outside STS_001's whole-body PET; "
                             "isodense CT sarcoma and T1-only MR are not separable (docs/models.md)"})
        save_model(MODELS_DIR / "findings.skops", model.estimator, card)
        print(f"wrote {MODELS_DIR / 'findings.skops'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
