"""SR content for the recognition steps: scene, classifications and similarities as TID 1501 groups.

:func:`evaluation_groups` turns the plain results of the ``scene``, ``classify`` and ``match`` steps (the dicts in
``ctx.scene``, ``ctx.classifications`` and ``ctx.similarities``, as written to ``results.json``) into highdicom
measurement groups for ``build_sr(extra_groups=...)``:

* scene regions (``scene["regions"]``, when the step gives them): tracking identifier ``scene.region.<n>.<label>``,
  finding and *Target Region* = the region's SNOMED CT code, numeric *region z from* and *region z to* (mm, patient
  z) and *probability* (unit 1);
* scene: tracking identifier ``scene``; qualitative evaluation *Target Region* (DCM 123014) = the region's SNOMED CT
  code; a numeric *probability.<region>* (unit 1) per class; when the header names a region, *Body Part Examined*
  (our private code) = the header's region and *header agrees* = Yes/No (SNOMED CT 373066001 / 373067005);
* each classification: tracking identifier ``classification.<task>[.<segment>]``; *<task>* (private code) = the
  predicted class (private code), and *probability.<class>* per class;
* similarities, one group per pair of structures: tracking identifier ``similarity.<a>.<b>``, one numeric
  measurement per similarity (``volume_ratio``, ``shape_dice``, ...; unit 1).

Names without a standard code are coded in our private scheme ``99DCMNODE`` (:func:`dicomnode.results.sr.
private_code_value`), which ``build_sr`` declares in the Coding Scheme Identification Sequence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from dicomnode.analysis.volume import Code, Measurement
from dicomnode.results.sr import PRIVATE_SCHEME, GroupItem, evaluation_group, private_code_value
from dicomnode.results.uids import ResultUids

__all__ = ["REGION_CODES", "evaluation_groups"]

#: Body regions -> SNOMED CT concepts (CID 4031 "Common Anatomic Regions").
REGION_CODES: dict[str, Code] = {
    "head": Code("69536005", "SCT", "Head"),
    "neck": Code("45048000", "SCT", "Neck"),
    "chest": Code("51185008", "SCT", "Thorax"),
    "abdomen": Code("818981001", "SCT", "Abdomen"),
    "pelvis": Code("816092008", "SCT", "Pelvis"),
    "extremity": Code("66019005", "SCT", "Limb"),
    "unknown": Code("261665006", "SCT", "Unknown"),  # the scene step's answer when it does not know
}
_TARGET_REGION = Code("123014", "DCM", "Target Region")
_ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical Structure")
_YES = Code("373066001", "SCT", "Yes")
_NO = Code("373067005", "SCT", "No")


def _private(name: str) -> Code:
    return Code(private_code_value(name), PRIVATE_SCHEME, name)


def _label_part(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in str(text))[:40] or "x"


def _finite(value: object) -> bool:
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _probabilities(probs: Mapping[str, float]) -> list[Measurement]:
    """NUMs of the finite probabilities (an SR holds finite numbers only; results.json keeps the others as null)."""
    return [Measurement(f"probability.{k}", float(v), "1") for k, v in probs.items() if _finite(v)]


def _region_group(uids: ResultUids, index: int, region: Mapping[str, Any], scene: Mapping[str, Any],
                  kw: dict[str, Any]) -> GroupItem:
    """One body region along the patient's z axis: what (Target Region), where (from/to z in mm) and how sure."""
    label = str(region["label"])
    code = REGION_CODES.get(label, _private(label))
    measurements = []
    z_mm = [float(v) for v in region.get("z_mm") or () if _finite(v)]
    if len(z_mm) == 2:  # a region without a finite extent keeps its label and probability
        measurements = [Measurement("region z from", min(z_mm), "mm"), Measurement("region z to", max(z_mm), "mm")]
    if _finite(region.get("probability")):
        measurements.append(Measurement("probability", float(region["probability"]), "1"))
    return evaluation_group(
        uids, f"scene.region.{index}.{_label_part(label)}", code, finding_category=_ANATOMICAL_STRUCTURE,
        evaluations=[(_TARGET_REGION, code)], measurements=measurements,
        algorithm=f"dicomnode.scene {scene.get('model', '')}".strip(), **kw)


def evaluation_groups(ctx_scene: Mapping[str, Any] | None, ctx_classifications: Sequence[Mapping[str, Any]],
                      ctx_similarities: Sequence[Mapping[str, Any]], uids: ResultUids, *,
                      software_version: str | None = None) -> list[GroupItem]:
    """The SR groups of the recognition results, in the order scene, classifications, similarities.

    Parameters
    ----------
    ctx_scene : dict or None
        ``{"label", "probabilities", "header_body_part", "agrees_with_header", ...}`` as made by the ``scene``
        step, or None (no group). With ``"regions"`` (a list of ``{"label", "z_mm": [lo, hi], "probability"}``),
        one more group per region: Target Region, *region z from* / *region z to* (mm, patient z) and the
        probability.
    ctx_classifications : sequence of dict
        ``{"task", "label", "probabilities", "model"[, "segment"]}`` each.
    ctx_similarities : sequence of dict
        ``{"name", "a", "b", "value", "method"}`` each.
    uids : ResultUids
        Gives the tracking UIDs.
    software_version : str, optional
        Version of the algorithms (default: the installed dicomnode's).

    Returns
    -------
    list of highdicom.sr.MeasurementsAndQualitativeEvaluations
        For ``build_sr(..., extra_groups=...)``.
    """
    kw: dict[str, Any] = {} if software_version is None else {"software_version": software_version}
    groups: list[GroupItem] = []
    if ctx_scene:
        label = str(ctx_scene["label"])
        region = REGION_CODES.get(label, _private(label))
        evaluations = [(_TARGET_REGION, region)]
        header = ctx_scene.get("header_body_part")
        if header:
            evaluations.append((_private("header_body_part"), REGION_CODES.get(str(header), _private(str(header)))))
        agrees = ctx_scene.get("agrees_with_header")
        if agrees is not None:
            evaluations.append((_private("header_agrees"), _YES if agrees else _NO))
        groups.append(evaluation_group(
            uids, "scene", _private("scene"), evaluations=evaluations,
            measurements=_probabilities(ctx_scene.get("probabilities", {})),
            algorithm=f"dicomnode.scene {ctx_scene.get('model', '')}".strip(), **kw))
    for i, region in enumerate((ctx_scene or {}).get("regions") or [], start=1):
        groups.append(_region_group(uids, i, region, ctx_scene, kw))
    for c in ctx_classifications:
        task = str(c["task"])
        tracking = f"classification.{_label_part(task)}"
        if c.get("segment"):
            tracking += f".{_label_part(c['segment'])}"
        groups.append(evaluation_group(
            uids, tracking, _private(f"classification.{task}"),
            evaluations=[(_private(task), _private(str(c["label"])))],
            measurements=_probabilities(c.get("probabilities", {})),
            algorithm=f"dicomnode.classify {c.get('model', '')}".strip(), **kw))
    by_pair: dict[tuple[str, str], list[Measurement]] = {}
    for s in ctx_similarities:
        if not _finite(s.get("value")):
            continue
        by_pair.setdefault((str(s["a"]), str(s["b"])), []).append(
            Measurement(str(s["name"]), float(s["value"]), "1", derivation=str(s.get("method", ""))))
    for (a, b), items in by_pair.items():
        groups.append(evaluation_group(
            uids, f"similarity.{_label_part(a)}.{_label_part(b)}", _private("similarity"),
            measurements=items, algorithm="dicomnode.match", **kw))
    return groups
