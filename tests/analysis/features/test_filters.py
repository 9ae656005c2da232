"""Filter responses: properties (smoothing lowers variance, LoG peaks at the blob scale, spacing in mm)."""

from __future__ import annotations

import numpy as np
import pytest

from dicomnode.analysis.features.filters import (
    difference_of_gaussians,
    filter_bank,
    gaussian,
    gradient_magnitude,
    laplacian_of_gaussian,
    mean,
    support_margin_mm,
)


def _noise(shape=(16, 32, 32), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 10.0, size=shape).astype(np.float32)


def test_gaussian_lowers_variance_and_keeps_mean() -> None:
    x = _noise()
    y = gaussian(x, (1.5, 0.8, 0.8), sigma_mm=1.0)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert y.var() < x.var() / 4
    assert y.mean() == pytest.approx(x.mean(), abs=0.05)
    assert gaussian(x, (1.5, 0.8, 0.8), sigma_mm=2.0).var() < y.var()


def test_gaussian_width_is_in_mm() -> None:
    # A point source: the response's second moment along each axis is sigma_mm^2, whatever the voxel size.
    spacing = (2.0, 0.5, 1.0)
    x = np.zeros((41, 81, 61), np.float32)
    x[20, 40, 30] = 1.0
    y = gaussian(x, spacing, sigma_mm=3.0)
    for axis, (c, s) in enumerate(zip((20, 40, 30), spacing)):
        profile = y.sum(axis=tuple(a for a in range(3) if a != axis))
        pos = (np.arange(profile.size) - c) * s
        assert np.sqrt((profile * pos**2).sum() / profile.sum()) == pytest.approx(3.0, rel=0.02)


def _ball_image(radius_mm: float, spacing, shape=(40, 64, 64)) -> np.ndarray:
    centre = [(n - 1) / 2 for n in shape]
    g = np.meshgrid(*[(np.arange(n) - c) * s for n, c, s in zip(shape, centre, spacing)], indexing="ij")
    return ((g[0] ** 2 + g[1] ** 2 + g[2] ** 2) <= radius_mm**2).astype(np.float32) * 100


def test_log_responds_most_at_the_blob_scale() -> None:
    # A bright ball of radius r: the scale-normalised LoG at its centre is most negative near sigma = r / sqrt(3).
    spacing = (1.5, 0.8, 0.8)
    r = 6.0
    image = _ball_image(r, spacing)
    centre = tuple(n // 2 for n in image.shape)
    sigmas = np.array([1.0, 2.0, 3.0, r / np.sqrt(3), 4.5, 6.0, 8.0])
    response = [laplacian_of_gaussian(image, spacing, sigma_mm=s)[centre] for s in sigmas]
    best = sigmas[int(np.argmin(response))]
    assert abs(best - r / np.sqrt(3)) <= 1.0
    assert min(response) < 0


def test_log_of_a_quadratic_is_its_laplacian() -> None:
    # f = z^2 + 2 y^2 + 3 x^2 (mm): Laplacian 2 + 4 + 6 = 12 per mm^2 everywhere (Gaussian smoothing adds a
    # constant only), anisotropic spacing included. Check away from the boundary.
    spacing = (1.5, 0.8, 1.0)
    shape = (40, 60, 50)
    z, y, x = np.meshgrid(*[(np.arange(n) - n / 2) * s for n, s in zip(shape, spacing)], indexing="ij")
    f = (z**2 + 2 * y**2 + 3 * x**2).astype(np.float32)
    out = laplacian_of_gaussian(f, spacing, sigma_mm=1.5, scale_normalised=False)
    inner = out[15:25, 20:40, 18:32]
    np.testing.assert_allclose(inner, 12.0, rtol=2e-3)
    assert laplacian_of_gaussian(f, spacing, sigma_mm=1.5)[20, 30, 25] == pytest.approx(12.0 * 1.5**2, rel=2e-3)


def test_gradient_magnitude_of_a_ramp() -> None:
    spacing = (2.0, 0.5, 1.0)
    shape = (20, 40, 30)
    z, y, x = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    f = (3 * z + 4 * x).astype(np.float32)  # |grad| = 5 per mm
    g = gradient_magnitude(f, spacing, sigma_mm=1.0)
    np.testing.assert_allclose(g[5:15, 10:30, 8:22], 5.0, rtol=1e-4)
    g2 = gradient_magnitude(f, spacing, sigma_mm=1.0, in_plane_only=True)
    np.testing.assert_allclose(g2[5:15, 10:30, 8:22], 4.0, rtol=1e-4)


def test_in_plane_only_keeps_slices_independent() -> None:
    x = np.zeros((5, 21, 21), np.float32)
    x[2, 10, 10] = 1.0
    y = gaussian(x, (1.0, 1.0, 1.0), sigma_mm=2.0, in_plane_only=True)
    assert y[1].max() == 0 and y[3].max() == 0 and y[2].sum() == pytest.approx(1.0, rel=1e-5)


def test_dog_is_band_pass() -> None:
    x = np.full((10, 20, 20), 7.0, np.float32)
    np.testing.assert_allclose(difference_of_gaussians(x, (1, 1, 1), sigma_mm=1.0), 0.0, atol=1e-5)
    with pytest.raises(ValueError, match="larger"):
        difference_of_gaussians(x, (1, 1, 1), sigma_mm=2.0, sigma_high_mm=1.0)


def test_mean_filter_and_bank() -> None:
    x = _noise((8, 16, 16))
    assert mean(x, support_voxels=3).var() < x.var() / 5
    with pytest.raises(ValueError, match="odd"):
        mean(x, support_voxels=4)
    bank = filter_bank(x, (1.5, 0.8, 0.8), sigmas_mm=(1.0, 2.0))
    assert set(bank) == {f"{k}_sigma{s}mm" for k in ("gaussian", "log", "gradient", "dog") for s in (1, 2)}
    assert all(v.shape == x.shape and v.dtype == np.float32 for v in bank.values())
    assert support_margin_mm(2.0) == 8.0


def test_filters_reject_bad_settings() -> None:
    x = _noise((4, 4, 4))
    with pytest.raises(ValueError, match="sigma_mm"):
        gaussian(x, (1, 1, 1), sigma_mm=0.0)
    with pytest.raises(ValueError, match="spacing"):
        gaussian(x, (1, 1), sigma_mm=1.0)
    with pytest.raises(ValueError, match="mode"):
        gaussian(x, (1, 1, 1), sigma_mm=1.0, mode="bogus")
