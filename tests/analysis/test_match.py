"""analysis/match.py: NCC known answers, template matching, paired structures."""

import numpy as np
import pytest

from dicomnode.analysis.match import compare_paired, match_template, weighted_ncc


def test_ncc_identical_is_one_and_orthogonal_is_zero():
    a = np.array([1.0, 2.0, 3.0])
    assert weighted_ncc(a, a) == pytest.approx(1.0)
    assert weighted_ncc(a, 5 * a) == pytest.approx(1.0)
    assert weighted_ncc(np.array([1.0, 0, 0]), np.array([0, 1.0, 0])) == pytest.approx(0.0)
    assert weighted_ncc(a, -a) == pytest.approx(-1.0)


def test_ncc_weights_by_hand():
    a, b, w = np.array([1.0, 2.0]), np.array([2.0, 1.0]), np.array([1.0, 3.0])
    expected = (1 * 1 * 2 + 3 * 2 * 1) / np.sqrt((1 * 1 + 3 * 4) * (1 * 4 + 3 * 1))
    assert weighted_ncc(a, b, w) == pytest.approx(expected)
    # a zero weight removes an element: only the first remains -> proportional -> 1
    assert weighted_ncc(a, b, np.array([1.0, 0.0])) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        weighted_ncc(a, b, -w)


def test_template_found_at_planted_offset():
    rng = np.random.default_rng(0)
    img = rng.normal(0, 1, (20, 40, 36))
    tpl = rng.normal(0, 1, (5, 7, 6))
    img[9:14, 21:28, 4:10] = 3 * tpl + 10  # contrast and offset do not matter to NCC
    m = match_template(img, tpl)
    assert m.offset == (9, 21, 4)
    assert m.score == pytest.approx(1.0, abs=1e-6)
    assert m.scores.shape == (16, 34, 31)


def test_paired_mirror_images_are_alike():
    img = np.zeros((10, 40, 60), np.float32)
    a = np.zeros(img.shape, bool)
    a[2:8, 10:30, 5:20] = True
    b = np.flip(a, axis=2)
    img[a] = 100 + np.arange(a.sum()) % 7
    img[b] = np.flip(img, axis=2)[b]
    c = compare_paired(img, a, b, (2.0, 1.0, 1.0))
    assert c.volume_ratio == pytest.approx(1.0)
    assert c.shape_dice == pytest.approx(1.0)
    assert c.histogram_ncc == pytest.approx(1.0)
    assert c.intensity_ncc == pytest.approx(1.0)
    small = np.zeros_like(a)
    small[3:5, 12:16, 45:50] = True
    c2 = compare_paired(img, a, small, (2.0, 1.0, 1.0))
    assert c2.volume_ratio < 0.1 and c2.shape_dice < 0.2


def _reference_compare(image, mask_a, mask_b, axis):
    """The definition, on whole arrays: mirror b, shift its centroid onto a's (order 0), compare."""
    import numpy as np
    from scipy import ndimage as ndi

    from dicomnode.analysis.match import weighted_ncc
    mb = np.flip(mask_b, axis=axis)
    ib = np.flip(image.astype(np.float32), axis=axis)
    shift = np.round(np.array(ndi.center_of_mass(mask_a)) - np.array(ndi.center_of_mass(mb))).astype(int)
    mb = ndi.shift(mb, shift, order=0, mode="constant", cval=0, prefilter=False).astype(bool)
    ib = ndi.shift(ib, shift, order=0, mode="nearest", prefilter=False)
    inter = mask_a & mb
    dice = 2.0 * inter.sum() / (mask_a.sum() + mb.sum())
    ncc = weighted_ncc(image.astype(float), ib.astype(float), inter.astype(float), centred=True)
    return dice, ncc


def test_paired_comparison_equals_the_whole_array_definition():
    import numpy as np

    from dicomnode.analysis.match import compare_paired
    rng = np.random.default_rng(3)
    shape = (20, 40, 50)
    z, y, x = np.indices(shape)
    for trial in range(4):
        img = rng.normal(0, 10, shape).astype(np.float32)
        a = ((z - 10) ** 2 / 60 + (y - 20) ** 2 / 150 + (x - 12) ** 2 / 40) < 1
        b = ((z - 9) ** 2 / 50 + (y - 22) ** 2 / 120 + (x - 36 - trial) ** 2 / 50) < 1
        d = np.eye(3) if trial % 2 == 0 else np.diag([-1.0, 1.0, 1.0])
        r = compare_paired(img, a, b, (2.0, 1.0, 1.0), direction=d)
        dice, ncc = _reference_compare(img, a, b, axis=2)
        assert np.isclose(r.shape_dice, dice, rtol=1e-12) and np.isclose(r.intensity_ncc, ncc, rtol=1e-9)
