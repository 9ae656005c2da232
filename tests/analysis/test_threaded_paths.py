"""The threaded and cropped paths of the correct and features steps give the values of the plain computation, bit
for bit, on real MR series (../shared/data: the abdomen T2 and the thigh T2) and on the bench's MR phantom.

Each case runs the ``mr`` profile's denoise and segment steps, then compares:

* ``smooth_posteriors`` in slabs with 1 and 2 threads (new array and in place) with the mean-field iteration done
  over the whole grid at once (scipy's Gaussian per class, no box, no slabs);
* ``correct_segments`` with 1 and 2 threads with the public per-mask functions on whole-grid masks;
* ``segment_generic``'s posterior slabs with a thread budget of 1 and 2;
* ``region_features`` with 1 and 2 threads with the computation as it was before the bounding-box and threaded
  paths (values gathered from the whole grid, boxes from the whole mask, block averaging by float32 means).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests use --import-mode=importlib: find _load.py

from _load import load_dir  # noqa: E402
from dicomnode.analysis import correct as correct_module  # noqa: E402
from dicomnode.analysis import region_features as rf  # noqa: E402
from dicomnode.analysis.denoise import is_volumetric  # noqa: E402
from dicomnode.analysis.features.processing import roi_bounding_box  # noqa: E402
from dicomnode.analysis.pipeline import Context, run_steps  # noqa: E402
from dicomnode.analysis.volume import Segment, Volume  # noqa: E402

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
SERIES = {"abdomen_t2": DATA / "abdomen-mr" / "T2_ax", "thigh_t2": DATA / "wholebody-pet-mr" / "MR_T2"}


def _volume(case: str) -> Volume:
    if case == "phantom":
        from dicomnode.bench.analysis import make_mr_phantom

        spacing = (3.0, 1.0, 1.0)
        image = make_mr_phantom((64, 192, 192), spacing, rng=np.random.default_rng(3))
        return Volume(image, spacing, modality="MR", unit="")
    if not SERIES[case].is_dir():
        pytest.skip(f"shared test data not found at {SERIES[case]}")
    return load_dir(SERIES[case])[0]


@pytest.fixture(scope="module", params=["abdomen_t2", "thigh_t2", "phantom"])
def segmented(request):
    from dicomnode.config import load_config
    from dicomnode.steps import registry

    registry()
    params = load_config(None).profiles["mr"].params
    vol = _volume(request.param)
    ctx = Context(volume=vol, original=vol)
    run_steps(ctx, ["denoise", "segment"], params)
    assert ctx.posteriors is not None and ctx.labels.segments
    return ctx, params


def _smooth_whole_grid(posteriors: np.ndarray, spacing_mm, *, sigma_mm: float, iterations: int) -> tuple:
    """The mean-field smoothing of :func:`smooth_posteriors` written plainly over the whole grid."""
    p0 = posteriors.astype(np.float32)
    p0 /= np.float32(correct_module.POSTERIOR_SCALE)
    valid = (posteriors > 0).any(axis=0)
    sigmas = [sigma_mm / s for s in spacing_mm]
    if not is_volumetric(tuple(spacing_mm)):
        sigmas[0] = 0.0
    q = p0.copy()
    for _ in range(iterations):
        for k in range(q.shape[0]):
            q[k] = ndi.gaussian_filter(q[k], sigmas, mode="reflect")
        q *= p0
        total = q[0].copy()
        for k in range(1, q.shape[0]):
            total += q[k]
        np.divide(q, total, out=q, where=total > 0)
        lost = valid & ~(total > 0)
        q[:, lost] = p0[:, lost]
    before, after = np.argmax(p0, axis=0), np.argmax(q, axis=0)
    changed = int(np.count_nonzero((before != after) & valid))
    labels = np.where(valid, after, -1)
    out = (q * np.float32(correct_module.POSTERIOR_SCALE) + np.float32(0.5)).astype(np.uint8)
    return labels, out, changed


def test_smooth_posteriors_threads_match_whole_grid(segmented):
    ctx, params = segmented
    sigma = float(params["correct"]["posterior_sigma_mm"])
    iterations = int(params["correct"]["posterior_iterations"])
    sp = ctx.volume.spacing_mm
    labels, out, changed = _smooth_whole_grid(ctx.posteriors, sp, sigma_mm=sigma, iterations=iterations)
    for workers in (1, 2):
        sm = correct_module.smooth_posteriors(ctx.posteriors, sp, sigma_mm=sigma, iterations=iterations,
                                              slab_voxels=200_000, workers=workers)
        assert np.array_equal(sm.labels, labels)
        assert np.array_equal(sm.posteriors, out)
        assert sm.voxels_changed == changed
    in_place = ctx.posteriors.copy()
    sm = correct_module.smooth_posteriors(in_place, sp, sigma_mm=sigma, iterations=iterations,
                                          slab_voxels=200_000, out=in_place, workers=2)
    assert sm.posteriors is in_place
    assert np.array_equal(in_place, out) and np.array_equal(sm.labels, labels)


def test_smooth_posteriors_threads_in_3d_with_halo(segmented):
    """On an isotropic grid the slabs overlap (a halo of iterations x radius slices): threads and in place still
    give the whole grid's values."""
    ctx, _ = segmented
    post = np.ascontiguousarray(ctx.posteriors[:, : min(24, ctx.posteriors.shape[1])])
    sp = (1.0, 1.0, 1.0)
    labels, out, changed = _smooth_whole_grid(post, sp, sigma_mm=1.0, iterations=2)
    in_place = post.copy()
    sm = correct_module.smooth_posteriors(in_place, sp, sigma_mm=1.0, iterations=2, slab_voxels=50_000,
                                          out=in_place, workers=3)
    assert np.array_equal(in_place, out) and np.array_equal(sm.labels, labels) and sm.voxels_changed == changed


def test_correct_segments_threads_match_per_mask_functions(segmented):
    ctx, params = segmented
    p = {k: v for k, v in params["correct"].items() if not k.startswith("posterior_")}
    sp = ctx.volume.spacing_mm
    segs = list(ctx.labels.segments)
    results = []
    for workers in (1, 2):
        copies = [Segment(s.info, s.crop.copy(), box=s.box, shape=s.shape) for s in segs]
        owned = tuple(range(1, len(copies)))  # the class masks, as the correct step hands them over
        results.append(correct_module.correct_segments(copies, ctx.labels.not_found, sp, owned=owned,
                                                       workers=workers, **p))
    (a, ca), (b, cb) = results
    assert list(ca.items()) == list(cb.items())
    assert a.not_found == b.not_found
    assert [s.info for s in a.segments] == [s.info for s in b.segments]
    for x, y in zip(a.segments, b.segments):
        assert x.box == y.box and np.array_equal(x.crop, y.crop)
    # the plain per-mask computation on whole-grid masks
    by_label = {s.info.label: s for s in a.segments}
    for s in segs:
        whole = correct_module.remove_small_components(s.mask, sp, min_volume_ml=float(p["min_volume_ml"]))
        if s.info.label in correct_module.DEFAULT_HOLE_FILLED_LABELS:
            whole = correct_module.fill_holes(whole, slice_wise=True)
        assert ca[s.info.label] == int(np.count_nonzero(whole != s.mask))
        if whole.any():
            assert np.array_equal(by_label[s.info.label].mask, whole)
        else:
            assert s.info.label in a.not_found


def _block_downsample_float_mean(mask, spacing_mm, max_voxels):
    """The block averaging as it was: float32 block means thresholded at 0.5."""
    box = roi_bounding_box(mask, margin_voxels=1)
    m = mask[box]
    n = int(np.count_nonzero(m))
    target = min(spacing_mm) * 1.25
    while True:
        factors = tuple(max(1, int(round(target / s))) for s in spacing_mm)
        if n / float(np.prod(factors)) <= max_voxels:
            break
        target *= 1.25
    mp = np.pad(m, [(0, (-m.shape[i]) % factors[i]) for i in range(3)])
    z, y, x = (mp.shape[i] // factors[i] for i in range(3))
    frac = mp.reshape(z, factors[0], y, factors[1], x, factors[2]).mean(axis=(1, 3, 5), dtype=np.float32)
    return frac >= 0.5, tuple(spacing_mm[i] * factors[i] for i in range(3))


def _region_features_before(image, mask, spacing_mm, *, unit, settings):
    """``region_features`` as it was for the families the MR profile measures: whole-grid values and boxes."""
    values = image[mask]
    meas = rf.measurements_of_values(values, spacing_mm, unit=unit)
    n = int(values.size)
    feats = list(rf.statistics_features(values))
    feats += rf.ivh_features(values, n_bins=1000)
    levels = rf.discretise_fixed_bin_number(values, n_bins=settings.n_bins)
    feats += rf.histogram_features(levels, int(levels.max()))
    notes = []
    if n > settings.morphology_max_voxels:
        small, sp = _block_downsample_float_mean(mask, spacing_mm, settings.morphology_max_voxels)
        feats += rf.morphology_features(small, sp)
        notes.append("block-averaged")
    else:
        box = roi_bounding_box(mask, margin_voxels=1)
        image_arg = image[box] if n <= settings.moran_max_voxels else None
        feats += rf.morphology_features(mask[box], spacing_mm, image=image_arg)
    return meas, feats, notes


def test_region_features_threads_match_the_plain_computation(segmented):
    ctx, params = segmented
    settings = rf.RegionFeatureSettings.from_params(params["features"])
    img = ctx.original
    for seg in ctx.labels.segments:
        mask = seg.mask
        got = [rf.region_features(img.array, mask, img.spacing_mm, unit=img.unit, settings=settings, workers=w)
               for w in (1, 2)]
        assert got[0][1] == got[1][1]
        assert [(m.name, m.value) for m in got[0][0]] == [(m.name, m.value) for m in got[1][0]]
        meas, feats, notes = _region_features_before(img.array, mask, img.spacing_mm, unit=img.unit,
                                                     settings=settings)
        want = [m.value for m in meas] + [float(f.value) for f in feats]
        have = [m.value for m in got[0][0]]
        assert len(have) == len(want)
        assert all(a == b or (a != a and b != b) for a, b in zip(have, want)), seg.info.label
        assert ("block-averaged" in " ".join(got[0][1])) == bool(notes)


def test_block_downsample_counts_match_float_means(segmented):
    ctx, _ = segmented
    for seg in ctx.labels.segments:
        mask = seg.mask
        for max_voxels in (1_000, 20_000, 300_000):
            if np.count_nonzero(mask) <= max_voxels:
                continue
            got, sp = rf._block_downsample(mask, ctx.volume.spacing_mm, max_voxels)
            want, sp_want = _block_downsample_float_mean(mask, ctx.volume.spacing_mm, max_voxels)
            assert sp == sp_want and np.array_equal(got, want)


def test_segment_generic_same_with_one_and_two_threads(segmented, monkeypatch):
    from dicomnode.analysis.segment import segment_generic

    ctx, params = segmented
    vol = ctx.volume  # denoised, as the segment step saw it
    results = []
    for threads in ("1", "2"):
        monkeypatch.setenv("DICOMNODE_THREADS", threads)
        results.append(segment_generic(vol.array, vol.spacing_mm, rng=np.random.default_rng(7),
                                       n_classes=int(params["segment"]["n_classes"])))
    a, b = results
    assert np.array_equal(a.posteriors, b.posteriors) and a.notes == b.notes
    assert a.labels.not_found == b.labels.not_found and len(a.labels.segments) == len(b.labels.segments)
    for x, y in zip(a.labels.segments, b.labels.segments):
        assert x.info == y.info and x.box == y.box and np.array_equal(x.crop, y.crop)


def _float_moments_one_chunk_after_another(x):
    """``intensity._float_moments`` as it was: the chunks' sums made and added one chunk after the other."""
    from dicomnode.analysis.features import intensity as it

    n = x.size
    lo, hi, (p10, p25, median, p75, p90) = it._order_statistics(x, [10, 25, 50, 75, 90])
    dt = x.dtype
    r_lo, r_hi = it._at_least(dt, p10), it._at_most(dt, p90)
    s1 = s2 = s3 = s4 = smed = rsum = 0.0
    rcount = 0
    d = np.empty(min(n, it._CHUNK), dtype=np.float64)
    w = np.empty_like(d)
    for i in range(0, n, it._CHUNK):
        c = x[i:i + it._CHUNK]
        dv, wv = d[:c.size], w[:c.size]
        np.subtract(c, median, out=dv, dtype=np.float64)
        s1 += float(dv.sum())
        smed += float(np.abs(dv, out=wv).sum())
        np.multiply(dv, dv, out=wv)
        s2 += float(wv.sum())
        s3 += float(np.dot(wv, dv))
        s4 += float(np.dot(wv, wv))
        r = c[(c >= r_lo) & (c <= r_hi)]
        rsum += float(np.add.reduce(r, dtype=np.float64))
        rcount += r.size
    a = s1 / n
    mean = median + a
    m2, m3, m4 = s2 / n, s3 / n, s4 / n
    var = max(m2 - a * a, 0.0)
    mu3 = m3 - 3.0 * a * m2 + 2.0 * a**3
    mu4 = m4 - 4.0 * a * m3 + 6.0 * a * a * m2 - 3.0 * a**4
    energy = s2 + 2.0 * median * s1 + n * median * median
    rmean = rsum / rcount
    below_mean = below_rmean = 0.0
    t_mean, t_rmean = it._at_least(dt, mean), it._at_least(dt, rmean)
    for i in range(0, n, it._CHUNK):
        c = x[i:i + it._CHUNK]
        v = c[c < t_mean]
        below_mean += float(v.size * mean - np.add.reduce(v, dtype=np.float64))
        v = c[(c >= r_lo) & (c < t_rmean)]
        below_rmean += float(v.size * rmean - np.add.reduce(v, dtype=np.float64))
    sabs = 2.0 * below_mean + (s1 - n * a)
    rabs = 2.0 * below_rmean + (rsum - rcount * rmean)
    skew, kurt = (mu3 / var**1.5, mu4 / var**2 - 3.0) if var > 0 else (0.0, 0.0)
    return (mean, var, skew, kurt, p10, p25, median, p75, p90, lo, hi, rabs / rcount, sabs / n, smed / n, energy)


def test_float_moments_chunks_in_threads_match_one_after_another(segmented):
    from dicomnode.analysis.features import intensity as it

    ctx, _ = segmented
    image = ctx.original.array
    sizes = []
    for seg in ctx.labels.segments:
        x = image[seg.mask]
        if x.size < 1000:
            continue
        sizes.append(x.size)
        want = _float_moments_one_chunk_after_another(x)
        for workers in (1, 2, 3):
            assert it._float_moments(x, workers=workers) == want, (seg.info.label, workers)
    # several chunks: the threads had work to share (the phantom's body spans two)
    assert max(sizes) > it._CHUNK or ctx.original.shape != (64, 192, 192)


@pytest.mark.parametrize("case", ["thigh_t2", "phantom"])
def test_mr_findings_and_features_do_not_depend_on_the_thread_budget(case, monkeypatch):
    """The whole mr profile with one thread and with two (the candidates grown in threads where their windows are
    small enough, the segments' features side by side): the same findings and measurements, every value equal."""
    from dicomnode.config import load_config
    from dicomnode.steps import registry

    registry()
    prof = load_config(None).profiles["mr"]
    vol = _volume(case)
    runs = []
    for budget in ("1", "2"):
        monkeypatch.setenv("DICOMNODE_THREADS", budget)
        ctx = Context(volume=vol, original=vol)
        run_steps(ctx, list(prof.steps), {k: dict(v) for k, v in prof.params.items()})
        runs.append(([sorted(f.items(), key=lambda kv: kv[0]) for f in ctx.findings],
                     {k: [(m.name, m.value) for m in v] for k, v in ctx.measurements.items()},
                     [n for n in ctx.notes if "seconds" not in n]))
    assert runs[0][1] and runs[0] == runs[1]
