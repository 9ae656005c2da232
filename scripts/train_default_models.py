#!/usr/bin/env python3
"""Train the scene model shipped in ``dicomnode/models/`` reproducibly, from the case file's truths.

    python scripts/train_default_models.py [--cases conf/evaluation/shared.toml] [--data-root ../shared/data]
                                           [--out dicomnode/models] [--phantoms 40] [--cache DIR]

The training set and the fitting are :mod:`dicomnode.scene_training`, the same code ``dicomnode evaluate
--leave-one-patient-out`` refits per patient: the scene truths of the case file (a series labelled as a whole gives
its middle 70 % along z; regions give the slabs inside them), 20-22 cm crops of the chest and abdomen CT, the
abdomen-pelvis NIfTI split at the iliac crest, and ``--phantoms`` synthetic slabs per (region, modality), 60 mm slabs
every 30 mm. ``neck`` has no real series: the shipped model has no neck class (docs/models.md).

Figures on the card: every training patient held out once (inner leave-one-patient-out): slab accuracy and each
series run through :func:`~dicomnode.analysis.scene.recognise` with a model and temperatures that did not see its
patient. The calibration temperatures of the shipped model are fitted on those held-out posteriors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dicomnode.evaluation.cases import load_cases  # noqa: E402
from dicomnode.scene_training import (PHANTOMS, REAL_WEIGHT, SEED, FeatureCache, case_examples, fit_scene,  # noqa: E402
                                      phantom_rows, save_scene_model)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=str(REPO / "conf" / "evaluation" / "shared.toml"), help="the case file")
    ap.add_argument("--data-root", default=None, help="the shared data folder (default: the case file's data_root)")
    ap.add_argument("--out", default=str(REPO / "dicomnode" / "models"), help="where to write the model")
    ap.add_argument("--phantoms", type=int, default=PHANTOMS, help="phantom slabs per region and modality")
    ap.add_argument("--seed", type=int, default=SEED, help=f"phantom seed (default {SEED}, the shipped model's)")
    ap.add_argument("--cache", default=None, help="folder caching the slab descriptors per series")
    a = ap.parse_args(argv)
    case_file = load_cases(a.cases, data_root=a.data_root)
    cache = FeatureCache(a.cache)
    examples = case_examples(case_file, cache=cache, print_fn=print)
    phantoms = phantom_rows(a.phantoms, a.seed, cache=cache)
    fitted = fit_scene(examples, phantoms)
    print(f"\nslabs, leave-one-patient-out: {fitted.slab_accuracy:.3f} over {len(fitted.patients)} patients")
    print("series, leave-one-patient-out (the scene step: slab model + landmarks + calibration):")
    for r in fitted.held_out:
        tag = "right" if r["right"] else "unknown" if r["abstained"] else "WRONG"
        print(f"  {tag:7s} {r['series'][:60]:60s} truth {r['truth']:15s} -> {r['label']:9s} p={r['p']:.2f}")
    rows = fitted.held_out
    uncropped = [r for r in rows if not r["crop"]]
    figures = {
        "series": len(rows), "right": sum(r["right"] for r in rows), "unknown": sum(r["abstained"] for r in rows),
        "wrong_with_p_ge_0.5": sum(r["wrong_confident"] for r in rows),
        "uncropped_series": len(uncropped), "uncropped_right": sum(r["right"] for r in uncropped),
        "uncropped_wrong_with_p_ge_0.5": sum(r["wrong_confident"] for r in uncropped),
    }
    print(json.dumps(figures))
    out = save_scene_model(
        Path(a.out) / "scene.skops", fitted,
        training_data=(f"{fitted.n_slabs} axial slabs (60 mm every 30 mm) of {len(examples)} series and crops of "
                       f"{len(fitted.patients)} patients from the scene truths of {Path(a.cases).name} and the "
                       f"abdomen-pelvis NIfTI (dicomnode.scene_training); plus {len(phantoms[1])} synthetic phantom "
                       f"slabs ({a.phantoms} per region and modality, seed {a.seed}). No neck data: no neck class."),
        extra={"series_lopo": rows, "series_figures": figures, "excluded_classes": ["neck"],
               "phantoms_per_region_modality": a.phantoms, "seed": a.seed, "real_weight": REAL_WEIGHT,
               "limits": "few real patients per region and modality (one real CT head, one real MR abdomen "
                         "patient, one breast MR); MR outside the head and thigh mostly gives unknown; PET trunk "
                         "regions come from uptake landmarks (liver, bladder) checked on one whole-body FDG PET"})
    print(f"\ntemperatures: CT {fitted.temperature_ct:.2f}, other {fitted.temperature_other:.2f}\nsaved {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
