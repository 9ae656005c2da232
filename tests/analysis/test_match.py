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
