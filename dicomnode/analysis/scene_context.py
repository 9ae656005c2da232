"""The scene of a series from its study's anatomy: regions borrowed from a series on the same frame of reference.

A PET lives on its CT's frame of reference, an ADC map on its T2's: the same patient coordinates, so a z in one is
the same body section in the other. Where a series' own scene (:func:`dicomnode.analysis.scene.recognise`) leaves a
stretch ``unknown``, :func:`merge_sibling_scene` takes the regions a sibling series of the same study and frame of
reference recognised over the stretch the two share. Own named regions win; a borrowed region keeps the sibling's
probability (it is never more confident than in the sibling); the dominant label follows the rule of ``recognise``
(the labelled regions must cover :data:`MIN_COVERED` of the series' extent; the dominant one is the longest, weighted
by its probability).

Which series may be a sibling (same study and frame of reference, an original image series, not a localizer, CT
before MR before the rest) is decided where the headers are read (:mod:`dicomnode.jobs.chain`); this module sees
only regions. Pure: no DICOM, no files.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from dicomnode.analysis.scene import _MIN_COVERED, BODY_ORDER, UNKNOWN, SceneRegion, SceneResult
from dicomnode.analysis.volume import Volume

__all__ = ["MIN_COVERED", "SiblingImage", "SiblingSkipped", "StudySibling", "merge_sibling_scene",
           "modality_rank"]

#: The share of a series' extent along z its labelled regions must cover to name it (the rule of ``recognise``).
MIN_COVERED = _MIN_COVERED
#: A borrowed piece shorter than this (mm) is a rounding sliver where two fields of view meet, not a region.
_MIN_PIECE_MM = 1.0
#: Sibling preference: the anatomical modality first (CT: HU; then MR), PET and the rest last.
_MODALITY_RANK = {"CT": 0, "MR": 1}


def modality_rank(modality: str) -> int:
    """Preference of a sibling of ``modality`` for anatomy: 0 for CT, 1 for MR, 2 for PET and any other."""
    return _MODALITY_RANK.get(modality.upper(), 2)


@dataclass(frozen=True, slots=True)
class SiblingImage:
    """A sibling series, loaded: its volume, its plain header strings and how notes name it (``source``: modality,
    series number and description; never a name, an ID or a UID). ``digest``: a digest of its instances, so that
    results that borrow from it change their UIDs when it changes (:attr:`dicomnode.analysis.pipeline.Context.inputs`)."""

    volume: Volume
    header: Mapping[str, str]
    source: str
    digest: str = ""


@dataclass(frozen=True, slots=True)
class SiblingSkipped:
    """A sibling series that cannot lend its anatomy (a localizer, a derived object, another frame...), and why."""

    source: str
    reason: str


@dataclass(frozen=True, slots=True)
class StudySibling:
    """Another image series of the same study and frame of reference, loaded only when a step asks (``load``)."""

    modality: str
    load: Callable[[], SiblingImage | SiblingSkipped]


def _length(r: SceneRegion) -> float:
    return float(r.z_mm[1] - r.z_mm[0])


def _ordered(regions: list[SceneRegion]) -> bool:
    """Labelled regions, head to feet (decreasing z), follow the body's order (repeats allowed)."""
    ranks = [BODY_ORDER.index(r.label) for r in sorted(regions, key=lambda r: -r.z_mm[1])
             if r.label != UNKNOWN and r.label in BODY_ORDER]
    return all(a <= b for a, b in zip(ranks, ranks[1:]))


def _with_probability(label: str, p: float, base: Mapping[str, float]) -> dict[str, float]:
    """Class probabilities with ``label`` at ``p`` and the rest shared as ``base`` shares it (summing to 1)."""
    rest = {c: float(v) for c, v in base.items() if c != label}
    total = sum(rest.values())
    out: dict[str, float] = {}
    for c in dict.fromkeys((*base, label)):  # the base's order, the label in its place (or last)
        if c == label:
            out[c] = float(p)
        else:
            out[c] = (1.0 - p) * rest[c] / total if total > 0 else (1.0 - p) / max(len(rest), 1)
    return out


def merge_sibling_scene(own: SceneResult, sibling: SceneResult, *, source: str) -> tuple[SceneResult,
                                                                                         tuple[SceneRegion, ...]]:
    """Fill the ``unknown`` stretches of a series' scene with a sibling series' recognised regions.

    Parameters
    ----------
    own : SceneResult
        The series' own scene (its regions span the series' extent along patient z, mm).
    sibling : SceneResult
        The scene of a series of the same study and frame of reference (same patient z).
    source : str
        How notes name the sibling (modality, series number, description).

    Returns
    -------
    merged : SceneResult
        ``own`` with every stretch it calls ``unknown`` that a sibling's named region covers taken from the sibling
        (its label and probability), clipped to the series' extent. Own named regions are never changed. A borrowed
        piece that would break the head-to-feet order with the named regions is left ``unknown``. The dominant label
        and its probabilities follow ``recognise``: labelled regions covering less than :data:`MIN_COVERED` of the
        extent name nothing (then ``own`` is returned unchanged); otherwise the longest region weighted by its
        probability is the label, its probabilities those of the series (own region) or of the sibling (borrowed),
        with the region's probability for the label. ``own`` itself when nothing is borrowed.
    borrowed : tuple of SceneRegion
        The pieces taken from the sibling (empty when none), each with ``source`` set, as they are in ``merged``.
    """
    named_sib = [r for r in sibling.regions if r.label != UNKNOWN]
    if not own.regions or not named_sib or all(r.label != UNKNOWN for r in own.regions):
        return own, ()
    fixed = [r for r in own.regions if r.label != UNKNOWN]
    pieces: list[SceneRegion] = []
    for gap in (r for r in own.regions if r.label == UNKNOWN):
        for s in named_sib:
            lo, hi = max(gap.z_mm[0], s.z_mm[0]), min(gap.z_mm[1], s.z_mm[1])
            if hi - lo >= _MIN_PIECE_MM:
                pieces.append(SceneRegion(s.label, (float(lo), float(hi)), float(s.probability), source))
    notes: list[str] = []
    kept: list[SceneRegion] = []
    for piece in sorted(pieces, key=lambda r: -_length(r) * r.probability):  # the weightiest first
        if _ordered(fixed + kept + [piece]):
            kept.append(piece)
        else:
            notes.append(f"scene: {source} says {piece.label} at z {piece.z_mm[0]:.0f} ... {piece.z_mm[1]:.0f} mm, out "
                         "of head-to-feet order with this series' regions: left unknown")
    if not kept:
        return (SceneResult(own.label, own.probabilities, own.regions, own.lungs_in_view, own.notes + tuple(notes),
                            body_in_view=own.body_in_view),
                ()) if notes else (own, ())
    # the series' extent: unknown where neither says (what is left of each own unknown stretch)
    regions: list[SceneRegion] = list(fixed) + kept
    for gap in (r for r in own.regions if r.label == UNKNOWN):
        cuts = sorted((p for p in kept if p.z_mm[0] < gap.z_mm[1] and p.z_mm[1] > gap.z_mm[0]),
                      key=lambda p: p.z_mm[0])
        at = gap.z_mm[0]
        for p in cuts:
            if p.z_mm[0] - at >= _MIN_PIECE_MM:
                regions.append(SceneRegion(UNKNOWN, (float(at), float(p.z_mm[0])), gap.probability))
            at = max(at, p.z_mm[1])
        if gap.z_mm[1] - at >= _MIN_PIECE_MM:
            regions.append(SceneRegion(UNKNOWN, (float(at), float(gap.z_mm[1])), gap.probability))
    regions.sort(key=lambda r: -r.z_mm[1])
    extent = max(r.z_mm[1] for r in own.regions) - min(r.z_mm[0] for r in own.regions)
    labelled = [r for r in regions if r.label != UNKNOWN]
    covered = sum(_length(r) for r in labelled) / max(extent, 1e-6)
    borrowed_mm = sum(_length(p) for p in kept)
    if covered < MIN_COVERED:
        notes.append(f"scene: {source} names {borrowed_mm:.0f} mm of this series' unknown stretches, but the "
                     f"recognised regions cover only {100 * covered:.0f} % of the series (at least "
                     f"{100 * MIN_COVERED:.0f} % needed): not borrowed")
        return SceneResult(own.label, own.probabilities, own.regions, own.lungs_in_view, own.notes + tuple(notes),
                           body_in_view=own.body_in_view), ()
    dom = max(labelled, key=lambda r: _length(r) * r.probability)
    if dom in kept:
        probs = _with_probability(dom.label, dom.probability, sibling.probabilities)
    elif own.label == dom.label:
        probs = dict(own.probabilities)
    else:
        probs = _with_probability(dom.label, dom.probability, own.probabilities)
    labels = sorted({p.label for p in kept}, key=lambda c: BODY_ORDER.index(c) if c in BODY_ORDER else len(BODY_ORDER))
    notes.append(f"scene: {', '.join(labels)} borrowed from {source} (same study and frame of reference; its own "
                 f"scene: {sibling.label}) over {borrowed_mm:.0f} mm this series left unknown; a borrowed region keeps "
                 "the sibling's probability")
    return SceneResult(dom.label, probs, tuple(regions), own.lungs_in_view, own.notes + tuple(notes),
                       body_in_view=own.body_in_view), tuple(kept)
