"""analysis/filters: properties of the IBSI-2 filters beyond the phase-1 maps (those are in
tests/analysis/features/test_ibsi2_phase1.py): 2D never mixes slices, rotation invariance is invariant, boundary
names, FilterSpec errors name the key."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dicomnode.analysis.filters import Boundary, FilterKind, FilterSpec, Pooling, apply_filter, filter_margin_voxels
from dicomnode.analysis.filters.fourier import riesz, steered_riesz
from dicomnode.errors import ConfigError

SPACING = (2.0, 1.0, 1.0)
TWO_D = [
    FilterSpec(FilterKind.MEAN, in_plane_only=True, support_voxels=5),
    FilterSpec(FilterKind.LAPLACIAN_OF_GAUSSIAN, in_plane_only=True, sigma_mm=1.5),
    FilterSpec(FilterKind.LAWS, in_plane_only=True, laws_kernel="L5E5", rotation_invariance=True,
               pooling=Pooling.MAX, energy_delta_voxels=2),
    FilterSpec(FilterKind.GABOR, in_plane_only=True, gabor_sigma_mm=3.0, gabor_lambda_mm=2.0, gabor_gamma=1.5,
               rotation_invariance=True, gabor_dtheta_rad=math.pi / 4),
    FilterSpec(FilterKind.SEPARABLE_WAVELET, in_plane_only=True, wavelet="db3", wavelet_map="HH", level=2,
               rotation_invariance=True),
    FilterSpec(FilterKind.NONSEPARABLE_WAVELET, in_plane_only=True, wavelet="simoncelli", level=1),
]


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(3).normal(40.0, 50.0, size=(6, 40, 44))


@pytest.mark.parametrize("spec", TWO_D, ids=lambda s: s.kind.value)
def test_2d_filters_each_slice_alone(spec: FilterSpec, image: np.ndarray) -> None:
    whole = apply_filter(image, SPACING, spec)
    for k in (0, 3):
        alone = apply_filter(image[k:k + 1], SPACING, spec)[0]
        np.testing.assert_allclose(whole[k], alone, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("spec", [
    FilterSpec(FilterKind.LAWS, laws_kernel="E5L5S5", rotation_invariance=True, pooling=Pooling.MAX),
    FilterSpec(FilterKind.SEPARABLE_WAVELET, wavelet="coif1", wavelet_map="LHH", rotation_invariance=True),
], ids=["laws", "wavelet"])
def test_rotation_invariant_response_turns_with_the_image(spec: FilterSpec) -> None:
    cube = np.random.default_rng(4).normal(size=(24, 24, 24))
    turned = np.rot90(cube, k=1, axes=(1, 2))  # a right angle about z
    a = apply_filter(cube, (1.0, 1.0, 1.0), spec)
    b = apply_filter(np.ascontiguousarray(turned), (1.0, 1.0, 1.0), spec)
    inner = (slice(6, -6),) * 3  # away from the (direction-dependent) boundary
    np.testing.assert_allclose(np.rot90(a, k=1, axes=(1, 2))[inner], b[inner], rtol=1e-4, atol=1e-4)


def test_mirror_repeats_the_edge_voxel() -> None:
    assert Boundary.parse("mirror").ndimage_mode == "reflect" and Boundary.MIRROR.pad_mode == "symmetric"
    assert Boundary.parse("constant") is Boundary.ZERO
    ramp = np.broadcast_to(np.arange(10.0), (3, 10, 10)).copy()
    out = apply_filter(ramp, (1.0, 1.0, 1.0), FilterSpec(FilterKind.MEAN, in_plane_only=True, support_voxels=3))
    assert out[1, 5, 0] == pytest.approx((0 + 0 + 1) / 3)  # edge repeated: 0, 0, 1 (scipy "mirror" gives 1, 0, 1)
    with pytest.raises(ValueError, match="boundary must be one of"):
        Boundary.parse("reflect")


def test_spec_errors_name_the_key_value_and_fix() -> None:
    with pytest.raises(ConfigError, match=r"filter\.support_voxels = 4: .*odd"):
        FilterSpec(FilterKind.MEAN, support_voxels=4)
    with pytest.raises(ConfigError, match=r"filter\.gabor_dtheta_rad"):
        FilterSpec(FilterKind.GABOR, gabor_sigma_mm=1.0, gabor_lambda_mm=1.0, rotation_invariance=True,
                   gabor_dtheta_rad=1.0)
    with pytest.raises(ConfigError, match=r"filter\.riesz_order"):
        FilterSpec(FilterKind.RIESZ_LAPLACIAN_OF_GAUSSIAN, sigma_mm=1.0, riesz_order=(0, 0, 0))


def test_margin_covers_the_kernel() -> None:
    log = FilterSpec(FilterKind.LAPLACIAN_OF_GAUSSIAN, sigma_mm=1.5)
    assert filter_margin_voxels(log, (3.0, 0.75, 0.75)) == (3, 9, 9)
    laws = FilterSpec(FilterKind.LAWS, in_plane_only=True, laws_kernel="L5E5", energy_delta_voxels=7)
    assert filter_margin_voxels(laws, (1.0, 1.0, 1.0)) == (0, 9, 9)


def test_steered_riesz_first_order_follows_the_edge() -> None:
    """Order 1 steered along the structure tensor's main axis: the magnitude of the plain gradient-like Riesz
    vector, whichever way the edge faces (plain Riesz along x sees nothing of an edge across y)."""
    z, y, x = np.mgrid[:24, :24, :24]
    for edge in (x, y):
        img = (edge > 12).astype(float) * 100.0
        plain_x = riesz(img, order=(1, 0, 0), boundary="mirror")
        vector = [riesz(img, order=o, boundary="mirror") for o in ((1, 0, 0), (0, 1, 0), (0, 0, 1))]
        steered = steered_riesz(img, img, (1.0, 1.0, 1.0), order=(1, 0, 0), structure_tensor_sigma_mm=1.0,
                                boundary="mirror")
        norm = np.sqrt(sum(v**2 for v in vector))
        at = (12, 12, 12)  # on the edge
        assert abs(steered[at]) == pytest.approx(norm[at], rel=1e-3)
        if edge is y:
            assert abs(plain_x[at]) < 1e-6 * norm[at] + 1e-9
