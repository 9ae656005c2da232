"""Discretisation, intensity histogram and intensity-volume histogram on hand-computed arrays."""

from __future__ import annotations

import numpy as np
import pytest

from dicomnode.analysis.features.discretise import (
    discretise_fixed_bin_number,
    discretise_fixed_bin_size,
    discretise_none,
    fixed_bin_size_centres,
)
from dicomnode.analysis.features.histogram import histogram_features, ivh_curve, ivh_features


def test_fixed_bin_size() -> None:
    x = np.array([-500.0, -475.1, -475.0, 0.0, 399.9])
    levels = discretise_fixed_bin_size(x, bin_size=25.0, lower=-500.0)
    assert levels.tolist() == [1, 1, 2, 21, 36]
    assert fixed_bin_size_centres(np.array([1, 2]), bin_size=2.5, lower=-1000).tolist() == [-998.75, -996.25]
    with pytest.raises(ValueError, match="bin_size"):
        discretise_fixed_bin_size(x, bin_size=0.0, lower=0.0)


def test_fixed_bin_number() -> None:
    x = np.array([0.0, 0.5, 2.49, 2.5, 10.0])
    # floor(4 * x / 10) + 1, the maximum into the last bin.
    assert discretise_fixed_bin_number(x, n_bins=4).tolist() == [1, 1, 1, 2, 4]
    assert discretise_fixed_bin_number(np.full(3, 7.0), n_bins=32).tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match="n_bins"):
        discretise_fixed_bin_number(x, n_bins=0)


def test_none_keeps_levels_and_rejects_non_integers() -> None:
    assert discretise_none(np.array([1.0, 3.0, 6.0])).tolist() == [1, 3, 6]
    with pytest.raises(ValueError, match="integer"):
        discretise_none(np.array([1.5]))
    with pytest.raises(ValueError, match="integer"):
        discretise_none(np.array([0.0]))


def _hist(levels, n) -> dict[str, float]:
    return {f.feature: f.value for f in histogram_features(np.asarray(levels), n)}


def test_histogram_by_hand() -> None:
    # Counts over levels 1..5: [3, 0, 1, 0, 2] (levels 2 and 4 empty but part of the histogram).
    f = _hist([1, 1, 1, 3, 5, 5], 5)
    assert len(f) == 23
    assert f["mode"] == 1
    p = np.array([3, 1, 2]) / 6
    assert f["entropy"] == pytest.approx(-(p * np.log2(p)).sum())
    assert f["uniformity"] == pytest.approx((p**2).sum())
    # Gradient: [0 - 3, (1 - 3)/2, (0 - 0)/2, (2 - 1)/2, 2 - 0] = [-3, -1, 0, 0.5, 2].
    assert f["maximum histogram gradient"] == 2.0 and f["maximum histogram gradient intensity"] == 5
    assert f["minimum histogram gradient"] == -3.0 and f["minimum histogram gradient intensity"] == 1
    assert f["mean"] == pytest.approx(16 / 6)


def test_histogram_rejects_out_of_range_levels() -> None:
    with pytest.raises(ValueError, match="1..3"):
        histogram_features(np.array([1, 4]), 3)
    with pytest.raises(ValueError, match="integer"):
        histogram_features(np.array([1.0, 2.0]), 3)


def test_ivh_discrete_by_hand() -> None:
    x = np.array([1, 1, 2, 4, 4, 4, 5, 6, 6, 6], float)
    i, gamma, nu = ivh_curve(x)
    assert i.tolist() == [1, 2, 3, 4, 5, 6]
    assert gamma.tolist() == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert nu.tolist() == pytest.approx([1.0, 0.8, 0.7, 0.7, 0.4, 0.3])
    f = {v.feature: v.value for v in ivh_features(x)}
    assert f["volume fraction at 10% intensity"] == pytest.approx(0.8)  # first gamma >= 0.1 is i = 2
    assert f["volume fraction at 90% intensity"] == pytest.approx(0.3)
    assert f["intensity at 10% volume"] == 7  # no level holds <= 10 %: one step above the range
    assert f["intensity at 90% volume"] == 2
    # The re-segmentation range sets the total range, levels outside the ROI included.
    j, g2, _ = ivh_curve(x, lower=0, upper=10)
    assert j[0] == 0 and j[-1] == 10 and g2[1] == pytest.approx(0.1)


def test_ivh_fixed_bin_size_uses_bin_centres() -> None:
    x = np.array([-1000.0, -999.0, -997.4, -990.0])
    i, gamma, nu = ivh_curve(x, bin_width=2.5, lower=-1000.0, upper=-990.0)
    assert i[0] == pytest.approx(-998.75) and i[-1] == pytest.approx(-991.25)
    # Bins: -1000, -999 -> bin 1; -997.4 -> bin 2; -990 -> bin 5, clipped into the last centre of the range.
    assert nu[:3].tolist() == pytest.approx([1.0, 0.5, 0.25])
    assert gamma[-1] == pytest.approx(1.0)


def test_ivh_fixed_bin_number() -> None:
    x = np.linspace(0.0, 1.0, 1001)
    i, gamma, nu = ivh_curve(x, n_bins=1000)
    assert i[0] == 1 and i[-1] == 1000 and nu[0] == 1.0
    with pytest.raises(ValueError, match="n_bins"):
        ivh_curve(x, n_bins=10, lower=0.0)


def test_ivh_rejects_continuous_values_without_settings() -> None:
    with pytest.raises(ValueError, match="discrete"):
        ivh_curve(np.array([0.5, 1.25]))


def test_mode_tie_goes_to_the_level_closest_to_the_mean() -> None:
    # Levels 1 and 5 both occur twice; the mean is 3.2, so 5 (1.8 away) beats 1 (2.2 away).
    assert _hist([1, 1, 5, 5, 4], 5)["mode"] == 5
