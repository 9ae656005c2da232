#!/usr/bin/env python3
"""Train the models shipped in ``dicomnode/models/`` reproducibly, from data the repository can reach.

    python scripts/train_default_models.py [--data ../shared/data] [--out dicomnode/models] [--phantoms 40]

Scene model (``scene.skops``): body region of 60 mm axial slabs (every 30 mm) from their scene descriptors
(:func:`dicomnode.analysis.scene.scene_profile`, :func:`~dicomnode.analysis.scene.profile_slabs`), the same slabs the
``scene`` step classifies. The real series, their labels and patients are :data:`SOURCES` (docs/models.md has the
table); 20 cm crops cut inside the chest and upper-abdomen CT teach fields of view that cut the body. The
abdomen-pelvis NIfTI is split at the iliac crest, found in the image: going up from the feet, the first axial level
above which the bone lying more than 50 mm lateral of the midline stays under 3 cm^2.

Plus ``--phantoms`` synthetic slabs per (region, modality) from :mod:`dicomnode.analysis.scene_phantoms`
(head, chest, abdomen, pelvis, extremity on CT, MR and PET), used for training only. ``neck`` has no real series:
no neck phantom is drawn and the shipped model has no neck class (docs/models.md).

Cross-validation: leave one *real patient* out; the model of each fold is trained on the other real patients and
all phantoms, and scored on the held-out patient's slabs only. Then every real series runs through
:func:`~dicomnode.analysis.scene.recognise` (landmarks, calibration, regions) with the model and temperatures of the
fold that did not see its patient: the series-level figures docs/models.md quotes. The calibration temperatures of
the shipped model (CT and other modalities) are fitted on all held-out slab posteriors, each patient counting once.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dicomnode.analysis.classify import grouped_cross_validation  # noqa: E402
from dicomnode.analysis.scene import (MODEL_FEATURES, SceneProfile, descriptor_vector, fit_temperature,  # noqa: E402
                                      profile_slabs, recognise, scene_profile, to_axial)
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


def series_volume(data: Path, key: str):
    """The volume of ``data / key``, read as the node reads it (``io/load.py``)."""
    return load_volume(data / key)


def crop_fov(volume, size_mm: float, where: tuple[float, float]):
    """A square field of view ``size_mm`` wide cut from each axial slice, centred at fraction ``where`` (row,
    column) of the body's bounding box: a crop inside the body, as a small reconstruction diameter gives."""
    from dicomnode.analysis.volume import Volume

    a = volume.array
    body = (a > -500).any(axis=0) if volume.modality == "CT" else (a > np.percentile(a, 60)).any(axis=0)
    rows, cols = np.nonzero(body)
    cy = rows.min() + where[0] * (rows.max() - rows.min())
    cx = cols.min() + where[1] * (cols.max() - cols.min())
    hy = int(size_mm / volume.spacing_mm[1] / 2)
    hx = int(size_mm / volume.spacing_mm[2] / 2)
    y0, x0 = max(0, int(cy) - hy), max(0, int(cx) - hx)
    return Volume(np.ascontiguousarray(a[:, y0:y0 + 2 * hy, x0:x0 + 2 * hx]), volume.spacing_mm, volume.origin_mm,
                  volume.direction, modality=volume.modality, unit=volume.unit)


#: (series, label, patient, keep (fraction of the z extent from the feet), crops) of every real series used.
#: ``crops``: (FOV mm, (row, column) fraction of the body's box) views cut from the series, same label.
_CHEST_CROPS = ((200.0, (0.45, 0.3)), (200.0, (0.45, 0.7)), (200.0, (0.5, 0.5)))
_ABDOMEN_CROPS = ((200.0, (0.5, 0.35)), (220.0, (0.5, 0.5)))
SOURCES: tuple[tuple[str, str, str, tuple[float, float], tuple], ...] = (
    ("chest-ct/A0002_B40f", "chest", "Lung_Dx-A0002", (0.0, 1.0), _CHEST_CROPS),
    ("chest-ct/A0002_B70f", "chest", "Lung_Dx-A0002", (0.0, 1.0), ()),
    ("head-mr/T1_sag", "head", "dcm_qa_decubitus-HFS", (0.2, 1.0), ()),
    ("abdomen-ct/upper_abdomen_j2k", "abdomen", "TotalSegmentator-j2k", (0.0, 1.0), _ABDOMEN_CROPS),
    *((f"sts/STS_00{i}/{m}", "extremity", f"STS_00{i}", (0.0, 1.0), ()) for i in (1, 2, 3)
      for m in ("CT", "MR_T1", "PET")),
    ("wholebody-pet-mr/MR_T2", "extremity", "STS_001", (0.0, 1.0), ()),
    # T2 and ADC run from the pelvic inlet to the lung bases and heart: the middle 70 % is abdomen
    ("abdomen-mr/T2_ax", "abdomen", "CMB-CRC-MSB-06489", (0.15, 0.85), ()),
    ("abdomen-mr/ADC", "abdomen", "CMB-CRC-MSB-06489", (0.15, 0.85), ()),
    ("breast-mr/DCE_3DFGRE", "chest", "UCSF-BR-06", (0.0, 1.0), ()),
    ("head-ct/CT", "head", "dcm_qa_ct-GE", (0.0, 1.0), ()),
    ("enhanced-mr/siemens_xa30_T1_sag", "head", "dcm_qa_xa30", (0.25, 1.0), ()),
)
NIFTI = "abdomen-ct/abdomen_pelvis_nifti/example_ct.nii.gz"


@dataclass
class RealSeries:
    """One real series (or a crop of one) as the scene step sees it: its profile, slabs and truth."""

    key: str
    label: str
    patient: str
    profile: SceneProfile
    slabs: list
    keep: tuple[float, float]
    crop: bool = False

    def kept(self) -> list:
        """The slabs whose centre lies within ``keep`` (fraction of the z extent from the feet)."""
        z = self.profile.z_mm
        lo, hi = float(z.min()), float(z.max())
        return [d for a, b, d in self.slabs if self.keep[0] <= ((a + b) / 2 - lo) / max(hi - lo, 1e-6) <= self.keep[1]]


def _series(v, key, label, patient, keep, crop=False) -> RealSeries:
    prof = scene_profile(v.array, v.spacing_mm, direction=v.direction, origin_mm=v.origin_mm, modality=v.modality,
                         unit=v.unit)
    return RealSeries(key, label, patient, prof, profile_slabs(prof, slab_mm=SLAB_MM, stride_mm=STRIDE_MM), keep,
                      crop)


def collect(data: Path, print_fn=print) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], list[RealSeries]]:
    """Slab descriptor rows of every real series: X (N, D), labels, patients, the series of each row, and the
    series themselves (crops included)."""
    X, y, g, names, out = [], [], [], [], []

    def add(rs: RealSeries) -> None:
        kept = rs.kept()
        for d in kept:
            X.append(descriptor_vector(d))
            y.append(rs.label)
            g.append(rs.patient)
            names.append(rs.key)
        out.append(rs)
        print_fn(f"{rs.label:9s} {rs.patient:24s} {len(kept):3d} slabs  {rs.key}")

    for key, label, patient, keep, crops in SOURCES:
        v = series_volume(data, key)
        add(_series(v, key, label, patient, keep))
        for size, where in crops:
            add(_series(crop_fov(v, size, where), f"{key} crop {size:g} mm at {where}", label, patient, keep, True))
    nifti = load_volume(data / NIFTI)
    crest = iliac_crest_fraction(nifti)
    margin = 15.0 / (nifti.shape[0] * nifti.spacing_mm[0])
    print_fn(f"abdomen-pelvis NIfTI: iliac crest at {crest:.2f} of the axial extent")
    add(_series(nifti, NIFTI + " above crest", "abdomen", "TotalSegmentator-nifti", (min(1.0, crest + margin), 1.0)))
    add(_series(nifti, NIFTI + " below crest", "pelvis", "TotalSegmentator-nifti", (0.0, max(0.0, crest - margin))))
    return np.array(X), np.array(y), np.array(g, dtype=object), names, out


def lopo(X, y, g, Xp, yp, *, patients=None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Leave-one-patient-out posteriors of the real rows (phantoms in every fold): (pred, proba, classes)."""
    n_real = len(y)
    Xa = np.concatenate([X] * REAL_WEIGHT + [Xp])
    ya = np.concatenate([y] * REAL_WEIGHT + [yp])
    ga = np.concatenate([g] * REAL_WEIGHT + [np.array(["phantom"] * len(yp), dtype=object)])
    scored = np.arange(len(ya)) < n_real
    if patients is not None:
        scored &= np.isin(ga, list(patients))
    pred, proba = grouped_cross_validation(make_scene_estimator, Xa, ya, ga, scored=scored)
    return pred[:n_real], proba[:n_real], [str(c) for c in np.unique(ya)]


def fit_final(X, y, Xp, yp):
    return make_scene_estimator().fit(np.concatenate([X] * REAL_WEIGHT + [Xp]),
                                      np.concatenate([y] * REAL_WEIGHT + [yp]))


def _base_key(rs: RealSeries) -> str:
    return rs.key.replace(" above crest", "").replace(" below crest", "")


def _truth(rs: RealSeries) -> set[str]:
    return {"abdomen", "pelvis"} if _base_key(rs) == NIFTI else {rs.label}


def unique_series(series: list[RealSeries]) -> list[RealSeries]:
    """One entry per series (the NIfTI's abdomen and pelvis parts are one series)."""
    seen, out = set(), []
    for rs in series:
        if _base_key(rs) not in seen:
            seen.add(_base_key(rs))
            out.append(rs)
    return out


def held_out_posteriors(series: list[RealSeries], X, y, g, Xp, yp) -> tuple[dict, dict]:
    """For each patient, the model fitted without them and its posteriors on every slab of their series."""
    from dicomnode.analysis.classify import posteriors

    models, preds = {}, {}
    for rs in unique_series(series):
        if rs.patient not in models:
            keep = g != rs.patient
            models[rs.patient] = fit_final(X[keep], y[keep], Xp, yp)
        preds[_base_key(rs)] = posteriors(models[rs.patient], np.stack([descriptor_vector(d) for _, _, d in rs.slabs]))
    return models, preds


#: Temperatures tried when making the calibration safe (see :func:`fold_temperatures`).
_T_GRID = np.exp(np.linspace(0.0, np.log(20.0), 60))


def fold_temperatures(exclude: str | None, series: list[RealSeries], preds: dict, X, y, g, proba,
                      classes) -> tuple[float, float]:
    """Calibration temperatures (CT, other modalities) fitted without patient ``exclude``.

    First the temperature that minimises the held-out slabs' negative log-likelihood (each patient counting once);
    then, if needed, the smallest larger one under which no other patient's series (held out, through
    :func:`recognise`; crops we cut are not counted) gets a wrong label with p >= 0.5: calibration aimed at the
    rule the node promises.
    """
    ti = np.array([classes.index(c) for c in y])
    is_ct = X[:, MODEL_FEATURES.index("is_ct")] == 1
    keep = g != exclude
    out = []
    for ct in (True, False):
        rows = keep & (is_ct == ct)
        t0 = fit_temperature(proba[rows], ti[rows], g[rows])
        cases = [rs for rs in unique_series(series)
                 if rs.patient != exclude and rs.profile.is_ct == ct and not rs.crop]
        t_safe = t0
        for t in [t0] + [t for t in _T_GRID if t > t0]:
            t_safe = float(t)
            if not any(_confidently_wrong(rs, preds[_base_key(rs)], t) for rs in cases):
                break
        out.append(t_safe)
    return out[0], out[1]


def _confidently_wrong(rs: RealSeries, pred, temperature: float) -> bool:
    names, P = pred
    res = recognise(rs.profile, rs.slabs, P, names, temperature=temperature)
    return res.label not in _truth(rs) and res.label != "unknown" and res.probabilities.get(res.label, 0) >= 0.5


def series_lopo(series: list[RealSeries], X, y, g, Xp, yp, proba, classes, *, patients=None) -> list[dict]:
    """Each real series run through :func:`recognise` with a model and temperatures fitted without its patient.

    ``proba`` are the slab-level leave-one-patient-out posteriors (:func:`lopo`); the temperatures of a fold are
    fitted on the other patients only (:func:`fold_temperatures`).
    """
    _, preds = held_out_posteriors(series, X, y, g, Xp, yp)
    rows, temps = [], {}
    for rs in unique_series(series):
        if patients is not None and rs.patient not in patients:
            continue
        if rs.patient not in temps:
            temps[rs.patient] = fold_temperatures(rs.patient, series, preds, X, y, g, proba, classes)
        t_ct, t_other = temps[rs.patient]
        rows.append(run_series(preds[_base_key(rs)], rs, t_ct, t_other))
    return rows


def run_series(pred, rs: RealSeries, t_ct: float, t_other: float) -> dict:
    """The scene of one series from its slab posteriors ``pred`` (names, P), as the ``scene`` step computes it."""
    names, P = pred
    truth = _truth(rs)
    t = t_ct if rs.profile.is_ct else t_other
    res = recognise(rs.profile, rs.slabs, P, names, temperature=t)
    p = res.probabilities.get(res.label, 0.0)
    return {"series": _base_key(rs), "patient": rs.patient, "truth": "/".join(sorted(truth)), "label": res.label,
            "p": round(p, 3), "temperature": round(t, 3), "right": res.label in truth,
            "abstained": res.label == "unknown",
            "wrong_confident": res.label not in truth and res.label != "unknown" and p >= 0.5,
            "regions": [(r.label, [round(z) for z in r.z_mm], round(r.probability, 2)) for r in res.regions]}


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

    X, y, g, names, series = collect(data)
    n_real = len(y)
    Xp, yp = phantom_samples(a.phantoms, ["head", "chest", "abdomen", "pelvis", "extremity"], a.seed)
    pred, proba, classes = lopo(X, y, g, Xp, yp)
    acc = float(np.mean(pred == y))
    print(f"\nslabs, leave-one-patient-out: {acc:.3f} ({int(np.sum(pred == y))}/{n_real}) over {len(set(g))} patients")
    print(confusion_text(list(y), [str(p) for p in pred], classes))
    rows = series_lopo(series, X, y, g, Xp, yp, proba, classes)
    print("\nseries, leave-one-patient-out (the scene step: slab model + landmarks + calibration):")
    for r in rows:
        tag = "right" if r["right"] else "unknown" if r["abstained"] else "WRONG"
        print(f"  {tag:7s} {r['series'][:60]:60s} truth {r['truth']:15s} -> {r['label']:9s} p={r['p']:.2f}")
    uncropped = [r for r in rows if " crop " not in r["series"]]
    figures = {
        "series": len(rows), "right": sum(r["right"] for r in rows), "unknown": sum(r["abstained"] for r in rows),
        "wrong_with_p_ge_0.5": sum(r["wrong_confident"] for r in rows),
        "uncropped_series": len(uncropped), "uncropped_right": sum(r["right"] for r in uncropped),
    }
    print(json.dumps(figures))

    _, preds = held_out_posteriors(series, X, y, g, Xp, yp)
    t_ct, t_other = fold_temperatures(None, series, preds, X, y, g, proba, classes)
    est = fit_final(X, y, Xp, yp)
    card = ModelCard(
        task="scene",
        classes=tuple(str(c) for c in est.classes_),
        feature_names=MODEL_FEATURES,
        training_data=(
            f"{n_real} axial slabs ({SLAB_MM:g} mm every {STRIDE_MM:g} mm) of {len(series)} real series and crops "
            f"of {len(set(g))} patients from ../shared/data (scripts/train_default_models.py SOURCES); plus "
            f"{len(yp)} synthetic phantom slabs ({a.phantoms} per region and modality: head, chest, abdomen, "
            f"pelvis, extremity x CT, MR, PET; seed {a.seed}). No neck data: no neck class."),
        cv_accuracy=acc,
        cv_scheme=(f"leave-one-patient-out over {len(set(g))} real patients, scored on real slabs only; phantoms "
                   "in every training fold"),
        extra={"series_lopo": rows, "series_figures": figures, "confusion_classes": classes,
               "temperature_ct": t_ct, "temperature_other": t_other, "slab_mm": SLAB_MM, "stride_mm": STRIDE_MM,
               "excluded_classes": ["neck"], "phantoms_per_region_modality": a.phantoms, "seed": a.seed,
               "real_weight": REAL_WEIGHT,
               "limits": "few real patients per region and modality (one real CT head, one real MR abdomen "
                         "patient, one breast MR); MR and PET outside the thigh mostly give unknown"},
    )
    out = Path(a.out) / "scene.skops"
    save_model(out, est, card)
    print(f"\ntemperatures: CT {t_ct:.2f}, other {t_other:.2f}\nsaved {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
