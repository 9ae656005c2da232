"""Metrics of `dicomnode evaluate` against published values and hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest

from dicomnode.evaluation.metrics import (Proportion, dice, first_true_rank, region_agreement, reliability_table,
                                          wilson_interval)


@pytest.mark.parametrize("k, n, low, high", [
    # Newcombe, Stat Med 1998;17:857-872, Table II, method 3 (Wilson score, no continuity correction)
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0000, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_interval_matches_newcombes_table(k, n, low, high):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=5e-5)
    assert hi == pytest.approx(high, abs=5e-5)


def test_wilson_interval_edges_and_bad_counts():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(10, 10)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(0.7225, abs=5e-5)  # 10/10
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    with pytest.raises(ValueError):
        Proportion(-1, 2)
    assert Proportion(1, 4).as_dict() == {"successes": 1, "trials": 4, "fraction": 0.25,
                                          "wilson95": [round(x, 4) for x in wilson_interval(1, 4)]}


def test_dice_of_overlapping_boxes():
    a = np.zeros((4, 10, 10), dtype=bool)
    b = np.zeros_like(a)
    a[1:3, 0:5, 0:5] = True   # 50 voxels
    b[1:3, 0:5, 3:8] = True   # 50 voxels, 20 shared
    assert dice(a, b) == pytest.approx(2 * 20 / 100)
    assert dice(a, a) == 1.0
    assert dice(a, np.zeros_like(a)) == 0.0
    assert dice(np.zeros_like(a), np.zeros_like(a)) == 1.0
    with pytest.raises(ValueError):
        dice(a, b[:2])


def test_first_true_rank_orders_by_probability():
    assert first_true_rank([0.9, 0.6, 0.95], [False, True, False]) == 3
    assert first_true_rank([0.9, 0.6, 0.95], [True, False, False]) == 2
    assert first_true_rank([0.5, 0.5], [False, True]) == 2  # ties keep the given order
    assert first_true_rank([0.9], [False]) is None
    assert first_true_rank([], []) is None


def test_reliability_table_bins_and_counts():
    probs = [0.1, 0.55, 0.6, 0.95, 1.0, 1.0]
    truth = [False, False, True, True, True, False]
    bins = reliability_table(probs, truth, edges=(0.0, 0.5, 0.9, 1.0))
    assert [b.count for b in bins] == [1, 2, 3]
    assert bins[1].observed.successes == 1 and bins[1].mean_predicted == pytest.approx(0.575)
    assert bins[2].observed.successes == 2  # 1.0 falls in the last bin
    with pytest.raises(ValueError):
        reliability_table([0.5], [True], edges=(0.0, 0.0, 1.0))


def test_region_agreement_is_the_covered_fraction_of_the_truth():
    truth = [("chest", 0.0, 100.0), ("abdomen", -100.0, 0.0)]
    assert region_agreement([("chest", -200.0, 200.0)], truth) == pytest.approx(0.5)
    assert region_agreement([("chest", 50.0, 100.0), ("chest", 0.0, 60.0), ("abdomen", 0.0, -50.0)],
                            truth) == pytest.approx((100 + 50) / 200)
    assert region_agreement([("head", -500.0, 500.0)], truth) == 0.0
    assert region_agreement([], [("chest", 1.0, 1.0)]) is None
