#!/usr/bin/env python3
"""Train the models shipped in ``dicomnode/models/`` reproducibly, from data the repository can reach.

    python scripts/train_default_models.py [--data ../shared/data] [--out dicomnode/models] [--phantoms 40]

Scene model (``scene.skops``): body region from the scene descriptors of 60 mm axial slabs (every 30 mm).

| class | real series (patient) | slabs used |
|---|---|---|
| chest | chest-ct/A0002_B40f and A0002_B70f (Lung_Dx-A0002; one acquisition, two kernels) | all |
| head | head-mr/T1_sag (dcm_qa_decubitus HFS volunteer) | all but the lowest 20 % of the S-I extent (face, upper neck) |
| abdomen | abdomen-ct/upper_abdomen_j2k (Basel PET/CT patient; UIDs repaired on a temporary copy) | all |
| abdomen | abdomen-ct/abdomen_pelvis_nifti, above the iliac crest + 15 mm (TotalSegmentator example) | as said |
| pelvis | the same NIfTI, below the iliac crest - 15 mm | as said |
| extremity | sts/STS_001..003, CT, MR_T1 and PET each (3 patients) | all |

The iliac crest is found in the image: going up from the feet, the first axial level above which the bone lying
more than 50 mm lateral of the midline stays under 3 cm^2 (the iliac wings are gone; lower ribs are smaller).

Plus ``--phantoms`` synthetic slabs per (region, modality) from :mod:`dicomnode.analysis.scene_phantoms`
(head, chest, abdomen, pelvis, extremity on CT, MR and PET), used for training only. ``neck`` has no real series:
no neck phantom is drawn and the shipped model has no neck class (docs/models.md).

Cross-validation: leave one *real patient* out; the model of each fold is trained on the other real patients and
all phantoms, and scored on the held-out patient's slabs only. Phantoms are never scored. The figures go into the
model card and are printed; docs/models.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dicomnode.analysis.classify import grouped_cross_validation  # noqa: E402
from dicomnode.analysis.scene import MODEL_FEATURES, descriptor_vector, slab_descriptors, to_axial  # noqa: E402
from dicomnode.commands.train import (SLAB_MM, STRIDE_MM, confusion_text, load_volume,  # noqa: E402
                                      make_scene_estimator, phantom_samples)
from dicomnode.modelio import ModelCard, save_model  # noqa: E402

SEED = 20240601
#: Each real slab enters training this many times (phantoms once).
REAL_WEIGHT = 3


def iliac_crest_fraction(volume) -> float:
    """Fraction of the axial extent (from the feet) at the iliac crest of a CT volume in HU."""
    d = np.asarray(volume.direction, dtype=float)
    ax, sp, _ = to_axial(volume.array, volume.spacing_mm, d)
    superior_first = d[2, int(np.argmax(np.abs(d[2])))] < 0
    if superior_first:
        ax = ax[::-1]
    n = ax.shape[0]
    lateral = np.zeros(n)
    for k in range(n):
        bone = ax[k] > 250
        lab, m = ndi.label(bone)
        if m == 0:
            continue
        sizes = ndi.sum(bone, lab, range(1, m + 1))
        com = ndi.center_of_mass(bone, lab, range(1, m + 1))
        body = ax[k] > -500
        cx = np.nonzero(body.any(axis=0))[0].mean() if body.any() else ax.shape[2] / 2
        lateral[k] = sum(s for s, c in zip(sizes, com) if abs(c[1] - cx) * sp[2] > 50) * sp[1] * sp[2] / 100
    for k in range(n - 3):
        if (lateral[k:k + 3] < 3.0).all() and lateral[:k].max(initial=0) >= 3.0:
            return k / (n - 1)
    raise RuntimeError("no iliac crest found: the volume does not look like an abdomen-pelvis CT")


def real_sources(data: Path) -> list[tuple[str, str, str, tuple[float, float]]]:
    """(path, label, patient, keep) of every real series used."""
    nifti = data / "abdomen-ct/abdomen_pelvis_nifti/example_ct.nii.gz"
    crest = iliac_crest_fraction(load_volume(nifti))
    vol = load_volume(nifti)
    extent_mm = vol.shape[0] * vol.spacing_mm[0]
    margin = 15.0 / extent_mm
    rows = [
        (str(data / "chest-ct/A0002_B40f"), "chest", "Lung_Dx-A0002", (0.0, 1.0)),
        (str(data / "chest-ct/A0002_B70f"), "chest", "Lung_Dx-A0002", (0.0, 1.0)),
        (str(data / "head-mr/T1_sag"), "head", "dcm_qa_decubitus-HFS", (0.2, 1.0)),
        (str(data / "abdomen-ct/upper_abdomen_j2k"), "abdomen", "TotalSegmentator-j2k", (0.0, 1.0)),
        (str(nifti), "abdomen", "TotalSegmentator-nifti", (min(1.0, crest + margin), 1.0)),
        (str(nifti), "pelvis", "TotalSegmentator-nifti", (0.0, max(0.0, crest - margin))),
    ]
    for i in (1, 2, 3):
        for m in ("CT", "MR_T1", "PET"):
            rows.append((str(data / f"sts/STS_00{i}/{m}"), "extremity", f"STS_00{i}", (0.0, 1.0)))
    print(f"abdomen-pelvis NIfTI: iliac crest at {crest:.2f} of the axial extent ({crest * extent_mm:.0f} mm "
          "above the lowest slice)")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="the shared data folder")
    ap.add_argument("--out", default=str(REPO / "dicomnode" / "models"), help="where to write the models")
    ap.add_argument("--phantoms", type=int, default=40, help="phantom slabs per region and modality")
    ap.add_argument("--seed", type=int, default=SEED,
                    help=f"phantom seed (default {SEED}, the shipped models'; others check how much the figures "
                         "depend on the draw)")
    a = ap.parse_args(argv)
    data = Path(a.data)

    X, y, g, series = [], [], [], []
    for path, label, patient, keep in real_sources(data):
        v = load_volume(path)
        descs = slab_descriptors(v.array, v.spacing_mm, direction=v.direction, modality=v.modality, unit=v.unit,
                                 slab_mm=SLAB_MM, stride_mm=STRIDE_MM, keep=keep)
        for d in descs:
            X.append(descriptor_vector(d))
            y.append(label)
            g.append(patient)
            series.append(str(Path(path).relative_to(data)))
        print(f"{label:9s} {patient:24s} {len(descs):3d} slabs  {Path(path).relative_to(data)}")
    X, y, g = np.array(X), np.array(y), np.array(g, dtype=object)
    n_real = len(y)
    Xp, yp = phantom_samples(a.phantoms, ["head", "chest", "abdomen", "pelvis", "extremity"], a.seed)
    # real slabs count REAL_WEIGHT times in training (copies, never scored twice): there are few of them
    Xa = np.concatenate([X] * REAL_WEIGHT + [Xp])
    ya = np.concatenate([y] * REAL_WEIGHT + [yp])
    ga = np.concatenate([g] * REAL_WEIGHT + [np.array(["phantom"] * len(yp), dtype=object)])
    scored = np.arange(len(ya)) < n_real

    pred, proba = grouped_cross_validation(make_scene_estimator, Xa, ya, ga, scored=scored)
    classes = [str(c) for c in np.unique(ya)]
    acc = float(np.mean(pred[:n_real] == y))
    per_patient: dict[str, dict] = {}
    per_series: dict[str, dict] = {}
    for i in range(n_real):
        pp = per_patient.setdefault(g[i], {"label": y[i], "slabs": 0, "correct": 0})
        pp["slabs"] += 1
        pp["correct"] += int(pred[i] == y[i])
        ss = per_series.setdefault(f"{series[i]} [{y[i]}]", {"slabs": 0, "correct": 0, "predicted": {}})
        ss["slabs"] += 1
        ss["correct"] += int(pred[i] == y[i])
        ss["predicted"][str(pred[i])] = ss["predicted"].get(str(pred[i]), 0) + 1
    conf = [[int(sum(1 for t, p in zip(y, pred[:n_real]) if t == a_ and p == b_)) for b_ in classes]
            for a_ in classes]
    print(f"\nleave-one-patient-out accuracy over {len(set(g))} real patients, {n_real} slabs: {acc:.3f}")
    print(confusion_text(list(y), [str(p) for p in pred[:n_real]], classes))
    for s, v in per_series.items():
        print(f"  {s}: {v['correct']}/{v['slabs']} correct, predicted {v['predicted']}")

    est = make_scene_estimator().fit(Xa, ya)
    card = ModelCard(
        task="scene",
        classes=tuple(str(c) for c in est.classes_),
        feature_names=MODEL_FEATURES,
        training_data=(
            f"{n_real} axial slabs ({SLAB_MM:g} mm every {STRIDE_MM:g} mm) of 15 real series of 7 patients from "
            "../shared/data: chest CT (Lung_Dx-A0002, 2 kernels), head T1 MR (1 volunteer), upper-abdomen CT "
            "(1 patient), abdomen-pelvis CT NIfTI split at the iliac crest into abdomen and pelvis (1 patient), "
            "thigh CT/MR/PET (STS_001-003); plus "
            f"{len(yp)} synthetic phantom slabs ({a.phantoms} per region and modality: head, chest, abdomen, "
            f"pelvis, extremity x CT, MR, PET; seed {a.seed}). No neck data: no neck class."),
        cv_accuracy=acc,
        cv_scheme=(f"leave-one-patient-out over {len(set(g))} real patients, scored on real slabs only; phantoms "
                   "in every training fold"),
        extra={"per_patient": per_patient, "per_series": per_series, "confusion_classes": classes,
               "confusion": conf, "excluded_classes": ["neck"], "phantoms_per_region_modality": a.phantoms,
               "seed": a.seed, "real_weight": REAL_WEIGHT,
               "limits": "one real patient for chest, head and pelvis each: their CV figures measure transfer "
                         "from phantoms and other regions, on one patient"},
    )
    out = Path(a.out) / "scene.skops"
    save_model(out, est, card)
    print(f"\nsaved {out}")
    print(json.dumps({"cv_accuracy": acc, "per_patient": per_patient}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
