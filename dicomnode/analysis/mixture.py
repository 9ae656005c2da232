"""A one-dimensional Gaussian mixture fitted by expectation-maximisation, in numpy alone.

:func:`fit_mixture_1d` is the model :func:`dicomnode.analysis.segment.segment_generic` fits to a sample of
foreground intensities. It follows scikit-learn's ``GaussianMixture`` (1-D, one initialisation, ``init_params =
"kmeans"``): greedy k-means++ seeding, Lloyd's k-means to convergence, then EM until the mean log-likelihood of the
sample changes by less than ``tol`` between two iterations, with ``reg_covar`` added to every variance. It exists so
that the segment step does not import scikit-learn (``from sklearn.mixture import GaussianMixture`` adds 56 MB to a
fresh job process, 23 MB of it scipy.stats, never given back; the PET segment step's peak fell by 57-62 MB without it).
The model is the same, the random draws are not (numpy's Generator instead of scikit-learn's RandomState), so a fit
lands on the same optimum as sklearn's, not bit for bit on its numbers. Every constant is scikit-learn's default.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MixtureFitError", "fit_mixture_1d"]

_LOG_2PI = float(np.log(2.0 * np.pi))


class MixtureFitError(ValueError):
    """The sample cannot be fitted (too few values, non-finite values, bad arguments)."""


def _kmeans_plusplus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ seeds (as scikit-learn's: ``2 + int(log k)`` candidates per seed after the first, the one
    lowering the sum of squared distances most kept). Returns k values of ``x``."""
    n = x.size
    trials = 2 + int(np.log(k))
    centers = np.empty(k, dtype=np.float64)
    centers[0] = x[int(rng.integers(n))]
    closest = (x - centers[0]) ** 2
    pot = float(closest.sum())
    for c in range(1, k):
        if pot <= 0.0:  # every value equals a seed: repeat it (callers ask for k <= number of distinct values)
            centers[c:] = centers[0]
            break
        cand = np.searchsorted(np.cumsum(closest), rng.uniform(size=trials) * pot)
        np.clip(cand, None, n - 1, out=cand)
        dist = np.minimum(closest[None, :], (x[None, :] - x[cand][:, None]) ** 2)
        pots = dist.sum(axis=1)
        best = int(np.argmin(pots))
        pot = float(pots[best])
        closest = dist[best]
        centers[c] = x[cand[best]]
    return centers


def _nearest(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Index of each value's nearest centre (1-D: the midpoints between sorted centres split the line)."""
    order = np.argsort(centers, kind="stable")
    s = centers[order]
    return order[np.searchsorted((s[:-1] + s[1:]) / 2.0, x, side="left")]


def _kmeans(x: np.ndarray, centers: np.ndarray, *, max_iter: int = 300, tol: float = 1e-4) -> np.ndarray:
    """Lloyd's k-means from ``centers`` until no label changes or the centres move by at most ``tol`` times the
    sample's variance (squared, summed: scikit-learn's criterion). An emptied cluster takes the value farthest from
    its centre. Returns the labels of the final centres."""
    k = centers.size
    tol_abs = tol * float(np.var(x))
    centers = centers.copy()
    labels = _nearest(x, centers)
    for _ in range(max_iter):
        counts = np.bincount(labels, minlength=k)
        sums = np.bincount(labels, weights=x, minlength=k)
        new = centers.copy()
        filled = counts > 0
        new[filled] = sums[filled] / counts[filled]
        for j in np.flatnonzero(~filled):
            far = int(np.argmax(np.abs(x - centers[labels])))
            new[j] = x[far]
        shift = float(((new - centers) ** 2).sum())
        centers = new
        new_labels = _nearest(x, centers)
        if np.array_equal(new_labels, labels) or shift <= tol_abs:
            labels = new_labels
            break
        labels = new_labels
    return labels


def _m_step(x: np.ndarray, resp: np.ndarray, reg_covar: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights, means and variances from the responsibilities (K, n); ``10 eps`` added to each class's mass."""
    nk = resp.sum(axis=1) + 10.0 * np.finfo(np.float64).eps
    means = (resp @ x) / nk
    var = (resp @ (x * x)) / nk - means ** 2 + reg_covar
    return nk / nk.sum(), means, var


def _e_step(x: np.ndarray, weights: np.ndarray, means: np.ndarray, var: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean log-likelihood of the sample and the responsibilities (K, n)."""
    if np.any(var <= 0.0):
        raise MixtureFitError("a class's variance is not positive: increase reg_covar")
    logp = (x[None, :] - means[:, None]) ** 2
    logp *= (-0.5 / var)[:, None]
    logp += (np.log(weights) - 0.5 * (np.log(var) + _LOG_2PI))[:, None]
    top = logp.max(axis=0)
    logp -= top
    np.exp(logp, out=logp)
    total = logp.sum(axis=0)
    logp /= total
    return float(np.mean(np.log(total) + top)), logp


def fit_mixture_1d(sample: np.ndarray, k: int, *, rng: np.random.Generator, max_iter: int = 100, tol: float = 1e-3,
                   reg_covar: float = 1e-6, kmeans_max_iter: int = 300,
                   kmeans_tol: float = 1e-4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit a mixture of ``k`` Gaussians to a 1-D sample by EM.

    Parameters
    ----------
    sample : (n,) array_like of float
        The values (cast to float64; at least ``k`` values, all finite).
    k : int
        Number of components, >= 1.
    rng : numpy.random.Generator
        Source of the k-means++ seeding: the same generator state gives the same fit.
    max_iter : int, optional
        EM iterations at most. Default 100 (scikit-learn's).
    tol : float, optional
        EM stops when the mean log-likelihood of the sample changes by less than this. Default 1e-3 (scikit-learn's).
    reg_covar : float, optional
        Added to every variance, in the sample's squared unit. Default 1e-6.
    kmeans_max_iter, kmeans_tol : optional
        Lloyd's iterations at most, and the centre shift (relative to the sample's variance) that stops them.
        Defaults 300 and 1e-4 (scikit-learn's KMeans).

    Returns
    -------
    means, sds, weights : (k,) ndarray of float64
        In the order of the fit (not sorted); ``sds`` include ``reg_covar``; ``weights`` sum to 1.
    """
    x = np.asarray(sample, dtype=np.float64).ravel()
    if int(k) != k or k < 1:
        raise MixtureFitError(f"k must be an integer >= 1, got {k}")
    k = int(k)
    if x.size < k:
        raise MixtureFitError(f"need at least k = {k} values, got {x.size}")
    if not np.all(np.isfinite(x)):
        raise MixtureFitError("the sample has non-finite values")
    if not isinstance(rng, np.random.Generator):
        raise MixtureFitError(f"rng must be a numpy.random.Generator, got {type(rng)}")
    if int(max_iter) != max_iter or max_iter < 1:
        raise MixtureFitError(f"max_iter must be an integer >= 1, got {max_iter}")
    if not tol > 0 or not reg_covar >= 0:
        raise MixtureFitError(f"tol must be > 0 and reg_covar >= 0, got {tol} and {reg_covar}")

    labels = _kmeans(x, _kmeans_plusplus(x, k, rng), max_iter=int(kmeans_max_iter), tol=float(kmeans_tol))
    resp = np.zeros((k, x.size), dtype=np.float64)
    resp[labels, np.arange(x.size)] = 1.0
    weights, means, var = _m_step(x, resp, reg_covar)
    lower = -np.inf
    for _ in range(int(max_iter)):
        ll, resp = _e_step(x, weights, means, var)
        weights, means, var = _m_step(x, resp, reg_covar)
        change = ll - lower
        lower = ll
        if abs(change) < tol:
            break
    return means, np.sqrt(var), weights
