"""denoise.py: filters lower the noise, keep edges and the unit, follow the 3-D / slice-wise rule."""

import numpy as np
import pytest

from dicomnode.analysis.denoise import box_mean, gaussian, is_volumetric, median, nl_means

SPACING = (1.0, 0.8, 0.8)
NOISE_SD = 20.0


@pytest.fixture(scope="module")
def noisy():
    """Two flat halves (0 and 200 HU) split at column 24, plus Gaussian noise of SD 20 HU."""
    clean = np.zeros((12, 48, 48), dtype=np.float32)
    clean[:, :, 24:] = 200.0
    rng = np.random.default_rng(0)
    return clean, clean + rng.normal(0, NOISE_SD, clean.shape).astype(np.float32)


FILTERS = {
    "box_mean": lambda im, sp: box_mean(im, sp, n=3),
    "box_mean_mm": lambda im, sp: box_mean(im, sp, size_mm=2.4),
    "gaussian": lambda im, sp: gaussian(im, sp, sigma_mm=1.0),
    "median": lambda im, sp: median(im, sp, size_mm=2.4),
    "nl_means": lambda im, sp: nl_means(im, sp, patch_size=3, patch_distance=3).denoised,
}


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_filters_lower_noise_and_keep_edges(noisy, name):
    clean, image = noisy
    out = FILTERS[name](image, SPACING)
    assert out.dtype == np.float32 and out.shape == image.shape
    flat = (slice(2, -2), slice(4, -4), slice(4, 18))  # away from the edge and the borders
    assert out[flat].std() < 0.75 * image[flat].std()
    assert abs(out[flat].mean() - 0.0) < 3.0  # HU stays HU
    # the edge stays where it was: the mid level (100 HU) is crossed between columns 23 and 24
    profile = out[2:-2, 4:-4, :].mean(axis=(0, 1))
    assert profile[22] < 100 < profile[25]
    assert profile[23] < profile[24]


def test_median_keeps_a_step_exactly_without_noise():
    step = np.zeros((5, 20, 20), np.float32)
    step[:, :, 10:] = 100
    np.testing.assert_array_equal(median(step, SPACING, size_mm=2.4), step)


def test_box_mean_is_the_mean_of_the_neighbourhood():
    rng = np.random.default_rng(3)
    img = rng.normal(size=(7, 9, 11)).astype(np.float32)
    out = box_mean(img, SPACING, n=3)
    np.testing.assert_allclose(out[3, 4, 5], img[2:5, 3:6, 4:7].mean(), rtol=1e-5)
    out2d = box_mean(img, (8.0, 0.8, 0.8), n=3)  # slice-wise: 3 x 3 in plane only
    np.testing.assert_allclose(out2d[3, 4, 5], img[3, 3:6, 4:7].mean(), rtol=1e-5)


def test_three_d_or_slice_wise_rule():
    assert is_volumetric((1.5, 0.8, 0.8))          # 1.9x: 3-D
    assert is_volumetric((2.0, 0.8, 0.8))          # 2.5x: 3-D
    assert not is_volumetric((3.27, 0.98, 0.98))   # 3.3x: slice-wise (sarcoma series)
    assert not is_volumetric((8.0, 0.65, 0.65))    # chest CT: slice-wise
    slices = np.repeat(np.arange(6, dtype=np.float32)[:, None, None] * 100, 16, 1).repeat(16, 2)
    # slice-wise filters never mix slices: constant slices stay exactly as they were
    for f in (lambda im, sp: gaussian(im, sp, sigma_mm=3), lambda im, sp: box_mean(im, sp, size_mm=20),
              lambda im, sp: median(im, sp, size_mm=20)):
        np.testing.assert_allclose(f(slices, (8.0, 0.65, 0.65)), slices, atol=1e-3)
        assert not np.allclose(f(slices, (1.0, 0.65, 0.65)), slices, atol=1e-3)


def test_nl_means_reports_the_noise_level(noisy):
    _, image = noisy
    denoised, sigma = nl_means(image, SPACING, patch_size=3, patch_distance=3)
    assert 0.8 * NOISE_SD < sigma < 1.2 * NOISE_SD
    given = nl_means(image, SPACING, sigma=10.0, patch_size=3, patch_distance=3)
    assert given.sigma_estimated == 10.0


def test_options_are_checked():
    img = np.zeros((3, 4, 4), np.float32)
    with pytest.raises(ValueError, match="exactly one"):
        box_mean(img, SPACING)
    with pytest.raises(ValueError, match="odd"):
        box_mean(img, SPACING, n=2)
    with pytest.raises(ValueError, match="sigma_mm"):
        gaussian(img, SPACING, sigma_mm=-1)
    with pytest.raises(ValueError, match="spacing_mm"):
        gaussian(img, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="h_factor"):
        nl_means(img, SPACING, h_factor=0)


def test_threaded_gaussian_is_identical_to_one_call():
    import numpy as np
    from scipy import ndimage as ndi

    from dicomnode.analysis.denoise import _z_parallel, gaussian
    rng = np.random.default_rng(7)
    img = rng.normal(0, 50, (64, 40, 36)).astype(np.float32)
    sp = (1.5, 0.8, 0.8)
    sigmas = [0.8 / s for s in sp]
    whole = ndi.gaussian_filter(img, sigmas, output=np.float32, mode="reflect")
    assert np.array_equal(gaussian(img, sp, sigma_mm=0.8), whole)
    halo = int(4.0 * sigmas[0] + 0.5)
    for w in (2, 3, 5):
        split = _z_parallel(img, halo, lambda b: ndi.gaussian_filter(b, sigmas, output=np.float32, mode="reflect"),
                            workers=w)
        assert np.array_equal(split, whole)
