"""Segment storage (dicomnode.analysis.volume): a segment keeps its mask cropped to its bounding box."""

import numpy as np
import pytest

from dicomnode.analysis.volume import CATEGORY_TISSUE, LabelMap, Segment, SegmentInfo, mask_box

INFO = SegmentInfo(1, "body", CATEGORY_TISSUE, CATEGORY_TISSUE)


def test_a_whole_grid_mask_is_stored_cropped_and_given_back_whole():
    rng = np.random.default_rng(0)
    full = np.zeros((30, 40, 50), dtype=bool)
    full[5:12, 10:31, 7:9] = rng.random((7, 21, 2)) < 0.5
    full[5, 10, 7] = full[11, 30, 8] = True  # the box's corners are in the mask
    seg = Segment(INFO, full)
    assert seg.shape == (30, 40, 50)
    assert seg.box == (slice(5, 12), slice(10, 31), slice(7, 9)) == mask_box(full)
    assert seg.crop.shape == (7, 21, 2) and seg.crop.base is None  # a copy of the box, not a view of the caller's
    got = seg.mask
    assert got.dtype == np.bool_ and np.array_equal(got, full)
    assert seg.count() == int(full.sum()) and seg.any()
    got[0, 0, 0] = True  # a new array on each access: writing to it does not change the segment
    assert not seg.mask[0, 0, 0] and seg.mask is not seg.mask


def test_a_crop_is_kept_as_given_and_a_view_is_copied():
    crop = np.ones((2, 3, 4), dtype=bool)
    seg = Segment(INFO, crop, box=(slice(1, 3), slice(0, 3), slice(5, 9)), shape=(4, 3, 10))
    assert seg.crop is crop and seg.mask.sum() == 24 and seg.mask[1:3, :, 5:9].all()
    big = np.ones((4, 3, 10), dtype=bool)
    seg = Segment(INFO, big[1:3, :, 5:9], box=(slice(1, 3), slice(0, 3), slice(5, 9)), shape=(4, 3, 10))
    assert seg.crop.base is None  # a view would keep the larger array alive
    with pytest.raises(ValueError, match="does not fill the box"):
        Segment(INFO, crop, box=(slice(0, 3), slice(0, 3), slice(5, 9)), shape=(4, 3, 10))
    with pytest.raises(ValueError, match="box and shape together"):
        Segment(INFO, crop, box=(slice(1, 3), slice(0, 3), slice(5, 9)))
    with pytest.raises(ValueError, match="3-D bool"):
        Segment(INFO, np.zeros((2, 3, 4), dtype=np.uint8))


def test_an_empty_mask_is_an_empty_segment_on_its_grid():
    seg = Segment(INFO, np.zeros((3, 4, 5), dtype=bool))
    assert not seg.any() and seg.count() == 0 and seg.shape == (3, 4, 5)
    assert seg.mask.shape == (3, 4, 5) and not seg.mask.any()


def test_a_label_map_checks_the_grids_of_cropped_segments():
    a = Segment(INFO, np.ones((3, 4, 5), dtype=bool))
    b = Segment(SegmentInfo(2, "lung_left", CATEGORY_TISSUE, CATEGORY_TISSUE),
                np.ones((1, 1, 1), dtype=bool), box=(slice(0, 1),) * 3, shape=(3, 4, 6))
    with pytest.raises(ValueError, match="share one grid"):
        LabelMap((a, b))


def test_a_segments_mask_on_a_box_of_the_grid():
    """in_box: the whole-grid mask cut to any box: overlapping the segment's box, holding it, inside it, apart."""
    rng = np.random.default_rng(3)
    mask = np.zeros((20, 30, 25), dtype=bool)
    mask[4:12, 10:22, 5:15] = rng.random((8, 12, 10)) > 0.4
    seg = Segment(INFO, mask)
    for box in ((slice(0, 8), slice(15, 30), slice(0, 10)), (slice(0, 20), slice(0, 30), slice(0, 25)),
                (slice(6, 9), slice(12, 14), slice(7, 13)), (slice(15, 20), slice(0, 5), slice(20, 25))):
        got = seg.in_box(box)
        assert got.shape == tuple(b.stop - b.start for b in box)
        assert np.array_equal(got, mask[box])


def test_renumbered_closes_the_gaps_and_says_which_became_which():
    a = np.zeros((4, 5, 6), dtype=bool)
    a[1, 1, 1] = True
    segs = tuple(Segment(SegmentInfo(n, f"s{n}", CATEGORY_TISSUE, CATEGORY_TISSUE), a) for n in (4, 1, 2))
    lm = LabelMap(segs, ("lungs",))
    got, new_of = lm.renumbered()
    assert new_of == {1: 1, 2: 2, 4: 3}
    assert [s.info.number for s in got.segments] == [3, 1, 2] and [s.info.label for s in got.segments] == ["s4", "s1", "s2"]
    assert got.not_found == ("lungs",) and got.segments[0].crop is segs[0].crop
    same, ident = got.renumbered()
    assert same is got and ident == {1: 1, 2: 2, 3: 3}
