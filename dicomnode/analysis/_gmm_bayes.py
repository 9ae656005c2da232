"""The Bayes classifier with Gaussian-mixture class densities, :class:`GaussianMixtureBayes` (scikit-learn).

Imported by :mod:`dicomnode.analysis.classify` on first use; its ``__module__`` is that module's, so models name
``dicomnode.analysis.classify.GaussianMixtureBayes`` wherever the class is defined (modelio's allowlist).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.mixture import GaussianMixture

from dicomnode.analysis.bayes import bayes_posteriors

__all__ = ["GaussianMixtureBayes"]


class GaussianMixtureBayes(ClassifierMixin, BaseEstimator):
    """Bayes classifier whose class-conditional densities are Gaussian mixtures.

    Parameters
    ----------
    n_components : int, optional
        Mixture components per class (fewer when a class has fewer samples). Default 3.
    covariance_type : {"diag", "full", "spherical", "tied"}, optional
        As in :class:`sklearn.mixture.GaussianMixture`. Default "diag".
    reg_covar : float, optional
        Added to the covariances' diagonals (in the units of the features: standardise them first). A larger
        value gives broader class densities and softer posteriors. Default 0.05.
    priors : sequence of float, optional
        Class priors in the order of ``classes_``; default: uniform (a site's case mix is not our training mix).
    random_state : int, optional
        Seed of the mixtures' initialisation. Default 0.

    Attributes
    ----------
    classes_ : (K,) ndarray
    priors_ : (K,) ndarray
    mixtures_ : list of GaussianMixture
    """

    __module__ = "dicomnode.analysis.classify"  # the name its models and the allowlist know

    def __init__(self, n_components: int = 3, covariance_type: str = "diag", reg_covar: float = 0.05,
                 priors: Sequence[float] | None = None, random_state: int = 0) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.reg_covar = reg_covar
        self.priors = priors
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray) -> "GaussianMixtureBayes":
        X = np.asarray(X, dtype=float)
        y = np.asarray(y)
        if X.ndim != 2 or len(X) != len(y):
            raise ValueError(f"X must be (N, D) with one label per row, got {X.shape} and {len(y)} labels")
        if self.n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {self.n_components}")
        self.classes_ = np.unique(y)
        self.mixtures_ = []
        for c in self.classes_:
            Xc = X[y == c]
            gm = GaussianMixture(n_components=max(1, min(self.n_components, len(Xc) // 2)),
                                 covariance_type=self.covariance_type, reg_covar=self.reg_covar,
                                 random_state=self.random_state, n_init=2)
            self.mixtures_.append(gm.fit(Xc))
        k = len(self.classes_)
        self.priors_ = np.full(k, 1.0 / k) if self.priors is None else np.asarray(self.priors, dtype=float)
        if self.priors_.shape != (k,):
            raise ValueError(f"priors must give {k} values (one per class {self.classes_.tolist()})")
        self.n_features_in_ = X.shape[1]
        return self

    def class_log_likelihood(self, X: np.ndarray) -> np.ndarray:
        """``log P(x | c)`` for each row of ``X`` and each class, (N, K)."""
        X = np.asarray(X, dtype=float)
        return np.stack([gm.score_samples(X) for gm in self.mixtures_], axis=1)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return bayes_posteriors(self.class_log_likelihood(X), self.priors_)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
