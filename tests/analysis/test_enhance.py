"""enhance.py: the blend formula, windowing and CLAHE (properties, not pixels)."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from dicomnode.analysis.enhance import background_blend, clahe, window

SPACING = (1.0, 0.5, 0.5)


def _step_image():
    img = np.full((4, 32, 128), -100.0, dtype=np.float32)
    img[:, :, 64:] = 100.0
    return img


def test_background_blend_is_alpha_image_plus_one_minus_alpha_background():
    rng = np.random.default_rng(0)
    img = rng.normal(0, 50, (10, 40, 40)).astype(np.float32)
    sigma_mm = 4.0
    background = ndi.gaussian_filter(img.astype(np.float64), [sigma_mm / s for s in SPACING])
    for alpha in (0.0, 0.5, 1.0, 2.0):
        out = background_blend(img, SPACING, alpha=alpha, background_sigma_mm=sigma_mm)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, alpha * img + (1 - alpha) * background, atol=1e-3)


def test_background_blend_sharpens_with_alpha_above_one_and_keeps_flat_values():
    img = _step_image()
    out = background_blend(img, SPACING, alpha=2.0, background_sigma_mm=5.0)
    assert out[:, :, 63].max() < -100 - 10 and out[:, :, 64].min() > 100 + 10  # overshoot at the edge
    np.testing.assert_allclose(out[:, :, :8], -100, atol=1e-2)  # > 5 sigma from the edge: HU unchanged
    flat = background_blend(np.full((4, 16, 16), 40.0, np.float32), SPACING, alpha=3.0, background_sigma_mm=5.0)
    np.testing.assert_allclose(flat, 40.0, atol=1e-3)


def test_background_blend_validates_options_first():
    with pytest.raises(ValueError, match="alpha"):
        background_blend(np.zeros(3), SPACING, alpha=-1, background_sigma_mm=5)
    with pytest.raises(ValueError, match="background_sigma_mm"):
        background_blend(np.zeros((2, 2, 2)), SPACING, alpha=1, background_sigma_mm=0)


def test_window_clips_in_image_units_and_normalises_on_request():
    img = np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0], dtype=np.float32)
    np.testing.assert_array_equal(window(img, center=40, width=400), [-160, -160, 40, 240, 240])
    np.testing.assert_allclose(window(img, center=40, width=400, normalise=True), [0, 0, 0.5, 1, 1])
    with pytest.raises(ValueError, match="width"):
        window(img, center=40, width=0)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (5.0, 1.0, 1.0)])  # 3-D and slice-wise
def test_clahe_maps_to_unit_interval_and_raises_local_contrast(spacing):
    rng = np.random.default_rng(1)
    img = rng.normal(0, 2, (6, 64, 64)).astype(np.float32)
    img[:, 24:40, 24:40] += 20.0  # faint square: 1% of the value range
    out = clahe(img, spacing, clip_limit=0.02, kernel_size_mm=16.0, value_range=(-1000, 1000))
    assert out.dtype == np.float32 and out.shape == img.shape
    assert out.min() >= 0.0 and out.max() <= 1.0
    scaled = window(img, center=0, width=2000, normalise=True)
    contrast_in = scaled[:, 26:38, 26:38].mean() - scaled[:, 26:38, 8:20].mean()
    contrast_out = out[:, 26:38, 26:38].mean() - out[:, 26:38, 8:20].mean()
    assert contrast_out > 3 * contrast_in > 0


def test_clahe_checks_value_range():
    with pytest.raises(ValueError, match="value_range"):
        clahe(np.zeros((2, 8, 8)), SPACING, value_range=(1, 1))
