#!/usr/bin/env python3
"""Score the ``detect`` step against the physicians' contours of ``../shared/data/sts`` (docs/models.md).

    python scripts/evaluate_findings.py [--data ../shared/data] [--json out.json]

For each of the 9 series (STS_001..003 x CT, MR_T1, PET) the shipped profile of its modality (ct, mr, pet) runs
its own steps up to ``detect``, exactly as the node does, except that the detect limits are opened
(``probability_threshold = 0``, ``max_findings = 50``) so that every candidate is seen. The truth is the RTSTRUCT's
``GTV_Mass`` region read onto the series' grid by :func:`dicomnode.io.roi.read_region`. A candidate *hits* when its
centroid lies inside the contour and more than 30 % of it is tumour (the test's criterion).

Printed per series: whether the most probable candidate hits, the rank of the best-ranked hit (none: no candidate
hits) and its probability, for

* the shipped hand-set naive-Bayes model (:data:`dicomnode.analysis.detect.TISSUE_MODEL`), and
* a Gaussian naive Bayes fitted to the candidates of the *other two* patients (leave one patient out), over the
  features every candidate has. It is the check of whether these data can train a better model than the hand-set
  one; it is not shipped (docs/models.md says why).
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

from dicomnode.analysis.pipeline import Context, run_steps  # noqa: E402
from dicomnode.config import load_default_profiles  # noqa: E402
from dicomnode.io.load import load_series  # noqa: E402
from dicomnode.io.roi import read_region  # noqa: E402
from dicomnode.steps import registry  # noqa: E402

PROFILE = {"CT": "ct", "MR_T1": "mr", "PET": "pet"}
PATIENTS = ("STS_001", "STS_002", "STS_003")
#: Features present on every tissue-method candidate (``tissue_outlier`` is absent on CT, which has no class model).
LEARNED_FEATURES = ("log10_volume_ml", "compactness", "elongation", "log10_cnr", "truncation", "enclosure",
                    "polarity")


def candidates(data: Path, patient: str, modality: str, profiles: dict) -> list[dict]:
    """Every detect candidate of one series, with its hand-set probability, features and whether it hits."""
    folder = data / "sts" / patient / modality
    series = load_series(sorted(folder.glob("*.dcm")))
    truth = read_region(next((data / "sts" / patient / f"{modality}_rtstruct").glob("*.dcm")), series,
                        name="GTV_Mass").mask
    profile = profiles[PROFILE[modality]]
    steps = list(profile.steps[:profile.steps.index("detect") + 1])
    params = {k: dict(v) for k, v in profile.params.items()}
    params["detect"] = {**params.get("detect", {}), "probability_threshold": 0.0, "max_findings": 50}
    ctx = Context(volume=series.volume, original=series.volume, header={})
    run_steps(ctx, steps, params)
    out = []
    for f in ctx.findings:
        mask = ctx.labels.by_label(f["label"]).mask
        centre = tuple(int(round(c)) for c in np.argwhere(mask).mean(axis=0))
        tumour = float((mask & truth).sum() / mask.sum())
        out.append({"label": f["label"], "probability": f["probability"],
                    "hit": bool(truth[centre]) and tumour > 0.3, "tumour_fraction": round(tumour, 3),
                    "volume_ml": f["volume_ml"], "features": f["detect_features"]})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="the shared data folder")
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    data = Path(a.data)
    registry()
    profiles = load_default_profiles()
    rows = {(p, m): candidates(data, p, m, profiles) for p in PATIENTS for m in PROFILE}

    def score(probs: dict) -> dict:
        res = {}
        for key, cands in rows.items():
            pr = np.asarray(probs[key])
            hits = np.array([c["hit"] for c in cands], dtype=bool)
            order = np.argsort(-pr, kind="stable")
            rank = next((i + 1 for i, j in enumerate(order) if hits[j]), None)
            res["/".join(key)] = {"candidates": len(cands), "top_hits": bool(hits[order[0]]) if len(cands) else False,
                                  "rank_of_first_hit": rank,
                                  "its_probability": round(float(pr[order[rank - 1]]), 3) if rank else None}
        return res

    hand = score({k: [c["probability"] for c in v] for k, v in rows.items()})

    from sklearn.naive_bayes import GaussianNB

    def vec(c: dict) -> list[float]:
        return [float(c["features"].get(k, 0.0)) for k in LEARNED_FEATURES]

    learned_probs = {}
    for held in PATIENTS:
        X = [vec(c) for (p, _), v in rows.items() if p != held for c in v]
        y = [c["hit"] for (p, _), v in rows.items() if p != held for c in v]
        est = GaussianNB().fit(np.array(X), np.array(y))
        for (p, m), v in rows.items():
            if p == held:
                learned_probs[(p, m)] = est.predict_proba(np.array([vec(c) for c in v]))[:, 1] if v else []
    learned = score(learned_probs)

    print(f"{'series':16s} {'cands':>5s} | hand-set: top hits, rank of first hit (p) | LOPO Gaussian NB: same")
    def fmt(r: dict) -> str:
        return f"{'yes' if r['top_hits'] else 'no ':3s} {str(r['rank_of_first_hit']):>4s} ({r['its_probability']})"

    for key in hand:
        h, g = hand[key], learned[key]
        print(f"{key:16s} {h['candidates']:5d} | {fmt(h):28s} | {fmt(g)}")
    findable = sum(1 for s in hand.values() if s["rank_of_first_hit"])
    print(f"\nseries whose tumour is among the candidates: {findable} of {len(hand)}")
    print(f"top candidate is the tumour: hand-set {sum(s['top_hits'] for s in hand.values())}, "
          f"LOPO Gaussian NB {sum(s['top_hits'] for s in learned.values())}")
    print(f"top candidate is the tumour with probability >= 0.5: hand-set "
          f"{sum(1 for s in hand.values() if s['top_hits'] and s['its_probability'] >= 0.5)}, LOPO Gaussian NB "
          f"{sum(1 for s in learned.values() if s['top_hits'] and s['its_probability'] >= 0.5)}")
    if a.json:
        Path(a.json).write_text(json.dumps({"hand_set": hand, "lopo_gaussian_nb": learned}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
