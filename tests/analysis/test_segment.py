"""segment.py on synthetic phantoms with known truth."""

import numpy as np
import pytest

from dicomnode.analysis.codes import segment_codes
from dicomnode.analysis.correct import correct_labels
from dicomnode.analysis.segment import (FOV_INSIDE_BODY_NOTE, POSTERIOR_SCALE, _keep_large_components,
                                       _open_in_plane, segment_ct, segment_generic)
from dicomnode.bench.analysis import make_ct_phantom

SPACING = (2.5, 1.6, 1.6)
CT_LABELS = ("body", "lung_left", "lung_right", "bone", "adipose_tissue", "soft_tissue")


def dice(a, b):
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.fixture(scope="module")
def phantom():
    """Body with fat layer, two lungs, spine, a table under it; 20 HU noise; 60 x 160 x 160 at 2.5 x 1.6 x 1.6 mm."""
    return make_ct_phantom((60, 160, 160), SPACING, rng=np.random.default_rng(1), noise_hu=20.0)


@pytest.fixture(scope="module")
def ct_result(phantom):
    image, _ = phantom
    return segment_ct(image, SPACING)


def test_ct_phantom_every_region_dice_095_and_volume_within_1_percent(phantom, ct_result):
    _, truth = phantom
    labels, changed = correct_labels(ct_result.labels, SPACING, min_volume_ml=0.1)
    assert [s.info.label for s in labels.segments] == list(CT_LABELS) and labels.not_found == ()
    for seg in labels.segments:
        t = truth[seg.info.label]
        assert dice(seg.mask, t) >= 0.95, seg.info.label
        assert abs(np.count_nonzero(seg.mask) / np.count_nonzero(t) - 1) <= 0.01, seg.info.label
    assert not (labels.by_label("body").mask & truth["table"]).any()  # the table is not body
    assert all(v >= 0 for v in changed.values())


def test_ct_segments_are_numbered_and_coded(ct_result):
    segs = ct_result.labels.segments
    assert [s.info.number for s in segs] == list(range(1, len(segs) + 1))
    for s in segs:
        assert (s.info.category, s.info.type) == segment_codes(s.info.label)
        assert s.mask.dtype == np.bool_
    assert ct_result.labels.by_label("lung_left").info.type.value == "44029006"
    assert ct_result.labels.by_label("body").info.type.value == "38266002"
    assert ct_result.posteriors is None and ct_result.classes == CT_LABELS


def test_left_lung_follows_the_direction_matrix(phantom):
    """Mirror the columns and say so in ``direction``: the patient's left lung is then at the smaller column."""
    image, truth = phantom
    direction = np.diag([-1.0, 1.0, 1.0])  # column index increases towards the patient's right
    res = segment_ct(np.ascontiguousarray(image[:, :, ::-1]), SPACING, direction=direction)
    left = res.labels.by_label("lung_left").mask
    assert dice(left, truth["lung_left"][:, :, ::-1]) >= 0.95
    cols = np.nonzero(left)[2]
    assert cols.mean() < image.shape[2] / 2


def test_field_of_view_inside_the_body(phantom):
    """A crop of the soft tissue and fat around the spine, no lungs: the body is the tissue in view, with a note."""
    image, truth = phantom
    box = (slice(10, 50), slice(95, 160), slice(40, 120))  # posterior part, cut through the body on three sides
    res = segment_ct(np.ascontiguousarray(image[box]), SPACING)
    assert FOV_INSIDE_BODY_NOTE in res.notes
    assert set(res.labels.not_found) == {"lung_left", "lung_right"}
    body = res.labels.by_label("body").mask
    assert dice(body, truth["body"][box]) >= 0.95
    assert body.mean() < 0.95  # air under the body is in view: not a whole-image body
    assert dice(res.labels.by_label("bone").mask, truth["bone"][box]) >= 0.95
    assert all(s.mask.any() for s in res.labels.segments)


def test_nothing_to_find_is_a_result():
    air = np.full((10, 40, 40), -1000.0, np.float32)
    res = segment_ct(air, SPACING)
    assert res.labels.segments == () and res.labels.not_found == CT_LABELS


def test_ct_options_are_checked(phantom):
    image, _ = phantom
    with pytest.raises(ValueError, match="bone_range_hu"):
        segment_ct(image, SPACING, bone_range_hu=(300, 200))
    with pytest.raises(ValueError, match="direction"):
        segment_ct(image, SPACING, direction=np.eye(2))


@pytest.fixture(scope="module")
def mr_phantom():
    """An MR-like ellipsoid (3 concentric tissues: 100, 300, 600) in a dark background (0 + noise SD 10)."""
    shape, spacing = (30, 80, 80), (2.0, 1.5, 1.5)
    z, y, x = np.ogrid[:shape[0], :shape[1], :shape[2]]
    r = np.sqrt(((z - 14.5) * 2.0 / 25) ** 2 + ((y - 39.5) * 1.5 / 50) ** 2 + ((x - 39.5) * 1.5 / 50) ** 2)
    truth = {"body": r <= 1.0, "tissue_class_1": (r <= 1.0) & (r > 0.7),
             "tissue_class_2": (r <= 0.7) & (r > 0.4), "tissue_class_3": r <= 0.4}
    img = np.where(r <= 0.4, 600.0, np.where(r <= 0.7, 300.0, np.where(r <= 1.0, 100.0, 0.0)))
    img = np.abs(img + np.random.default_rng(2).normal(0, 10, shape)).astype(np.float32)  # magnitude image
    return img, spacing, truth


def test_generic_foreground_and_classes(mr_phantom):
    img, spacing, truth = mr_phantom
    res = segment_generic(img, spacing, rng=np.random.default_rng(0), n_classes=3)
    assert res.classes == ("tissue_class_1", "tissue_class_2", "tissue_class_3")
    for name, t in truth.items():
        assert dice(res.labels.by_label(name).mask, t) >= 0.95, name
    # memory bound (issue 13): the posteriors are uint8 steps of 1/255, a quarter of float32's memory
    assert res.posteriors.shape == (3,) + img.shape and res.posteriors.dtype == np.uint8
    post = res.posteriors.astype(np.float32) / POSTERIOR_SCALE
    fg = truth["body"]
    np.testing.assert_allclose(post.sum(axis=0)[res.labels.by_label("body").mask], 1, atol=1.5 / POSTERIOR_SCALE)
    assert post[:, ~res.labels.by_label("body").mask].max() == 0
    assert post[2][fg & (img > 550)].mean() > 0.9  # classes sorted by mean intensity
    assert FOV_INSIDE_BODY_NOTE not in res.notes


def test_generic_slabs_do_not_change_the_result(mr_phantom):
    """Posteriors and classes are computed slab by slab (memory bound): one-slice slabs give the one-slab result,
    and each voxel's class is its largest posterior."""
    img, spacing, _ = mr_phantom
    a = segment_generic(img, spacing, rng=np.random.default_rng(0), chunk_voxels=10**9)
    b = segment_generic(img, spacing, rng=np.random.default_rng(0), chunk_voxels=1)
    np.testing.assert_array_equal(a.posteriors, b.posteriors)
    for sa, sb in zip(a.labels.segments, b.labels.segments, strict=True):
        assert sa.info == sb.info
        np.testing.assert_array_equal(sa.mask, sb.mask)
    body = a.labels.by_label("body").mask
    top = a.posteriors.max(axis=0)
    for k, name in enumerate(a.classes):
        seg = a.labels.by_label(name).mask
        assert (a.posteriors[k][seg] == top[seg]).all()  # quantised: the winner's step is the largest
        assert not (seg & ~body).any()


def test_in_plane_opening_and_component_filter_equal_scipy():
    from scipy import ndimage as ndi

    rng = np.random.default_rng(4)
    cross = ndi.generate_binary_structure(3, 1)
    cross[0] = cross[2] = False
    for shape in ((1, 1, 1), (3, 2, 2), (6, 17, 11), (12, 40, 33)):
        for p in (0.3, 0.6, 0.9):
            m = rng.random(shape) < p
            np.testing.assert_array_equal(_open_in_plane(m), ndi.binary_opening(m, structure=cross))
            labels, n = ndi.label(m)
            for frac in (0.0, 0.2, 0.9):
                sizes = np.bincount(labels.ravel(), minlength=n + 1)
                sizes[0] = 0
                keep = sizes >= frac * sizes.max()
                keep[0] = False
                np.testing.assert_array_equal(_keep_large_components(m, min_fraction=frac), keep[labels])


def test_generic_is_reproducible_with_the_same_rng(mr_phantom):
    img, spacing, _ = mr_phantom
    a = segment_generic(img, spacing, rng=np.random.default_rng(5))
    b = segment_generic(img, spacing, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a.posteriors, b.posteriors)


def test_generic_empty_image_is_a_result():
    res = segment_generic(np.zeros((4, 16, 16), np.float32), (1.0, 1.0, 1.0), rng=np.random.default_rng(0))
    assert res.labels.segments == () and "body" in res.labels.not_found and res.posteriors is None


def test_generic_needs_a_generator():
    with pytest.raises(ValueError, match="Generator"):
        segment_generic(np.zeros((4, 16, 16), np.float32), (1.0, 1.0, 1.0), rng=0)


def test_the_mixture_sample_of_a_sparse_foreground_needs_no_index_of_the_grid():
    """segment_generic draws its mixture sample of a sparse foreground (a whole-body PET: 9 % of the grid) with
    replacement, keeping each index's first draw: distinct indices, uniform over the grid (each eighth of the grid
    holds about an eighth of them), in random order, and the same for the same seed."""
    from dicomnode.analysis.segment import _draw_distinct

    n, size = 2_000_000, 150_000
    a = _draw_distinct(np.random.default_rng(4), n, size)
    assert a.shape == (size,) and a.dtype == np.int64 and np.unique(a).size == size
    assert a.min() >= 0 and a.max() < n
    counts = np.bincount(a * 8 // n, minlength=8)
    assert np.all(np.abs(counts - size / 8) < 5 * np.sqrt(size / 8))
    assert not np.all(np.diff(a) > 0)  # not sorted: a prefix is a random subset too
    assert np.array_equal(a, _draw_distinct(np.random.default_rng(4), n, size))
    assert np.unique(_draw_distinct(np.random.default_rng(1), 1000, 999)).size == 999  # nearly all: more rounds
