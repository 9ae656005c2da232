"""Profile steps of target recognition and image synthesis.

| step | what | parameters |
|---|---|---|
| ``detect`` | focal findings -> segments of the label map, ``ctx.findings`` (with the ``detect_features`` their probability came from), per-segment measurements ``probability`` and ``diameter_mm`` | ``method`` = "auto" (CT in HU with lungs: "lung"; else "tissue_model") / "lung" / "tissue_model"; ``min_diameter_mm``, ``min_volume_ml``, ``max_findings``, ``probability_threshold``; ``model`` ("hand-set", the naive Bayes ranking score, default; "calibrated", the same ranking with its probabilities calibrated on scored candidates (:mod:`dicomnode.findings_training`; the shipped profiles'), or a calibration .json file of ``dicomnode train --task findings``; tissue method only: "findings", the shipped fitted logistic model, or a .skops path); plus keywords of :func:`~dicomnode.analysis.detect.detect_lung` / :func:`~dicomnode.analysis.detect.detect_tissue` |
| ``synthesize`` | derived volumes in ``ctx.derived`` ("mip", "minip", "avg", "working") | ``projections`` (list of "mip", "minip", "avg"; default ["mip"]), ``slab_mm`` (default 10), ``spacing_mm`` (default = slab), ``source`` ("original", default, or "working": what the projections are made of), ``include_working`` (default false) |

``detect`` runs after ``segment`` (and ``correct``), before ``features``/``measure`` (which then measure the findings
too). Where a ``scene`` ran before it (the shipped CT and MR profiles) and says limb (``extremity``), the tissue
method also looks for solid masses by their thickness and shape (:mod:`dicomnode.analysis.masses`): a sarcoma with
the density of muscle casts no blob. Findings are numbered per kind: ``nodule_1``, ``mass_1``, ``lesion_1``... (labels must be unique: they name the
SEG segment and the SR tracking identifier).
"""

from __future__ import annotations

import inspect
from dataclasses import replace
from typing import Any, Mapping

import numpy as np

from dicomnode.analysis import detect as _detect
from dicomnode.analysis import synthesize as _synth
from dicomnode.analysis.pipeline import Context, class_statistics, step
from dicomnode.analysis.volume import (CATEGORY_MORPHOLOGICALLY_ABNORMAL, Box, Code, Measurement, Segment, SegmentInfo,
                                      Volume, mask_box)

__all__ = ["FINDING_TYPES", "PROBABILITY", "DIAMETER"]

#: SNOMED CT segmented property type of each finding label (category: Morphologically Altered Structure).
FINDING_TYPES: dict[str, Code] = {
    "nodule": Code("27925004", "SCT", "Nodule"),
    "mass": Code("4147007", "SCT", "Mass"),
    "lesion": Code("52988006", "SCT", "Lesion"),
}
PROBABILITY = Code("122157", "DCM", "Probability")  # pydicom codes.DCM.Probability
DIAMETER = Code("81827009", "SCT", "Diameter")

_LIMITS = {"min_diameter_mm", "min_volume_ml", "max_findings", "probability_threshold"}
_TUPLE_OPTIONS = {"tissue_range_hu", "window", "calibration"}


def _options(fn: Any, params: Mapping[str, Any]) -> dict[str, Any]:
    allowed = set(inspect.signature(fn).parameters) - {"image", "spacing_mm", "lungs", "foreground", "settings",
                                                      "model", "class_means", "class_sds"}
    allowed |= {"model"} if fn is _detect.detect_tissue else set()
    unknown = set(params) - allowed
    if unknown:
        raise ValueError(f"step detect: unknown parameter(s) {sorted(unknown)} for {fn.__name__}; "
                         f"allowed: {sorted(allowed | _LIMITS | {'method'})}")
    return {k: tuple(v) if k in _TUPLE_OPTIONS else v for k, v in params.items() if k != "model"}


#: ``detect`` model values that map the hand-set ranking score through a fitted calibration (any method).
CALIBRATED = "calibrated"


def _is_calibration_file(name: str) -> bool:
    return name.lower().endswith(".json")


def _tissue_model(name: str) -> tuple[Any, str]:
    """The probability model of the tissue method: "findings" (shipped, fitted: docs/models.md), a .skops path of
    the same task, or "hand-set" (:data:`~dicomnode.analysis.detect.TISSUE_MODEL`, also the ranking score that
    "calibrated" and a calibration file map); with how the SR names it."""
    if name == "hand-set":
        return _detect.TISSUE_MODEL, "naive Bayes posterior (hand-set)"
    if name == CALIBRATED or _is_calibration_file(name):
        return _detect.TISSUE_MODEL, _calibrated_how(name)
    from dicomnode.steps.recognition import _model

    m = _model(name, "findings")
    return (_detect.FittedModel(m.estimator, tuple(m.card.feature_names), dict(m.card.extra.get("fill", {}))),
            f"logistic regression ({m.path.name}, fitted leave one patient out)")


def _calibrated_how(name: str) -> str:
    where = "findings.skops card" if name == CALIBRATED else name.replace("\\", "/").rsplit("/", 1)[-1]
    return f"naive Bayes ranking, calibrated on scored candidates ({where})"


def _without_top_if_no_body(ctx: Context, calibration: _detect.ScoreCalibration) -> _detect.ScoreCalibration:
    """``calibration`` without its top-of-series term where the scene, run before detect, found no body in view (a
    test phantom, or nothing: ``body_in_view`` false), with a note saying so.

    The term lifts a series' highest-scoring candidate because, in the series the calibration was fitted on, each
    showing a tumour in a patient's body, that candidate was most often the tumour. A phantom holds no tumour: its
    candidates keep the probability of their score alone (its most lesion-like insert is not a lesion at p 0.9). A
    body the scene cannot place (a crop, a localizer, no region recognised) keeps the term."""
    scene = ctx.scene or {}
    if scene.get("body_in_view", True) or calibration.top_weight == 0:
        return calibration
    ctx.notes.append(f"detect: the scene found no body in view, so the calibration's top-of-series term (weight "
                     f"{calibration.top_weight:.3g}, fitted on series that each show a tumour in a body) is left out: "
                     f"each candidate has the probability of its ranking score alone")
    return replace(calibration, top_weight=0.0)


def _calibration(name: str = CALIBRATED, modality: str = "") -> _detect.ScoreCalibration:
    """The map of the hand-set ranking score to a probability: for "calibrated", the shipped findings model's card
    (``extra.calibration``, fitted by :func:`dicomnode.findings_training.fit_findings`; an older card's
    ``extra.hand_set_calibration``, Platt scaling, is still read); for a ``.json`` path, that file (``dicomnode train
    --task findings``, or a fold of ``dicomnode evaluate --leave-one-patient-out``); the map of ``modality``."""
    from dicomnode.findings_training import FindingsCalibration, read_calibration

    if _is_calibration_file(name):
        try:
            return read_calibration(name).for_modality(modality)
        except ValueError as e:
            raise ValueError(f"step detect: model {name!r}: {e}") from None
    from dicomnode.steps.recognition import _card

    extra = _card("findings", "findings").extra  # the card only: no skops, no estimator
    if extra.get("calibration"):
        return FindingsCalibration.from_dict(extra["calibration"]).for_modality(modality)
    c = extra.get("hand_set_calibration")
    if not c:
        raise ValueError("step detect: model = \"calibrated\" needs the findings model's card to carry calibration; "
                         "refit it with dicomnode train --task findings (or scripts/evaluate_findings.py "
                         "--write-model), or use model = \"hand-set\"")
    return _detect.ScoreCalibration(float(c["slope"]), float(c["intercept"]))


def _class_model(ctx: Context) -> tuple[list[float], list[float]] | None:
    """Mean and SD of each intensity class, weighted by the posteriors (every 2nd voxel per axis): from the
    posteriors when the context still holds them, else the statistics the runner kept when it released them."""
    if not ctx.classes:
        return None
    stats = ctx.class_stats if ctx.posteriors is None else class_statistics(ctx.volume.array, ctx.posteriors)
    return None if stats is None else (list(stats[0]), list(stats[1]))


#: solid soft tissue on CT (muscle and a tumour of its density; not fat, fluid-free bone or air), HU
SOLID_RANGE_HU = (-10.0, 100.0)


def _limb_solid_range(ctx: Context, body: np.ndarray | None) -> tuple[float, float] | None:
    """The solid tissue range for the thickness search of solid masses, where the scene (run before detect) says
    limb: a dominant ``extremity`` or an ``extremity`` region. None elsewhere (in the trunk and the head, organs
    are thick solid blocks) and on PET."""
    scene = ctx.scene or {}
    limb = scene.get("label") == "extremity" or any(r.get("label") == "extremity" for r in scene.get("regions") or [])
    v = ctx.volume
    if not limb or body is None or v.unit == "SUV" or v.modality not in ("CT", "MR"):
        return None
    if v.modality == "CT":
        return SOLID_RANGE_HU if v.unit == "HU" else None
    from dicomnode.analysis.masses import solid_range_from_image

    try:
        return solid_range_from_image(v.array, body)
    except ValueError:
        return None


#: scene labels of the body where no stomach or bowel lies (air in front of a bright region there is a sinus)
NO_BOWEL = ("head", "neck")


def _stretches(ctx: Context, labels: tuple[str, ...]) -> list[tuple[float, float]]:
    """The stretches of patient z (LPS, mm, low to high) where the scene (run before detect) says one of ``labels``.
    A series whose dominant label is one of them and that has no other labelled region is that throughout (its
    regions' bounds are slab centres: the edge slices count too): one stretch from -inf to inf."""
    scene = ctx.scene or {}
    regions = scene.get("regions") or []
    others = [r for r in regions if r.get("label") not in (*labels, "unknown")]
    if scene.get("label") in labels and not others:
        return [(-np.inf, np.inf)]
    return [(float(min(r["z_mm"])), float(max(r["z_mm"]))) for r in regions if r.get("label") in labels]


def _no_bowel_z_mm(ctx: Context) -> list[tuple[float, float]]:
    """The stretches of patient z where the scene says head or neck: the bowel rules do not apply to a candidate
    there."""
    return _stretches(ctx, NO_BOWEL)


def _in_limb(ctx: Context, res: Any) -> Any:
    """A solid mass outside the scene's extremity regions (when the dominant label is another) is dropped."""
    scene = ctx.scene or {}
    if scene.get("label") == "extremity":
        return res
    spans = _stretches(ctx, ("extremity",))

    def keep(f: Any) -> bool:
        z = (f.centroid_mm or (0.0, 0.0, float("nan")))[2]
        return not f.features.get("solid_mass") or any(a <= z <= b for a, b in spans)

    return _detect.DetectionResult(tuple(f for f in res.findings if keep(f)), tuple(f for f in res.rejected if keep(f)),
                                   res.n_candidates, res.notes)


def _pet_search_box(v: Volume, body: Segment | None, opts: Mapping[str, Any]) -> Box | None:
    """On a PET in SUV with a body segment: the box of the grid the tissue search works on
    (:func:`~dicomnode.analysis.detect.tissue_search_box`), or None (no body, an empty one, or the whole grid)."""
    if v.unit != "SUV" or body is None:
        return None
    tight = mask_box(body.crop)
    if tight is None:
        return None
    tight = tuple(slice(t.start + b.start, t.stop + b.start) for t, b in zip(tight, body.box))
    keys = ("max_radius_mm", "coarse_mm", "work_mm")
    return _detect.tissue_search_box(tight, v.shape, v.spacing_mm, **{k: opts[k] for k in keys if k in opts})


def _detect_in_box(ctx: Context, box: Box, body: Segment, settings: Any, opts: Mapping[str, Any]) -> Any:
    """The tissue search of a PET on ``box`` of its grid, the same search as on the whole grid (which crops to that
    box itself: :func:`~dicomnode.analysis.detect.tissue_search_box`), with the findings placed on the grid: the
    body's mask is made on the box only (not the grid), and when no later step reads the working image
    (``ctx.later_reads``) the step keeps its box and lets go of the rest (on a whole-body PET the box is about
    0.4 of the grid: 36 MB of 61 less while the search runs; ``dicomnode bench analysis``)."""
    v = ctx.volume
    geometry = Volume(np.zeros((1, 1, 1), dtype=np.float32), v.spacing_mm, v.origin_mm, v.direction, v.modality,
                      v.unit)
    array = v.array[box]
    if "volume" not in ctx.later_reads and ctx.volume is not ctx.original:
        array = array.copy()
        ctx.volume = ctx.original  # as the runner does after this step: the working image's other voxels go now
    sub = Volume(array, v.spacing_mm, v.origin_mm, v.direction, v.modality, v.unit)  # indices are the box's
    del v, array
    fg = body.in_box(box)
    res = _detect.detect(sub, method="tissue_model", foreground=fg, settings=settings, **opts)
    del sub, fg

    def placed(fs: Any) -> tuple:
        out = []
        for f in fs:
            f = _detect._shifted(f, box)
            xyz = geometry.index_to_patient(np.asarray(f.centroid_zyx))[0]
            out.append(replace(f, centroid_mm=(float(xyz[0]), float(xyz[1]), float(xyz[2]))))
        return tuple(out)

    return _detect.DetectionResult(placed(res.findings), placed(res.rejected), res.n_candidates, res.notes)


@step("detect", reads=("volume", "class_stats"))  # of the posteriors, their class statistics only
def _detect_step(ctx: Context, params: Mapping[str, Any]) -> None:
    p = dict(params)
    method = str(p.pop("method", "auto"))
    if method not in ("auto", "lung", "tissue_model"):
        raise ValueError(f"step detect: method {method!r} is unknown; choose one of auto, lung, tissue_model")
    limits = {k: p.pop(k) for k in list(p) if k in _LIMITS}
    model_name = str(p.get("model", "hand-set"))
    v = ctx.volume
    shape = v.shape
    lungs = [s.mask for s in ctx.labels.segments if s.info.label in ("lung_left", "lung_right")]
    if method == "auto":
        method = "lung" if (v.modality == "CT" and v.unit == "HU" and lungs) else "tissue_model"
    if method == "lung":
        settings = _detect.DetectionSettings(**limits)
        p.pop("model", None)
        opts = _options(_detect.detect_lung, p)
        how = "naive Bayes posterior (hand-set)"
        if model_name == CALIBRATED or _is_calibration_file(model_name):
            opts["calibration"], how = _without_top_if_no_body(ctx, _calibration(model_name, v.modality)), \
                _calibrated_how(model_name)
        elif model_name != "hand-set":
            raise ValueError(f"step detect: the lung method's model is \"hand-set\" or \"calibrated\" (or a "
                             f"calibration .json file), got {model_name!r}; other models are the tissue method's")
        res = _detect.detect(v, method="lung", lungs=lungs, settings=settings, **opts)
    else:
        defaults = dict(min_diameter_mm=10.0, min_volume_ml=0.5, max_findings=3)
        settings = _detect.DetectionSettings(**{**defaults, **limits})
        body = ctx.labels.by_label("body") or ctx.labels.by_label("foreground")
        opts = _options(_detect.detect_tissue, p)
        if v.modality == "CT" and v.unit == "HU":
            opts.setdefault("window", (-200.0, 250.0))
        if v.unit == "SUV":  # PET: every region above SUV 2.5 is a candidate too (a lesion with a cold centre),
            opts.setdefault("hot_threshold", 2.5)  # or above PERCIST's threshold when the liver is in view
            opts.setdefault("percist_liver", True)
            # FDG lesions are hot: a cold blob (lung, bowel gas, a necrotic centre, which the hot region around it
            # takes in) is never one; half the blob search
            opts.setdefault("polarity", "bright")
            # larger lesions are whole hot regions: blobs up to 30 mm radius are enough (4 scales, not 5)
            opts.setdefault("max_radius_mm", 30.0)
        model = _class_model(ctx)
        if model is not None:
            opts["class_means"], opts["class_sds"] = model
        opts["model"], how = _tissue_model(model_name)
        if model_name == CALIBRATED or _is_calibration_file(model_name):
            opts["calibration"] = _without_top_if_no_body(ctx, _calibration(model_name, v.modality))
        # solid masses (extremity branch; never on PET, which needs no whole-grid body mask for it)
        limb = _limb_solid_range(ctx, None if body is None or v.unit == "SUV" else body.mask)
        box = _pet_search_box(v, body, opts) if limb is None else None
        if box is not None:
            del v  # the step holds no reference to the working image: _detect_in_box may let go of it
            res = _detect_in_box(ctx, box, body, settings, opts)  # type: ignore[arg-type]
        else:
            res = _detect.detect(v, method="tissue_model", foreground=None if body is None else body.mask,
                                 settings=settings, solid_range=limb, no_bowel_z_mm=_no_bowel_z_mm(ctx), **opts)
        if limb is not None:
            res = _in_limb(ctx, res)
    ctx.notes.extend(f"detect.{method}: {n}" for n in res.notes)
    ctx.notes.append(f"detect.{method}: {len(res.findings)} finding(s) accepted, {len(res.rejected)} candidate(s) "
                     f"below the limits (probability >= {settings.probability_threshold:g}, diameter >= "
                     f"{settings.min_diameter_mm:g} mm, volume >= {settings.min_volume_ml:g} mL)")
    counts: dict[str, int] = {}
    labels = ctx.labels
    for f in res.findings:
        counts[f.label] = counts.get(f.label, 0) + 1
        label = f"{f.label}_{counts[f.label]}"
        number = labels.next_number()
        info = SegmentInfo(number, label, CATEGORY_MORPHOLOGICALLY_ABNORMAL, FINDING_TYPES[f.label],
                           f"detect.{method}")
        labels = labels.add(info, f.full_mask(shape))
        ctx.measurements.setdefault(number, []).extend([
            Measurement("probability", float(f.probability), "1", PROBABILITY, how),
            Measurement("diameter_mm", float(f.diameter_mm), "mm", DIAMETER, "largest 3-D diameter"),
        ])
        ctx.findings.append({
            "label": label,
            "centroid_mm": [round(float(c), 3) for c in (f.centroid_mm or (np.nan,) * 3)],
            "volume_ml": round(float(f.volume_ml), 4),
            "diameter_mm": round(float(f.diameter_mm), 2),
            "probability": round(float(f.probability), 4),
            "segment_number": number,
            # what the probability was computed from (dicomnode.analysis.detect, "Features of a region")
            "detect_features": {k: round(float(x), 4) for k, x in sorted(f.features.items()) if np.isfinite(x)},
        })
    ctx.labels = labels


@step("synthesize", reads=("volume",))
def _synthesize_step(ctx: Context, params: Mapping[str, Any]) -> None:
    allowed = {"projections", "slab_mm", "spacing_mm", "source", "include_working"}
    unknown = set(params) - allowed
    if unknown:
        raise ValueError(f"step synthesize: unknown parameter(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    projections = list(params.get("projections", ["mip"]))
    bad = [x for x in projections if x not in _synth.PROJECTIONS]
    if bad:
        raise ValueError(f"step synthesize: projections {bad} unknown; choose from {sorted(_synth.PROJECTIONS)}")
    slab = float(params.get("slab_mm", 10.0))
    spacing = params.get("spacing_mm")
    source = str(params.get("source", "original"))
    if source not in ("original", "working"):
        raise ValueError(f"step synthesize: source must be 'original' or 'working', got {source!r}")
    # default: projections of the original intensities (a MIP of a smoothed image hides small bright detail)
    vol = ctx.original if source == "original" else ctx.volume
    for name in projections:
        ctx.derived[name] = _synth.thick_slab(vol, projection=name, slab_mm=slab,
                                              spacing_mm=None if spacing is None else float(spacing))
    if bool(params.get("include_working", False)):
        ctx.derived["working"] = ctx.volume
