"""Bayes' rule from class-conditional log-likelihoods and priors: :func:`bayes_posteriors` (numpy and scipy only).

The one place where log-likelihoods and priors become posteriors, shared by :mod:`dicomnode.analysis.classify` (which
re-exports it) and the scikit-learn classifier of :mod:`dicomnode.analysis._gmm_bayes`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.special import logsumexp

__all__ = ["bayes_posteriors"]


def bayes_posteriors(log_likelihood: np.ndarray, priors: Sequence[float] | np.ndarray) -> np.ndarray:
    """Posteriors from class-conditional log-likelihoods and priors, by Bayes' rule.

    Parameters
    ----------
    log_likelihood : (N, K) ndarray
        ``log P(x_n | c_k)`` for N samples and K classes (any constant shared by a row cancels).
    priors : (K,) array_like
        ``P(c_k)``, >= 0, summing to 1 (within 1e-6).

    Returns
    -------
    (N, K) ndarray of float64
        ``P(c_k | x_n)``; each row sums to 1.

    Raises
    ------
    ValueError
        When the shapes disagree, a prior is negative, the priors do not sum to 1, or a row's log-likelihoods
        are all -inf or NaN (no class can explain the sample).
    """
    ll = np.atleast_2d(np.asarray(log_likelihood, dtype=float))
    p = np.asarray(priors, dtype=float)
    if ll.ndim != 2 or p.ndim != 1 or ll.shape[1] != p.shape[0]:
        raise ValueError(f"log_likelihood must be (N, K) and priors (K,), got {ll.shape} and {p.shape}")
    if (p < 0).any() or abs(p.sum() - 1.0) > 1e-6:
        raise ValueError(f"priors must be >= 0 and sum to 1, got {p.tolist()}")
    with np.errstate(divide="ignore"):
        joint = ll + np.log(p)[None, :]
    if np.isnan(joint).any() or np.isneginf(joint).all(axis=1).any():
        raise ValueError("a sample has no finite class log-likelihood: no class explains it")
    return np.exp(joint - logsumexp(joint, axis=1, keepdims=True))
