"""Intensity statistics and local intensity peaks on hand-computed arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dicomnode.analysis.features.intensity import (
    PEAK_RADIUS_MM,
    local_intensity_features,
    sphere_mean,
    statistics_features,
)


def _stats(values) -> dict[str, float]:
    return {f.feature: f.value for f in statistics_features(np.asarray(values))}


def test_statistics_by_hand() -> None:
    f = _stats([1.0, 2.0, 3.0, 4.0, 10.0])
    assert len(f) == 18
    assert f["mean"] == 4.0
    assert f["variance"] == pytest.approx((9 + 4 + 1 + 0 + 36) / 5)  # no bias correction
    assert f["median"] == 3.0 and f["minimum"] == 1.0 and f["maximum"] == 10.0 and f["range"] == 9.0
    assert f["interquartile range"] == pytest.approx(4.0 - 2.0)
    assert f["mean absolute deviation"] == pytest.approx((3 + 2 + 1 + 0 + 6) / 5)
    assert f["median absolute deviation"] == pytest.approx((2 + 1 + 0 + 1 + 7) / 5)
    assert f["energy"] == pytest.approx(1 + 4 + 9 + 16 + 100)
    assert f["root mean square"] == pytest.approx(np.sqrt(130 / 5))
    assert f["coefficient of variation"] == pytest.approx(np.sqrt(f["variance"]) / 4.0)
    assert f["quartile coefficient of dispersion"] == pytest.approx(2.0 / 6.0)
    # P10 = 1.4, P90 = 7.6: the robust set is {2, 3, 4}, mean 3, deviations 1, 0, 1.
    assert f["robust mean absolute deviation"] == pytest.approx(2 / 3)


def test_skewness_kurtosis_match_scipy() -> None:
    from scipy import stats

    x = np.random.default_rng(0).gamma(2.0, size=1000)
    f = _stats(x)
    assert f["skewness"] == pytest.approx(stats.skew(x))
    assert f["(excess) kurtosis"] == pytest.approx(stats.kurtosis(x))  # Fisher (excess), biased


def test_constant_values() -> None:
    f = _stats([5.0] * 4)
    assert f["variance"] == 0 and f["skewness"] == 0 and f["(excess) kurtosis"] == 0


def test_statistics_reject_empty_and_nan() -> None:
    with pytest.raises(ValueError, match="empty"):
        statistics_features(np.array([]))
    with pytest.raises(ValueError, match="NaN"):
        statistics_features(np.array([1.0, np.nan]))


def test_peak_radius_is_one_millilitre() -> None:
    assert 4 / 3 * np.pi * PEAK_RADIUS_MM**3 == pytest.approx(1000.0)


def test_sphere_mean_by_hand() -> None:
    # 1 mm voxels, radius 1.5 mm: centre + 6 face + 12 edge neighbours (sqrt 2 = 1.41); corners (1.73) are out.
    image = np.zeros((5, 5, 5))
    image[2, 2, 2] = 19.0
    means = sphere_mean(image, (1.0, 1.0, 1.0), radius_mm=1.5)
    assert means[2, 2, 2] == pytest.approx(1.0)
    assert means[2, 2, 3] == pytest.approx(1.0)  # face neighbour sees the spike too
    assert means[3, 3, 3] == pytest.approx(0.0, abs=1e-12)  # a corner neighbour does not
    # At the image corner only the voxels that exist count: 1 + 3 + 3 = 7 of them.
    ones = sphere_mean(np.ones((5, 5, 5)), (1.0, 1.0, 1.0), radius_mm=1.5)
    assert ones[0, 0, 0] == pytest.approx(1.0)


def test_local_and_global_peak() -> None:
    spacing = (2.0, 1.0, 1.0)
    image = np.zeros((20, 30, 30), np.float32)
    image[10, 15, 15] = 100.0  # the maximum, isolated
    image[4:9, 5:12, 5:12] = 50.0  # a bright plateau: a higher sphere mean
    mask = np.zeros(image.shape, bool)
    mask[2:18, 3:27, 3:27] = True
    f = {x.feature: x.value for x in local_intensity_features(image, mask, spacing)}
    n = np.count_nonzero(_sphere(spacing))
    assert f["local intensity peak"] == pytest.approx(100.0 / n)
    assert f["global intensity peak"] > f["local intensity peak"]
    # Values outside the ROI enter the sphere means: surrounding the ROI with a bright shell changes the peaks.
    shell = image.copy()
    shell[~mask] = 1000.0
    g = {x.feature: x.value for x in local_intensity_features(shell, mask, spacing)}
    assert g["global intensity peak"] > f["global intensity peak"]


def _sphere(spacing):
    h = [int(PEAK_RADIUS_MM // s) for s in spacing]
    g = np.meshgrid(*[np.arange(-k, k + 1) * s for k, s in zip(h, spacing)], indexing="ij")
    return sum(a * a for a in g) <= PEAK_RADIUS_MM**2


def test_local_peak_crop_equals_whole_image() -> None:
    rng = np.random.default_rng(3)
    image = rng.normal(size=(30, 40, 40)).astype(np.float32)
    mask = np.zeros(image.shape, bool)
    mask[12:18, 15:25, 18:22] = True
    a = local_intensity_features(image, mask, (1.5, 0.8, 0.8))
    means = sphere_mean(image, (1.5, 0.8, 0.8))
    assert a[1].value == pytest.approx(means[mask].max())


def test_histogram_path_equals_direct_path_on_integer_data(monkeypatch):
    """Large integer-valued ROIs (HU, grey levels) use an exact histogram path: same numbers as the direct one."""
    import numpy as np

    from dicomnode.analysis.features import intensity

    rng = np.random.default_rng(1)
    for x in (rng.integers(-1024, 2000, size=300_001).astype(np.float64), rng.integers(1, 40, size=200_001),
              np.round(rng.normal(0, 50, 1_000_001))):
        assert intensity._integer_histogram(np.asarray(x)) is not None
        fast = dict(intensity._moments_and_quantiles(np.asarray(x)))
        with monkeypatch.context() as m:
            m.setattr(intensity, "_integer_histogram", lambda v: None)
            slow = dict(intensity._moments_and_quantiles(np.asarray(x, dtype=np.float64)))
        for k in fast:
            assert np.isclose(fast[k], slow[k], rtol=1e-9, atol=1e-9, equal_nan=True), (k, fast[k], slow[k])


# --- the chunked float path (speed, issue 13 item 6) against the whole-array formulas it replaced -------------

def _whole_array_reference(x: np.ndarray) -> dict[str, float]:
    """The previous implementation of the non-integer path: full float64 copies, np.percentile."""
    x = x.astype(np.float64)
    energy = float(np.dot(x, x))
    mean = float(x.mean())
    dev = x - mean
    dev2 = dev * dev
    var = float(dev2.sum() / x.size)
    skew = float(np.dot(dev2, dev) / x.size / var**1.5)
    kurt = float(np.dot(dev2, dev2) / x.size / var**2 - 3.0)
    p10, p25, median, p75, p90 = (float(p) for p in np.percentile(x, [10, 25, 50, 75, 90]))
    robust = x[(x >= p10) & (x <= p90)]
    return {"mean": mean, "variance": var, "skewness": skew, "(excess) kurtosis": kurt, "median": median,
            "minimum": float(x.min()), "10th percentile": p10, "90th percentile": p90, "maximum": float(x.max()),
            "interquartile range": p75 - p25, "range": float(x.max() - x.min()),
            "mean absolute deviation": float(np.mean(np.abs(dev))),
            "robust mean absolute deviation": float(np.mean(np.abs(robust - robust.mean()))),
            "median absolute deviation": float(np.mean(np.abs(x - median))),
            "coefficient of variation": float(np.sqrt(var) / mean),
            "quartile coefficient of dispersion": (p75 - p25) / (p75 + p25), "energy": energy}


def _check_against_reference(values: np.ndarray) -> None:
    got = {f.feature: f.value for f in statistics_features(values)}
    ref = _whole_array_reference(values)
    for name, want in ref.items():
        assert got[name] == pytest.approx(want, rel=1e-9, abs=1e-9), name


def test_float_statistics_equal_whole_array_formulas_on_real_pet() -> None:
    """Real whole-body PET (float activity values, ~2.5 M body voxels: several chunks)."""
    from tests.analysis._load import load_dir

    vol, _ = load_dir(Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "wholebody-pet-mr" / "PET")
    img = vol.array.astype(np.float32)
    values = img[img > np.percentile(img, 50)]
    assert values.size > 2 * (1 << 20) and not np.array_equal(values, np.round(values))
    _check_against_reference(values)


def test_float_statistics_equal_whole_array_formulas_on_bench_mr_phantom() -> None:
    from dicomnode.bench.analysis import make_mr_phantom

    img = make_mr_phantom((40, 192, 192), (3.0, 1.0, 1.0), rng=np.random.default_rng(0))
    _check_against_reference(img[img > 100])
    _check_against_reference(img.ravel()[:1001])  # odd size: the percentile interpolation


def test_float_statistics_with_ties_and_float32_thresholds_equal_whole_array_formulas() -> None:
    """The one-pass moments about the median and the below-the-centre sums (issue 13 item 6): float32 values
    compared against float64 centres rounded to float32 in the safe direction select what float64 comparisons
    select; many ties on the percentiles and the means, several chunks, float32 and float64 input."""
    from dicomnode.analysis.features import intensity

    rng = np.random.default_rng(21)
    tied = (rng.integers(0, 40, size=2_300_001) + 0.5).astype(np.float32)   # every percentile on a tie
    near = (np.float32(1000.0) + rng.integers(0, 9, size=1_200_001).astype(np.float32) * np.float32(1e-4))
    skewed = rng.lognormal(3.0, 1.0, size=1_500_000).astype(np.float32)
    for values in (tied, near, skewed, skewed.astype(np.float64)):
        _check_against_reference(values)
    lo, hi = intensity._at_least, intensity._at_most
    t = 0.1  # not a float32
    assert float(lo(np.dtype(np.float32), t)) >= t > float(np.nextafter(lo(np.dtype(np.float32), t), np.float32(0)))
    assert float(hi(np.dtype(np.float32), t)) <= t < float(np.nextafter(hi(np.dtype(np.float32), t), np.float32(1)))
    assert lo(np.dtype(np.float64), t) == hi(np.dtype(np.float64), t) == t


@pytest.mark.parametrize("family, bin_width", [("intensity statistics", 25.0), ("intensity histogram", 25.0),
                                               ("intensity histogram", None)])
def test_two_voxels_far_apart_give_an_undefined_robust_mad_not_an_error(family, bin_width):
    """Two values: the 10th and 90th percentiles lie strictly between them, so no value is in [P10, P90] and the
    robust mean absolute deviation is undefined (NaN); it divided by zero before (ZeroDivisionError)."""
    from dicomnode.analysis.region_features import RegionFeatureSettings, region_features

    img = np.zeros((4, 4, 4), dtype=np.float32)
    img[1, 1, 2] = 100.0
    mask = np.zeros(img.shape, dtype=bool)
    mask[1, 1, 1:3] = True
    settings = RegionFeatureSettings.from_params({"families": [family], "bin_width": bin_width, "n_bins": 8})
    meas, _ = region_features(img, mask, (1.0, 1.0, 1.0), unit="HU", settings=settings)
    values = {m.name.split("/")[-1]: m.value for m in meas}
    rmad = [v for k, v in values.items() if k.startswith("robust mean absolute deviation")]
    assert rmad and all(np.isnan(v) for v in rmad)
    mad = [v for k, v in values.items() if k == "mean absolute deviation"]
    assert mad and all(v > 0 for v in mad)  # the other statistics are still made
