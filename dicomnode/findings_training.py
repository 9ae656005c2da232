"""Fitting the finding probabilities from scored candidates, leave one patient out: one code path for the shipped
model (``scripts/evaluate_findings.py --write-model``, ``dicomnode train --task findings``) and for ``dicomnode
evaluate --leave-one-patient-out``.

Training data comes from a case file's lesion truths (:mod:`dicomnode.evaluation.cases`):

* every case with lesion truth (RTSTRUCT, SEG or VOC boxes) that the node does not refuse runs its profile up to
  ``detect`` as the chain does (:func:`collect_candidates`), with the detect limits opened
  (``probability_threshold = 0``, ``max_findings = 50``; the size limits stay) and the tissue method's ``model =
  "hand-set"``, so that every candidate comes out with its hand-set *ranking score* (naive Bayes posterior, the
  symmetry and organ-context rules included);
* a candidate is **true** when its centroid lies inside a truth lesion, as ``dicomnode evaluate`` scores a finding
  (:mod:`dicomnode.evaluation.run`).

The model (:class:`FindingsCalibration`, :func:`fit_findings`): one monotone map of the ranking score to a
probability (:class:`dicomnode.analysis.detect.ScoreCalibration`), so the ranking (and the rank of the first true
finding) is the hand-set one and only the probabilities change. Two scale-free inputs, three parameters, because
three sarcoma patients and one chest CT cannot carry more:

* ``logit(score)``, clipped to +-:data:`LOGIT_CLIP` (Platt scaling; naive Bayes saturates: past ~0.98 the hand-set
  score says nothing more: on the shared CT and MR cases, 3 of the 6 candidates scoring >= 0.98 are false;
  PET is not clipped (:data:`MODALITY_LOGIT_CLIP`): its lesions' scores saturate where physiological uptake's do not,
  and a second saturated PET lesion must be reportable), and
* ``top``: 1 for the highest-scoring candidate of its series, else 0 (a series sent for lesion analysis has its most
  conspicuous candidate as its likeliest lesion; every training series holds a tumour, so this weight is an upper
  bound for series without one: docs/models.md).

A logistic regression on these two with an L2 penalty (``C`` = :data:`C`; the intercept is not penalised) and both
weights bounded to >= 0 (monotone), fitted on the candidates of every method and modality together (*pooled*; once
per clip, so PET's map is fitted on the same candidates with its own clip): fits
per method and modality were tried and did worse held out (docs/models.md; the lung method has one patient, CT
tissue two with a tumour). Every probability is capped at :data:`CAP`: with about 20 true candidates no bin above
0.9 can be shown calibrated, so the node never claims more.

PET's map is fitted with true PET candidates of inserted lesions too (``fit_findings(..., inserted=...)``, the
table of :mod:`dicomnode.evaluation.inserted`): slope and top weight from real and inserted candidates together with
an intercept per stratum (inserting lesions changes the prevalence, not the discrimination), the intercept the real
series', shifted to a prior of :data:`LESIONS_PER_SERIES` lesions per series (docs/models.md, branch petcal).

Candidates are cached per series (:class:`CandidateCache`, keyed by the files, the profile and the analysis code), so
a second run costs the fits only (milliseconds).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dicomnode.analysis.detect import ScoreCalibration

__all__ = ["C", "CAP", "LESIONS_PER_SERIES", "LOGIT_CLIP", "MODALITY_LOGIT_CLIP", "REPORTING", "TOP_MIN_SCORE", "Candidate", "CandidateCache", "FindingsCalibration", "apply",
           "collect_candidates", "fit_findings", "group_of", "key", "leave_one_patient_out", "read_calibration",
           "reliability", "score_series", "series_candidates"]

#: Inverse L2 penalty of the logistic regression (chosen leave one patient out: docs/models.md).
C = 5.0
#: No probability above this (see the module docstring).
CAP = 0.9
#: logit(score) is clipped to +-this before the fit and when mapping (naive Bayes saturates: past ~0.98 the hand-set
#: score says nothing more).
LOGIT_CLIP = 3.0
#: ... except on these modalities: a PET lesion's hand-set score (SUVpeak over PERCIST's level, organ context)
#: saturates where physiological uptake does not, and metastatic disease is multifocal: no clip (the full range of
#: a score clipped to 1e-9), so that a second saturated lesion can be reported too.
MODALITY_LOGIT_CLIP = {"PT": 21.0}
#: The prior number of lesions per series of these modalities, for the map fitted with inserted lesions: the real
#: series' intercept is shifted by log(this / the true candidates per real training series) (a prior shift of the
#: odds, as Saerens et al. 2002 adjust a classifier to new priors; the training series' own count is ~1.2 per
#: series: sarcoma crops with their one tumour). A staging FDG PET shows the primary with its regional nodes and distant
#: sites; PERCIST (and RECIST 1.1) measure up to 5 target lesions for that reason; 3 lies between the training
#: cohort's 1 and the readers' 5 (docs/models.md, "branch petcal", how the figures move with it).
LESIONS_PER_SERIES = {"PT": 3.0}
#: The top candidate's weight applies only from this score on (the hand-set reporting threshold): on a series
#: without a lesion the calibration then reports nothing the hand-set score would not.
TOP_MIN_SCORE = 0.5
#: Detect options opened while collecting (every candidate is seen).
OPEN_LIMITS = {"probability_threshold": 0.0, "max_findings": 50}


@dataclass(frozen=True)
class Candidate:
    """One detect candidate of one series: its ranking score, whether it is true, and where it came from."""

    case: str
    patient: str
    group: str
    score: float
    top: bool
    true: bool
    label: str = ""
    volume_ml: float = 0.0
    features: dict[str, float] = field(default_factory=dict)
    #: from a series with lesions inserted (:mod:`dicomnode.evaluation.inserted`), not a real series
    inserted: bool = False


def group_of(method: str, modality: str) -> str:
    """The calibration group of a finding: ``METHOD/MODALITY`` (``lung/CT``, ``tissue_model/MR``, ...)."""
    return f"{method}/{modality}"


@dataclass
class FindingsCalibration:
    """The fitted maps of the hand-set ranking score to a probability: one per logit clip (:data:`LOGIT_CLIP`: PET
    has its own, every other modality the default), with what they were fitted on."""

    mapping: ScoreCalibration
    by_modality: dict[str, ScoreCalibration] = field(default_factory=dict)
    patients: tuple[str, ...] = ()
    candidates: int = 0
    hits: int = 0
    #: candidates of series with inserted lesions that the modality maps' slopes were fitted on, and how many true
    inserted_candidates: int = 0
    inserted_hits: int = 0

    def for_modality(self, modality: str) -> ScoreCalibration:
        """The map a series of this modality (DICOM Modality, e.g. "PT") uses."""
        return self.by_modality.get(modality, self.mapping)

    def probability(self, candidate: Candidate) -> float:
        return self.for_modality(candidate.group.split("/")[-1]).probability(candidate.score, candidate.top)

    def as_dict(self) -> dict[str, Any]:
        def one(m: ScoreCalibration) -> dict[str, Any]:
            return {"slope": round(m.slope, 4), "top_weight": round(m.top_weight, 4),
                    "intercept": round(m.intercept, 4), "cap": m.cap, "logit_clip": m.logit_clip,
                    "top_min_score": m.top_min_score}
        return {"what": "p = min(cap, 1 / (1 + exp(-(slope * clip(logit(ranking score), -logit_clip, logit_clip) + "
                        "top_weight * top + intercept)))); top = 1 for the series' highest-scoring candidate when its score >= "
                        "top_min_score; "
                        "by_modality: the map of that modality, else the default (dicomnode.findings_training)",
                **one(self.mapping), "by_modality": {k: one(v) for k, v in sorted(self.by_modality.items())},
                "training_patients": len(self.patients), "candidates": self.candidates, "hits": self.hits,
                "inserted_candidates": self.inserted_candidates, "inserted_hits": self.inserted_hits}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FindingsCalibration":
        """From :meth:`as_dict` (a card's ``extra.calibration`` or a file of :meth:`save`)."""
        def one(x: Mapping[str, Any]) -> ScoreCalibration:
            return ScoreCalibration(float(x["slope"]), float(x["intercept"]), float(x.get("top_weight", 0.0)),
                                    float(x.get("cap", 1.0)), float(x.get("logit_clip", 30.0)),
                                    float(x.get("top_min_score", 0.0)))
        try:
            return cls(one(d), {str(k): one(v) for k, v in dict(d.get("by_modality") or {}).items()}, (),
                       int(d.get("candidates", 0)), int(d.get("hits", 0)), int(d.get("inserted_candidates", 0)),
                       int(d.get("inserted_hits", 0)))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ValueError(f"not a findings calibration ({type(e).__name__}: {e}); write one with dicomnode "
                             "train --task findings") from None

    def save(self, path: Path | str) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.as_dict(), indent=1))
        return p


def read_calibration(path: Path | str) -> FindingsCalibration:
    """A calibration written by :meth:`FindingsCalibration.save` (``dicomnode train --task findings``, a fold's)."""
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read a findings calibration ({e}); write one with dicomnode train --task "
                         "findings") from None
    return FindingsCalibration.from_dict(d)


# ------------------------------------------------------------------------------------------------ fitting


def _fit_logistic(rows: Sequence[Candidate], clip: float) -> tuple[float, float, float]:
    """(slope, top_weight, intercept) of an L2-penalised logistic regression on the logit clipped to +-``clip``
    and ``top``, slope and top weight >= 0."""
    from scipy.optimize import minimize

    q = np.clip(np.array([r.score for r in rows], dtype=float), 1e-9, 1 - 1e-9)
    x = np.clip(np.log(q / (1 - q)), -clip, clip)
    t = np.array([float(r.top and r.score >= TOP_MIN_SCORE) for r in rows])
    y = np.array([float(r.true) for r in rows])

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = w[0] * x + w[1] * t + w[2]
        g = 1.0 / (1.0 + np.exp(-z)) - y
        nll = float(np.sum(np.logaddexp(0.0, z) - y * z))
        reg = (w[0] ** 2 + w[1] ** 2) / (2.0 * C)  # the intercept is not penalised
        grad = np.array([np.sum(g * x) + w[0] / C, np.sum(g * t) + w[1] / C, np.sum(g)])
        return nll + reg, grad

    res = minimize(loss, np.array([0.5, 1.0, -2.0]), jac=True, method="L-BFGS-B",
                   bounds=[(0.0, None), (0.0, None), (None, None)])
    return float(res.x[0]), float(res.x[1]), float(res.x[2])


def _fit_stratified(rows: Sequence[Candidate], strata: Sequence[int], clip: float,
                    weights: Sequence[float] | None = None) -> tuple[float, float, float]:
    """(slope, top_weight, intercept of stratum 0) of a logistic regression with one slope and top weight shared by
    every stratum and an intercept per stratum (each stratum its own prevalence), each row weighted by ``weights``
    (default 1), L2 penalty as :func:`_fit_logistic` (intercepts not penalised)."""
    from scipy.optimize import minimize

    q = np.clip(np.array([r.score for r in rows], dtype=float), 1e-9, 1 - 1e-9)
    x = np.clip(np.log(q / (1 - q)), -clip, clip)
    t = np.array([float(r.top and r.score >= TOP_MIN_SCORE) for r in rows])
    y = np.array([float(r.true) for r in rows])
    s = np.asarray(strata, dtype=int)
    k = int(s.max()) + 1
    onehot = np.eye(k)[s]
    v = np.ones(len(rows)) if weights is None else np.asarray(weights, dtype=float)

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = w[0] * x + w[1] * t + w[2 + s]
        g = v * (1.0 / (1.0 + np.exp(-z)) - y)
        nll = float(np.sum(v * (np.logaddexp(0.0, z) - y * z)))
        reg = (w[0] ** 2 + w[1] ** 2) / (2.0 * C)
        grad = np.concatenate([[np.sum(g * x) + w[0] / C, np.sum(g * t) + w[1] / C], g @ onehot])
        return nll + reg, grad

    res = minimize(loss, np.concatenate([[0.5, 1.0], np.full(k, -2.0)]), jac=True, method="L-BFGS-B",
                   bounds=[(0.0, None), (0.0, None)] + [(None, None)] * k)
    return float(res.x[0]), float(res.x[1]), float(res.x[2])


def _fit_intercept(rows: Sequence[Candidate], clip: float, slope: float, top_weight: float,
                   expected_true: float | None = None) -> float:
    """The intercept of the logistic map with ``slope`` and ``top_weight`` fixed such that the probabilities of
    ``rows`` sum to ``expected_true`` (default: the number of true rows, the maximum-likelihood intercept)."""
    from scipy.optimize import brentq

    q = np.clip(np.array([r.score for r in rows], dtype=float), 1e-9, 1 - 1e-9)
    z0 = slope * np.clip(np.log(q / (1 - q)), -clip, clip) + top_weight * np.array(
        [float(r.top and r.score >= TOP_MIN_SCORE) for r in rows])
    k = float(sum(r.true for r in rows)) if expected_true is None else float(expected_true)
    k = min(max(k, 1e-6), len(rows) - 1e-6)

    def excess(b: float) -> float:
        return float(np.sum(1.0 / (1.0 + np.exp(-np.clip(z0 + b, -700, 700))))) - k

    return float(brentq(excess, -200.0, 200.0))


def fit_findings(candidates: Sequence[Candidate], *, exclude: str | None = None,
                 inserted: Sequence[Candidate] = ()) -> FindingsCalibration:
    """Fit the calibration on ``candidates`` without those of patient ``exclude`` (one outer fold).

    ``inserted``: candidates of series with inserted lesions (:mod:`dicomnode.evaluation.inserted`); those of
    patient ``exclude`` are left out too. For each modality of :data:`MODALITY_LOGIT_CLIP` (PET) they hold true
    candidates of, that modality's map is one logistic fit on that modality's real and inserted candidates together
    with a shared slope and top weight (*discrimination*: many true candidates) and an intercept per stratum
    (*prevalence*): one for the real series, one per series lesions were inserted into (inserting lesions raises the
    share of true candidates, and by how much differs per series). The map keeps the real series' intercept, so
    probabilities on real series are not over-stated (docs/models.md, "branch petcal"). When that modality's real
    candidates hold no true one, every real candidate forms the real stratum.

    Raises :class:`ValueError` when the training candidates hold no true one (nothing to learn from).
    """
    rows = [c for c in candidates if c.patient != exclude and not c.inserted]
    extra = [c for c in (*inserted, *(c for c in candidates if c.inserted)) if c.patient != exclude]
    if not any(c.true for c in rows):
        raise ValueError("findings fit: no true candidate in the training data; give cases with lesion truth whose "
                         "lesions the detect step finds")
    fits: dict[float, ScoreCalibration] = {}
    for clip in {LOGIT_CLIP, *MODALITY_LOGIT_CLIP.values()}:
        slope, top_w, icpt = _fit_logistic(rows, clip)
        fits[clip] = ScoreCalibration(slope, icpt, top_w, CAP, clip, TOP_MIN_SCORE)
    by_modality = {m: fits[c] for m, c in MODALITY_LOGIT_CLIP.items()}
    used = used_hits = 0
    for modality, clip in MODALITY_LOGIT_CLIP.items():
        ext = [c for c in extra if _modality(c) == modality]
        if not any(c.true for c in ext):
            continue
        real = [c for c in rows if _modality(c) == modality]
        real = real if any(c.true for c in real) else rows
        series = sorted({_source_of(c) for c in ext})
        strata = [0] * len(real) + [1 + series.index(_source_of(c)) for c in ext]
        runs = {src: len({c.case for c in ext if _source_of(c) == src}) for src in series}
        # a series' own candidates come back in every run with lesions inserted into it: a false one counts once
        # per series (1 / runs), a true one (a new lesion) once
        weights = [1.0] * len(real) + [1.0 if c.true else 1.0 / runs[_source_of(c)] for c in ext]
        slope, top_w, icpt = _fit_stratified(real + ext, strata, clip, weights)
        if modality in LESIONS_PER_SERIES:  # the prior: that many lesions per series, not the training series'
            per_series = sum(c.true for c in real) / len({c.case for c in real})
            icpt += math.log(LESIONS_PER_SERIES[modality] / per_series)
        by_modality[modality] = ScoreCalibration(slope, icpt, top_w, CAP, clip, TOP_MIN_SCORE)
        used += len(ext)
        used_hits += sum(c.true for c in ext)
    return FindingsCalibration(fits[LOGIT_CLIP], by_modality, tuple(sorted({c.patient for c in rows})), len(rows),
                               sum(c.true for c in rows), used, used_hits)


def _modality(c: Candidate) -> str:
    return c.group.split("/")[-1]


def _source_of(c: Candidate) -> str:
    """The series an inserted candidate comes from (its case without the run: ``inserted:SERIES:SEED``)."""
    return c.case.rsplit(":", 1)[0] if c.case.count(":") >= 3 else c.case


def apply(calibration: FindingsCalibration, candidates: Sequence[Candidate]) -> list[float]:
    """The calibrated probability of each candidate."""
    return [calibration.probability(c) for c in candidates]


#: The reporting threshold and most findings per series of the shipped profiles, by modality (conf/profiles).
REPORTING = {"CT": (0.5, 10), "MR": (0.5, 3), "PT": (0.4, 6)}


def leave_one_patient_out(candidates: Sequence[Candidate],
                          fit: Callable[[Sequence[Candidate], str], Callable[[Candidate], float]] | None = None,
                          *, inserted: Sequence[Candidate] = ()) -> dict[str, float]:
    """Each candidate's probability from a model fitted without its patient (by default :func:`fit_findings`, with
    the ``inserted`` candidates of the other patients; ``fit(candidates, held_out_patient)`` gives another model's
    probability function). Keyed by :func:`key`."""
    if fit is None:
        def fit(rows: Sequence[Candidate], held: str) -> Callable[[Candidate], float]:
            return fit_findings(rows, exclude=held, inserted=inserted).probability
    out: dict[str, float] = {}
    for held in sorted({c.patient for c in candidates}):
        prob = fit(candidates, held)
        for c in candidates:
            if c.patient == held:
                out[key(c)] = float(prob(c))
    return out


def key(c: Candidate) -> str:
    """A candidate's identity in a series: case, label and score."""
    return f"{c.case}|{c.label}|{c.score!r}|{c.volume_ml!r}"


def score_series(candidates: Sequence[Candidate], probs: Mapping[str, float]) -> dict[str, dict[str, Any]]:
    """Per case, as ``dicomnode evaluate`` scores it: the findings reported (p >= the threshold, at most the
    profile's number, most probable first; :data:`REPORTING`), whether the top one is true, the false ones, and the
    probability of the first true candidate."""
    by: dict[str, list[Candidate]] = {}
    for c in candidates:
        by.setdefault(c.case, []).append(c)
    out = {}
    for case, cs in by.items():
        threshold, most = REPORTING.get(cs[0].group.split("/")[-1], (0.5, 10))
        ranked = sorted(cs, key=lambda c: -probs[key(c)])
        reported = [c for c in ranked if probs[key(c)] >= threshold][:most]
        first = next((c for c in ranked if c.true), None)
        out[case] = {"candidates": len(cs), "top_true": bool(reported and reported[0].true),
                     "false_findings": sum(not c.true for c in reported),
                     "first_true_probability": None if first is None else round(probs[key(first)], 3),
                     "reported": [(round(probs[key(c)], 4), c.true) for c in reported]}
    return out


def reliability(series: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The reliability table of the reported findings (the bins of ``dicomnode evaluate``)."""
    from dicomnode.evaluation.metrics import reliability_table

    rep = [r for s in series.values() for r in s["reported"]]
    return [b.as_dict() for b in reliability_table([p for p, _ in rep], [t for _, t in rep])]


# ------------------------------------------------------------------------------------------------ candidates


class CandidateCache:
    """Scored candidates cached on disk per series (key: the files' names, sizes and times, the case and its
    profile, the analysis and step code and :func:`series_candidates`)."""

    def __init__(self, folder: Path | str | None) -> None:
        self.folder = None if folder is None else Path(folder)
        import dicomnode.analysis as analysis
        import dicomnode.steps as steps
        h = hashlib.sha256()
        for pkg in (analysis, steps):
            for f in sorted(Path(pkg.__file__).parent.glob("*.py")):
                h.update(f.read_bytes())
        import inspect
        for fn in (series_candidates, detect_context, context_candidates):
            h.update(inspect.getsource(fn).encode())  # not the fits: refitting needs no new candidates
        self._code = h.hexdigest()[:16]

    def _key(self, source: Path, extra: str) -> str:
        h = hashlib.sha256(self._code.encode() + extra.encode())
        for f in sorted(source.rglob("*")) if source.is_dir() else [source]:
            if f.is_file():
                st = f.stat()
                h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()[:24]

    def get(self, source: Path, extra: str, make: Callable[[], list[Candidate]]) -> list[Candidate]:
        if self.folder is None:
            return make()
        p = self.folder / f"findings-{self._key(source, extra)}.json"
        if p.is_file():
            try:
                return [Candidate(**d) for d in json.loads(p.read_text())]
            except (ValueError, TypeError):  # a stale or broken entry is recomputed
                pass
        out = make()
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps([asdict(c) for c in out]))
        tmp.replace(p)
        return out


def detect_context(volume: Any, header: Mapping[str, str], profile: Any) -> Any:
    """Run ``profile`` up to ``detect`` on ``volume`` as the chain does, with the detect limits opened
    (:data:`OPEN_LIMITS`) and the hand-set score: the chain's context, every candidate in ``ctx.findings``."""
    from dicomnode.analysis.pipeline import Context, run_steps
    from dicomnode.steps import registry

    registry()
    ctx = Context(volume=volume, original=volume, header=dict(header))
    steps = list(profile.steps[:profile.steps.index("detect") + 1])
    params = {k: dict(v) for k, v in profile.params.items()}
    detect = {**params.get("detect", {}), **OPEN_LIMITS}
    detect.pop("calibration", None)
    detect["model"] = "hand-set"
    params["detect"] = detect
    run_steps(ctx, steps, params)
    return ctx


def context_candidates(ctx: Any, volume: Any, *, case: str, patient: str,
                       is_true: Callable[[tuple[int, int, int]], bool], inserted: bool = False,
                       skip: Callable[[tuple[int, int, int]], bool] | None = None) -> list[Candidate]:
    """The scored candidates of a :func:`detect_context`: true when ``is_true(voxel of the centroid)``; those where
    ``skip(voxel)`` holds are left out (but the top flag stays with the series' highest-scoring candidate)."""
    method = "lung" if any(str(n).startswith("detect.lung") for n in ctx.notes) else "tissue_model"
    group = group_of(method, volume.modality)
    out: list[Candidate] = []
    for i, f in enumerate(ctx.findings):  # most probable first: the first is the top candidate (detect._calibrate_all)
        zyx = volume.patient_to_index(np.asarray(f["centroid_mm"], dtype=float)[None, :])[0]
        idx = tuple(int(round(v)) for v in zyx)
        inside = bool(np.all(np.isfinite(zyx)) and all(0 <= j < n for j, n in zip(idx, volume.shape)))
        if inside and skip is not None and skip(idx):
            continue
        true = bool(inside and is_true(idx))
        # the score at full precision (ctx.findings rounds to 4 places: 1.0 would stand for anything above 0.99995,
        # and PET's map reads the logit unclipped)
        score = next((m.value for m in ctx.measurements.get(f["segment_number"], []) if m.name == "probability"),
                     float(f["probability"]))
        out.append(Candidate(case, patient, group, score, i == 0, true, str(f["label"]),
                             float(f["volume_ml"]), dict(f.get("detect_features", {})), inserted))
    return out


def series_candidates(case: Any, profile: Any, *, patient: str) -> list[Candidate]:
    """Run ``profile`` up to ``detect`` on the case's series as the chain does (limits opened, hand-set score) and
    score every candidate against the case's lesion truth."""
    from dicomnode.evaluation.truth import load_lesions
    from dicomnode.io.load import load_series
    from dicomnode.io.headers import header_strings
    from dicomnode.net.scu import iter_dicom_files

    files = iter_dicom_files([case.series])
    phase = profile.params.get("load", {}).get("phase", "first")
    series = load_series([Path(f) for f in files], phase=1 if phase == "all" else phase)
    ctx = detect_context(series.volume, header_strings(series.headers[0]), profile)
    lesions = load_lesions(case.lesions, series)
    return context_candidates(ctx, series.volume, case=case.id, patient=patient,
                              is_true=lambda idx: any(bool(les.mask[idx]) for les in lesions))


def collect_candidates(case_file: Any, config: Any = None, *, cache: CandidateCache | None = None,
                       print_fn: Callable[[str], None] | None = None) -> list[Candidate]:
    """Every scored candidate of the case file's cases with lesion truth (expected refusals left out)."""
    from dicomnode.config import load_config
    from dicomnode.evaluation.cases import case_profile
    from dicomnode.jobs.chain import profile_fingerprint
    from dicomnode.net.scu import iter_dicom_files

    if config is None:
        config = load_config(None)  # the built-in defaults, as `dicomnode evaluate` without --config
    cache = cache or CandidateCache(None)
    out: list[Candidate] = []
    for case in case_file.cases:
        if case.expect_refusal or not case.lesions:
            continue
        files = iter_dicom_files([case.series])
        if not files:
            continue
        profile = case_profile(case, config, files[0])
        if "detect" not in profile.steps:
            continue
        patient = case.patient or str(case.series)
        extra = f"{case.id}:{patient}:{profile_fingerprint(profile)}:{case.lesions!r}"
        cands = cache.get(case.series, extra, lambda: series_candidates(case, profile, patient=patient))
        out.extend(cands)
        if print_fn:
            print_fn(f"findings training: {case.id}: {len(cands)} candidate(s), {sum(c.true for c in cands)} true")
    return out
