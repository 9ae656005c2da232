"""Profile steps of recognition: ``match``, ``classify`` and ``scene``.

| step | what | parameters |
|---|---|---|
| ``match`` | compares paired segments (``X_left`` / ``X_right``, e.g. the lungs): ``ctx.similarities`` + measurements of the first segment of each pair | ``pairs`` (list of [a, b] labels; default: every ``*_left``/``*_right`` pair present), ``n_bins`` (64) |
| ``classify`` | a trained model's posteriors: ``ctx.classifications`` | ``model`` (path or shipped name, required), ``segment`` (label whose measurements are the features; default: scene descriptors when the model uses them, else the first segment that has every feature) |
| ``scene`` | body regions along z with calibrated probabilities, and whether the header agrees: ``ctx.scene``; stretches the image leaves unknown taken from the study's series on the same frame of reference (``ctx.siblings``) | ``model`` (default "scene", the shipped model) |

``ctx.scene`` is ``{"label", "probabilities", "regions", "lungs_in_view", "header_body_part", "agrees_with_header",
"model"}``. ``regions`` lists ``{"label", "z_mm": [lo, hi], "probability"}`` from head to feet in patient z (LPS,
mm); labels are ``head``, ``neck``, ``chest``, ``abdomen``, ``pelvis``, ``extremity`` or ``unknown``
(:func:`dicomnode.analysis.scene.recognise`). ``label`` and ``probabilities`` are those of the dominant region
(the longest labelled one); ``label`` is ``unknown`` for phantoms, localizers, fields of view too small to tell
and whenever no stretch reaches p = 0.5 or the landmarks contradict the model; on an MR diffusion image or map
(ImageType ADC, DIFFUSION, TRACEW...; or its description, :func:`diffusion_image`) only landmarks that do not read
intensities as tissue name a slab. ``lungs_in_view`` is True/False on
CT (lung-like air inside the body, crops included), None otherwise.
``header_body_part`` is read from BodyPartExamined, else from the series/study descriptions and protocol name,
mapped to ``head``, ``neck``, ``chest``, ``abdomen``, ``pelvis``, ``extremity`` (None when they say nothing usable,
e.g. PARTIALBODY); a header naming two regions (ABDOMENPELVIS) agrees with either. ``agrees_with_header`` is None
when the header says nothing usable, when the image gives ``unknown``, or when the header names a region the model
cannot recognise (it has no ``neck`` class).

**The study's anatomy.** When the image leaves a stretch ``unknown`` and the chain offers other series of the same
study on the same frame of reference (``ctx.siblings``: CT first, then MR, then the rest), the step loads the first,
recognises it with the same model and fills the unknown stretches with its named regions
(:func:`dicomnode.analysis.scene_context.merge_sibling_scene`: own regions win, the sibling's probabilities kept);
then the next, while a stretch is still unknown. A borrowed region has ``source`` (the sibling's modality, series
number and description) in ``regions``; the notes say what was borrowed, from which series, and what it cost.
"""

from __future__ import annotations

import re
import time
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from dicomnode.analysis.pipeline import Context, step
from dicomnode.analysis.volume import Measurement, Volume
from dicomnode.modelio import LoadedModel, ModelCard, load_card, load_model, resolve_model

if TYPE_CHECKING:
    from dicomnode.analysis.scene import SceneRegion, SceneResult

# The steps' analysis modules (the scene model's, scikit-learn through classify, scipy.signal through match: 9 MB of
# a job process) are imported where a step runs, not with the registry: a profile whose scene step runs last (PET)
# does not hold them through its earlier, larger steps (``dicomnode bench analysis``, peak RSS).

__all__ = ["diffusion_image", "header_body_part", "header_regions"]

#: BodyPartExamined defined terms (PS3.16 Annex L, CID 4031 and common vendor values) -> region(s).
_BODY_PART: dict[str, tuple[str, ...]] = {}
for _regions, _terms in (
    (("head",), "HEAD BRAIN SKULL FACE EAR EYE ORBIT NOSE SINUS JAW TMJ IAC SELLA PITUITARY HEADNECK"),
    (("neck",), "NECK CSPINE LARYNX PHARYNX THYROID"),
    (("chest",), "CHEST THORAX LUNG HEART BREAST MEDIASTINUM TSPINE CHESTWALL AORTA RIB RIBS STERNUM CARDIAC"),
    (("abdomen",), "ABDOMEN LIVER KIDNEY PANCREAS STOMACH SPLEEN GALLBLADDER LSPINE ADRENAL BOWEL COLON"),
    (("pelvis",), "PELVIS HIP BLADDER PROSTATE UTERUS OVARY RECTUM SSPINE SACRUM COCCYX"),
    (("extremity",), "EXTREMITY LEG THIGH KNEE FOOT ANKLE ARM HAND SHOULDER ELBOW WRIST FEMUR TIBIA FIBULA "
                     "HUMERUS FOREARM UPRARM LOWERLEG UPPERLEG CALF FINGER TOE"),
    (("chest", "abdomen"), "CHESTABDOMEN THORAXABDOMEN TLSPINE"),
    (("abdomen", "pelvis"), "ABDOMENPELVIS ABDPELVIS ABDOMENANDPELVIS"),
    (("chest", "abdomen", "pelvis"), "CHESTABDPELVIS CHESTABDOMENPELVIS"),
):
    for _t in _terms.split():
        _BODY_PART[_t] = _regions

#: Words in descriptions / protocol names -> region.
_WORDS: tuple[tuple[str, str], ...] = (
    ("head", r"head|brain|skull|cranial|cranium|neuro|cerebr\w*|schaedel|schädel|kopf"),
    ("neck", r"neck|cervical|hals|thyroid"),
    ("chest", r"chest|thorax|thx|thorac\w*|lung|lungs|pulmo\w*|cardiac|heart|thoraxroutine"),
    ("abdomen", r"abdomen|abd|abdominal|liver|hepat\w*|renal|kidney|pancrea\w*|upper\s*abdomen"),
    ("pelvis", r"pelvis|pelvic|becken|hip|hips|prostate|bladder"),
    ("extremity", r"extremity|extremities|thigh|leg|legs|knee|femur|arm|arms|foot|ankle|shoulder|elbow|wrist|"
                  r"hand|tibia|limb"),
)


def header_regions(header: Mapping[str, str]) -> tuple[str, ...]:
    """The body region(s) a header names: BodyPartExamined first, else descriptions and protocol name.

    Returns an empty tuple when nothing usable is found (missing, PARTIALBODY, WHOLEBODY, unknown words).
    """
    bpe = re.sub(r"[^A-Z]", "", str(header.get("BodyPartExamined", "") or "").upper())
    if bpe in _BODY_PART:
        return _BODY_PART[bpe]
    found: list[str] = []
    text = " ".join(str(header.get(k, "") or "") for k in ("SeriesDescription", "StudyDescription", "ProtocolName"))
    words = re.split(r"[^a-zA-Zäöü]+", text.lower())
    for region, pattern in _WORDS:
        rx = re.compile(rf"^(?:{pattern})$")
        if any(rx.match(w) for w in words if w):
            found.append(region)
    return tuple(found)


#: ImageType values (Siemens DIFFUSION, ADC, TRACEW; Philips and GE ADC, EADC, FA; Toshiba ADC) and description
#: words that mark a diffusion-weighted image or a map computed from one.
_DIFFUSION_IMAGE_TYPES = frozenset({"ADC", "EADC", "DADC", "DIFFUSION", "TRACEW", "TRACE", "FA", "DWI", "ISODWI"})
_DIFFUSION_WORDS = re.compile(r"^(?:adc|eadc|dadc|dwi|dwibs|diffusion|diff|tracew|trace|apparent)$")


def diffusion_image(header: Mapping[str, str]) -> str | None:
    """Why an MR series is a diffusion image or map (ADC, trace-weighted DWI, FA), from its ImageType or
    description, or None (also for other modalities)."""
    if str(header.get("Modality", "MR") or "MR").upper() != "MR":
        return None
    for token in str(header.get("ImageType", "") or "").upper().split("\\"):
        if token.strip() in _DIFFUSION_IMAGE_TYPES:
            return f"ImageType {token.strip()}"
    for key in ("SeriesDescription", "ProtocolName"):
        words = re.split(r"[^a-z]+", str(header.get(key, "") or "").lower())
        hit = next((w for w in words if w and _DIFFUSION_WORDS.match(w)), None)
        if hit:
            return f"{key} says {hit.upper()}"
    return None


def header_body_part(header: Mapping[str, str]) -> str | None:
    """The first region :func:`header_regions` finds, or None."""
    r = header_regions(header)
    return r[0] if r else None


@lru_cache(maxsize=8)
def _load_cached(path: str, mtime_ns: int, task: str | None) -> LoadedModel:
    return load_model(path, task=task)


def _model(name_or_path: str, task: str | None = None) -> LoadedModel:
    p = resolve_model(name_or_path)
    return _load_cached(str(p), p.stat().st_mtime_ns, task)


@lru_cache(maxsize=8)
def _card_cached(path: str, mtime_ns: int, task: str | None) -> ModelCard:
    return load_card(path, task=task)


def _card(name_or_path: str, task: str | None = None) -> ModelCard:
    """A model's card only (:func:`~dicomnode.modelio.load_card`: no skops, no estimator built)."""
    p = resolve_model(name_or_path)
    return _card_cached(str(p), p.stat().st_mtime_ns, task)


def _check_keys(name: str, params: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = set(params) - allowed
    if unknown:
        raise ValueError(f"step {name}: unknown parameter(s) {sorted(unknown)}; allowed: {sorted(allowed)}")


def _scene_vector(ctx: Context, names: tuple[str, ...]):
    from dicomnode.analysis.scene import descriptor_vector, scene_descriptors

    v = ctx.original
    desc = scene_descriptors(v.array, v.spacing_mm, direction=v.direction, modality=v.modality, unit=v.unit)
    ctx.notes.extend(desc.notes)
    return descriptor_vector(desc, names)


def _temperature(card_extra: Mapping[str, Any], is_ct: bool) -> float:
    """The model's calibration temperature for CT or for other modalities (1 when the card has none)."""
    t = card_extra.get("temperature_ct" if is_ct else "temperature_other", 1.0)
    return float(t) if t and float(t) > 0 else 1.0


def _class_patients(card_extra: Mapping[str, Any], is_ct: bool) -> dict[str, int] | None:
    """Training patients per class of the model for CT or for other modalities (the card's ``class_patients``;
    None when the card has none)."""
    table = card_extra.get("class_patients")
    if not isinstance(table, Mapping):
        return None
    group = table.get("ct" if is_ct else "other")
    return {str(k): int(n) for k, n in group.items()} if isinstance(group, Mapping) else None


def _recognise_volume(v: Volume, header: Mapping[str, str], m: LoadedModel) -> tuple[SceneResult, tuple[str, ...],
                                                                                   list[str]]:
    """The scene of one volume with model ``m``: its result, the model's classes and the profile's notes."""
    from dicomnode.analysis.classify import posteriors
    from dicomnode.analysis.scene import descriptor_vector, profile_slabs, recognise, scene_profile

    prof = scene_profile(v.array, v.spacing_mm, direction=v.direction, origin_mm=v.origin_mm, modality=v.modality,
                         unit=v.unit)
    notes = list(prof.notes)
    extra = m.card.extra or {}
    slabs = profile_slabs(prof, slab_mm=float(extra.get("slab_mm", 60.0)),
                          stride_mm=float(extra.get("stride_mm", 30.0)))
    names = m.card.feature_names
    if slabs:
        classes, P = posteriors(m.estimator, np.stack([descriptor_vector(d, names) for _, _, d in slabs]))
    else:
        classes, P = tuple(m.card.classes), np.zeros((0, len(m.card.classes)))
    dwi = diffusion_image({**header, "Modality": v.modality}) if v.modality.upper() == "MR" else None
    support = _class_patients(extra, prof.is_ct)
    if support is None:
        notes.append(f"scene: model {m.path.name} has no class_patients on its card (an older or a site's "
                     "model): the guard against classes too few training patients showed is off")
    res = recognise(prof, slabs, P, classes, temperature=_temperature(extra, prof.is_ct),
                    diffusion_map=dwi, class_patients=support)
    return res, tuple(classes), notes


def _with_siblings(ctx: Context, res: SceneResult, m: LoadedModel) -> SceneResult:
    """Fill what the series' own scene leaves unknown from its study's other series on the same frame of reference,
    in the order the job gives them (CT first), each loaded and recognised with the same model only while a stretch
    is still unknown."""
    from dicomnode.analysis.scene import UNKNOWN
    from dicomnode.analysis.scene_context import SiblingSkipped, merge_sibling_scene

    for sib in ctx.siblings:
        if all(r.label != UNKNOWN for r in res.regions):
            break
        t0 = time.perf_counter()
        got = sib.load()
        if isinstance(got, SiblingSkipped):
            ctx.notes.append(f"scene: {got.source} not used as the study's anatomy: {got.reason}")
            continue
        sres, _, _ = _recognise_volume(got.volume, got.header, m)
        ctx.notes.append(f"scene: this series leaves part of its extent unknown: {got.source} (same study and frame "
                         f"of reference) loaded and recognised with the same model in "
                         f"{time.perf_counter() - t0:.1f} s; its own scene: {sres.label}"
                         + (f" (p = {sres.probabilities.get(sres.label, 0.0):.2f})" if sres.label != UNKNOWN else ""))
        merged, pieces = merge_sibling_scene(res, sres, source=got.source)
        if pieces:
            ctx.inputs.append(got.digest)  # the results now depend on the sibling's instances
        ctx.notes.extend(merged.notes[len(res.notes):])
        res = merged
    return res


@step("scene", reads=())
def _scene_step(ctx: Context, params: Mapping[str, Any]) -> None:
    """Body regions along z from the image (slab model + landmarks), the dominant one compared with the header;
    stretches the image leaves unknown are taken from a series of the same study and frame of reference."""
    from dicomnode.analysis.scene import UNKNOWN

    _check_keys("scene", params, {"model"})
    m = _model(str(params.get("model", "scene")), "scene")
    res, classes, notes = _recognise_volume(ctx.original, ctx.header, m)
    ctx.notes.extend(notes)
    ctx.notes.extend(res.notes)
    if ctx.siblings:
        res = _with_siblings(ctx, res, m)
    regions = header_regions(ctx.header)
    agrees: bool | None
    if not regions:
        agrees = None
    elif not set(regions) & set(classes):
        agrees = None
        ctx.notes.append(f"scene: the header names {'/'.join(regions)}, which model {m.path.name} cannot "
                         "recognise; no agreement given")
    elif res.label == UNKNOWN:
        agrees = None
    else:
        agrees = res.label in regions
    if agrees is False:
        ctx.notes.append(f"scene: the image looks like {res.label} (p = {res.probabilities[res.label]:.2f}) but the "
                         f"header says {'/'.join(regions)}")
    ctx.scene = {
        "label": res.label,
        "probabilities": {k: round(p, 6) for k, p in res.probabilities.items()},
        "regions": [_region_entry(r) for r in res.regions],
        "lungs_in_view": res.lungs_in_view,
        "body_in_view": res.body_in_view,
        "header_body_part": regions[0] if regions else None,
        "agrees_with_header": agrees,
        "model": m.path.name,
    }


def _region_entry(r: SceneRegion) -> dict[str, Any]:
    """A region of ``results.json``; a borrowed one says where from (``source``: modality, series number and
    description of the sibling series)."""
    entry: dict[str, Any] = {"label": r.label, "z_mm": [round(r.z_mm[0], 1), round(r.z_mm[1], 1)],
                             "probability": round(r.probability, 6)}
    if r.source:
        entry["source"] = r.source
    return entry


@step("classify", reads=())
def _classify_step(ctx: Context, params: Mapping[str, Any]) -> None:
    """Posteriors of a trained model (``dicomnode train``) for this series or one of its segments."""
    from dicomnode.analysis.classify import classify as _classify
    from dicomnode.analysis.classify import feature_vector
    from dicomnode.analysis.scene import MODEL_FEATURES

    _check_keys("classify", params, {"model", "segment"})
    if "model" not in params:
        raise ValueError("step classify: parameter 'model' (a .skops path or a shipped model name) is required")
    m = _model(str(params["model"]))
    names = m.card.feature_names
    segment = params.get("segment")
    if segment is None and set(names) <= set(MODEL_FEATURES):
        x = _scene_vector(ctx, names)
        where = None
    else:
        candidates = [s for s in ctx.labels.segments if segment is None or s.info.label == segment]
        x = where = None
        for s in candidates:
            values = {mm.name: mm.value for mm in ctx.measurements.get(s.info.number, [])}
            if all(n in values for n in names):
                x, where = feature_vector(values, names), s.info.label
                break
        if x is None:
            raise ValueError(f"step classify: no segment{f' {segment!r}' if segment else ''} has every feature of "
                             f"model {m.path.name} ({', '.join(names[:5])}...); run the 'features' step first")
    res = _classify(m.estimator, x)
    entry: dict[str, Any] = {"task": m.card.task, "label": res.label,
                             "probabilities": {k: round(v, 6) for k, v in res.probabilities.items()},
                             "model": m.path.name}
    if where is not None:
        entry["segment"] = where
    ctx.classifications.append(entry)


def _default_pairs(labels: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for lab in labels:
        if lab.endswith("_left") and lab[:-5] + "_right" in labels:
            pairs.append((lab, lab[:-5] + "_right"))
    return pairs


@step("match", reads=())
def _match_step(ctx: Context, params: Mapping[str, Any]) -> None:
    """Compare paired segments: mirrored shape overlap, histogram and intensity NCC, volume ratio."""
    from dicomnode.analysis.match import compare_paired

    _check_keys("match", params, {"pairs", "n_bins"})
    present = [s.info.label for s in ctx.labels.segments]
    pairs = [tuple(p) for p in params["pairs"]] if "pairs" in params else _default_pairs(present)
    n_bins = int(params.get("n_bins", 64))
    v = ctx.original
    for pair in pairs:
        if len(pair) != 2:
            raise ValueError(f"step match: each of 'pairs' must be [label_a, label_b], got {list(pair)}")
        a, b = ctx.labels.by_label(str(pair[0])), ctx.labels.by_label(str(pair[1]))
        if a is None or b is None or not a.mask.any() or not b.mask.any():
            ctx.notes.append(f"match: {pair[0]} / {pair[1]} not both present; not compared")
            continue
        c = compare_paired(v.array, a.mask, b.mask, v.spacing_mm, direction=v.direction, n_bins=n_bins)
        values = {"volume_ratio": c.volume_ratio, "shape_dice": c.shape_dice, "histogram_ncc": c.histogram_ncc,
                  "intensity_ncc": c.intensity_ncc}
        methods = {"volume_ratio": "smaller / larger volume",
                   "shape_dice": "Dice after mirroring across the left-right axis and centroid alignment",
                   "histogram_ncc": "weighted NCC of intensity histograms",
                   "intensity_ncc": "centred NCC of mirrored intensities"}
        for k, val in values.items():
            ctx.similarities.append({"name": k, "a": a.info.label, "b": b.info.label, "value": round(float(val), 6),
                                     "method": methods[k]})
            ctx.measurements.setdefault(a.info.number, []).append(
                Measurement(f"match.{b.info.label}.{k}", float(val), "1", derivation=methods[k]))
        ctx.measurements.setdefault(a.info.number, []).append(
            Measurement(f"match.{b.info.label}.mean_difference", c.mean_difference, v.unit or "1",
                        derivation="mean of a minus mean of b"))
