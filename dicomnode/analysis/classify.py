"""Classification with Bayes posteriors: P(c | x) = P(x | c) P(c) / sum_c' P(x | c') P(c').

Three ways to get class posteriors from a feature vector ``x``:

* :func:`gaussian_naive_bayes_posteriors`: class-conditional densities that are products of 1-D Gaussians (the
  closed form, for hand-checkable cases and tiny models);
* :class:`GaussianMixtureBayes`: a scikit-learn classifier whose class-conditional density P(x | c) is a Gaussian
  mixture fitted to the class's samples (one mixture per class), combined with the class priors by Bayes' rule.
  A class seen in several appearances (one body region on CT, MR and PET) gets one mixture component for each,
  which a single Gaussian (naive Bayes) would smear into one broad bump;
* any fitted scikit-learn classifier with ``predict_proba`` (``GaussianNB``, ``CalibratedClassifierCV``, a
  ``Pipeline`` ending in one), through :func:`posteriors`.

:func:`bayes_posteriors` is the one place where log-likelihoods and priors become posteriors (log-sum-exp, so that
very unlikely vectors do not underflow to 0/0). :func:`feature_vector` builds ``x`` from named values (measurements,
descriptors) in the order a model expects. Everything here is pure: models are passed in, never read from files
(:mod:`dicomnode.modelio` does that).

:class:`GaussianMixtureBayes` lives in :mod:`dicomnode.analysis._gmm_bayes` and is imported from here on first use
(``from dicomnode.analysis.classify import GaussianMixtureBayes`` works as ever; its models name this module): the
rest of this module needs no scikit-learn, whose import costs a job process about 1 CPU s and 56 MB (the scene step
reads its posteriors through :func:`posteriors`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dicomnode.analysis.bayes import bayes_posteriors

__all__ = [
    "ClassPosterior",
    "GaussianMixtureBayes",
    "bayes_posteriors",
    "grouped_cross_validation",
    "classify",
    "feature_vector",
    "gaussian_naive_bayes_posteriors",
    "posteriors",
]


@dataclass(frozen=True, slots=True)
class ClassPosterior:
    """The answer for one feature vector: the most probable class and every class's posterior (they sum to 1)."""

    label: str
    probabilities: dict[str, float]


def gaussian_naive_bayes_posteriors(x: np.ndarray, means: np.ndarray, variances: np.ndarray,
                                    priors: Sequence[float] | np.ndarray) -> np.ndarray:
    """Posteriors under class-conditional densities that are products of independent 1-D Gaussians.

    Parameters
    ----------
    x : (N, D) or (D,) ndarray
        Feature vectors.
    means, variances : (K, D) ndarray
        Per class and feature: mean and variance (> 0) of the Gaussian.
    priors : (K,) array_like
        Class priors.

    Returns
    -------
    (N, K) ndarray
        ``P(c_k | x_n)``.
    """
    x = np.atleast_2d(np.asarray(x, dtype=float))
    mu = np.atleast_2d(np.asarray(means, dtype=float))
    var = np.atleast_2d(np.asarray(variances, dtype=float))
    if mu.shape != var.shape or x.shape[1] != mu.shape[1]:
        raise ValueError(f"x (N, D), means and variances (K, D) disagree: {x.shape}, {mu.shape}, {var.shape}")
    if (var <= 0).any():
        raise ValueError("variances must be > 0")
    ll = -0.5 * (np.log(2 * np.pi * var)[None] + (x[:, None, :] - mu[None]) ** 2 / var[None]).sum(axis=2)
    return bayes_posteriors(ll, priors)


def posteriors(model: object, X: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
    """Class names and posteriors (N, K) of a fitted scikit-learn classifier (or pipeline) for rows ``X``.

    Raises
    ------
    TypeError
        When the model has no ``predict_proba`` or ``classes_``.
    ValueError
        When a posterior row does not sum to 1 (a model that does not give probabilities).
    """
    if not hasattr(model, "predict_proba") or not hasattr(model, "classes_"):
        raise TypeError(f"{type(model).__name__} gives no class probabilities (predict_proba and classes_ needed)")
    P = np.asarray(model.predict_proba(np.atleast_2d(np.asarray(X, dtype=float))), dtype=float)
    if not np.allclose(P.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError("the model's probabilities do not sum to 1 per sample")
    return tuple(str(c) for c in model.classes_), P


def classify(model: object, x: np.ndarray) -> ClassPosterior:
    """The posterior of each class for one feature vector ``x`` (D,), and the most probable class."""
    names, P = posteriors(model, np.asarray(x, dtype=float)[None, :])
    probs = {n: float(p) for n, p in zip(names, P[0])}
    return ClassPosterior(max(probs, key=probs.__getitem__), probs)


def feature_vector(values: Mapping[str, float], names: Sequence[str]) -> np.ndarray:
    """The values called ``names``, in that order, as a float64 vector.

    Parameters
    ----------
    values : mapping of str to float
        Named features, e.g. the measurements of a segment (``{m.name: m.value}``) or scene descriptors.
    names : sequence of str
        The feature names a model was trained on (its card's ``feature_names``).

    Raises
    ------
    KeyError
        When a name is missing; the message lists the missing and the available names.
    ValueError
        When a value is not finite.
    """
    missing = [n for n in names if n not in values]
    if missing:
        raise KeyError(f"features {missing} are missing; available: {sorted(values)}")
    x = np.array([float(values[n]) for n in names], dtype=float)
    if not np.isfinite(x).all():
        bad = [n for n, v in zip(names, x) if not np.isfinite(v)]
        raise ValueError(f"features {bad} are not finite")
    return x


def grouped_cross_validation(make_estimator, X: np.ndarray, y: np.ndarray, groups: Sequence[str], *,
                             scored: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-group-out predictions: each group (patient) is predicted by a model trained without it.

    Parameters
    ----------
    make_estimator : callable
        ``make_estimator()`` returns a new, unfitted classifier with ``predict_proba``.
    X : (N, D) ndarray
    y : (N,) array of str
    groups : (N,) sequence of str
        Patient (or series) of each sample. Samples of one group are held out together.
    scored : (N,) bool ndarray, optional
        Which samples are scored (e.g. real series, not phantoms). Unscored samples are always in the training
        folds and never predicted. Default: all.

    Returns
    -------
    predicted : (N,) ndarray of object
        Predicted label of each scored sample (None for unscored ones).
    proba : (N, K) ndarray
        Posteriors over ``np.unique(y)`` (NaN rows for unscored ones; 0 for a class absent from a fold).
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y)
    g = np.asarray(groups)
    scored = np.ones(len(y), dtype=bool) if scored is None else np.asarray(scored, dtype=bool)
    classes = np.unique(y)
    pred = np.full(len(y), None, dtype=object)
    proba = np.full((len(y), len(classes)), np.nan)
    for grp in np.unique(g[scored]):
        test = (g == grp) & scored
        train = g != grp
        est = make_estimator().fit(X[train], y[train])
        names, P = posteriors(est, X[test])
        full = np.zeros((int(test.sum()), len(classes)))
        for j, n in enumerate(names):
            full[:, int(np.flatnonzero(classes == n)[0])] = P[:, j]
        proba[test] = full
        pred[test] = classes[np.argmax(full, axis=1)]
    return pred, proba


def __getattr__(name: str) -> object:
    if name == "GaussianMixtureBayes":  # scikit-learn is imported by the class's module, on first use only
        from dicomnode.analysis._gmm_bayes import GaussianMixtureBayes

        return GaussianMixtureBayes
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
