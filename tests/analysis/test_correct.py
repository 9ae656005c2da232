"""correct.py: every correction changes exactly the voxels it should, and says how many."""

import numpy as np
import pytest

from dicomnode.analysis.codes import segment_codes
from dicomnode.analysis.correct import correct_labels, fill_holes, remove_small_components, smooth_posteriors
from dicomnode.analysis.volume import LabelMap, Segment, SegmentInfo

SPACING = (2.0, 1.0, 1.0)  # 2 mm^3 voxels: 500 voxels per mL


def _info(number, label):
    return SegmentInfo(number, label, *segment_codes(label))


def _hand_made():
    """A 6 x 10 x 10 grid: a body block with a 1-voxel hole, a bone ring (a canal) and a 2-voxel speck of bone."""
    body = np.zeros((6, 10, 10), bool)
    body[1:5, 1:9, 1:9] = True
    body[2, 4, 4] = False                      # hole: 1 voxel
    bone = np.zeros_like(body)
    bone[1:5, 5:8, 5:8] = True
    bone[1:5, 6, 6] = False                    # spinal canal: a hole in every slice, must stay
    bone[1, 2, 2] = bone[1, 2, 3] = True       # speck: 2 voxels = 0.004 mL
    return body, bone


def test_remove_small_components_removes_exactly_the_small_ones():
    _, bone = _hand_made()
    out = remove_small_components(bone, SPACING, min_volume_ml=0.01)  # 5 voxels
    assert np.count_nonzero(bone & ~out) == 2 and not (out & ~bone).any()
    assert not out[1, 2, 2] and not out[1, 2, 3]
    np.testing.assert_array_equal(remove_small_components(bone, SPACING, min_volume_ml=0), bone)


def test_fill_holes_3d_and_slice_wise():
    body, bone = _hand_made()
    filled = fill_holes(body)
    assert np.count_nonzero(filled & ~body) == 1 and filled[2, 4, 4]
    # the canal is open at both ends: no 3-D hole, but a hole in each of the 4 slices
    assert np.count_nonzero(fill_holes(bone) != bone) == 0
    assert np.count_nonzero(fill_holes(bone, slice_wise=True) != bone) == 4
    edge = np.zeros((3, 5, 5), bool)
    edge[:, :, 0:3] = True
    edge[1, 2, 0] = False  # touches the grid border: not a hole
    np.testing.assert_array_equal(fill_holes(edge), edge)


def test_correct_labels_counts_changed_voxels_per_segment():
    body, bone = _hand_made()
    lm = LabelMap((Segment(_info(1, "body"), body), Segment(_info(2, "bone"), bone)), ("lung_left",))
    out, changed = correct_labels(lm, SPACING, min_volume_ml=0.01)
    assert changed == {"body": 1, "bone": 2}  # hole filled; speck removed, canal kept (bone is not hole-filled)
    assert out.by_label("body").mask[2, 4, 4] and not out.by_label("bone").mask[1, 6, 6]
    assert out.not_found == ("lung_left",)
    assert lm.by_label("body").mask[2, 4, 4] == False  # noqa: E712 - the input is not modified
    _, unchanged = correct_labels(lm, SPACING, min_volume_ml=0, fill_holes=False)
    assert unchanged == {"body": 0, "bone": 0}


def test_correct_labels_drops_emptied_segments_into_not_found():
    speck = np.zeros((3, 5, 5), bool)
    speck[1, 1, 1] = True
    out, changed = correct_labels(LabelMap((Segment(_info(1, "bone"), speck),)), SPACING, min_volume_ml=1.0)
    assert out.segments == () and out.not_found == ("bone",) and changed == {"bone": 1}


def test_smooth_posteriors_flips_a_weak_isolated_voxel_and_counts_it():
    post = np.zeros((2, 5, 9, 9), np.float32)
    post[0] = 0.9
    post[1] = 0.1
    post[:, 2, 4, 4] = (0.4, 0.6)    # weakly class 1 among confident class 0: flips
    post[:, 2, 1, 1] = (0.01, 0.99)  # strongly class 1: stays
    post[:, 0, 0, 0] = 0             # outside the region: label -1
    res = smooth_posteriors(post, (1.0, 1.0, 1.0), sigma_mm=1.0, iterations=2)
    assert res.voxels_changed == 1
    assert res.labels[2, 4, 4] == 0 and res.labels[2, 1, 1] == 1 and res.labels[0, 0, 0] == -1
    assert res.labels.dtype == np.int8 and res.posteriors.dtype == np.float32
    np.testing.assert_allclose(res.posteriors.sum(axis=0)[post.sum(axis=0) > 0], 1, atol=1e-5)
    assert smooth_posteriors(post, (1.0, 1.0, 1.0), iterations=0).voxels_changed == 0


def test_options_are_checked():
    body, _ = _hand_made()
    with pytest.raises(ValueError, match="min_volume_ml"):
        remove_small_components(body, SPACING, min_volume_ml=-1)
    with pytest.raises(ValueError, match="bool"):
        fill_holes(body.astype(np.uint8))
    with pytest.raises(ValueError, match="connectivity"):
        correct_labels(LabelMap(), SPACING, connectivity=4)
    with pytest.raises(ValueError, match="iterations"):
        smooth_posteriors(np.zeros((2, 2, 2, 2)), SPACING, iterations=-1)


def _smooth_reference(posteriors, spacing, sigma_mm, iterations):
    """The whole-grid formula of smooth_posteriors' docstring, with scipy directly (no cropping, no threads)."""
    from scipy import ndimage as ndi

    from dicomnode.analysis.denoise import is_volumetric
    p0 = posteriors.astype(np.float32)
    sig = [sigma_mm / s for s in spacing]
    if not is_volumetric(spacing):
        sig[0] = 0.0
    q = p0.copy()
    for _ in range(iterations):
        for k in range(q.shape[0]):
            q[k] = ndi.gaussian_filter(q[k], sig, mode="reflect", output=np.float32)
        q *= p0
        total = q.sum(axis=0)
        np.divide(q, total, out=q, where=total > 0)
    valid = p0.sum(axis=0) > 0
    return np.where(valid, np.argmax(q, axis=0), -1), q


@pytest.mark.parametrize("spacing, region", [
    ((2.0, 1.0, 1.0), (slice(5, 20), slice(8, 30), slice(3, 25))),    # inside the grid: the cropped path
    ((2.0, 1.0, 1.0), (slice(0, 26), slice(0, 40), slice(10, 36))),   # touching the grid's borders
    ((5.0, 1.0, 1.0), (slice(2, 22), slice(5, 35), slice(5, 30))),    # slice-wise (anisotropic) smoothing
])
def test_smooth_posteriors_equals_the_whole_grid_formula(spacing, region):
    rng = np.random.default_rng(3)
    post = np.zeros((3, 26, 40, 36), np.float32)
    raw = rng.random((3,) + tuple(s.stop - s.start for s in region)).astype(np.float32) ** 3
    post[(slice(None),) + region] = raw / raw.sum(axis=0)
    res = smooth_posteriors(post, spacing, sigma_mm=2.0, iterations=2)
    labels, q = _smooth_reference(post, spacing, 2.0, 2)
    np.testing.assert_allclose(res.posteriors, q, atol=1e-5)
    np.testing.assert_array_equal(res.labels, labels)
    before = np.where(post.sum(axis=0) > 0, np.argmax(post, axis=0), -1)
    assert res.voxels_changed == np.count_nonzero(before != labels) > 0
    assert res.labels.dtype == np.int8 and res.posteriors.shape == post.shape


@pytest.mark.parametrize("spacing", [(2.0, 1.0, 1.0), (5.0, 1.0, 1.0)])
def test_smooth_posteriors_in_slabs_and_from_uint8(spacing):
    """Memory bound (issue 13): slabs of a few slices (extended by the kernel's reach per iteration) give the
    whole-grid result, and uint8 posteriors (steps of 1/255, as segment_generic keeps them) give uint8 posteriors
    that are the whole-grid formula's on the dequantised input, to within a step."""
    from dicomnode.analysis.segment import POSTERIOR_SCALE

    rng = np.random.default_rng(7)
    post = np.zeros((3, 30, 40, 36), np.float32)
    raw = rng.random((3, 24, 30, 28)).astype(np.float32) ** 3
    post[:, 3:27, 5:35, 4:32] = raw / raw.sum(axis=0)
    labels, q = _smooth_reference(post, spacing, 2.0, 2)
    for slab in (1, 700, 10**9):
        res = smooth_posteriors(post, spacing, sigma_mm=2.0, iterations=2, slab_voxels=slab)
        np.testing.assert_allclose(res.posteriors, q, atol=1e-5)
        np.testing.assert_array_equal(res.labels, labels)
    quant = np.floor(post * POSTERIOR_SCALE + 0.5).astype(np.uint8)
    labels_q, q_q = _smooth_reference(quant.astype(np.float32) / POSTERIOR_SCALE, spacing, 2.0, 2)
    for slab in (700, 10**9):
        res = smooth_posteriors(quant, spacing, sigma_mm=2.0, iterations=2, slab_voxels=slab)
        assert res.posteriors.dtype == np.uint8 and res.posteriors.shape == post.shape
        np.testing.assert_allclose(res.posteriors / POSTERIOR_SCALE, q_q, atol=0.5 / POSTERIOR_SCALE + 1e-5)
        np.testing.assert_array_equal(res.labels, labels_q)
    with pytest.raises(ValueError, match="slab_voxels"):
        smooth_posteriors(post, spacing, slab_voxels=0)


@pytest.mark.parametrize("series, sigma_mm, iterations", [
    ("abdomen-mr/T2_ax", 1.5, 3),       # the mr profile's correct step
    ("wholebody-pet-mr/PET", 3.0, 2),   # the pet profile's
])
def test_smooth_posteriors_on_real_series_equals_filtering_every_class(series, sigma_mm, iterations):
    """Speed (issue 13): the cropped, threaded, class-by-class implementation gives the whole-grid formula's
    posteriors (within 1e-5) and labels on real series."""
    from pathlib import Path

    from dicomnode.analysis.segment import segment_generic
    from tests.analysis._load import load_dir

    vol, _ = load_dir(Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / series)
    seg = segment_generic(vol.array.astype(np.float32), vol.spacing_mm, rng=np.random.default_rng(0), n_classes=3)
    res = smooth_posteriors(seg.posteriors, vol.spacing_mm, sigma_mm=sigma_mm, iterations=iterations)
    # uint8 steps of 1/255 in and out (memory bound); the reference works on the same (dequantised) input
    labels, q = _smooth_reference(seg.posteriors.astype(np.float32) / 255, vol.spacing_mm, sigma_mm, iterations)
    np.testing.assert_allclose(res.posteriors / 255, q, atol=0.5 / 255 + 1e-5)
    valid = labels >= 0
    assert valid.sum() > 100_000
    assert np.count_nonzero(res.labels != labels) <= 1e-6 * valid.sum()


def test_generic_segmentation_and_smoothing_memory_is_bounded():
    """Memory bound (issue 13), measured by tracemalloc (allocations, not time): the segment step keeps its
    posteriors as uint8 and its classes as masks (1.75 x the float32 volume; float32 posteriors alone were 3 x),
    and the smoothing works in slabs (less than one float32 copy of the posteriors on top of its outputs)."""
    import tracemalloc

    from dicomnode.analysis.segment import segment_generic
    from dicomnode.bench.analysis import make_mr_phantom

    spacing = (6.0, 2.0, 2.0)
    img = make_mr_phantom((40, 192, 192), spacing, rng=np.random.default_rng(0))
    segment_generic(img[:8], spacing, rng=np.random.default_rng(0))  # imports outside the measurement
    tracemalloc.start()
    try:
        res = segment_generic(img, spacing, rng=np.random.default_rng(0))
        kept, peak = tracemalloc.get_traced_memory()
        assert res.posteriors.dtype == np.uint8
        assert kept <= 2.0 * img.nbytes and peak <= 8.0 * img.nbytes, (kept / img.nbytes, peak / img.nbytes)
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        sm = smooth_posteriors(res.posteriors, spacing, sigma_mm=1.5, iterations=3, slab_voxels=100_000)
        added = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert sm.posteriors.dtype == np.uint8 and sm.labels.dtype == np.int8
    float32_posteriors = 3 * img.nbytes
    assert added < float32_posteriors, added / img.nbytes


@pytest.mark.parametrize("spacing", [(2.0, 1.0, 1.0), (5.0, 1.0, 1.0)])
def test_smooth_posteriors_in_place_gives_the_new_array_result(spacing):
    """Memory (issue 13): ``out=posteriors`` overwrites the input slab by slab (each slab written after the next
    has read its input, halo included) and gives exactly what a new array gets, in 3-D (halo) and slice-wise."""
    from dicomnode.analysis.segment import POSTERIOR_SCALE

    rng = np.random.default_rng(11)
    post = np.zeros((3, 30, 40, 36), np.float32)
    raw = rng.random((3, 24, 30, 28)).astype(np.float32) ** 3
    post[:, 3:27, 5:35, 4:32] = raw / raw.sum(axis=0)
    quant = np.floor(post * POSTERIOR_SCALE + 0.5).astype(np.uint8)
    for src in (post, quant):
        for slab in (1, 700, 10**9):
            new = smooth_posteriors(src, spacing, sigma_mm=2.0, iterations=2, slab_voxels=slab)
            work = src.copy()
            res = smooth_posteriors(work, spacing, sigma_mm=2.0, iterations=2, slab_voxels=slab, out=work)
            assert res.posteriors is work
            np.testing.assert_array_equal(res.posteriors, new.posteriors)
            np.testing.assert_array_equal(res.labels, new.labels)
            assert res.voxels_changed == new.voxels_changed > 0
    other = np.full(quant.shape, 7, np.uint8)  # a separate output array: zeros outside the region too
    res = smooth_posteriors(quant, spacing, sigma_mm=2.0, iterations=2, out=other)
    np.testing.assert_array_equal(other, smooth_posteriors(quant, spacing, sigma_mm=2.0, iterations=2).posteriors)
    with pytest.raises(ValueError, match="out must be"):
        smooth_posteriors(quant, spacing, out=np.zeros(quant.shape, np.float32))
    with pytest.raises(ValueError, match="out may be"):
        smooth_posteriors(quant, spacing, out=quant[:])


def test_correct_labels_uint16_buffer_equals_int32_labelling():
    """correct_labels labels into one reused uint16 buffer (half the memory of int32 labels), falling back to int32
    for a mask of more than 65535 components: the result is that of the public one-mask functions, which label as
    int32 (kept as the reference), segment by segment, for masks of few and of very many components."""
    rng = np.random.default_rng(11)
    shape = (60, 100, 100)
    body = np.zeros(shape, bool)
    body[2:58, 5:95, 5:95] = True
    body[rng.random(shape) < 0.02] = False     # scattered holes (filled, slice-wise) and dents
    speckle = np.zeros(shape, bool)
    speckle[::2, ::2, ::2] = True               # 75 000 single voxels: > 65535 components, the int32 fallback
    speckle[10:20, 10:20, 10:20] = True         # ... and one large component, kept
    blobs = np.zeros(shape, bool)
    blobs[5:9, 10:14, 10:14] = True
    blobs[20, 50, 50] = blobs[30, 70:72, 70] = True
    lm = LabelMap((Segment(_info(1, "body"), body), Segment(_info(2, "adipose_tissue"), speckle),
                   Segment(_info(3, "bone"), blobs)), ())
    from scipy import ndimage as ndi
    assert ndi.label(speckle, structure=ndi.generate_binary_structure(3, 1))[1] > 65535
    out, changed = correct_labels(lm, SPACING, min_volume_ml=0.005)
    for seg in lm.segments:
        want = remove_small_components(seg.mask, SPACING, min_volume_ml=0.005)
        if seg.info.label == "body":
            want = fill_holes(want, slice_wise=True)
        got = out.by_label(seg.info.label)
        assert got is not None and np.array_equal(got.mask, want)
        assert changed[seg.info.label] == int(np.count_nonzero(want != seg.mask)) > 0


def test_correct_segments_lets_go_of_each_mask_and_equals_correct_labels():
    """correct_segments (the correct step's way) empties the list it is handed, entry by entry, and gives what
    correct_labels gives (which leaves its input alone); bad options are refused before any entry is touched."""
    from dicomnode.analysis.correct import correct_segments

    body, bone = _hand_made()
    lm = LabelMap((Segment(_info(1, "body"), body), Segment(_info(2, "bone"), bone)), ("lung_left",))
    want, want_changed = correct_labels(lm, SPACING, min_volume_ml=0.01)
    segs = list(lm.segments)
    with pytest.raises(ValueError):
        correct_segments(segs, lm.not_found, SPACING, min_volume_ml=-1)
    assert segs == list(lm.segments)
    got, changed = correct_segments(segs, lm.not_found, SPACING, min_volume_ml=0.01)
    assert segs == [None, None] and changed == want_changed
    assert got.not_found == want.not_found
    assert [s.info for s in got.segments] == [s.info for s in want.segments]
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(got.segments, want.segments))


@pytest.mark.parametrize("nz", [1, 15, 16, 17, 40])
def test_region_box_by_slabs_is_the_whole_masks_box(nz):
    """smooth_posteriors finds the region's box a few slices at a time: the box of the whole-grid mask (any class
    > 0, float64 values too small for float32 included), or None when the region is empty."""
    from dicomnode.analysis.correct import _bbox, _region_box

    rng = np.random.default_rng(nz)
    post = np.zeros((3, nz, 12, 14))
    assert _region_box(post) is None
    post[1, rng.integers(nz), 3:5, 7] = 1e-300  # > 0, though 0 as float32
    post[2, rng.integers(nz), 9, 2] = 0.5
    post[0, -1, 0, 13] = 0.25
    valid = (post > 0).any(axis=0)
    assert _region_box(post) == _bbox(valid, pad=0)
    q = (post * 255).astype(np.uint8)
    assert _region_box(q) == _bbox((q > 0).any(axis=0), pad=0)
