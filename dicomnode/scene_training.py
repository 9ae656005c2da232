"""Fitting the scene model from labelled series, leave one patient out: one code path for the shipped model and
for ``dicomnode evaluate --leave-one-patient-out``.

Training data comes from a case file's truths (:mod:`dicomnode.evaluation.cases`):

* a case with ``scene = LABEL`` (one of the six regions) labels its *middle 70 %* along z (slab centres between
  15 % and 85 % of the extent): a series labelled as a whole may show the neighbouring region at its ends (the neck
  below a head, the lung bases above an abdomen);
* a case with ``regions`` labels the slabs whose centre lies inside an expected region; other slabs are not used;
* ``unknown`` cases (phantoms) and expected refusals teach nothing;
* CT cases labelled chest or abdomen also give crops (:data:`CROPS`, 20-22 cm fields of view cut inside the body,
  as a small reconstruction diameter does), one series per patient and label: fields of view that cut the body;
* :data:`EXTRA_NIFTI`: the abdomen-pelvis CT volume of ``../shared/data`` (NIfTI, so not an evaluation case), split
  at the iliac crest found in the image (:func:`iliac_crest_z`).

Each labelled 60 mm slab (every 30 mm) is a sample (:func:`dicomnode.analysis.scene.profile_slabs`), counted
:data:`REAL_WEIGHT` times, plus synthetic phantom slabs (:mod:`dicomnode.analysis.scene_phantoms`) in every fold.
The estimator is :func:`make_scene_estimator`. Calibration temperatures (CT and other
modalities) are fitted on held-out posteriors of the training patients (an inner leave-one-patient-out), then raised
until no training patient's series is confidently wrong (:func:`fit_scene`). :func:`fit_scene` with ``exclude``
gives the model of one outer fold: nothing of the excluded patient enters it, temperatures included.

Slab descriptors are cached per series (:class:`FeatureCache`): the loader and the descriptors are the expensive
part; fits take well under a second each.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dicomnode.analysis.scene import (BODY_ORDER, MODEL_FEATURES, UNKNOWN, SceneProfile, descriptor_vector,
                                      fit_temperature, profile_slabs, recognise, scene_profile, to_axial)
from dicomnode.analysis.volume import Volume

__all__ = ["CROPS", "EXTRA_NIFTI", "FeatureCache", "FittedScene", "PHANTOMS", "REAL_WEIGHT", "SEED",
           "SceneExample", "case_examples", "class_patients", "crop_fov", "example_from_volume", "fit_scene",
           "iliac_crest_z", "make_scene_estimator", "phantom_rows", "phantom_samples", "save_scene_model", "SLAB_MM",
           "STRIDE_MM"]

#: Slab length and stride along z of the scene model's samples (mm).
SLAB_MM = 60.0
STRIDE_MM = 30.0

#: Each real slab enters training this many times (phantoms once).
REAL_WEIGHT = 3
#: Phantom slabs per (region, modality), and their seed.
PHANTOMS = 40
SEED = 20240601
#: A series labelled as a whole: the slabs whose centre lies in this fraction of its z extent (from the feet).
WHOLE_SERIES_KEEP = (0.15, 0.85)
#: Crops cut from CT series of these labels: (field of view mm, (row, column) fraction of the body's box).
CROPS: dict[str, tuple[tuple[float, tuple[float, float]], ...]] = {
    "chest": ((200.0, (0.45, 0.3)), (200.0, (0.45, 0.7)), (200.0, (0.5, 0.5))),
    "abdomen": ((200.0, (0.5, 0.35)), (220.0, (0.5, 0.5))),
}
#: (path under the data root, patient) of the abdomen-pelvis NIfTI, split at the iliac crest.
EXTRA_NIFTI = ("abdomen-ct/abdomen_pelvis_nifti/example_ct.nii.gz", "TotalSegmentator-nifti")
#: Temperatures tried when making the calibration safe.
_T_GRID = np.exp(np.linspace(0.0, np.log(20.0), 60))


@dataclass
class SceneExample:
    """One series (or a crop of one) as the scene step sees it, with the training label of each slab."""

    key: str
    patient: str
    profile: SceneProfile
    slabs: list
    slab_labels: list[str | None]
    truth: frozenset[str]
    crop: bool = False

    def rows(self) -> tuple[np.ndarray, list[str]]:
        X = [descriptor_vector(d) for (_, _, d), lab in zip(self.slabs, self.slab_labels) if lab is not None]
        y = [lab for lab in self.slab_labels if lab is not None]
        return np.array(X).reshape(-1, len(MODEL_FEATURES)), y

    def all_rows(self) -> np.ndarray:
        return np.array([descriptor_vector(d) for _, _, d in self.slabs]).reshape(-1, len(MODEL_FEATURES))


def _slab_labels(profile: SceneProfile, slabs: list, scene: str | None,
                 regions: Sequence[tuple[str, float, float]]) -> list[str | None]:
    z = profile.z_mm
    lo, hi = (float(z.min()), float(z.max())) if z.size else (0.0, 1.0)
    out: list[str | None] = []
    for a, b, _ in slabs:
        c = (a + b) / 2
        lab: str | None = None
        if regions:
            lab = next((r for r, r_lo, r_hi in regions if r_lo <= c <= r_hi and r in BODY_ORDER), None)
        elif scene in BODY_ORDER:
            f = (c - lo) / max(hi - lo, 1e-6)
            lab = scene if (WHOLE_SERIES_KEEP[0] <= f <= WHOLE_SERIES_KEEP[1] or len(slabs) <= 2) else None
        out.append(lab)
    return out


def example_from_volume(v: Volume, key: str, patient: str, *, scene: str | None = None,
                        regions: Sequence[tuple[str, float, float]] = (), crop: bool = False) -> SceneExample:
    """The scene profile and slabs of a volume, labelled by its whole-series ``scene`` or its ``regions``
    ((label, z_lo_mm, z_hi_mm), patient z)."""
    prof = scene_profile(v.array, v.spacing_mm, direction=v.direction, origin_mm=v.origin_mm, modality=v.modality,
                         unit=v.unit)
    slabs = profile_slabs(prof, slab_mm=SLAB_MM, stride_mm=STRIDE_MM)
    truth = frozenset(r for r, _, _ in regions) if regions else frozenset({scene} if scene else ())
    return SceneExample(key, patient, prof, slabs, _slab_labels(prof, slabs, scene, regions), truth, crop)


def crop_fov(volume: Volume, size_mm: float, where: tuple[float, float]) -> Volume:
    """A square field of view ``size_mm`` wide cut from each axial slice, centred at fraction ``where`` (row,
    column) of the body's bounding box: a crop inside the body, as a small reconstruction diameter gives."""
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


def iliac_crest_z(volume: Volume) -> float:
    """Patient z (mm) of the iliac crest of an axial CT volume in HU: going up from the feet, the first level above
    which the bone lying more than 50 mm lateral of the midline stays under 3 cm^2."""
    from scipy import ndimage as ndi

    d = np.asarray(volume.direction, dtype=float)
    ax, sp, _ = to_axial(volume.array, volume.spacing_mm, d)
    a = 2 - int(np.argmax(np.abs(d[2])))
    z = volume.origin_mm[2] + np.arange(ax.shape[0]) * volume.spacing_mm[a] * d[2, 2 - a]
    order = np.argsort(z)
    lateral = np.zeros(ax.shape[0])
    for i, k in enumerate(order):
        bone = ax[k] > 250
        lab, m = ndi.label(bone)
        if m == 0:
            continue
        sizes = ndi.sum(bone, lab, range(1, m + 1))
        com = ndi.center_of_mass(bone, lab, range(1, m + 1))
        body = ax[k] > -500
        cx = np.nonzero(body.any(axis=0))[0].mean() if body.any() else ax.shape[2] / 2
        lateral[i] = sum(s for s, c in zip(sizes, com) if abs(c[1] - cx) * sp[2] > 50) * sp[1] * sp[2] / 100
    for i in range(len(order) - 3):
        if (lateral[i:i + 3] < 3.0).all() and lateral[:i].max(initial=0) >= 3.0:
            return float(z[order[i]])
    raise RuntimeError("no iliac crest found: the volume does not look like an abdomen-pelvis CT")


class FeatureCache:
    """Scene examples cached on disk per series (key: the files' names, sizes and times, and the scene code)."""

    def __init__(self, folder: Path | str | None) -> None:
        self.folder = None if folder is None else Path(folder)
        import dicomnode.analysis.scene as scene_mod
        import dicomnode.scene_training as me
        self._code = hashlib.sha256(Path(scene_mod.__file__).read_bytes()
                                    + Path(me.__file__).read_bytes()).hexdigest()[:16]

    def _key(self, source: Path, extra: str) -> str:
        h = hashlib.sha256(self._code.encode() + extra.encode())
        files = sorted(source.rglob("*")) if source.is_dir() else [source]
        for f in files:
            if f.is_file():
                st = f.stat()
                h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()[:24]

    def get(self, source: Path, extra: str, make: Callable[[], list[SceneExample]]) -> list[SceneExample]:
        if self.folder is None:
            return make()
        p = self.folder / f"{self._key(source, extra)}.pkl"
        if p.is_file():
            try:
                return pickle.loads(p.read_bytes())
            except Exception:  # noqa: BLE001 - a stale or broken cache entry is recomputed
                pass
        out = make()
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp")
        tmp.write_bytes(pickle.dumps(out))
        tmp.replace(p)
        return out


def _case_patient(case: Any) -> str:
    return case.patient or str(case.series)


def case_examples(case_file: Any, *, cache: FeatureCache | None = None,
                  print_fn: Callable[[str], None] | None = None) -> list[SceneExample]:
    """Every scene example a case file's truths give (see the module docstring), plus :data:`EXTRA_NIFTI` when it
    is under the data root."""
    from dicomnode.io.volumes import load_volume

    cache = cache or FeatureCache(None)
    out: list[SceneExample] = []
    cropped: set[tuple[str, str]] = set()
    for case in case_file.cases:
        if case.expect_refusal and case.scene is None:
            continue
        regions = tuple((r.label, r.z_low_mm, r.z_high_mm) for r in case.regions)
        if not regions and case.scene not in BODY_ORDER:
            continue
        patient = _case_patient(case)

        def make(case=case, regions=regions, patient=patient) -> list[SceneExample]:
            v = load_volume(case.series)
            exs = [example_from_volume(v, case.id, patient, scene=case.scene, regions=regions)]
            if v.modality == "CT" and case.scene in CROPS and not regions:
                for size, where in CROPS[case.scene]:
                    exs.append(example_from_volume(crop_fov(v, size, where), f"{case.id} crop {size:g} mm at {where}",
                                                   patient, scene=case.scene, crop=True))
            return exs

        exs = cache.get(case.series, f"case:{case.scene}:{regions}", make)
        main, crops = exs[0], exs[1:]
        out.append(main)
        if crops and (patient, str(case.scene)) not in cropped:
            cropped.add((patient, str(case.scene)))
            out.extend(crops)
        if print_fn:
            print_fn(f"scene training: {case.id}: {sum(lab is not None for lab in main.slab_labels)} of "
                     f"{len(main.slabs)} slabs labelled{f', {len(crops)} crops' if crops else ''}")
    nifti = case_file.data_root / EXTRA_NIFTI[0]
    if nifti.is_file():
        def make_nifti() -> list[SceneExample]:
            v = load_volume(nifti)
            crest = iliac_crest_z(v)
            zs = v.index_to_patient(np.array([[0, 0, 0], [v.shape[0] - 1, 0, 0]], dtype=float))[:, 2]
            lo, hi = float(zs.min()) - 1e3, float(zs.max()) + 1e3
            return [example_from_volume(v, EXTRA_NIFTI[0], EXTRA_NIFTI[1],
                                        regions=(("abdomen", crest + 15.0, hi), ("pelvis", lo, crest - 15.0)))]
        out.extend(cache.get(nifti, "nifti", make_nifti))
    return out


def phantom_rows(n_per: int = PHANTOMS, seed: int = SEED, *, cache: FeatureCache | None = None) -> tuple[
        np.ndarray, np.ndarray]:
    """``n_per`` phantom slabs per (region, modality) for the regions phantoms draw: rows and labels."""
    from dicomnode.analysis.scene_phantoms import PHANTOM_REGIONS

    regions = [r for r in BODY_ORDER if r in PHANTOM_REGIONS]
    if cache is None or cache.folder is None:
        return phantom_samples(n_per, regions, seed)
    import dicomnode.analysis.scene_phantoms as ph
    src = Path(ph.__file__)
    res = cache.get(src, f"phantoms:{n_per}:{seed}", lambda: [phantom_samples(n_per, regions, seed)])  # type: ignore
    return res[0]  # type: ignore[return-value]


def _stack(examples: Sequence[SceneExample]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X, y, g = [], [], []
    for e in examples:
        Xe, ye = e.rows()
        X.append(Xe)
        y += ye
        g += [e.patient] * len(ye)
    X_ = np.concatenate(X) if X else np.zeros((0, len(MODEL_FEATURES)))
    return X_, np.array(y, dtype=object), np.array(g, dtype=object)


def _fit(X: np.ndarray, y: np.ndarray, Xp: np.ndarray, yp: np.ndarray):

    return make_scene_estimator().fit(np.concatenate([X] * REAL_WEIGHT + [Xp]),
                                      np.concatenate([y.astype(str)] * REAL_WEIGHT + [yp.astype(str)]))


def _proba(model, X: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    from dicomnode.analysis.classify import posteriors

    names, P = posteriors(model, X)
    out = np.zeros((len(X), len(classes)))
    for j, c in enumerate(names):
        if c in classes:
            out[:, list(classes).index(c)] = P[:, j]
    return out


def class_patients(X: np.ndarray, y: Sequence[str], g: Sequence[str]) -> dict[str, dict[str, int]]:
    """How many patients showed each class in real slabs, per modality group of the model's descriptors: ``{"ct":
    {label: n}, "other": {label: n}}`` (``other``: MR and PET, the model's second descriptor part). Phantoms do not
    count. :func:`~dicomnode.analysis.scene.recognise` reads it as ``class_patients``."""
    X = np.asarray(X).reshape(-1, len(MODEL_FEATURES))
    is_ct = X[:, MODEL_FEATURES.index("is_ct")] == 1 if len(X) else np.zeros(0, dtype=bool)
    out: dict[str, dict[str, int]] = {"ct": {}, "other": {}}
    for group, sel in (("ct", is_ct), ("other", ~is_ct)):
        pairs = {(str(lab), str(p)) for lab, p, s in zip(y, g, sel) if s}
        for lab in sorted({lab for lab, _ in pairs}):
            out[group][lab] = sum(1 for lab_, _ in pairs if lab_ == lab)
    return out


@dataclass
class FittedScene:
    """A scene model of one fold: the estimator, its calibration temperatures and, without ``exclude``, the
    held-out figures of its training patients."""

    estimator: Any
    classes: tuple[str, ...]
    temperature_ct: float
    temperature_other: float
    patients: tuple[str, ...]
    n_slabs: int
    held_out: list[dict] = field(default_factory=list)
    slab_accuracy: float | None = None
    slab_truth: list[str] = field(default_factory=list)
    slab_predicted: list[str] = field(default_factory=list)
    #: :func:`class_patients` of the training slabs (None: fitted before the figures existed).
    class_patients: dict[str, dict[str, int]] | None = None


def _result_row(e: SceneExample, names: tuple[str, ...], P: np.ndarray, t: float,
                support: dict[str, dict[str, int]] | None = None) -> dict:
    res = recognise(e.profile, e.slabs, P, names, temperature=t,
                    class_patients=None if support is None else support["ct" if e.profile.is_ct else "other"])
    p = res.probabilities.get(res.label, 0.0)
    return {"series": e.key, "patient": e.patient, "truth": "/".join(sorted(e.truth)), "label": res.label,
            "p": round(p, 3), "temperature": round(t, 3), "right": res.label in e.truth,
            "abstained": res.label == UNKNOWN, "crop": e.crop,
            "wrong_confident": res.label not in e.truth and res.label != UNKNOWN and p >= 0.5,
            "regions": [(r.label, [round(z) for z in r.z_mm], round(r.probability, 2)) for r in res.regions]}


def fit_scene(examples: Sequence[SceneExample], phantoms: tuple[np.ndarray, np.ndarray], *,
              exclude: str | None = None) -> FittedScene:
    """The scene model fitted without patient ``exclude`` (None: on every patient).

    The training patients are each held out once (inner leave-one-patient-out): their slab posteriors fit the
    calibration temperature of CT and of other modalities (negative log-likelihood, each patient once), raised to
    the smallest value under which no training patient's uncropped series, run through
    :func:`~dicomnode.analysis.scene.recognise`, is wrong with p >= 0.5. Then the model is fitted on all of them.
    """
    train = [e for e in examples if e.patient != exclude]
    X, y, g = _stack(train)
    Xp, yp = phantoms
    classes = tuple(sorted(set(y.astype(str)) | set(np.asarray(yp).astype(str))))
    patients = tuple(sorted(set(e.patient for e in train)))
    proba = np.full((len(y), len(classes)), np.nan)
    series_P: dict[int, np.ndarray] = {}
    support = class_patients(X, y, g)
    if len(patients) < 2:  # nothing to hold out: no calibration, no figures
        return FittedScene(_fit(X, y, Xp, yp), classes, 1.0, 1.0, patients, int(len(y)), class_patients=support)
    for q in patients:
        m = _fit(X[g != q], y[g != q], Xp, yp)
        rows = g == q
        if rows.any():
            proba[rows] = _proba(m, X[rows], classes)
        for i, e in enumerate(train):
            if e.patient == q and e.slabs:
                series_P[i] = _proba(m, e.all_rows(), classes)
    is_ct = X[:, MODEL_FEATURES.index("is_ct")] == 1
    ti = np.array([classes.index(str(c)) for c in y], dtype=int)
    temps = []
    for ct in (True, False):
        rows = (is_ct == ct) & np.isfinite(proba).all(axis=1)
        t0 = fit_temperature(proba[rows], ti[rows], g[rows]) if rows.any() else 1.0
        cases = [i for i, e in enumerate(train) if i in series_P and e.profile.is_ct == ct and not e.crop]
        t_safe = t0
        for t in [t0] + [float(t) for t in _T_GRID if t > t0]:
            t_safe = float(t)
            if not any(_result_row(train[i], classes, series_P[i], t)["wrong_confident"] for i in cases):
                break
        temps.append(t_safe)
    pred = np.array(classes)[np.nanargmax(np.nan_to_num(proba, nan=-1), axis=1)] if len(y) else np.zeros(0, str)
    acc = float(np.mean(pred == y.astype(str))) if len(y) else None
    held = []
    if exclude is None:  # the figures of the shipped model's card
        for i in sorted(series_P):
            e = train[i]
            held.append(_result_row(e, classes, series_P[i], temps[0] if e.profile.is_ct else temps[1],
                                    class_patients(X[g != e.patient], y[g != e.patient], g[g != e.patient])))
    est = _fit(X, y, Xp, yp)
    return FittedScene(est, classes, temps[0], temps[1], patients, int(len(y)), held, acc,
                       [str(c) for c in y], [str(c) for c in pred], support)


def save_scene_model(path: Path | str, fitted: FittedScene, *, training_data: str, extra: dict | None = None,
                     write_card_json: bool | None = None) -> Path:
    """Write a fitted scene model with its card (temperatures, slab geometry) for the ``scene`` step; the card is
    also written beside it as JSON when ``write_card_json`` (default: when ``extra`` is given)."""
    from dicomnode.modelio import ModelCard, save_model

    card = ModelCard(
        task="scene", classes=tuple(str(c) for c in fitted.estimator.classes_), feature_names=MODEL_FEATURES,
        training_data=training_data, cv_accuracy=fitted.slab_accuracy,
        cv_scheme=(f"leave-one-patient-out over {len(fitted.patients)} patients, scored on real slabs only; phantoms "
                   "in every training fold") if fitted.slab_accuracy is not None else
        "none (fewer than 2 patients): calibration temperatures 1",
        extra={"temperature_ct": fitted.temperature_ct, "temperature_other": fitted.temperature_other,
               "slab_mm": SLAB_MM, "stride_mm": STRIDE_MM, "real_weight": REAL_WEIGHT,
               "patients": list(fitted.patients),
               **({"class_patients": fitted.class_patients} if fitted.class_patients is not None else {}),
               **(extra or {})},
    )
    return save_model(path, fitted.estimator, card,
                      write_card_json=(extra is not None) if write_card_json is None else write_card_json)


def make_scene_estimator():
    """The estimator of the scene model: standardisation, then multinomial logistic regression (C = 0.5).

    Chosen leave one patient out over the shared series (docs/models.md): with modality-split descriptors it
    transferred to held-out patients better than the Gaussian-mixture Bayes classifier it replaced, whose
    posteriors on unseen series were confidently wrong (it needed a calibration temperature of 30).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline([("scale", StandardScaler()), ("logit", LogisticRegression(C=0.5, max_iter=5000))])


def phantom_samples(n_per: int, regions: Sequence[str], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n_per`` phantom slabs per (region, modality): rows of scene descriptors and their labels."""
    from dicomnode.analysis.scene import descriptor_vector, scene_descriptors
    from dicomnode.analysis.scene_phantoms import PHANTOM_MODALITIES, scene_phantom

    rng = np.random.default_rng(seed)
    X, y = [], []
    for r in regions:
        for m in PHANTOM_MODALITIES:
            for _ in range(n_per):
                img, sp = scene_phantom(r, m, rng=rng)
                d = scene_descriptors(img, sp, modality=m, unit="HU" if m == "CT" else "")
                X.append(descriptor_vector(d))
                y.append(r)
    return np.array(X), np.array(y)
