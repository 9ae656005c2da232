"""analysis/classify.py: Bayes posteriors against a hand computation; mixture classifier."""

import numpy as np
import pytest

from dicomnode.analysis.classify import (GaussianMixtureBayes, bayes_posteriors, classify, feature_vector,
                                         gaussian_naive_bayes_posteriors, grouped_cross_validation)


def _pdf(x, m, s):
    return np.exp(-0.5 * ((x - m) / s) ** 2) / (s * np.sqrt(2 * np.pi))


def test_two_class_1d_gaussian_by_hand():
    x = np.array([[0.3], [1.0], [-2.0]])
    means, variances, priors = np.array([[0.0], [2.0]]), np.array([[1.0], [4.0]]), np.array([0.7, 0.3])
    post = gaussian_naive_bayes_posteriors(x, means, variances, priors)
    for i, xi in enumerate(x[:, 0]):
        num0 = _pdf(xi, 0.0, 1.0) * 0.7
        num1 = _pdf(xi, 2.0, 2.0) * 0.3
        assert post[i, 0] == pytest.approx(num0 / (num0 + num1))
        assert post[i, 1] == pytest.approx(num1 / (num0 + num1))
    np.testing.assert_allclose(post.sum(axis=1), 1.0)


def test_bayes_posteriors_survive_tiny_likelihoods_and_check_priors():
    p = bayes_posteriors(np.array([[-1000.0, -1001.0]]), [0.5, 0.5])
    assert p[0, 0] == pytest.approx(1 / (1 + np.exp(-1)))
    with pytest.raises(ValueError):
        bayes_posteriors(np.zeros((1, 2)), [0.5, 0.6])


def test_mixture_bayes_separates_bimodal_class():
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.normal(-5, 0.5, (50, 1)), rng.normal(5, 0.5, (50, 1))])  # two appearances
    b = rng.normal(0, 0.5, (100, 1))
    X, y = np.concatenate([a, b]), np.array(["a"] * 100 + ["b"] * 100)
    m = GaussianMixtureBayes(n_components=2, reg_covar=1e-3).fit(X, y)
    assert classify(m, np.array([5.0])).label == "a"
    assert classify(m, np.array([0.0])).label == "b"
    assert sum(classify(m, np.array([2.5])).probabilities.values()) == pytest.approx(1.0)


def test_grouped_cv_never_scores_a_group_with_itself():
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(0, 1, (20, 2)), rng.normal(6, 1, (20, 2))])
    y = np.array(["x"] * 20 + ["z"] * 20)
    g = np.array([f"p{i % 4}" for i in range(20)] + [f"q{i % 4}" for i in range(20)])
    pred, proba = grouped_cross_validation(lambda: GaussianMixtureBayes(1), X, y, g)
    assert (pred == y).mean() > 0.95
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_feature_vector_names_missing():
    assert feature_vector({"a": 1, "b": 2}, ["b", "a"]).tolist() == [2.0, 1.0]
    with pytest.raises(KeyError, match="missing"):
        feature_vector({"a": 1}, ["a", "c"])
