"""The features and scene steps' faster paths give the values of the formulation they replaced, bit for bit.

Issue 13 (PET and MR profiles at >= 0.6x the CT's voxels per second) made the ``features`` step measure each segment
on its bounding box plus the margin the features read (:func:`~dicomnode.analysis.region_features.segment_features`:
no whole-grid mask per segment), reuse the intensity histogram's counts for its shared statistics, form the minimum
bounding box's 3-vector cross products without ``np.cross``; and the ``scene`` step measure its sampled slices in
the thread budget. The oracles below are the code as it was before, copied verbatim (the minimum bounding box with
``np.cross`` and ``np.roll``, the histogram features counting the levels twice, the scene profile's slice loop), and
the features step as it was: ``region_features`` of each segment's whole-grid mask.

Cases: the shipped ``pet``, ``mr`` and ``ct`` profiles run up to their features step on real series
(../shared/data: the whole-body FDG PET, the thigh T2 MR, the STS_001 thigh CT), every measurement and note of the
step compared with the oracle's with a thread budget of 1 and 2; every feature family (local intensity and texture
included) on small segments of the same series against the grid's border, with a box wider than the segment and
empty; the scene profiles of the PET and the MR with 1 and 2 threads against the old slice loop.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import ConvexHull

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests use --import-mode=importlib: find _load.py

from _load import load_dir  # noqa: E402
from dicomnode.analysis import region_features as rf  # noqa: E402
from dicomnode.analysis import scene  # noqa: E402
from dicomnode.analysis.blocks import block_mean  # noqa: E402
from dicomnode.analysis.features import histogram as histogram_module  # noqa: E402
from dicomnode.analysis.features import morphology as morphology_module  # noqa: E402
from dicomnode.analysis.features.base import FeatureValue  # noqa: E402
from dicomnode.analysis.features.intensity import _moments_and_quantiles  # noqa: E402
from dicomnode.analysis.pipeline import Context, run_steps  # noqa: E402
from dicomnode.analysis.scene import (_CT_NAMES, _NAMES, _OTHER_NAMES, SceneProfile, _axial_signs,  # noqa: E402
                                      _axial_z, _measure_slice, _thresholds, scene_profile, to_axial)
from dicomnode.analysis.codes import ENTIRE_BODY  # noqa: E402
from dicomnode.analysis.volume import CATEGORY_ANATOMICAL_STRUCTURE, Segment, SegmentInfo  # noqa: E402

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
SERIES = {
    "pet": DATA / "wholebody-pet-mr" / "PET",
    "mr": DATA / "wholebody-pet-mr" / "MR_T2",
    "ct": DATA / "sts" / "STS_001" / "CT",
}
_IH = "intensity histogram"

# ---------------------------------------------------------------------------------------------- the old code (oracles)
def _minimum_bounding_box_old(points: np.ndarray, *, max_directions: int = 64) -> tuple[float, float]:
    """Approximate oriented minimum bounding box of a 3-D point set: (volume mm^3, area mm^2).

    Candidate boxes have one face flush with a face of the points' convex hull (the `max_directions` largest
    hull faces, plus the coordinate axes); within that plane the minimum-area rectangle is found exactly by
    rotating callipers over the edges of the projected 2-D hull. The smallest-volume candidate wins. This is the
    usual approximation of O'Rourke's exact algorithm (IBSI: "commonly approximated").

    Parameters
    ----------
    points : (P, 3) ndarray
        Points in mm (e.g. mesh vertices), at least 4 not coplanar.
    max_directions : int, optional
        Number of hull-face normals tried. Default 64.
    """
    p = np.asarray(points, dtype=np.float64)
    p = p - p.mean(axis=0)
    hull = ConvexHull(p)
    hv = p[hull.vertices]
    normals = hull.equations[:, :3]
    tri = p[hull.simplices]
    face_area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    # Merge (nearly) parallel normals, keep the largest total face area first.
    key = np.round(normals * 1e4).astype(np.int64)
    _, inverse = np.unique(key, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    area_per = np.bincount(inverse, weights=face_area)
    first = np.full(area_per.size, -1)
    first[inverse[::-1]] = np.arange(len(inverse))[::-1]
    order = np.argsort(-area_per)[:max_directions]
    candidates = np.vstack([np.eye(3), normals[first[order]]])
    best = (math.inf, math.inf)
    for n in candidates:
        n = n / np.linalg.norm(n)
        u = np.cross(n, [1.0, 0.0, 0.0] if abs(n[0]) < 0.9 else [0.0, 1.0, 0.0])
        u /= np.linalg.norm(u)
        w = np.cross(n, u)
        height = float(np.ptp(hv @ n))
        uv = np.column_stack([hv @ u, hv @ w])
        width, depth = _min_area_rectangle_old(uv)
        volume = width * depth * height
        if volume < best[0]:
            best = (volume, 2.0 * (width * depth + width * height + depth * height))
    return best


def _min_area_rectangle_old(points2d: np.ndarray) -> tuple[float, float]:
    """Side lengths of the minimum-area enclosing rectangle of 2-D points (rotating callipers over hull edges)."""
    try:
        hull = ConvexHull(points2d)
    except Exception:  # degenerate (collinear) projection: a flat box
        return float(np.ptp(points2d[:, 0])), float(np.ptp(points2d[:, 1]))
    h = points2d[hull.vertices]
    edges = np.roll(h, -1, axis=0) - h
    edges = edges / np.linalg.norm(edges, axis=1, keepdims=True)
    normals = np.column_stack([-edges[:, 1], edges[:, 0]])
    along = h @ edges.T  # (hull points, edge directions)
    across = h @ normals.T
    widths, depths = np.ptp(along, axis=0), np.ptp(across, axis=0)
    i = int(np.argmin(widths * depths))
    return float(widths[i]), float(depths[i])


def _histogram_features_old(levels: np.ndarray, n_levels: int) -> list[FeatureValue]:
    """The 23 IBSI intensity histogram features of discretised grey levels.

    Parameters
    ----------
    levels : (N,) ndarray of int
        Grey levels (1..n_levels) of the N voxels of the ROI intensity mask, from :mod:`.discretise`.
    n_levels : int
        Number of grey levels N_g of the histogram: bins 1..n_levels, empty ones included (the histogram gradient
        sees them). For fixed bin number use the bin number; for fixed bin size or "none" use ``levels.max()``.

    Returns
    -------
    list of FeatureValue
        Family "intensity histogram", in grey-level units: mean, variance, skewness, (excess) kurtosis, median,
        minimum, 10th/90th percentile, maximum, mode (the most frequent level; ties go to the level closest to the
        mean), interquartile range, range, mean/robust mean/median absolute deviation, coefficient of variation,
        quartile coefficient of dispersion, entropy (log2), uniformity, maximum/minimum histogram gradient (voxel
        counts per level) and the level where each occurs.

    Raises
    ------
    ValueError
        If `levels` is empty, not integer, or outside 1..n_levels.
    """
    x = np.asarray(levels)
    if x.size == 0:
        raise ValueError("no ROI voxels: the intensity mask is empty")
    if int(n_levels) != n_levels or n_levels < 1:
        raise ValueError(f"n_levels must be an integer >= 1, got {n_levels}")
    if not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"levels must be integer grey levels, got dtype {x.dtype}")
    x = x.ravel()
    if x.min() < 1 or x.max() > n_levels:
        raise ValueError(f"levels must lie in 1..{n_levels}, got {x.min()}..{x.max()}")
    counts = np.zeros(n_levels + 1, dtype=np.int64)
    for i in range(0, x.size, 1 << 20):  # chunked: bincount would copy all levels to intp at once
        counts += np.bincount(x[i:i + (1 << 20)], minlength=n_levels + 1)
    counts = counts[1:].astype(np.float64)
    p = counts / x.size
    shared = dict(_moments_and_quantiles(x))
    nonzero = p[p > 0]
    if n_levels > 1:
        grad = np.gradient(counts)  # central differences inside, one-sided (n2 - n1, nN - nN-1) at the ends
    else:
        grad = np.zeros(1)
    order = [
        "mean", "variance", "skewness", "(excess) kurtosis", "median", "minimum", "10th percentile",
        "90th percentile", "maximum",
    ]
    out = [FeatureValue(_IH, name, "", shared[name]) for name in order]
    # Mode: the most frequent level; among equally frequent ones the closest to the mean (as MIRP), then the lowest.
    tied = np.flatnonzero(counts == counts.max()) + 1
    mode = tied[np.argmin(np.abs(tied - shared["mean"]))]
    out.append(FeatureValue(_IH, "mode", "", float(mode)))
    out += [
        FeatureValue(_IH, name, "", shared[name])
        for name in (
            "interquartile range", "range", "mean absolute deviation", "robust mean absolute deviation",
            "median absolute deviation", "coefficient of variation", "quartile coefficient of dispersion",
        )
    ]
    out += [
        FeatureValue(_IH, "entropy", "", float(-np.sum(nonzero * np.log2(nonzero)))),
        FeatureValue(_IH, "uniformity", "", float(np.sum(p * p))),
        FeatureValue(_IH, "maximum histogram gradient", "", float(grad.max())),
        FeatureValue(_IH, "maximum histogram gradient intensity", "", float(np.argmax(grad) + 1)),
        FeatureValue(_IH, "minimum histogram gradient", "", float(grad.min())),
        FeatureValue(_IH, "minimum histogram gradient intensity", "", float(np.argmin(grad) + 1)),
    ]
    return out


def _scene_profile_old(image: np.ndarray, spacing_mm: tuple[float, float, float], *,
                  direction: np.ndarray | None = None, origin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
                  modality: str = "", unit: str = "", step_mm: float = 10.0, max_slices: int = 96,
                  min_slices: int = 24, pixel_mm: float = 4.0, min_component_cm2: float = 10.0,
                  ring_mm: float = 12.0, core_mm: float = 25.0, split_mm: float = 12.0) -> SceneProfile:
    """Scene descriptors of axial slices sampled along the patient's long axis.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Voxel values: HU for CT (``modality="CT"`` and ``unit="HU"``), any positive unit otherwise (MR, PET).
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x), in mm.
    direction : (3, 3) ndarray, optional
        Volume direction cosines (columns: patient vectors of the x, y, z index axes). Default identity.
    origin_mm : tuple of 3 float, optional
        Patient position of voxel [0, 0, 0], in mm; gives the slices' patient z. Default 0.
    modality, unit : str, optional
        CT in HU uses fixed HU thresholds; anything else thresholds relative to the body's median.
    step_mm : float, optional
        Slices are sampled about this far apart along z, in mm (every slice when they are further apart); at
        least ``min_slices`` (when the volume has them) and at most ``max_slices``. Default 10.
    pixel_mm : float, optional
        In-plane pixel size after block averaging, in mm. Default 4.
    min_component_cm2, ring_mm, core_mm, split_mm : float, optional
        As for :func:`scene_descriptors`.

    Returns
    -------
    SceneProfile
    """
    if image.ndim != 3:
        raise ValueError(f"image must be 3-D (z, y, x), got shape {image.shape}")
    if len(spacing_mm) != 3 or any(not (s > 0) for s in spacing_mm):
        raise ValueError(f"spacing_mm must be 3 positive values in mm, got {spacing_mm}")
    if (pixel_mm <= 0 or step_mm <= 0 or max_slices < 1 or min_slices < 1 or min_component_cm2 < 0
            or ring_mm <= 0 or core_mm <= 0):
        raise ValueError(f"pixel_mm ({pixel_mm}), step_mm ({step_mm}), ring_mm ({ring_mm}), core_mm ({core_mm}) "
                         f"must be > 0 mm, max_slices ({max_slices}) and min_slices ({min_slices}) >= 1, "
                         f"min_component_cm2 ({min_component_cm2}) >= 0")
    notes: list[str] = []
    d = np.eye(3) if direction is None else np.asarray(direction, dtype=float)
    ax, sp, oblique = to_axial(image, spacing_mm, d)
    if oblique:
        notes.append("scene: oblique acquisition plane, descriptors measured on the nearest axial reformat")
    _, z_all = _axial_z(image.shape, spacing_mm, origin_mm, d)
    is_ct = modality.upper() == "CT" and unit in ("HU", "")
    n = ax.shape[0]
    want = int(np.clip(round(n * sp[0] / step_mm) + 1, min(n, min_slices), max_slices))
    ks = np.unique(np.linspace(0, n - 1, min(n, want)).round().astype(int))
    fy = min(max(1, int(round(pixel_mm / sp[1]))), ax.shape[1])  # a slice narrower than one block: one block
    fx = min(max(1, int(round(pixel_mm / sp[2]))), ax.shape[2])
    slices = [block_mean(np.asarray(ax[k], dtype=np.float32), (fy, fx)) for k in ks]
    py, px = sp[1] * fy, sp[2] * fx
    thr = _thresholds(np.stack(slices), is_ct)
    names = _NAMES + (_CT_NAMES if is_ct else _OTHER_NAMES)
    per = {k: np.full(len(slices), np.nan) for k in names}
    for i, sl in enumerate(slices):
        m = _measure_slice(sl, np.asarray(ax[ks[i]]), thr, is_ct, py, px, fy, fx,
                           min_px=min_component_cm2 / (py * px / 100.0), split_px=split_mm / max(py, px),
                           ring_mm=ring_mm, core_mm=core_mm, signs=_axial_signs(d))
        if m is not None:
            for k, val in m.items():
                per[k][i] = val
    return SceneProfile(np.asarray(z_all[ks], dtype=float), per, is_ct, float(sp[0]), int(image.shape[0]),
                        modality.upper(), tuple(notes))


# ---------------------------------------------------------------------------------------------------------- helpers
def _bits(meas) -> list[tuple[str, str, str]]:
    """Measurements as (name, value's bits, unit): equal exactly when every value is the same float (NaN too)."""
    return [(m.name, float(m.value).hex(), m.unit) for m in meas]


def _old_features(image: np.ndarray, mask: np.ndarray, spacing, *, unit, settings, workers, monkeypatch):
    """``region_features`` of a whole-grid mask with the old histogram features and minimum bounding box."""
    with monkeypatch.context() as m:
        m.setattr(rf, "histogram_features", _histogram_features_old)
        m.setattr(morphology_module, "minimum_bounding_box", _minimum_bounding_box_old)
        return rf.region_features(image, mask, spacing, unit=unit, settings=settings, workers=workers)


def _volume(case: str):
    if not SERIES[case].is_dir():
        pytest.skip(f"shared test data not found at {SERIES[case]}")
    return load_dir(SERIES[case])[0]


@pytest.fixture(scope="module", params=sorted(SERIES))
def before_features(request):
    """The profile's context just before its features step, on a real series."""
    from dicomnode.config import load_config
    from dicomnode.steps import registry

    registry()
    case = request.param
    prof = load_config(None).profiles[case]
    vol = _volume(case)
    ctx = Context(volume=vol, original=vol)
    steps = list(prof.steps)
    run_steps(ctx, [s for s in steps[:steps.index("features")] if s != "scene"], prof.params)
    assert len(ctx.labels.segments) >= 2
    return case, ctx, prof.params


@pytest.mark.parametrize("threads", ["1", "2"])
def test_features_step_equals_the_whole_grid_formulation(before_features, threads, monkeypatch):
    """Every measurement and note of the profile's features step equals the old step's (``region_features`` of
    each whole-grid mask, the old histogram and bounding box), bit for bit, with 1 and 2 threads."""
    from dicomnode.analysis.pipeline import STEPS

    case, ctx, params = before_features
    monkeypatch.setenv("DICOMNODE_THREADS", threads)
    settings = rf.RegionFeatureSettings.from_params(params.get("features", {}))
    img = ctx.original
    ctx.measurements.clear()
    ctx.notes.clear()
    STEPS["features"](ctx, dict(params.get("features", {})))
    sizes = []
    for seg in ctx.labels.segments:
        old, old_notes = _old_features(img.array, seg.mask, img.spacing_mm, unit=img.unit, settings=settings,
                                       workers=int(threads), monkeypatch=monkeypatch)
        assert _bits(ctx.measurements[seg.info.number]) == _bits(old), f"{case}: {seg.info.label}"
        sizes.append(seg.count())
    assert ctx.notes == [f"{s.info.label}: {n}" for s in ctx.labels.segments
                         for n in _old_features(img.array, s.mask, img.spacing_mm, unit=img.unit, settings=settings,
                                                workers=1, monkeypatch=monkeypatch)[1]]
    # the comparison covers segments measured on a block-averaged grid (the MR) and with every morphology feature
    # (the PET's findings)
    assert max(sizes) > settings.morphology_max_voxels or case != "mr"
    assert min(sizes) <= settings.moran_max_voxels or case != "pet"


def _small_masks(image: np.ndarray) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    """Real-intensity segments of a few hundred to a few thousand voxels: the brighter voxels of a block near the
    centre; the same block's voxels copied into the grid's first corner (cut by the border on three axes); one
    voxel in the last corner; none. Returns the image with that copy and the masks."""
    shape = image.shape
    z, y, x = (n // 2 for n in shape)
    part = (slice(max(z - 6, 0), z + 6), slice(max(y - 12, 0), y + 12), slice(max(x - 12, 0), x + 12))
    sub = image[part]
    image = image.copy()
    bright = np.zeros(shape, dtype=bool)
    bright[part] = sub > np.percentile(sub, 60)
    corner = np.zeros(shape, dtype=bool)
    cut = tuple(slice(0, n) for n in sub.shape)
    image[cut] = sub
    corner[cut] = bright[part]
    far = np.zeros(shape, dtype=bool)
    far[-1, -1, -1] = True
    return image, [("bright", bright), ("corner", corner), ("one voxel", far), ("empty", np.zeros(shape, bool))]


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # a one-voxel PET segment of 0 SUV
@pytest.mark.parametrize("case", sorted(SERIES))
def test_every_family_on_small_segments_at_the_border(case, monkeypatch):
    """All six families (local intensity's sphere and texture included) of small real-intensity segments, on their
    box and on the whole grid: the same values; the segment given with its tight box, inside a wider box, and as a
    whole-grid mask. (One voxel and no voxel: without texture, which has no matrices to make there.)"""
    vol = _volume(case)
    every = rf.RegionFeatureSettings(families=rf.FAMILIES, bin_width=None, n_bins=16)
    no_texture = rf.RegionFeatureSettings(families=tuple(f for f in rf.FAMILIES if f != "texture"), bin_width=None,
                                          n_bins=16)
    img, masks = _small_masks(vol.array)
    for name, mask in masks:
        settings = every if mask.sum() > 1 else no_texture
        old = _old_features(img, mask, vol.spacing_mm, unit=vol.unit, settings=settings, workers=1,
                            monkeypatch=monkeypatch)
        info = SegmentInfo(1, name, CATEGORY_ANATOMICAL_STRUCTURE, ENTIRE_BODY, "test")
        tight = Segment(info, mask)
        wide = Segment(info, mask.copy(), box=tuple(slice(0, n) for n in img.shape), shape=img.shape)
        for seg in (tight, wide):
            new = rf.segment_features(img, seg, vol.spacing_mm, unit=vol.unit, settings=settings, workers=1)
            assert _bits(new[0]) == _bits(old[0]) and new[1] == old[1], f"{case}: {name}"
        if name in ("bright", "corner"):  # the comparison covers the families that read beyond the box, texture
            families = {m.name.split("/")[0] for m in old[0] if "/" in m.name}
            assert "local intensity" in families and len(families - set(rf.FAMILIES)) >= 6, sorted(families)


def test_features_of_a_segment_on_another_grid_are_refused():
    img = np.zeros((4, 5, 6), dtype=np.float32)
    seg = Segment(SegmentInfo(1, "x", CATEGORY_ANATOMICAL_STRUCTURE, ENTIRE_BODY, "test"), np.ones((4, 5, 5), dtype=bool))
    with pytest.raises(ValueError, match="differ"):
        rf.segment_features(img, seg, (1.0, 1.0, 1.0))


def test_histogram_and_bounding_box_equal_the_old_code_on_real_values():
    """The histogram features (counts reused for the shared statistics) and the minimum bounding box (cross
    products without np.cross) of real series equal the old functions', bit for bit, small and large ROIs."""
    for case in ("pet", "ct"):
        vol = _volume(case)
        flat = vol.array.ravel()
        for n in (500, 150_000, flat.size):
            v = flat[:n]
            for n_bins in (8, 32, 1000):
                lo, hi = float(v.min()), float(v.max())
                lv = np.minimum(np.floor(n_bins * (v.astype(np.float64) - lo) / (hi - lo)) + 1, n_bins)
                lv = lv.astype(np.int32)
                new = histogram_module.histogram_features(lv, n_bins)
                old = _histogram_features_old(lv, n_bins)
                assert [(f.feature, float(f.value).hex()) for f in new] == \
                       [(f.feature, float(f.value).hex()) for f in old]
        m = vol.array > np.percentile(vol.array, 99.5)
        verts, _ = morphology_module.mesh(m[:40], vol.spacing_mm)
        hull = ConvexHull(verts - verts.mean(axis=0))
        pts = verts[hull.vertices]
        assert morphology_module.minimum_bounding_box(pts) == _minimum_bounding_box_old(pts)


@pytest.mark.parametrize("case", ["pet", "mr"])
def test_scene_profile_in_threads_equals_the_old_slice_loop(case, monkeypatch):
    """The scene profile of a real PET and MR with a thread budget of 1 and 2 equals the old loop's, bit for bit."""
    v = _volume(case)
    kw = dict(direction=v.direction, origin_mm=v.origin_mm, modality=v.modality, unit=v.unit)
    old = _scene_profile_old(v.array, v.spacing_mm, **kw)
    assert np.isfinite(old.per_slice["area_cm2"]).sum() >= 10
    for threads in ("1", "2"):
        monkeypatch.setenv("DICOMNODE_THREADS", threads)
        new = scene_profile(v.array, v.spacing_mm, **kw)
        assert new.per_slice.keys() == old.per_slice.keys() and new.notes == old.notes
        assert np.array_equal(new.z_mm, old.z_mm)
        for k in old.per_slice:
            a, b = new.per_slice[k], old.per_slice[k]
            assert a.tobytes() == b.tobytes(), f"{case}, {threads} threads: {k}"


@pytest.mark.parametrize("case", ["pet", "mr"])
def test_order_statistics_on_bit_patterns_equal_the_equal_width_bins(case, monkeypatch):
    """The intensity statistics of a real PET and MR's values above 0 (float32, and as float64), their order
    statistics found in bins of the bit patterns, equal those found in equal-width bins of the value (the code
    before, still taken by other values) bit for bit; each rank's value is np.partition's of the whole array."""
    from dicomnode.analysis.features import intensity

    vol = _volume(case)
    flat = vol.array.ravel()
    positive = flat[flat > np.percentile(flat, 30)]
    assert positive.size > intensity._SELECT_MIN and positive.min() > 0
    for x in (positive, positive.astype(np.float64), positive[: intensity._SELECT_MIN + 1000]):
        assert intensity._bits_binning(x, x.min(), x.max()) is not None
        new = intensity.statistics_features(x, workers=1)
        n = x.size
        ranks = sorted({int(math.floor(q / 100.0 * (n - 1))) + d for q in (10, 25, 50, 75, 90) for d in (0, 1)})
        picked = intensity._select_ranks(x, ranks, x.min(), x.max())
        whole = np.partition(x, ranks)
        assert all(picked[r] == whole[r] for r in ranks)
        with monkeypatch.context() as m:
            m.setattr(intensity, "_bits_binning", lambda *a: None)
            old = intensity.statistics_features(x, workers=1)
            assert intensity._select_ranks(x, ranks, x.min(), x.max()) == picked
        assert [(f.feature, float(f.value).hex()) for f in new] == [(f.feature, float(f.value).hex()) for f in old]
    # values with 0 or below keep the equal-width bins (+0 and -0 are equal values of different bits)
    assert intensity._bits_binning(np.array([0.0, 1.0]), 0.0, 1.0) is None
    assert intensity._bits_binning(np.array([-1.0, 1.0], np.float32), np.float32(-1), np.float32(1)) is None


def test_discretisation_in_place_equals_the_old_expressions():
    """Fixed bin size and fixed bin number, made in place in one float64 buffer per chunk, equal the old
    expressions on whole float64 copies, on the real PET's SUV and the CT's HU (several chunks)."""
    from dicomnode.analysis.features.discretise import discretise_fixed_bin_number, discretise_fixed_bin_size

    for case, settings in (("pet", ((0.25, 0.0), (0.1, 0.37))), ("ct", ((25, -1000.0), (2.5, -500.0)))):
        x = _volume(case).array.ravel()
        assert x.size > 2 * (1 << 20)
        c = x.astype(np.float64)
        for bin_size, lower in settings:
            old = (np.floor((c - lower) / bin_size) + 1).astype(np.int32)
            assert np.array_equal(discretise_fixed_bin_size(x, bin_size=bin_size, lower=lower), old)
        lo, hi = float(x.min()), float(x.max())
        for n_bins in (16, 32, 1000):
            old = np.minimum((np.floor(n_bins * (c - lo) / (hi - lo)) + 1).astype(np.int32), n_bins)
            assert np.array_equal(discretise_fixed_bin_number(x, n_bins=n_bins), old)
