"""Texture matrices and features on tiny arrays worked out by hand, plus properties and argument checks.

The worked example is one 3 x 3 slice, all voxels in the mask, grey levels 1..3:

    1 2 2
    1 1 2
    3 3 1
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from dicomnode.analysis.features import _texture_matrices as tm
from dicomnode.analysis.features.texture import (
    AGGREGATIONS,
    FEATURES,
    gldzm_features,
    glcm_features,
    glszm_features,
    ngldm_features,
    ngtdm_features,
    texture_features,
)

SLICE = np.array([[[1, 2, 2],
                   [1, 1, 2],
                   [3, 3, 1]]])
FULL = np.ones_like(SLICE, dtype=bool)


def _roi(levels=SLICE, mask=FULL, n_levels=3):
    return tm.make_roi(levels, mask, mask, n_levels)


def _dense(cooc: tm.Cooc, n_levels: int = 3) -> np.ndarray:
    out = np.zeros((n_levels, n_levels))
    np.add.at(out, (cooc.i - 1, cooc.j - 1), cooc.count)
    return out


def _value(values, feature, aggregation):
    (hit,) = [v.value for v in values if v.feature == feature and v.aggregation == aggregation]
    return hit


# ------------------------------------------------------------------------------------------------- GLCM
@pytest.mark.parametrize(("direction", "expected"), [
    ((0, 0, 1), [[2, 2, 1], [2, 2, 0], [1, 0, 2]]),   # rows: (1,2) (2,2) | (1,1) (1,2) | (3,3) (3,1)
    ((0, 1, 0), [[2, 2, 2], [2, 2, 0], [2, 0, 0]]),   # columns: (1,1) (1,3) | (2,1) (1,3) | (2,2) (2,1)
    ((0, 1, 1), [[4, 0, 1], [0, 2, 0], [1, 0, 0]]),   # diagonal: (1,1) (2,2) (1,3) (1,1)
    ((0, 1, -1), [[0, 2, 1], [2, 0, 1], [1, 1, 0]]),  # anti-diagonal: (2,1) (2,1) (1,3) (2,3)
], ids=["x", "y", "diagonal", "anti-diagonal"])
def test_glcm_counts_per_direction(direction, expected):
    counts = _dense(tm.glcm_counts(_roi(), direction, per_slice=False))
    np.testing.assert_array_equal(counts, expected)  # symmetric: each pair counted in both orders


def test_glcm_out_of_plane_directions_find_no_pairs_in_one_slice():
    for d in tm.DIRECTIONS_3D[4:]:
        assert tm.glcm_counts(_roi(), d, per_slice=False).count.sum() == 0


def test_glcm_features_from_hand_matrix():
    # "2.5D, merged" of one slice is the sum of the four matrices above
    merged = np.array([[8, 6, 5], [6, 6, 1], [5, 1, 2]], dtype=float)
    p = merged / merged.sum()
    i = np.arange(1, 4)[:, None]
    j = np.arange(1, 4)[None, :]
    values = glcm_features(SLICE, FULL, 3, aggregations=("2.5D, merged",))
    assert _value(values, "joint maximum", "2.5D, merged") == pytest.approx(8 / 40)
    assert _value(values, "joint average", "2.5D, merged") == pytest.approx((p * i).sum())
    assert _value(values, "contrast", "2.5D, merged") == pytest.approx((p * (i - j) ** 2).sum())
    assert _value(values, "normalised inverse difference", "2.5D, merged") == pytest.approx(
        (p / (1 + abs(i - j) / 3)).sum())
    assert _value(values, "inverse variance", "2.5D, merged") == pytest.approx(
        (p[i != j] / ((i - j)[i != j] ** 2)).sum())
    assert _value(values, "joint entropy", "2.5D, merged") == pytest.approx(-(p * np.log2(p)).sum())


def test_glcm_uses_n_levels_not_levels_present():
    nid6 = _value(glcm_features(SLICE, FULL, 6, aggregations=("3D, merged",)),
                  "normalised inverse difference", "3D, merged")
    nid3 = _value(glcm_features(SLICE, FULL, 3, aggregations=("3D, merged",)),
                  "normalised inverse difference", "3D, merged")
    assert nid6 > nid3  # larger N_g, smaller |i-j|/N_g


# ------------------------------------------------------------------------------------------------ GLRLM
def _run_table(direction):
    runs = tm.runs_along(_roi(), direction)
    table = np.zeros((3, 3), dtype=int)
    np.add.at(table, (runs.level - 1, runs.length - 1), 1)
    return table


def test_run_lengths_along_x():
    # rows: 1 | 2 2  ;  1 1 | 2  ;  3 3 | 1
    np.testing.assert_array_equal(_run_table((0, 0, 1)), [[2, 1, 0], [1, 1, 0], [0, 1, 0]])


def test_run_lengths_along_y():
    # columns: 1 1 | 3  ;  2 | 1 | 3  ;  2 2 | 1
    np.testing.assert_array_equal(_run_table((0, 1, 0)), [[2, 1, 0], [1, 1, 0], [2, 0, 0]])


def test_run_lengths_along_diagonals():
    # main diagonals: 1 1 1  ;  2 2  ;  1 | 3  ;  2  ;  3
    np.testing.assert_array_equal(_run_table((0, 1, 1)), [[1, 0, 1], [1, 1, 0], [2, 0, 0]])
    # anti-diagonals: 1  ;  2 | 1  ;  2 | 1 | 3  ;  2 | 3  ;  1
    np.testing.assert_array_equal(_run_table((0, 1, -1)), [[4, 0, 0], [3, 0, 0], [2, 0, 0]])


def test_runs_break_at_the_mask():
    mask = FULL.copy()
    mask[0, 1, 1] = False  # the centre: the row 1 1 2 becomes 1 | . | 2
    runs = tm.runs_along(_roi(mask=mask), (0, 0, 1))
    # rows: 1 | 2 2  ;  1 | . | 2  ;  3 3 | 1
    assert sorted(zip(runs.level.tolist(), runs.length.tolist())) == [(1, 1), (1, 1), (1, 1), (2, 1), (2, 2),
                                                                      (3, 2)]


def test_run_percentage_counts_merged_directions():
    values = texture_features(SLICE, FULL, 3, families=("GLRLM",), aggregations=("2D",))
    n_runs = 6 + 7 + 6 + 9  # x, y, diagonal, anti-diagonal
    assert _value(values, "run percentage", "2D, slice-merged") == pytest.approx(n_runs / (4 * 9))
    assert _value(values, "run percentage", "2D, averaged") == pytest.approx(np.mean([6, 7, 6, 9]) / 9)


# -------------------------------------------------------------------------------------------- GLSZM, GLDZM
def test_zone_sizes_use_8_connectivity_in_plane():
    z = tm.zones(_roi(), in_plane=True, with_distance=False)
    # level 1: (0,0) (1,0) (1,1) and (2,2), joined diagonally; level 2: three voxels; level 3: two
    assert sorted(zip(z.level.tolist(), z.size.tolist())) == [(1, 4), (2, 3), (3, 2)]
    values = glszm_features(SLICE, FULL, 3, aggregations=("2D",))
    assert _value(values, "large zone emphasis", "2D") == pytest.approx((16 + 9 + 4) / 3)
    assert _value(values, "small zone emphasis", "2D") == pytest.approx((1 / 16 + 1 / 9 + 1 / 4) / 3)
    assert _value(values, "zone percentage", "2D") == pytest.approx(3 / 9)


def test_3d_zones_link_slices_2d_zones_do_not():
    levels = np.ones((2, 2, 2), dtype=int)
    mask = np.ones((2, 2, 2), dtype=bool)
    values = glszm_features(levels, mask, 1)
    assert _value(values, "zone percentage", "3D") == pytest.approx(1 / 8)   # one zone of 8
    assert _value(values, "zone percentage", "2.5D") == pytest.approx(2 / 8)  # one zone per slice


def test_gldzm_distance_uses_the_morphological_mask():
    levels = np.ones((1, 5, 5), dtype=int)
    morph = np.ones((1, 5, 5), dtype=bool)
    intensity = np.zeros((1, 5, 5), dtype=bool)
    intensity[0, 1:4, 1:4] = True
    # the 3x3 zone's nearest voxels are 2 steps from outside the 5x5 morphological mask (edge voxels are at 1)
    inner = gldzm_features(levels, intensity, 1, morph_mask=morph, aggregations=("2D",))
    assert _value(inner, "small distance emphasis", "2D") == pytest.approx(1 / 4)
    same = gldzm_features(levels, intensity, 1, aggregations=("2D",))
    assert _value(same, "small distance emphasis", "2D") == pytest.approx(1.0)


def test_gldzm_distance_is_4_connected_in_plane():
    roi = _roi(levels=np.ones((1, 5, 5), dtype=int), mask=np.ones((1, 5, 5), dtype=bool), n_levels=1)
    assert tm.zones(roi, in_plane=True, with_distance=True).distance.tolist() == [1]
    # the distance map itself: centre 3, its diagonal neighbours 2, the rim 1 (taxicab, not chessboard)
    dist = roi.core(ndi.distance_transform_cdt(roi.morph, metric=tm._CROSS_2D))[0]
    assert (dist[2, 2], dist[1, 1], dist[0, 2]) == (3, 2, 1)


def test_gldzm_3d_distance_is_6_connected():
    levels = np.ones((5, 5, 5), dtype=int)
    levels[2, 2, 2] = 2  # a one-voxel zone at the centre: 3 steps from outside along an axis
    values = gldzm_features(levels, np.ones((5, 5, 5), dtype=bool), 2, aggregations=("3D",))
    # zones: the level-1 shell (distance 1) and the centre (distance 3)
    assert _value(values, "large distance emphasis", "3D") == pytest.approx((1 + 9) / 2)


# ------------------------------------------------------------------------------------------------ NGTDM
def test_ngtdm_s_i_by_hand():
    # |level - mean of the in-mask 8-neighbours|, summed per level:
    # level 1: 1/3 (corner) + 1 + 7/8 (centre) + 1 = 77/24; level 2: 3/5 + 1/3 + 1/5 = 17/15;
    # level 3: 4/3 + 7/5 = 41/15. n = (4, 3, 2), N_v,c = 9.
    s = np.array([77 / 24, 17 / 15, 41 / 15])
    n = np.array([4, 3, 2])
    p = n / 9
    values = ngtdm_features(SLICE, FULL, 3, aggregations=("2D",))
    assert _value(values, "coarseness", "2D") == pytest.approx(1 / (p * s).sum())
    i = np.arange(1, 4)
    pairs = [(a, b) for a in range(3) for b in range(3)]
    strength = sum((p[a] + p[b]) * (i[a] - i[b]) ** 2 for a, b in pairs) / s.sum()
    assert _value(values, "strength", "2D") == pytest.approx(strength)
    contrast = sum(p[a] * p[b] * (i[a] - i[b]) ** 2 for a, b in pairs) / (3 * 2) * s.sum() / 9
    assert _value(values, "contrast", "2D") == pytest.approx(contrast)


def test_ngtdm_skips_voxels_without_neighbours():
    levels = np.array([[[1, 0, 2], [1, 0, 0], [0, 0, 0]]])
    mask = levels > 0  # the 2 has no neighbour in the mask
    values = ngtdm_features(levels, mask, 2, aggregations=("2D",))
    # only the two 1s count: both have mean neighbour 1, so s_1 = 0 and coarseness is undefined (NaN)
    assert math.isnan(_value(values, "coarseness", "2D"))


# ------------------------------------------------------------------------------------------------ NGLDM
def test_ngldm_dependence_counts_by_hand():
    # j = 1 + same-level 8-neighbours. level 1: 3, 3, 4 (centre), 2; level 2: 3, 3, 3; level 3: 2, 2
    matrix = np.array([[0, 1, 2, 1], [0, 0, 3, 0], [0, 2, 0, 0]], dtype=float)  # j = 1..4
    j = np.arange(1, 5)
    values = ngldm_features(SLICE, FULL, 3, aggregations=("2D",))
    assert _value(values, "low dependence emphasis", "2D") == pytest.approx((matrix / j ** 2).sum() / 9)
    assert _value(values, "high dependence emphasis", "2D") == pytest.approx((matrix * j ** 2).sum() / 9)
    assert _value(values, "dependence count percentage", "2D") == 1.0
    p = matrix / 9
    assert _value(values, "dependence count energy", "2D") == pytest.approx((p ** 2).sum())


# ------------------------------------------------------------------------------------------- properties
def test_all_rows_by_default():
    values = texture_features(SLICE, FULL, 3)
    assert len(values) == sum(len(FEATURES[f]) * len(AGGREGATIONS[f]) for f in AGGREGATIONS) == 408
    assert {v.family for v in values} == set(AGGREGATIONS)


def test_aggregation_prefix_selects_dimensionality():
    values = texture_features(SLICE, FULL, 3, aggregations=("3D",))
    assert {v.aggregation for v in values} == {"3D", "3D, averaged", "3D, merged"}
    values = texture_features(SLICE, FULL, 3, families=("GLCM", "NGTDM"), aggregations=("2D", "2.5D, merged"))
    assert {v.aggregation for v in values} == {"2D", "2D, averaged", "2D, slice-merged", "2.5D, merged"}


def test_single_slice_2d_equals_25d_for_zone_families():
    values = texture_features(SLICE, FULL, 3, families=("GLSZM", "GLDZM", "NGTDM", "NGLDM"))
    table = {(v.family, v.feature, v.aggregation): v.value for v in values}
    for (family, feature, aggregation), value in table.items():
        if aggregation == "2D":
            assert table[(family, feature, "2.5D")] == pytest.approx(value, nan_ok=True)


def test_swapping_x_and_y_changes_no_rotation_invariant_feature():
    rng = np.random.default_rng(7)
    levels = rng.integers(1, 5, size=(3, 6, 7))
    mask = rng.random((3, 6, 7)) > 0.2
    a = texture_features(levels, mask, 4)
    b = texture_features(levels.transpose(0, 2, 1), mask.transpose(0, 2, 1), 4)
    for va, vb in zip(a, b):
        assert (va.family, va.feature, va.aggregation) == (vb.family, vb.feature, vb.aggregation)
        assert vb.value == pytest.approx(va.value, rel=1e-9, nan_ok=True), (va.family, va.feature, va.aggregation)


def test_values_outside_the_mask_are_ignored():
    rng = np.random.default_rng(3)
    levels = rng.integers(1, 4, size=(2, 5, 5))
    mask = np.zeros_like(levels, dtype=bool)
    mask[:, 1:4, 1:4] = True
    noisy = np.where(mask, levels, 99)
    a = texture_features(levels, mask, 3)
    b = texture_features(noisy, mask, 3)
    assert [v.value for v in a] == pytest.approx([v.value for v in b], nan_ok=True)


def test_empty_mask_gives_nan():
    values = texture_features(SLICE, np.zeros_like(FULL), 3, families=("GLCM",), aggregations=("3D, merged",))
    assert len(values) == 25 and all(math.isnan(v.value) for v in values)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"families": ("GLXM",)}, "unknown texture families"),
    ({"families": "GLCM"}, "sequence"),
    ({"aggregations": ("4D",)}, "unknown aggregations"),
    ({"aggregations": "3D"}, "sequence"),
])
def test_options_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        texture_features(SLICE, FULL, 3, **kwargs)


def test_arrays_are_checked():
    with pytest.raises(ValueError, match="outside 1..2"):
        texture_features(SLICE, FULL, 2)
    with pytest.raises(ValueError, match="integer grey levels"):
        texture_features(SLICE.astype(float), FULL, 3)
    with pytest.raises(ValueError, match="levels\\[None\\]"):
        texture_features(SLICE[0], FULL[0], 3)
    with pytest.raises(ValueError, match="shape"):
        texture_features(SLICE, FULL[:, :2], 3)
    with pytest.raises(ValueError, match="n_levels"):
        texture_features(SLICE, FULL, 0)


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 1, 1)])
@pytest.mark.parametrize("aggs", [("3D",), ("2D", "2.5D", "3D")])
def test_a_region_too_small_for_a_matrix_gives_nan_not_an_error(shape, aggs):
    """One voxel (no pair, no neighbour, no zone beside another) or a column of one voxel per slice in 2D: the
    texture matrices are empty and their features undefined (NaN), as IBSI leaves them; they raised before
    (np.bincount of no cells is int64; the NGTDM of no neighbours divided by zero)."""
    from dicomnode.analysis.region_features import RegionFeatureSettings, region_features

    img = np.random.default_rng(3).normal(100.0, 10.0, (6, 6, 6)).astype(np.float32)
    mask = np.zeros(img.shape, dtype=bool)
    mask[2:2 + shape[0], 3:3 + shape[1], 3:3 + shape[2]] = True
    settings = RegionFeatureSettings.from_params({"families": ["texture"], "bin_width": 5,
                                                  "texture_aggregations": list(aggs)})
    meas, _ = region_features(img, mask, (1.0, 1.0, 1.0), unit="HU", settings=settings)
    empty = aggs if shape == (1, 1, 1) else tuple(a for a in aggs if a != "3D")  # no neighbour (in its slice)
    ngtdm = {m.name.split("/")[2]: m.value for m in meas if m.name.startswith("NGTDM/coarseness/")}
    assert len(ngtdm) == len(aggs)
    assert all(np.isnan(v) for a, v in ngtdm.items() if a.split(",")[0] in empty)
    if shape == (1, 1, 1):
        glcm = [m.value for m in meas if m.name.startswith("GLCM/contrast/")]
        assert glcm and all(np.isnan(v) for v in glcm)  # no pair of voxels
