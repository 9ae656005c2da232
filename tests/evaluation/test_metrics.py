"""Metrics of `dicomnode evaluate` against published values and hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import SHARED_DATA

from dicomnode.evaluation.metrics import (Proportion, dice, first_true_rank, lesion_contrast, region_agreement,
                                          reliability_table, wilson_interval)


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


def test_lesion_contrast_of_a_ball_in_noise_gives_its_constructed_contrast():
    """A 10 mm ball 30 units above a flat background with Gaussian noise of SD 10: d = 3, CNR = 3; the shell holds the
    voxels 5-10 mm outside the ball only, and another lesion in the shell is left out."""
    rng = np.random.default_rng(13)
    z, y, x = np.mgrid[:40, :80, :80]
    sp = (2.0, 1.0, 1.0)
    r = np.sqrt(((z - 20) * 2.0) ** 2 + (y - 40.0) ** 2 + (x - 40.0) ** 2)
    ball = r <= 10
    img = 100.0 + 30.0 * ball + rng.normal(0.0, 10.0, ball.shape)
    c = lesion_contrast(img, ball, sp)
    assert c.lesion_mean == pytest.approx(130.0, abs=1.0) and c.shell_mean == pytest.approx(100.0, abs=0.5)
    assert c.smd == pytest.approx(3.0, abs=0.15) and c.cnr == pytest.approx(3.0, abs=0.2)
    assert c.noise_sd == pytest.approx(10.0, rel=0.05)
    shell = (r > 10 + 5) & (r <= 10 + 10)  # near the count of a continuous shell (voxelised edges differ a little)
    assert c.shell_voxels == pytest.approx(int(shell.sum()), rel=0.1)
    # a bright neighbour inside the shell would pull the shell's mean up, unless it is excluded
    other = (np.abs(z - 20) <= 2) & (np.abs(y - 40) <= 2) & (np.abs(x - 53) <= 2)
    img2 = img + 500.0 * other
    assert lesion_contrast(img2, ball, sp).shell_mean > 101.0  # 27 of its ~9000 voxels at +500
    assert lesion_contrast(img2, ball, sp, exclude=other).shell_mean == pytest.approx(100.0, abs=0.5)
    # iso-intense: no contrast, whatever the noise
    assert abs(lesion_contrast(100.0 + rng.normal(0.0, 10.0, ball.shape), ball, sp).smd) < 0.1
    assert c.as_dict()["shell_mm"] == [5.0, 10.0]


def test_lesion_contrast_edges_and_bad_input():
    img = np.zeros((4, 8, 8))
    assert np.isnan(lesion_contrast(img, np.zeros(img.shape, bool), (1.0, 1.0, 1.0)).smd)
    full = lesion_contrast(img, np.ones(img.shape, bool), (1.0, 1.0, 1.0))
    assert full.shell_voxels == 0 and full.as_dict()["smd"] is None
    with pytest.raises(ValueError, match="shape"):
        lesion_contrast(img, np.zeros((4, 8, 7), bool), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="shell_mm"):
        lesion_contrast(img, np.zeros(img.shape, bool), (1.0, 1.0, 1.0), shell_mm=(10.0, 5.0))


@pytest.mark.parametrize("patient, modality, low, high", [
    ("STS_001", "CT", -0.6, 0.0),      # isodense non-contrast sarcoma: 28 HU against 39 HU around it, d -0.38
    ("STS_001", "MR_T1", -0.6, 0.0),   # iso-intense on T1 inside the muscle: d -0.31
    ("STS_003", "MR_T1", -2.5, -1.5),  # muscle signal inside bright fat: d -1.95 (visible, but as muscle is)
    ("STS_003", "PET", 2.0, 3.5),      # FDG-avid: d 2.6
])
def test_the_sts_sarcomas_contrast_against_their_surroundings(patient, modality, low, high):
    """The visibility figure `evaluate` writes per truth lesion, on the real series and the physicians' contours:
    which tumours stand out of the tissue around them in their modality (figures in docs/evaluation.md)."""
    from dicomnode.evaluation.cases import LesionSource, TruthKind
    from dicomnode.evaluation.truth import load_lesions
    from dicomnode.io.load import load_series

    folder = SHARED_DATA / "sts" / patient / modality
    series = load_series(sorted(p for p in folder.iterdir() if p.is_file()))
    les = load_lesions((LesionSource(TruthKind.RTSTRUCT, folder.parent / f"{modality}_rtstruct" / "RS.dcm",
                                     rois=("GTV_Mass",)),), series)[0]
    c = lesion_contrast(series.volume.array, les.mask, series.volume.spacing_mm)
    assert low < c.smd < high, c
    assert c.shell_voxels > 500 and c.noise_sd > 0
