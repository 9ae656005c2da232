"""mixture.py: the numpy 1-D Gaussian mixture against scikit-learn's GaussianMixture on real series, and its contract.

The reference is scikit-learn's ``GaussianMixture`` (diag covariance, k-means init, tol 1e-3), which
``segment_generic`` used before: on the foreground intensities of a whole-body PET, a sarcoma CT and sarcoma / head MRs
(../shared/data), the class means agree within 1 % of the foreground's intensity range and the voxels' most probable
class on at least 99 % of the foreground.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests use --import-mode=importlib: find _load.py

from _load import load_dir  # noqa: E402
from dicomnode.analysis.mixture import MixtureFitError, fit_mixture_1d  # noqa: E402
from dicomnode.analysis.segment import segment_generic  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared test data not found at {DATA}")

#: (series, number of classes): a PET, a CT-like (the sarcoma CT through the generic path) and two MRs
SERIES = [("wholebody-pet-mr/PET", 3), ("sts/STS_002/CT", 3), ("sts/STS_003/MR_T1", 3), ("head-mr/T1_sag", 2)]


def _assign(values: np.ndarray, means: np.ndarray, sds: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Each value's most probable class (classes sorted by mean)."""
    o = np.argsort(means)
    m, s, w = means[o], sds[o], weights[o]
    logp = np.log(w)[:, None] - np.log(s)[:, None] - 0.5 * ((values[None, :] - m[:, None]) / s[:, None]) ** 2
    return logp.argmax(axis=0)


@needs_data
@pytest.mark.parametrize("series, k", SERIES, ids=[s for s, _ in SERIES])
def test_same_classes_as_sklearn_on_real_series(series: str, k: int) -> None:
    from sklearn.mixture import GaussianMixture

    volume, _ = load_dir(DATA / series)
    image = volume.array.astype(np.float32)
    seg = segment_generic(image, volume.spacing_mm, rng=np.random.default_rng(0), n_classes=k)
    values = image[seg.labels.by_label("body").mask].astype(np.float64)
    span = float(values.max() - values.min())
    sample = values[np.random.default_rng(1).choice(values.size, size=min(50_000, values.size), replace=False)]
    reg = 1e-6 * float(np.var(sample) + 1e-12)  # as segment_generic
    for seed in (0, 1):
        means, sds, weights = fit_mixture_1d(sample, k, rng=np.random.default_rng(seed), reg_covar=reg)
        gmm = GaussianMixture(k, covariance_type="diag", random_state=seed, reg_covar=reg).fit(sample[:, None])
        ref_means, ref_sds, ref_w = gmm.means_[:, 0], np.sqrt(gmm.covariances_[:, 0]), gmm.weights_
        assert np.abs(np.sort(means) - np.sort(ref_means)).max() <= 0.01 * span, (series, seed)
        ours, theirs = _assign(values, means, sds, weights), _assign(values, ref_means, ref_sds, ref_w)
        assert np.mean(ours == theirs) >= 0.99, (series, seed)


def test_recovers_a_known_mixture() -> None:
    rng = np.random.default_rng(5)
    truth_m, truth_s, truth_w = np.array([0.5, 1.5, 6.0]), np.array([0.15, 0.4, 2.0]), np.array([0.6, 0.3, 0.1])
    comp = rng.choice(3, size=60_000, p=truth_w)
    x = rng.normal(truth_m[comp], truth_s[comp])
    means, sds, weights = fit_mixture_1d(x, 3, rng=np.random.default_rng(0))
    o = np.argsort(means)
    np.testing.assert_allclose(means[o], truth_m, rtol=0.03)
    np.testing.assert_allclose(sds[o], truth_s, rtol=0.05)
    np.testing.assert_allclose(weights[o], truth_w, atol=0.01)
    assert weights.sum() == pytest.approx(1.0)


def test_one_class_is_the_sample_mean_and_sd() -> None:
    x = np.random.default_rng(2).gamma(2.0, 3.0, size=5_000)
    means, sds, weights = fit_mixture_1d(x, 1, rng=np.random.default_rng(0), reg_covar=1e-3)
    assert means[0] == pytest.approx(x.mean())
    assert sds[0] == pytest.approx(np.sqrt(x.var() + 1e-3))
    assert weights[0] == pytest.approx(1.0)


def test_deterministic_given_the_generator() -> None:
    x = np.random.default_rng(3).lognormal(0.0, 0.8, size=20_000)
    a = fit_mixture_1d(x, 4, rng=np.random.default_rng(11))
    b = fit_mixture_1d(x, 4, rng=np.random.default_rng(11))
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


def test_as_many_classes_as_distinct_values() -> None:
    x = np.repeat([1.0, 4.0, 9.0], [100, 50, 25])
    means, sds, weights = fit_mixture_1d(x, 3, rng=np.random.default_rng(0), reg_covar=1e-6)
    np.testing.assert_allclose(np.sort(means), [1.0, 4.0, 9.0], atol=1e-9)
    np.testing.assert_allclose(np.sort(weights), np.sort([100 / 175, 50 / 175, 25 / 175]), atol=1e-9)


@pytest.mark.parametrize("sample, k", [(np.arange(3.0), 4), (np.array([1.0, np.nan, 2.0]), 1), (np.arange(9.0), 0),
                                       (np.arange(9.0), 2.5)])
def test_bad_input_is_refused(sample: np.ndarray, k: float) -> None:
    with pytest.raises(MixtureFitError):
        fit_mixture_1d(sample, k, rng=np.random.default_rng(0))  # type: ignore[arg-type]


def test_refuses_a_legacy_random_state() -> None:
    with pytest.raises(MixtureFitError, match="Generator"):
        fit_mixture_1d(np.arange(10.0), 2, rng=np.random.RandomState(0))  # type: ignore[arg-type]


@needs_data
def test_segment_generic_does_not_import_sklearn() -> None:
    """The PET/MR segment step runs in a fresh job process: scikit-learn would add ~78 MB it never gives back."""
    code = ("import sys, numpy as np\n"
            "sys.path.insert(0, 'tests/analysis')\n"
            "from _load import load_dir\n"
            "from dicomnode.analysis.segment import segment_generic\n"
            f"v, _ = load_dir({str(DATA / 'sts' / 'STS_001' / 'PET')!r})\n"
            "res = segment_generic(v.array, v.spacing_mm, rng=np.random.default_rng(0))\n"
            "assert res.labels.by_label('tissue_class_1') is not None\n"
            "print(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] == 'sklearn'}"
            " | {m for m in sys.modules if m == 'scipy.stats'}))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == "[]", out.stdout
