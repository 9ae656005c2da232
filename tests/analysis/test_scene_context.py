"""The scene from the study's anatomy: merging a sibling series' regions into a series' own (pure, on regions)."""

import pytest

from dicomnode.analysis.scene import UNKNOWN, SceneRegion, SceneResult
from dicomnode.analysis.scene_context import MIN_COVERED, merge_sibling_scene, modality_rank

CLASSES = ("abdomen", "chest", "extremity", "head", "pelvis")


def _probs(label: str, p: float) -> dict[str, float]:
    rest = (1.0 - p) / (len(CLASSES) - 1)
    return {c: (p if c == label else rest) for c in CLASSES}


def _scene(*regions: tuple[str, float, float, float], label: str | None = None) -> SceneResult:
    """Regions as (label, z_lo, z_hi, p), given head to feet."""
    regs = tuple(SceneRegion(lab, (lo, hi), p) for lab, lo, hi, p in regions)
    named = [r for r in regs if r.label != UNKNOWN]
    if label is None:
        label = max(named, key=lambda r: (r.z_mm[1] - r.z_mm[0]) * r.probability).label if named else UNKNOWN
    p = next((r.probability for r in regs if r.label == label), 0.3)
    return SceneResult(label, _probs(label, p) if label != UNKNOWN else {c: 0.2 for c in CLASSES}, regs, None,
                       ("own note",))


def _covered_by(res: SceneResult) -> float:
    return sum(r.z_mm[1] - r.z_mm[0] for r in res.regions)


def test_an_unknown_series_takes_the_siblings_region_over_the_stretch_they_share():
    own = _scene((UNKNOWN, -630.0, -474.0, 0.45))                    # a PET crop the image cannot name
    ct = _scene(("pelvis", -551.0, -474.0, 0.55), (UNKNOWN, -630.0, -551.0, 0.5))
    merged, borrowed = merge_sibling_scene(own, ct, source="CT series 3")
    assert merged.label == "pelvis"
    assert merged.probabilities["pelvis"] == pytest.approx(0.55)     # the sibling's, not more
    assert sum(merged.probabilities.values()) == pytest.approx(1.0)
    assert borrowed == (SceneRegion("pelvis", (-551.0, -474.0), 0.55, "CT series 3"),)
    assert [r.source for r in merged.regions] == ["CT series 3", ""]   # the borrowed one says where from
    # the series' extent is kept: unknown where neither says, head to feet
    assert [(r.label, r.z_mm) for r in merged.regions] == [("pelvis", (-551.0, -474.0)),
                                                          (UNKNOWN, (-630.0, -551.0))]
    assert _covered_by(merged) == pytest.approx(156.0)
    assert merged.notes[0] == "own note" and any("CT series 3" in n and "borrowed" in n for n in merged.notes)


def test_own_named_regions_win_over_the_siblings():
    own = _scene((UNKNOWN, 0.0, 100.0, 0.6), ("extremity", -200.0, 0.0, 0.7))
    sib = _scene(("pelvis", -200.0, 100.0, 0.9))                       # says pelvis over the whole series
    merged, borrowed = merge_sibling_scene(own, sib, source="CT series 2")
    assert [(r.label, r.z_mm, r.probability) for r in merged.regions] == [
        ("pelvis", (0.0, 100.0), 0.9), ("extremity", (-200.0, 0.0), 0.7)]
    assert borrowed == (SceneRegion("pelvis", (0.0, 100.0), 0.9, "CT series 2"),)
    assert [r.source for r in merged.regions] == ["CT series 2", ""]   # own regions have none
    assert merged.label == "extremity"                                 # 200 mm x 0.7 outweighs 100 mm x 0.9
    assert merged.probabilities == own.probabilities                   # the own dominant region's


def test_a_borrowed_region_is_never_more_confident_than_in_the_sibling():
    own = _scene((UNKNOWN, -300.0, 0.0, 0.5))
    sib = _scene(("abdomen", -100.0, 50.0, 0.62), ("pelvis", -300.0, -100.0, 0.58))
    merged, borrowed = merge_sibling_scene(own, sib, source="MR series 901")
    for r in merged.regions:
        if r.label != UNKNOWN:
            assert r.probability <= max(s.probability for s in sib.regions if s.label == r.label)
    assert {r.label for r in borrowed} == {"abdomen", "pelvis"}
    assert merged.label == "pelvis"                                    # 200 x 0.58 > 100 x 0.62
    assert merged.probabilities[merged.label] == pytest.approx(0.58)


def test_too_little_borrowed_to_name_the_series_leaves_it_unknown():
    own = _scene((UNKNOWN, -500.0, 0.0, 0.5))
    sib = _scene(("pelvis", -500.0, -320.0, 0.8), (UNKNOWN, -320.0, 0.0, 0.5))  # 36 % of the series
    assert (180.0 / 500.0) < MIN_COVERED
    merged, borrowed = merge_sibling_scene(own, sib, source="CT series 2")
    assert borrowed == ()
    assert merged.label == UNKNOWN and merged.regions == own.regions
    assert any("40 % needed" in n for n in merged.notes)


def test_a_borrowed_piece_out_of_head_to_feet_order_is_left_unknown():
    own = _scene(("chest", 0.0, 300.0, 0.8), (UNKNOWN, -300.0, 0.0, 0.5))
    sib = _scene(("head", -300.0, 0.0, 0.9))                           # a head below the chest: not this body
    merged, borrowed = merge_sibling_scene(own, sib, source="MR series 4")
    assert borrowed == ()
    assert merged.label == "chest" and [r.label for r in merged.regions] == ["chest", UNKNOWN]
    assert any("out of head-to-feet order" in n for n in merged.notes)


@pytest.mark.parametrize("sibling", [
    _scene((UNKNOWN, -600.0, -400.0, 0.5)),                             # the sibling does not know either
    _scene(("abdomen", 100.0, 300.0, 0.9)),                            # it names only z outside this series
])
def test_nothing_to_borrow_returns_the_series_own_scene(sibling):
    own = _scene((UNKNOWN, -600.0, -400.0, 0.5))
    assert merge_sibling_scene(own, sibling, source="CT series 2") == (own, ())


def test_a_fully_named_series_borrows_nothing():
    own = _scene(("chest", -100.0, 100.0, 0.9))
    assert merge_sibling_scene(own, _scene(("abdomen", -100.0, 100.0, 0.95)), source="CT") == (own, ())


def test_the_anatomical_modality_is_preferred():
    assert sorted(["PT", "MR", "OT", "CT"], key=modality_rank) == ["CT", "MR", "PT", "OT"]
