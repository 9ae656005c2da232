"""analysis/scene.py: the faster per-slice measurement gives exactly the results of the implementation it replaced.

The reference below is the per-slice code of ``scene.py`` as it was before it was made cheaper (issue 13 item 6),
copied verbatim: body parts, convex hulls, bone pieces and their centres computed on the whole slice with scipy's
and scikit-image's functions. The new code works on the body's bounding box, counts hull pixels without drawing
the hull and sums label centres by ``bincount``; every descriptor of every sampled slice of real series (PET, MR,
CT of several regions) and of the analysis bench's phantoms must come out bit for bit the same, and so must the
profiles of the scene step.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import ndimage as ndi

from dicomnode.analysis import scene
from dicomnode.analysis.blocks import block_mean
from dicomnode.analysis.scene import (_CT_AIR_HU, _CT_FAT_HU, _CT_SOFT_HU, _LATERAL, _REL_BRIGHT, _SOLID,
                                      _UPTAKE_REL, _fill_holes, _front_outline, _mr_landmarks,
                                      scene_profile)
from helpers import SHARED_DATA
from analysis._load import load_dir

warnings.filterwarnings("ignore", category=UserWarning)

SERIES = {
    "pet": SHARED_DATA / "wholebody-pet-mr" / "PET",
    "mr": SHARED_DATA / "head-mr" / "T1_sag",
    "ct": SHARED_DATA / "sts" / "STS_001" / "CT",
    "ct_chest": SHARED_DATA / "chest-ct" / "A0002_B40f",
    "ct_head": SHARED_DATA / "head-ct" / "CT",
    "mr_t2_body": SHARED_DATA / "wholebody-pet-mr" / "MR_T2",
    "mr_abdomen": SHARED_DATA / "abdomen-mr" / "T2_ax",
}

_BONE_PIECE_MM = scene._BONE_PIECE_MM
_CT_BODY_HU = scene._CT_BODY_HU


def _bone_labels_ref(full, sy, sx, bone_thr):
    """The pieces of bone (CT) inside the body of one full-resolution axial slice (pixel size ``sy`` x ``sx`` mm),
    on ~2 mm block means: their labels, each label's area in cm2 (label 1 first) and the block size (fy, fx)."""
    fy = min(max(1, int(round(_BONE_PIECE_MM / sy))), full.shape[0])  # a slice narrower than one block: one block
    fx = min(max(1, int(round(_BONE_PIECE_MM / sx))), full.shape[1])
    sl = block_mean(np.asarray(full, dtype=np.float32), (fy, fx))
    body = _fill_holes(sl > _CT_BODY_HU)
    lab, n = ndi.label((sl > bone_thr) & body)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:] * (sy * fy * sx * fx / 100.0)
    return lab, sizes, (fy, fx)


def _bone_pieces_ref(full, sy, sx, bone_thr):
    _, sizes, _ = _bone_labels_ref(full, sy, sx, bone_thr)
    return float(min((sizes >= scene._BONE_PIECE_MIN_CM2).sum(), scene._BONE_PIECES_CAP))


def _limb_ring_ref(full, sy, sx, bone_thr, largest, f4):
    """scene._limb_ring as it was (session scene4), verbatim but for the module's constants."""
    from skimage.morphology import convex_hull_image

    lab, sizes, (fy, fx) = _bone_labels_ref(full, sy, sx, bone_thr)
    if sizes.size == 0:
        return 0.0
    bcm2 = sy * fy * sx * fx / 100.0
    pieces = np.flatnonzero(sizes >= scene._BONE_PIECE_MIN_CM2) + 1
    # the pieces whose centre lies in the largest part (on the 4 mm grid)
    inside = []
    for k, (cy, cx) in zip(pieces, ndi.center_of_mass(np.ones_like(lab), lab, pieces)):
        iy = min(int(cy * fy / f4[0]), largest.shape[0] - 1)
        ix = min(int(cx * fx / f4[1]), largest.shape[1] - 1)
        if largest[iy, ix]:
            inside.append(int(k))
    if not inside or len(inside) > scene._LIMB_BONES_PER_PART:
        return 0.0
    objs = ndi.find_objects(lab)
    for k in inside:
        box = objs[k - 1]
        piece = np.pad(lab[box] == k, 1)
        filled = _fill_holes(piece)
        area = float(filled.sum()) * bcm2
        cavity = (float(filled.sum()) - float(piece.sum())) * bcm2
        diameter_mm = 20.0 * np.sqrt(area / np.pi)
        if not (scene._RING_DIAMETER_MM[0] <= diameter_mm <= scene._RING_DIAMETER_MM[1]):
            continue
        if cavity < max(scene._RING_CAVITY * area, scene._RING_CAVITY_MIN_CM2):
            continue
        cy, cx = ndi.center_of_mass(filled)
        hy, hx = ndi.center_of_mass(filled & ~piece)
        if np.hypot((cy - hy) * sy * fy, (cx - hx) * sx * fx) > scene._RING_CENTRED * diameter_mm:
            continue
        if float(filled.sum()) / max(int(convex_hull_image(filled).sum()), 1) >= scene._RING_SOLIDITY:
            return 1.0
    return 0.0


def _body_parts_ref(filled: np.ndarray, solid: np.ndarray, depth_px: float, min_px: float) -> tuple[np.ndarray, int]:
    """Label the body mask ``filled`` into its parts: trunk, arms lying against it, thighs that touch.

    ``solid`` holds the pixels whose whole block is body at full resolution, so the thin gap of air between an
    arm and the trunk, lost in the block means, separates them. Its parts are the watershed basins of the
    distance to its outline, grown from the maxima that stand at least ``depth_px`` above the bridge joining them
    to a deeper part (arms that touch the trunk over a short length). Parts smaller than ``min_px`` pixels are
    dropped; every pixel of ``filled`` then takes the label of the nearest part, and a connected piece of
    ``filled`` holding no part stays a part of its own. The labels partition ``filled`` exactly.
    """
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    solid = solid & filled
    dist = ndi.distance_transform_edt(solid)
    markers, n = ndi.label(h_maxima(dist, depth_px) & solid) if solid.any() else (None, 0)
    if n == 0:
        return ndi.label(filled)
    parts = watershed(-dist, markers, mask=solid)
    sizes = np.bincount(parts.ravel(), minlength=n + 1)[1:]
    big = np.flatnonzero(sizes >= min_px) + 1
    if big.size == 0:
        return ndi.label(filled)
    relabel = np.zeros(n + 1, dtype=np.int32)
    relabel[big] = np.arange(1, big.size + 1)
    core = relabel[parts]
    _, (iy, ix) = ndi.distance_transform_edt(core == 0, return_indices=True)
    out = np.where(filled, core[iy, ix], 0)
    mlab, _ = ndi.label(filled)
    has_core = np.zeros(int(mlab.max()) + 1, dtype=bool)
    has_core[np.unique(mlab[core > 0])] = True
    orphan = filled & ~has_core[mlab]
    n_out = int(big.size)
    if orphan.any():
        olab, n_orphan = ndi.label(orphan)
        out[orphan] = olab[orphan] + n_out
        n_out += n_orphan
    return out, n_out



def _measure_slice_ref(sl: np.ndarray, full: np.ndarray, thr, is_ct: bool, py: float, px: float, fy: int, fx: int, *,
                   min_px: float, split_px: float, ring_mm: float, core_mm: float,
                   signs: tuple[int, int] = (1, 1)) -> dict[str, float] | None:
    """Descriptors of one block-averaged axial slice ``sl`` (``full``: the same slice at full resolution)."""
    body_thr, dark_thr, bright_thr, organ_lo, organ_hi, organ_std = thr
    st = ndi.generate_binary_structure(2, 1)
    pix_cm2 = py * px / 100.0
    body = ndi.binary_opening(sl > body_thr, structure=st)
    lab, nlab = ndi.label(body)
    if nlab == 0:
        return None
    sizes = np.bincount(lab.ravel())[1:]
    keep = np.flatnonzero(sizes >= min_px) + 1
    if keep.size == 0:
        return None
    kept = np.isin(lab, keep)
    filled = ndi.binary_fill_holes(kept)
    border = np.zeros_like(filled)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    # a field of view cut inside the body (a chest crop): dark regions that open onto the image border (lungs)
    # are not holes; inside the convex hull of the tissue they are still inside the body
    if (filled & border).sum() > 0.25 * border.sum():
        from skimage.morphology import convex_hull_image

        filled = filled | convex_hull_image(kept)
    solid = block_mean(_fill_holes(full > body_thr).astype(np.float32), (fy, fx)) >= _SOLID
    lab, nlab = _body_parts_ref(filled, solid, split_px, min_px)
    area_px = int(filled.sum())
    sizes = np.bincount(lab.ravel())[1:]
    big = lab == (int(np.argmax(sizes)) + 1)
    yy, xx = np.nonzero(big)
    cov = np.cov(np.stack([yy * py, xx * px])) if yy.size > 2 else np.zeros((2, 2))
    ev = np.sort(np.clip(np.linalg.eigvalsh(cov), 0, None))
    edge = filled & ~ndi.binary_erosion(filled, structure=st, border_value=1)
    n_edge = int(edge.sum()) + int((filled & border).sum())
    # the image border is not the body's outline when the field of view is cropped: measure depth from
    # the outline inside the image only (pad with tissue where the body touches the border)
    depth = ndi.distance_transform_edt(np.pad(filled, 1, mode="edge"), sampling=(py, px))[1:-1, 1:-1]
    dark = (sl < dark_thr) & filled
    bright = (sl > bright_thr) & filled
    ring = filled & (depth <= ring_mm)
    core = filled & (depth > core_mm)
    out = {
        "area_cm2": area_px * pix_cm2,
        "n_components": float(nlab),
        "major_axis_mm": 4.0 * float(np.sqrt(ev[1])),
        "minor_major_ratio": float(np.sqrt(ev[0] / ev[1])) if ev[1] > 0 else 1.0,
        "edge_fraction": float((filled & border).sum()) / max(n_edge, 1),
        "fov_fill": area_px / filled.size,
        "dark_fraction": dark.sum() / area_px,
        "bright_fraction": bright.sum() / area_px,
        "ring_dark": (dark & ring).sum() / max(int(ring.sum()), 1),
        "ring_bright": (bright & ring).sum() / max(int(ring.sum()), 1),
        "core_dark": (dark & core).sum() / max(int(core.sum()), 1),
        "core_bright": (bright & core).sum() / max(int(core.sum()), 1),
    }
    # solidity of the largest part: a phantom's cylinder is convex (1.0); a trunk with arms or a head with ears
    # and nose is a little less
    from skimage.morphology import convex_hull_image

    out["solidity"] = float(big.sum()) / max(int(convex_hull_image(big).sum()), 1)
    # largest connected dark region as a fraction of the body: a lung (or both), not scattered dark voxels
    # (CT: lung-like, -960 ... -400 HU in 4 mm block means; outside air, which a crop's hull can take in, is
    # below -960)
    dlab, ndl = ndi.label(dark & (sl > _CT_AIR_HU) if is_ct else dark)
    out["dark_blob"] = (np.bincount(dlab.ravel())[1:].max() if ndl else 0) / area_px
    # organ: the largest homogeneous mid-intensity region (liver, spleen; thigh muscles), eroded once so
    # that thin bridges between neighbouring structures do not join them
    mean3 = ndi.uniform_filter(sl, 3)
    std3 = np.sqrt(np.clip(ndi.uniform_filter(sl * sl, 3) - mean3 * mean3, 0, None))
    organ = ndi.binary_erosion(filled & (mean3 > organ_lo) & (mean3 < organ_hi) & (std3 < organ_std), structure=st)
    olab, nolab = ndi.label(organ)
    out["organ_fraction"] = (np.bincount(olab.ravel())[1:].max() if nolab else 0) / area_px
    # lateral bright tissue (CT: bone away from the spine: iliac wings, femoral heads, ribs, scapulae)
    half_width = max((xx.max() - xx.min()) / 2.0, 1.0)
    lateral = bright & big & (np.abs(np.arange(sl.shape[1])[None, :] - xx.mean()) > _LATERAL * half_width)
    llab, nllab = ndi.label(lateral)
    out["lateral_bright"] = lateral.sum() / area_px
    out["lateral_bright_blob"] = (np.bincount(llab.ravel())[1:].max() if nllab else 0) / area_px
    out["bone_pieces"] = _bone_pieces_ref(full, py / fy, px / fx, bright_thr) if is_ct else 0.0
    if not is_ct:
        # uptake landmarks (PET; any relative scale): the peak of the 3 x 3 local mean and the largest region of
        # moderately raised signal (2-8 x the body's median: the liver on FDG PET), relative to the body's median
        ref = bright_thr / _REL_BRIGHT
        inside = filled & (mean3 > 0)
        out["peak_rel"] = float(mean3[filled].max() / ref) if ref > 0 and filled.any() else 0.0
        ulab, nu = ndi.label(inside & (mean3 > _UPTAKE_REL[0] * ref) & (mean3 < _UPTAKE_REL[1] * ref))
        out["uptake_blob_cm2"] = float(np.bincount(ulab.ravel())[1:].max() * pix_cm2) if nu else 0.0
        homogeneous = filled & (mean3 > organ_lo) & (mean3 < organ_hi) & (std3 < organ_std)
        out.update(_mr_landmarks(big, organ, homogeneous, py, px, signs))
        out.update(_front_outline(filled, py, signs))
    if is_ct:
        out["air_lung_fraction"] = dark.sum() / area_px
        out["fat_fraction"] = (((sl >= _CT_FAT_HU[0]) & (sl < _CT_FAT_HU[1])) & filled).sum() / area_px
        out["soft_tissue_fraction"] = (((sl >= _CT_SOFT_HU[0]) & (sl < _CT_SOFT_HU[1])) & filled).sum() / area_px
        out["bone_fraction"] = bright.sum() / area_px
        # added after the first speed work (session scene4, the limb-bone landmark), as it was then
        out["limb_ring"] = _limb_ring_ref(full, py / fy, px / fx, bright_thr, big, (fy, fx))
    return out


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit for bit, NaN where NaN."""
    return a.shape == b.shape and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


@pytest.fixture(scope="module", params=sorted(SERIES))
def volume(request):
    vol, _ = load_dir(SERIES[request.param])
    return vol


def test_profile_matches_reference_bit_for_bit(volume, monkeypatch):
    """Every per-slice descriptor of the scene profile of a real series equals the reference's, bit for bit."""
    v = volume
    kw = dict(direction=v.direction, origin_mm=v.origin_mm, modality=v.modality, unit=v.unit)
    new = scene_profile(v.array, v.spacing_mm, **kw)
    with monkeypatch.context() as m:
        m.setattr(scene, "_measure_slice", _measure_slice_ref)
        ref = scene_profile(v.array, v.spacing_mm, **kw)
    assert new.per_slice.keys() == ref.per_slice.keys()
    assert np.array_equal(new.z_mm, ref.z_mm)
    measured = np.isfinite(ref.per_slice["area_cm2"])
    assert measured.sum() >= 10, "the series must show a body on most sampled slices for the comparison to mean much"
    diff = [k for k in ref.per_slice if not _same(new.per_slice[k], ref.per_slice[k])]
    assert diff == [], f"descriptors that changed: {diff}"


def test_body_parts_and_hulls_match_reference_on_cropped_and_edge_cases():
    """Bodies touching the image border, several parts, an empty solid mask: the same labels as the reference."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:90, :120]
    cases = []
    for cy, cx in [(45, 60), (5, 60), (45, 2), (88, 118)]:  # centred; against the top, the left, a corner
        trunk = ((yy - cy) / 30.0) ** 2 + ((xx - cx) / 40.0) ** 2 <= 1
        arm = ((yy - cy) / 10.0) ** 2 + ((xx - cx - 48) / 7.0) ** 2 <= 1
        noisy = ndi.binary_opening(rng.random(trunk.shape) > 0.03)
        cases.append((trunk | arm, (trunk | arm) & noisy))
    cases.append((np.zeros((40, 40), bool), np.zeros((40, 40), bool)))
    for filled, solid in cases:
        new, n_new = scene._body_parts(filled, solid, 3.0, 20.0)
        ref, n_ref = _body_parts_ref(filled, solid, 3.0, 20.0)
        assert n_new == n_ref and np.array_equal(new, ref)
        if filled.any():
            from skimage.morphology import convex_hull_image

            assert np.array_equal(scene._convex_hull(filled), convex_hull_image(filled))


def test_distance_in_box_matches_whole_slice():
    """Anisotropic distances on the bounding box equal those on the whole slice, also where the mask meets the
    border (the depth of a cropped field of view) and when it fills the slice."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:70, :95]
    for cy, cx in [(35, 47), (0, 40), (69, 94), (35, 0)]:
        mask = (((yy - cy) / 25.0) ** 2 + ((xx - cx) / 33.0) ** 2 <= 1) & (rng.random(yy.shape) > 0.02)
        expected = ndi.distance_transform_edt(mask, sampling=(3.1, 2.3))
        assert np.array_equal(scene._edt_in_box(mask, (3.1, 2.3)), expected)
    full = np.ones((20, 30), bool)
    assert np.array_equal(scene._edt_in_box(full, (1.0, 2.0)), ndi.distance_transform_edt(full, sampling=(1.0, 2.0)))
    assert not scene._edt_in_box(np.zeros((5, 5), bool), (1.0, 1.0)).any()


#: The analysis bench's phantoms (``dicomnode bench analysis``) at their default geometry (the CT with fewer,
#: thicker slices over the same length: the in-plane grid is what the slice measurement sees).
BENCH = {
    "pet": ((550, 170, 170), (3.27, 4.07, 4.07)),
    "mr": ((160, 384, 384), (3.0, 1.0, 1.0)),
    "ct": ((100, 512, 512), (4.5, 0.8, 0.8)),
}


@pytest.mark.parametrize("phantom", sorted(BENCH))
def test_bench_phantom_profiles_match_reference_bit_for_bit(phantom, monkeypatch):
    """The scene profile of each bench phantom equals the reference's, bit for bit, on every slice."""
    from dicomnode.bench.analysis import _MODALITY, _build

    shape, spacing = BENCH[phantom]
    image = _build(phantom, shape, spacing, np.random.default_rng(0), 20.0)
    modality, unit = _MODALITY[phantom]
    new = scene_profile(image, spacing, modality=modality, unit=unit)
    with monkeypatch.context() as m:
        m.setattr(scene, "_measure_slice", _measure_slice_ref)
        ref = scene_profile(image, spacing, modality=modality, unit=unit)
    assert np.isfinite(ref.per_slice["area_cm2"]).sum() >= 40
    diff = [k for k in ref.per_slice if not _same(new.per_slice[k], ref.per_slice[k])]
    assert new.per_slice.keys() == ref.per_slice.keys() and diff == [], f"descriptors that changed: {diff}"


def _slices(rng: np.random.Generator, n: int, shape: tuple[int, int]) -> list[np.ndarray]:
    """Synthetic CT-like slices (HU) with a trunk, arms and bones anywhere: centred, against an edge or a corner,
    filling the field of view, cut by it, several bodies, none."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    out = []
    for i in range(n):
        sl = np.full(shape, -1000.0)
        if i % 7 != 6:  # one slice in seven holds no body
            for _ in range(1 + i % 3):
                cy, cx = rng.uniform(-0.1, 1.1) * h, rng.uniform(-0.1, 1.1) * w
                ry, rx = rng.uniform(0.1, 0.6) * h, rng.uniform(0.1, 0.6) * w
                body = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
                sl[body] = rng.normal(40, 30, int(body.sum()))
                lung = ((yy - cy) / (0.5 * ry)) ** 2 + ((xx - cx + 0.3 * rx) / (0.2 * rx)) ** 2 <= 1
                sl[lung] = -850.0
                for _ in range(int(rng.integers(0, 4))):  # bones, some of them rings
                    by, bx, r = cy + rng.uniform(-0.5, 0.5) * ry, cx + rng.uniform(-0.6, 0.6) * rx, rng.uniform(4, 22)
                    d2 = (yy - by) ** 2 + (xx - bx) ** 2
                    sl[(d2 <= r * r) & body] = 900.0
                    if r > 10:
                        sl[(d2 <= (0.6 * r) ** 2) & body] = 60.0
        out.append(sl.astype(np.float32))
    return out


@pytest.mark.parametrize("is_ct", [True, False])
def test_measure_slice_matches_reference_on_bodies_at_the_border(is_ct):
    """Bodies against the image border or its corners, cut by it, several or none: _measure_slice (on the body's
    bounding box) gives the reference's descriptors bit for bit, on CT (HU) and relative (PET/MR) thresholds."""
    rng = np.random.default_rng(11)
    fy = fx = 5  # 0.8 mm pixels in 4 mm blocks, as a CT
    for shape in [(200, 240), (120, 125), (9, 300)]:
        fulls = _slices(rng, 14, shape)
        if not is_ct:
            fulls = [np.clip(f + 1000.0, 0, None) / 100.0 for f in fulls]
        coarse = [block_mean(f, (fy, fx)) for f in fulls]
        thr = scene._thresholds(np.stack(coarse), is_ct)
        for sl, full in zip(coarse, fulls):
            kw = dict(min_px=10.0 / (4.0 * 4.0 / 100.0), split_px=3.0, ring_mm=12.0, core_mm=25.0, signs=(1, -1))
            got = scene._measure_slice(sl, full, thr, is_ct, 4.0, 4.0, fy, fx, **kw)
            want = _measure_slice_ref(sl, full, thr, is_ct, 4.0, 4.0, fy, fx, **kw)
            assert (got is None) == (want is None)
            if want is not None:
                assert got.keys() == want.keys()
                diff = [k for k in want if not _same(np.asarray(got[k]), np.asarray(want[k]))]
                assert diff == [], f"descriptors that changed on a {shape} slice: {diff}"


def test_hull_size_is_scikit_images_hull():
    """_hull_size counts the pixels of scikit-image's convex hull exactly: scattered pixels, blobs, single pixels,
    thin lines at any angle, masks touching the border."""
    from skimage.morphology import convex_hull_image

    rng = np.random.default_rng(2)
    checked = 0
    for i in range(1200):
        h, w = (int(v) for v in rng.integers(1, 70, 2))
        kind = i % 4
        if kind == 0:
            m = rng.random((h, w)) < rng.uniform(0.001, 0.05)
        elif kind == 1:
            m = ndi.gaussian_filter(rng.random((h, w)), rng.uniform(0.5, 4)) > rng.uniform(0.45, 0.6)
        elif kind == 2:
            m = np.zeros((h, w), bool)
            m[rng.integers(0, h, 3), rng.integers(0, w, 3)] = True
        else:
            yy, xx = np.mgrid[:h, :w]
            a = rng.uniform(0, np.pi)
            m = np.abs((yy - h / 2) * np.cos(a) - (xx - w / 2) * np.sin(a)) < rng.uniform(0.3, 3)
        if m.any():
            assert scene._hull_size(m) == int(convex_hull_image(m).sum()), (i, m.shape)
            checked += 1
    assert checked > 1000


def test_label_centres_are_scipys_centres_of_mass():
    """_label_centres gives ndi.center_of_mass's floats (in the larger image's coordinates when offset)."""
    rng = np.random.default_rng(4)
    for _ in range(50):
        lab, n = ndi.label(ndi.gaussian_filter(rng.random((60, 80)), 1.5) > 0.55)
        if n == 0:
            continue
        index = np.flatnonzero(rng.random(n) < 0.7) + 1
        want = ndi.center_of_mass(np.ones_like(lab), lab, index)
        assert scene._label_centres(lab, index, (0, 0)) == [tuple(float(v) for v in c) for c in want]
        big = np.zeros((60 + 17, 80 + 5), dtype=lab.dtype)
        big[17:, 5:] = lab
        assert scene._label_centres(lab, index, (17, 5)) == \
            [tuple(float(v) for v in c) for c in ndi.center_of_mass(np.ones_like(big), big, index)]


def test_bone_labels_on_the_body_box_match_the_whole_slice():
    """Bone pieces labelled on the body's 2 mm blocks: the same labels, sizes and centres as on the whole slice."""
    rng = np.random.default_rng(7)
    for full in _slices(rng, 21, (230, 260)):
        lab, sizes, f, origin = scene._bone_labels(full, 0.8, 0.8, 250.0)
        lab_ref, sizes_ref, f_ref = _bone_labels_ref(full, 0.8, 0.8, 250.0)
        assert f == f_ref and np.array_equal(sizes, sizes_ref)
        if lab.size:
            whole = np.zeros_like(lab_ref)
            whole[origin[0]:origin[0] + lab.shape[0], origin[1]:origin[1] + lab.shape[1]] = lab
            assert np.array_equal(whole, lab_ref)
        else:
            assert not lab_ref.any()


def test_body_parts_match_reference_on_random_bodies():
    """Random bodies: one part (a single marker: its piece is taken without a watershed; one part left: every pixel
    takes it), several parts, parts too small to keep, pieces of the body holding no part: the reference's labels."""
    rng = np.random.default_rng(9)
    yy, xx = np.mgrid[:80, :110]
    seen = set()
    for i in range(160):
        filled = np.zeros(yy.shape, bool)
        for _ in range(1 + i % 4):
            cy, cx = rng.uniform(0, 80), rng.uniform(0, 110)
            filled |= ((yy - cy) / rng.uniform(3, 30)) ** 2 + ((xx - cx) / rng.uniform(3, 40)) ** 2 <= 1
        solid = filled & (rng.random(filled.shape) > rng.uniform(0, 0.08))
        solid = ndi.binary_opening(solid) if i % 2 else solid
        depth, min_px = rng.uniform(1.5, 4.0), rng.uniform(5, 120)
        new, n_new = scene._body_parts(filled, solid, depth, min_px)
        ref, n_ref = _body_parts_ref(filled, solid, depth, min_px)
        assert n_new == n_ref and new.dtype == ref.dtype and np.array_equal(new, ref), i
        seen.add(min(n_ref, 3))
    assert seen >= {1, 2, 3}


def _medians_ref(per: dict[str, np.ndarray], sel: np.ndarray) -> dict[str, float]:
    """The slab medians as _summarise took them before (one np.median per descriptor)."""
    sub = {k: v[sel] for k, v in per.items()}
    has = np.isfinite(sub["area_cm2"])
    return {k: float(np.median(arr[has])) for k, arr in sub.items()} if has.any() else {k: 0.0 for k in sub}


def test_slab_medians_match_one_by_one_medians():
    """profile_slabs' medians (one call over the stacked series) equal one np.median per descriptor: odd and even
    numbers of slices, NaN in a series (a landmark not measured on a slice), slices without body, a real PET's
    profile."""
    rng = np.random.default_rng(12)
    profiles = []
    for n in (1, 2, 7, 40, 96):
        per = {k: rng.normal(size=n) * 10 ** rng.uniform(-3, 3) for k in scene._NAMES + scene._OTHER_NAMES}
        per["area_cm2"][rng.random(n) < 0.2] = np.nan  # slices without body
        per["right_organ_side"][rng.random(n) < 0.3] = np.nan
        profiles.append(scene.SceneProfile(np.linspace(0, 10.0 * n, n), per, False, 10.0, n, "PT"))
    vol, _ = load_dir(SERIES["pet"])
    profiles.append(scene_profile(vol.array, vol.spacing_mm, direction=vol.direction, origin_mm=vol.origin_mm,
                                  modality=vol.modality, unit=vol.unit))
    checked = 0
    for prof in profiles:
        for lo, hi, d in scene.profile_slabs(prof, slab_mm=40.0, stride_mm=20.0):
            sel = (prof.z_mm >= lo) & (prof.z_mm <= hi)
            want = _medians_ref(prof.per_slice, sel)
            got = {k: d.values[k] for k in want}
            assert all(_same(np.asarray(got[k]), np.asarray(want[k])) for k in want)
            checked += 1
    assert checked > 20
