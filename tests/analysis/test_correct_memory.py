"""correct.py and the correct step, memory (issue 13 item 6, branch memmr): slice-wise holes found slab by slab,
small components removed in place from the step's own masks, the class masks let go before smoothing. Each is
checked against the code it replaces, kept here as the reference, bit for bit."""

import tracemalloc

import numpy as np
import pytest
from scipy import ndimage as ndi

from dicomnode.analysis.codes import segment_codes
from dicomnode.analysis.correct import (_filled, _holes, correct_labels, correct_segments, fill_holes,
                                        remove_small_components, smooth_posteriors)
from dicomnode.analysis.pipeline import Context, run_steps
from dicomnode.analysis.volume import LabelMap, Segment, SegmentInfo, Volume
from dicomnode.bench.analysis import make_mr_phantom
from dicomnode.config import load_config
from dicomnode.steps import registry

SPACING = (6.0, 2.0, 2.0)  # the bench's MR phantom at a quarter of its voxels per slice, every other slice


def _info(number, label):
    return SegmentInfo(number, label, *segment_codes(label))


def _reference_fill(mask, slice_wise):
    """fill_holes before the slabs (main 29b11eb): the holes of the whole box, then a copy filled."""
    out = mask.copy()
    found = _holes(mask, slice_wise)
    if found is not None:
        box, holes = found
        out[box] |= holes
    return out


def _masks():
    """Masks with slice-wise holes: classes of the MR phantom (thresholds) and random ones."""
    img = make_mr_phantom((40, 96, 96), SPACING, rng=np.random.default_rng(3))
    yield img > 150                       # the body: holes where organs are dark
    yield (img > 400) & (img < 700)       # a tissue class: many holes and specks
    rng = np.random.default_rng(5)
    m = np.zeros((12, 30, 34), bool)
    m[1:11, 2:28, 3:31] = True
    m[rng.random(m.shape) < 0.2] = False
    yield m
    m = np.zeros((5, 9, 9), bool)         # a ring in every slice: a hole per slice; no holes at all
    m[:, 2:7, 2:7] = True
    m[:, 4, 4] = False
    yield m
    yield np.ones((3, 4, 5), bool)
    yield np.zeros((3, 4, 5), bool)


@pytest.mark.parametrize("slab_voxels", [1, 700, 1 << 20])
def test_slice_wise_holes_by_slabs_equal_the_whole_box(slab_voxels):
    for mask in _masks():
        want = _reference_fill(mask, slice_wise=True)
        # and scipy's own, slice by slice (4-neighbour background, as ours)
        assert np.array_equal(want, np.stack([ndi.binary_fill_holes(s) for s in mask]) if mask.size else mask)
        got = _filled(mask, True, [], copy=True, slab_voxels=slab_voxels)
        assert np.array_equal(got, want)
        assert (got is mask) == (not (want != mask).any())  # no holes: the mask itself, no copy
        work = mask.copy()
        assert _filled(work, True, [], copy=False, slab_voxels=slab_voxels) is work
        assert np.array_equal(work, want)
        assert np.array_equal(fill_holes(mask, slice_wise=True), want)
        assert np.array_equal(fill_holes(mask, slice_wise=False), _reference_fill(mask, slice_wise=False))


def test_owned_masks_lose_their_small_components_in_place():
    """correct_segments with ``owned``: masks not hole-filled are cleaned in place (the same array, no copy) and
    count the voxels removed; a hole-filled owned mask (a removed speck inside a hole comes back) is copied as
    before. Everything equals correct_labels, the public way that copies."""
    img = make_mr_phantom((40, 96, 96), SPACING, rng=np.random.default_rng(3))
    body = ndi.binary_opening(img > 150, iterations=1)
    body[19:22, 40:50, 40:50] = False         # a hole in the body ...
    body[20, 44, 44] = True                   # ... holding a speck: removed, then filled again (no change)
    assert not remove_small_components(body, SPACING, min_volume_ml=0.5)[20, 44, 44]
    tissue = (img > 400) & (img < 700)
    other = img > 800
    lm = LabelMap((Segment(_info(1, "body"), body), Segment(_info(2, "tissue_class_1"), tissue),
                   Segment(_info(3, "tissue_class_2"), other)), ("lung_left",))
    want, want_changed = correct_labels(lm, SPACING, min_volume_ml=0.5)
    assert want_changed["tissue_class_1"] > 0 and want_changed["tissue_class_2"] > 0
    assert want.by_label("body").mask[20, 44, 44]
    assert want_changed["body"] == int(np.count_nonzero(want.by_label("body").mask != body))
    copies = [Segment(s.info, s.mask.copy()) for s in lm.segments]
    arrays = [s.crop for s in copies]
    got, changed = correct_segments(list(copies), lm.not_found, SPACING, min_volume_ml=0.5, owned=(0, 1, 2))
    assert changed == want_changed
    assert got.not_found == want.not_found and [s.info for s in got.segments] == [s.info for s in want.segments]
    for a, b in zip(got.segments, want.segments):
        assert np.array_equal(a.mask, b.mask)
    assert got.segments[1].crop is arrays[1] and got.segments[2].crop is arrays[2]  # in place, on the crops
    assert np.array_equal(arrays[0], body[copies[0].box])  # the hole-filled body: a copy, its input untouched
    for label in ("tissue_class_1", "tissue_class_2"):  # the count in place is the voxels removed
        seg = lm.by_label(label)
        assert changed[label] == int(np.count_nonzero(remove_small_components(seg.mask, SPACING,
                                                                              min_volume_ml=0.5) != seg.mask))


def _reference_correct_step(ctx, params):
    """The correct step of main 29b11eb, in short: smooth (in place), replace the class masks, correct_labels."""
    p = dict(params)
    sigma = p.pop("posterior_sigma_mm")
    iterations = int(p.pop("posterior_iterations", 3))
    sp = ctx.volume.spacing_mm
    sm = smooth_posteriors(ctx.posteriors, sp, sigma_mm=float(sigma), iterations=iterations, out=ctx.posteriors)
    ctx.corrections["posterior_smoothing"] = int(sm.voxels_changed)
    ctx.posteriors = sm.posteriors
    segs = [Segment(s.info, sm.labels == ctx.classes.index(s.info.label)) if s.info.label in ctx.classes else s
            for s in ctx.labels.segments]
    labels, changed = correct_labels(LabelMap(tuple(segs), ctx.labels.not_found), sp, **p)
    kept = tuple(s for s in labels.segments if s.mask.any())
    dropped = tuple(s.info.label for s in labels.segments if not s.mask.any())
    ctx.labels = LabelMap(kept, labels.not_found + dropped)
    for k, n in changed.items():
        ctx.corrections[k] = ctx.corrections.get(k, 0) + int(n)


def _segmented(profile):
    registry()
    prof = load_config(None).profiles[profile]
    img = make_mr_phantom((40, 96, 96), SPACING, rng=np.random.default_rng(0))
    vol = Volume(img, SPACING, modality="MR", unit="")
    ctx = Context(volume=vol, original=vol, rng=np.random.default_rng(0))
    run_steps(ctx, ["denoise", "segment"], prof.params)
    return ctx, prof.params


@pytest.mark.parametrize("profile", ["mr", "generic"])
def test_correct_step_equals_the_reference_and_holds_less(profile):
    """The shipped MR and generic profiles' correct step on the bench's MR phantom: every mask, the smoothed
    posteriors and every count as the reference step's; its traced peak above its start (tracemalloc,
    allocations) lower by about the class masks (3 bool crops, less a few small objects) than the reference's, which held them
    while smoothing."""
    _segmented(profile)  # imports and caches outside the measurement
    tracemalloc.start()  # before the masks are made: what the step lets go of counts
    try:
        ctx, params = _segmented(profile)
        ref = Context(volume=ctx.volume, original=ctx.original, posteriors=ctx.posteriors.copy(),
                      classes=ctx.classes, labels=LabelMap(tuple(Segment(s.info, s.mask.copy())
                                                                 for s in ctx.labels.segments), ctx.labels.not_found))
        # the class masks the reference holds while smoothing (cropped to their boxes, as segments store them)
        class_bytes = sum(s.crop.nbytes for s in ref.labels.segments if s.info.label in ref.classes)
        peaks = []
        for c, run in ((ref, lambda c: _reference_correct_step(c, params["correct"])),
                       (ctx, lambda c: run_steps(c, ["correct"], params))):
            tracemalloc.reset_peak()
            start = tracemalloc.get_traced_memory()[0]
            run(c)
            peaks.append(tracemalloc.get_traced_memory()[1] - start)
    finally:
        tracemalloc.stop()
    assert ctx.corrections == ref.corrections and ctx.corrections["posterior_smoothing"] > 0
    assert sum(v for k, v in ctx.corrections.items() if k != "posterior_smoothing") > 0
    assert np.array_equal(ctx.posteriors, ref.posteriors)
    assert ctx.labels.not_found == ref.labels.not_found
    assert [s.info for s in ctx.labels.segments] == [s.info for s in ref.labels.segments]
    for a, b in zip(ctx.labels.segments, ref.labels.segments):
        assert np.array_equal(a.mask, b.mask), a.info.label
    voxels = ctx.volume.array.size
    print(f"traced peak above the start, bytes per voxel: reference {peaks[0] / voxels:.2f}, "
          f"step {peaks[1] / voxels:.2f}")
    assert peaks[1] <= peaks[0] - 0.9 * class_bytes, (peaks[0] / voxels, peaks[1] / voxels, class_bytes / voxels)



def test_correct_step_failing_while_smoothing_says_which_classes_it_dropped(monkeypatch):
    """The class masks are let go before smoothing: if the smoothing then fails (memory), the step keeps the other
    segments, lists the classes as not found and says so in a note; bad options are refused before any mask is
    let go."""
    from dicomnode.analysis import correct as correct_module
    from dicomnode.errors import AnalysisError

    ctx, params = _segmented("mr")
    before = [s.info.label for s in ctx.labels.segments]
    with pytest.raises(AnalysisError, match="sigma_mm"):
        run_steps(ctx, ["correct"], {"correct": dict(params["correct"], posterior_sigma_mm=-1.0)})
    assert [s.info.label for s in ctx.labels.segments] == before

    def out_of_memory(*args, **kwargs):
        raise MemoryError("no room for the smoothing's slabs")

    monkeypatch.setattr(correct_module, "smooth_posteriors", out_of_memory)
    records = run_steps(ctx, ["correct"], {"correct": dict(params["correct"], optional=True)})
    assert not records[0].ok and "MemoryError" in records[0].error
    classes = set(ctx.classes)
    assert classes and [s.info.label for s in ctx.labels.segments] == [b for b in before if b not in classes]
    assert classes <= set(ctx.labels.not_found)
    assert any("posterior smoothing failed" in n for n in ctx.notes)
