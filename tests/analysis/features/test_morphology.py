"""Morphology: hand-computed meshes, analytic shapes, exact Moran's I / Geary's C against the naive pair sums."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import pdist, squareform

from dicomnode.analysis.features.morphology import (
    ellipsoid_area,
    max_pairwise_distance,
    mesh,
    mesh_volume_area,
    minimum_bounding_box,
    moran_geary,
    morphology_features,
)


def _features(mask, spacing, **kw) -> dict[str, float]:
    return {f.feature: f.value for f in morphology_features(mask, spacing, **kw)}


def _ball(radius_vox: int) -> np.ndarray:
    n = 2 * radius_vox + 3
    g = np.indices((n, n, n)) - (n - 1) / 2
    return (g**2).sum(axis=0) <= radius_vox**2


def test_single_voxel_is_an_octahedron() -> None:
    # Marching cubes at 0.5 puts one vertex half-way to each of the 6 neighbours: an octahedron with half-diagonals
    # s/2. Volume (4/3) (sz/2)(sy/2)(sx/2) = sz sy sx / 6 for any spacing.
    v, f = mesh(np.ones((1, 1, 1), bool), (2.0, 1.0, 3.0))
    volume, _ = mesh_volume_area(v, f)
    assert volume == pytest.approx(6.0 / 6.0)
    # Isotropic 2 mm: 8 equilateral faces with side sqrt(2) mm -> area 8 * sqrt(3)/4 * 2 = 4 sqrt(3) mm^2.
    v, f = mesh(np.ones((1, 1, 1), bool), (2.0, 2.0, 2.0))
    assert mesh_volume_area(v, f)[1] == pytest.approx(4.0 * math.sqrt(3.0))


def test_2x2x2_cube_volume_and_surface() -> None:
    # Box [-1/2, 3/2]^3 (8 voxel units) with its 12 edges chamfered (a 1/8 wedge each) and its 8 corners cut
    # (1/8 - 1/48 each): V = 8 - 12/8 - 8 * 5/48 = 17/3. Surface: six unit squares, twelve 1 x sqrt(2)/2 chamfer
    # strips, eight equilateral corner triangles of side sqrt(2)/2: A = 6 + 6 sqrt(2) + sqrt(3).
    spacing = 1.5
    f = _features(np.ones((2, 2, 2), bool), (spacing,) * 3)
    assert f["volume (mesh)"] == pytest.approx(17.0 / 3.0 * spacing**3)
    assert f["surface area (mesh)"] == pytest.approx((6 + 6 * math.sqrt(2) + math.sqrt(3)) * spacing**2)
    assert f["volume (voxel counting)"] == pytest.approx(8 * spacing**3)
    # A convex mask: the mesh is its own convex hull; the AABB is the 2 x 2 x 2 voxel box.
    assert f["volume density (convex hull)"] == pytest.approx(1.0)
    assert f["area density (convex hull)"] == pytest.approx(1.0)
    assert f["volume density (AABB)"] == pytest.approx(17.0 / 3.0 / 8.0)
    assert f["maximum 3D diameter"] == pytest.approx(math.sqrt(1 + 1 + 4) * spacing)  # (1, 1, 2) apart, mesh verts


def test_mesh_is_translation_invariant_and_padding_matters_not() -> None:
    m = np.zeros((9, 9, 9), bool)
    m[2:5, 3:7, 1:4] = True
    a = _features(m, (1.0, 0.7, 0.7))
    b = _features(np.roll(m, (3, -2, 4), axis=(0, 1, 2)), (1.0, 0.7, 0.7))
    for key in ("volume (mesh)", "surface area (mesh)", "maximum 3D diameter", "major axis length"):
        assert a[key] == pytest.approx(b[key])
    # Mask touching the array border: the one-voxel padding closes the mesh.
    c = _features(m[2:5, 3:7, 1:4], (1.0, 0.7, 0.7))
    assert c["volume (mesh)"] == pytest.approx(a["volume (mesh)"])


def test_voxelised_ball() -> None:
    # A binary-mask mesh only has facets with a few normal directions (axes, edge and corner diagonals), so it
    # overestimates the area of a smooth surface: for a ball the sphericity converges to ~0.92, not 1 (0.910 at
    # r = 10 voxels, 0.919 at 20, 0.920 at 30). We accept 0.90..0.94 and check that it rises with resolution.
    f10, f20 = _features(_ball(10), (1.0, 1.0, 1.0)), _features(_ball(20), (1.0, 1.0, 1.0))
    assert 0.90 < f10["sphericity"] < f20["sphericity"] < 0.94
    # The volume is right within 0.5 % at r = 20 voxels; diameter = 2 r + 1 voxel (the mesh sits half a voxel out).
    assert f20["volume (mesh)"] == pytest.approx(4 / 3 * math.pi * 20**3, rel=0.005)
    assert f20["maximum 3D diameter"] == pytest.approx(41.0)
    assert f20["elongation"] == pytest.approx(1.0, abs=1e-6) and f20["flatness"] == pytest.approx(1.0, abs=1e-6)
    # Uniform ball: variance R^2/5 per axis, so the AEE semi-axis is 2R/sqrt(5): V / V_aee -> 5 sqrt(5) / 8.
    assert f20["volume density (AEE)"] == pytest.approx(5 * math.sqrt(5) / 8, rel=0.01)
    # Self-consistency of the shape ratios.
    assert f20["asphericity"] == pytest.approx(1 / f20["sphericity"] - 1)
    assert f20["compactness 2"] == pytest.approx(f20["sphericity"] ** 3)


def test_anisotropic_spacing_is_physical() -> None:
    # The same physical box sampled at 1 x 1 x 1 mm and 2 x 1 x 1 mm: PCA lengths agree.
    fine = np.zeros((24, 12, 12), bool)
    fine[2:22, 3:9, 2:10] = True
    coarse = fine[::2]
    a, b = _features(fine, (1.0, 1.0, 1.0)), _features(coarse, (2.0, 1.0, 1.0))
    assert b["major axis length"] == pytest.approx(a["major axis length"], rel=0.01)
    assert b["volume (voxel counting)"] == pytest.approx(a["volume (voxel counting)"])


def test_ellipsoid_area() -> None:
    assert ellipsoid_area(3.0, 3.0, 3.0) == pytest.approx(4 * math.pi * 9)  # sphere, alpha = beta = 0
    # b = c: alpha = beta = e and P_nu(1) = 1, so the IBSI series is 4 pi a b sum e^(2 nu) / (1 - 4 nu^2).
    a, c = 5.0, 3.0
    e2 = 1 - c**2 / a**2
    series = 4 * math.pi * a * c * sum(e2**nu / (1 - 4 * nu**2) for nu in range(21))
    assert ellipsoid_area(a, c, c) == pytest.approx(series, rel=1e-12)
    # Argument order does not matter.
    assert ellipsoid_area(3.0, 5.0, 4.0) == pytest.approx(ellipsoid_area(5.0, 4.0, 3.0))


def test_minimum_bounding_box_of_rotated_box() -> None:
    rng = np.random.default_rng(1)
    pts = rng.uniform(-1, 1, size=(400, 3)) * [4.0, 2.0, 1.0]
    pts = np.vstack([pts, np.array(np.meshgrid([-4, 4], [-2, 2], [-1, 1])).reshape(3, -1).T])
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    volume, area = minimum_bounding_box(pts @ q.T)
    assert volume == pytest.approx(64.0, rel=1e-6)
    assert area == pytest.approx(2 * (32 + 16 + 8), rel=1e-6)


def test_max_pairwise_distance_blocks() -> None:
    pts = np.random.default_rng(2).normal(size=(700, 3))
    assert max_pairwise_distance(pts, block=64) == pytest.approx(pdist(pts).max())


def _naive_moran_geary(x, mask, spacing):
    pos = np.argwhere(mask) * np.asarray(spacing)
    v = x[mask].astype(float)
    d = squareform(pdist(pos))
    np.fill_diagonal(d, np.inf)
    w = 1 / d
    z = v - v.mean()
    n = len(v)
    moran = n / w.sum() * (z @ w @ z) / (z @ z)
    geary = (n - 1) / (2 * w.sum()) * (w * (v[:, None] - v[None, :]) ** 2).sum() / (z @ z)
    return moran, geary


@pytest.mark.parametrize("seed", range(6))
def test_moran_geary_fft_equals_naive_pair_sum(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in rng.integers(2, 10, 3))
    spacing = tuple(float(s) for s in rng.uniform(0.4, 3.0, 3))
    mask = rng.random(shape) < 0.6
    mask.flat[0] = mask.flat[-1] = True  # at least two voxels, at opposite corners
    x = rng.normal(size=shape) + 0.5 * np.indices(shape)[0]  # some spatial autocorrelation
    moran, geary = moran_geary(x, mask, spacing)
    ref_moran, ref_geary = _naive_moran_geary(x, mask, spacing)
    assert moran == pytest.approx(ref_moran, rel=1e-9, abs=1e-12)
    assert geary == pytest.approx(ref_geary, rel=1e-9)


@pytest.mark.parametrize("smooth", [0.0, 3.0])
def test_moran_geary_float32_fft_of_large_boxes_equals_naive_pair_sum(smooth: float) -> None:
    """Large padded grids use float32 FFTs (half the memory traffic); still within 1e-5 of the exact pair sums."""
    from dicomnode.analysis.features import morphology
    rng = np.random.default_rng(7)
    shape = (40, 90, 110)  # padded 79 x 179 x 219 = 3.1 M voxels: the float32 path
    assert np.prod([2 * k - 1 for k in shape]) > morphology._MORAN_FLOAT64_MAX_PADDED
    spacing = (2.5, 0.9, 0.8)
    mask = rng.random(shape) < 0.012  # sparse and scattered, like a thresholded bone segment
    mask[0, 0, 0] = mask[-1, -1, -1] = True
    x = 200.0 * rng.normal(size=shape) + smooth * 40.0 * np.indices(shape)[0] - 1000.0
    moran, geary = moran_geary(x, mask, spacing)
    ref_moran, ref_geary = _naive_moran_geary(x, mask, spacing)
    assert moran == pytest.approx(ref_moran, rel=1e-5, abs=1e-7)
    assert geary == pytest.approx(ref_geary, rel=1e-5)


def test_moran_geary_constant_region() -> None:
    mask = np.ones((3, 3, 3), bool)
    assert moran_geary(np.full((3, 3, 3), 7.0), mask, (1, 1, 1)) == (1.0, 1.0)


def test_intensity_mask_subset_and_missing_image() -> None:
    m = _ball(4)
    f = _features(m, (1.0, 1.0, 1.0))
    assert "Moran\u2019s I index" not in f and "centre of mass shift" not in f
    image = np.indices(m.shape)[0].astype(np.float32) + 10
    imask = m & (np.indices(m.shape)[0] > 5)
    g = _features(m, (1.0, 1.0, 1.0), image=image, intensity_mask=imask)
    assert g["centre of mass shift"] > 1.0  # the intensity mask is the upper half of the ball
    assert g["volume (mesh)"] == pytest.approx(f["volume (mesh)"])


def test_invalid_input() -> None:
    with pytest.raises(ValueError, match="spacing_mm"):
        morphology_features(np.ones((2, 2, 2), bool), (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="empty"):
        morphology_features(np.zeros((2, 2, 2), bool), (1.0, 1.0, 1.0))


def _mesh_volume_area_reference(vertices: np.ndarray, faces: np.ndarray) -> tuple[float, float]:
    """mesh_volume_area as it was before it worked in chunks of faces (kept here as the reference)."""
    from dicomnode.analysis.features.morphology import _cross

    v = vertices - vertices.mean(axis=0)
    a, b, c = v[faces[:, 0]], v[faces[:, 1]], v[faces[:, 2]]
    volume = abs(float(np.einsum("ij,ij->", a, _cross(b, c)))) / 6.0
    area = float(np.linalg.norm(_cross(b - a, c - a), axis=1).sum()) / 2.0
    return volume, area


@pytest.mark.parametrize("chunk", [7, 1000, 1 << 20])
def test_mesh_volume_area_in_chunks_is_the_whole_arrays_bit_for_bit(monkeypatch, chunk) -> None:
    """The chunked volume and area (two (F, 3) arrays in memory instead of about five) equal the whole-array
    computation exactly, on the ragged surface of a noisy mask (many faces, several chunks, a short last one)."""
    from scipy import ndimage as ndi

    from dicomnode.analysis.features import morphology

    rng = np.random.default_rng(5)
    mask = ndi.gaussian_filter(rng.standard_normal((30, 40, 36)), 1.0) > 0.1
    v, f = mesh(mask, (3.0, 0.9, 1.1))
    assert len(f) > 3 * 1000
    monkeypatch.setattr(morphology, "_FACE_CHUNK", chunk)
    got = mesh_volume_area(v, f)
    want = _mesh_volume_area_reference(v, f)
    assert got[0] == want[0] and got[1] == want[1]
    assert got[0] > 0 and got[1] > 0


def test_centre_of_mass_shift_of_intensities_summing_to_zero_is_undefined() -> None:
    """All-zero intensities (a zero-filled series, a PET without uptake in the region) have no intensity-weighted
    centre: NaN, without numpy's divide warning in the node's log."""
    import warnings

    m = _ball(4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = _features(m, (1.0, 1.0, 1.0), image=np.zeros(m.shape, dtype=np.float32))
    assert math.isnan(g["centre of mass shift"])
    assert g["volume (mesh)"] > 0
