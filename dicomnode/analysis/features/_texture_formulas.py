"""IBSI-1 texture feature formulas over stacks of matrices (private to :mod:`.texture`).

Each function takes a stack of K matrices (leading axis) and returns ``{feature name: (K,) float64}``. A matrix with
no counts gives NaN for every feature; a feature undefined for a matrix (e.g. GLCM correlation with a single grey
level) is NaN too.

References
----------
Zwanenburg A. et al., The Image Biomarker Standardization Initiative, Radiology 2020;295:328-338; IBSI reference
manual, theibsi/ibsi-doc ``docs/03_Image_features.rst`` (sections GLCM, GLRLM, GLSZM, GLDZM, NGTDM, NGLDM).
"""

from __future__ import annotations

import numpy as np

GLCM_FEATURES = (
    "joint maximum", "joint average", "joint variance", "joint entropy", "difference average",
    "difference variance", "difference entropy", "sum average", "sum variance", "sum entropy",
    "angular second moment", "contrast", "dissimilarity", "inverse difference", "normalised inverse difference",
    "inverse difference moment", "normalised inverse difference moment", "inverse variance", "correlation",
    "autocorrelation", "cluster tendency", "cluster shade", "cluster prominence", "information correlation 1",
    "information correlation 2",
)

# Zone-like families share one formula set; the names differ. Order: as in the IBSI manual.
_ZONE_NAMES = {
    "GLRLM": (
        "short runs emphasis", "long runs emphasis", "low grey level run emphasis", "high grey level run emphasis",
        "short run low grey level emphasis", "short run high grey level emphasis",
        "long run low grey level emphasis", "long run high grey level emphasis", "grey level non-uniformity",
        "normalised grey level non-uniformity", "run length non-uniformity",
        "normalised run length non-uniformity", "run percentage", "grey level variance", "run length variance",
        "run entropy",
    ),
    "GLSZM": (
        "small zone emphasis", "large zone emphasis", "low grey level zone emphasis", "high grey level zone emphasis",
        "small zone low grey level emphasis", "small zone high grey level emphasis",
        "large zone low grey level emphasis", "large zone high grey level emphasis", "grey level non-uniformity",
        "normalised grey level non-uniformity", "zone size non-uniformity", "normalised zone size non-uniformity",
        "zone percentage", "grey level variance", "zone size variance", "zone size entropy",
    ),
    "GLDZM": (
        "small distance emphasis", "large distance emphasis", "low grey level zone emphasis",
        "high grey level zone emphasis", "small distance low grey level emphasis",
        "small distance high grey level emphasis", "large distance low grey level emphasis",
        "large distance high grey level emphasis", "grey level non-uniformity",
        "normalised grey level non-uniformity", "zone distance non-uniformity",
        "normalised zone distance non-uniformity", "zone percentage", "grey level variance",
        "zone distance variance", "zone distance entropy",
    ),
    "NGLDM": (
        "low dependence emphasis", "high dependence emphasis", "low grey level count emphasis",
        "high grey level count emphasis", "low dependence low grey level emphasis",
        "low dependence high grey level emphasis", "high dependence low grey level emphasis",
        "high dependence high grey level emphasis", "grey level non-uniformity",
        "normalised grey level non-uniformity", "dependence count non-uniformity",
        "normalised dependence count non-uniformity", "dependence count percentage", "grey level variance",
        "dependence count variance", "dependence count entropy",
    ),
}
ZONE_FEATURES = {f: names + (("dependence count energy",) if f == "NGLDM" else ()) for f, names in _ZONE_NAMES.items()}
NGTDM_FEATURES = ("coarseness", "contrast", "busyness", "complexity", "strength")


def _entropy(p: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    logp = np.log2(np.where(p > 0, p, 1.0))
    return -np.sum(p * logp, axis=axes)


def glcm_formulas(mat: np.ndarray, i: np.ndarray, j: np.ndarray, count: np.ndarray, *, n_mats: int,
                  n_levels: int) -> dict[str, np.ndarray]:
    """GLCM features of K symmetric co-occurrence matrices given as their non-zero cells.

    Working on the cells, not on dense (K, Ng, Ng) arrays, keeps time and memory proportional to the number of
    distinct pairs, whatever N_g.

    Parameters
    ----------
    mat, i, j, count : (C,) ndarray
        Matrix index 0..K-1, grey levels i and j (1..Ng) and count of each non-zero cell; each (matrix, i, j) once,
        both (i, j) and (j, i) present.
    n_mats : int
        K.
    n_levels : int
        N_g, for the normalised inverse difference (moment) and the marginal arrays.
    """
    k, g = n_mats, n_levels
    mat = mat.astype(np.int64, copy=False)
    i = i.astype(np.float64)
    j = j.astype(np.float64)
    total = np.bincount(mat, weights=count, minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = count / total[mat]

        def per_matrix(w: np.ndarray) -> np.ndarray:
            return np.bincount(mat, weights=p * w, minlength=k)

        lv = np.arange(1, g + 1, dtype=np.float64)
        pi = np.bincount(mat * g + (i.astype(np.int64) - 1), weights=p, minlength=k * g).reshape(k, g)
        pd_ = np.bincount(mat * g + np.abs(i - j).astype(np.int64), weights=p, minlength=k * g).reshape(k, g)
        ps = np.bincount(mat * (2 * g - 1) + (i + j - 2).astype(np.int64), weights=p,
                         minlength=k * (2 * g - 1)).reshape(k, 2 * g - 1)
        kd = np.arange(g, dtype=np.float64)
        ks = np.arange(2, 2 * g + 1, dtype=np.float64)
        mu = pi @ lv  # joint average; the matrices are symmetric, so the row and column marginals are equal
        var = np.maximum(pi @ (lv * lv) - mu * mu, 0.0)
        mu_d = pd_ @ kd
        mu_s = ps @ ks
        hxy = -per_matrix(np.log2(p))
        hx = _entropy(pi, (1,))
        jmax = np.zeros(k)
        np.maximum.at(jmax, mat, p)
        diff = np.abs(i - j)
        ij = per_matrix(i * j)
        centred = i + j - 2 * mu[mat]
        off = diff > 0
        out = {
            "joint maximum": jmax,
            "joint average": mu,
            "joint variance": np.einsum("ki,ki->k", pi, (lv[None, :] - mu[:, None]) ** 2),
            "joint entropy": hxy,
            "difference average": mu_d,
            "difference variance": np.einsum("kd,kd->k", pd_, (kd[None, :] - mu_d[:, None]) ** 2),
            "difference entropy": _entropy(pd_, (1,)),
            "sum average": mu_s,
            "sum variance": np.einsum("ks,ks->k", ps, (ks[None, :] - mu_s[:, None]) ** 2),
            "sum entropy": _entropy(ps, (1,)),
            "angular second moment": per_matrix(p),
            "contrast": per_matrix(diff ** 2),
            "dissimilarity": per_matrix(diff),
            "inverse difference": per_matrix(1.0 / (1.0 + diff)),
            "normalised inverse difference": per_matrix(1.0 / (1.0 + diff / g)),
            "inverse difference moment": per_matrix(1.0 / (1.0 + diff ** 2)),
            "normalised inverse difference moment": per_matrix(1.0 / (1.0 + diff ** 2 / g ** 2)),
            "inverse variance": per_matrix(np.where(off, 1.0 / np.where(off, diff, 1.0) ** 2, 0.0)),
            "correlation": (ij - mu * mu) / var,
            "autocorrelation": ij,
            "cluster tendency": per_matrix(centred ** 2),
            "cluster shade": per_matrix(centred ** 3),
            "cluster prominence": per_matrix(centred ** 4),
            # HXY1 = HXY2 = HX + HY = 2 HX for a symmetric matrix
            "information correlation 1": (hxy - 2 * hx) / hx,
            "information correlation 2": np.sqrt(np.maximum(1.0 - np.exp(-2.0 * (2 * hx - hxy)), 0.0)),
        }
    empty = total == 0
    # np.bincount of no cells is int64 even with float weights (a one-voxel or an empty region): NaN needs floats
    out = {name: np.asarray(v, dtype=np.float64) for name, v in out.items()}
    for v in out.values():
        v[empty] = np.nan
        v[~np.isfinite(v)] = np.nan
    return out


def zone_formulas(counts: np.ndarray, n_voxels: np.ndarray, *, family: str,
                  j_values: np.ndarray) -> dict[str, np.ndarray]:
    """Features of run-length, size-zone, distance-zone or dependence matrices.

    Parameters
    ----------
    counts : (K, Ng, U) ndarray
        Counts per grey level 1..Ng and per column; column u stands for run length / zone size / distance /
        dependence count ``j_values[u]``.
    n_voxels : (K,) ndarray
        N_v of each matrix for the percentage feature (voxels, times the number of merged directions for GLRLM).
    family : {"GLRLM", "GLSZM", "GLDZM", "NGLDM"}
        Selects the feature names.
    j_values : (U,) ndarray
        The (positive) j value of each column.
    """
    names = ZONE_FEATURES[family]
    k, g, _ = counts.shape
    m = counts.astype(np.float64)
    ns = m.sum(axis=(1, 2))
    i = np.arange(1, g + 1, dtype=np.float64)
    j = np.asarray(j_values, dtype=np.float64)
    mi = m.sum(axis=2)  # (K, Ng)
    mj = m.sum(axis=1)  # (K, U)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = m / ns[:, None, None]
        pi = mi / ns[:, None]
        pj = mj / ns[:, None]
        inv_i2, i2 = 1.0 / i ** 2, i ** 2
        inv_j2, j2 = 1.0 / j ** 2, j ** 2
        mu_i = pi @ i
        mu_j = pj @ j
        values = (
            pj @ inv_j2,
            pj @ j2,
            pi @ inv_i2,
            pi @ i2,
            np.einsum("kij,i,j->k", p, inv_i2, inv_j2),
            np.einsum("kij,i,j->k", p, i2, inv_j2),
            np.einsum("kij,i,j->k", p, inv_i2, j2),
            np.einsum("kij,i,j->k", p, i2, j2),
            np.sum(mi * mi, axis=1) / ns,
            np.sum(mi * mi, axis=1) / ns ** 2,
            np.sum(mj * mj, axis=1) / ns,
            np.sum(mj * mj, axis=1) / ns ** 2,
            ns / np.asarray(n_voxels, dtype=np.float64),
            np.einsum("ki,ki->k", pi, (i[None, :] - mu_i[:, None]) ** 2),
            np.einsum("kj,kj->k", pj, (j[None, :] - mu_j[:, None]) ** 2),
            _entropy(p, (1, 2)),
        )
        if family == "NGLDM":
            values = values + (np.sum(p * p, axis=(1, 2)),)
    out = {name: np.asarray(v, dtype=np.float64) for name, v in zip(names, values, strict=True)}  # NaN needs floats
    empty = ns == 0
    for v in out.values():
        v[empty] = np.nan
    return out


def ngtdm_formulas(s: np.ndarray, n: np.ndarray, *, level_values: np.ndarray) -> dict[str, np.ndarray]:
    """NGTDM features.

    Parameters
    ----------
    s : (K, G) ndarray
        s_i: sum over voxels of grey level i (with at least one neighbour in the mask) of |i - mean neighbour level|.
    n : (K, G) ndarray
        n_i: number of such voxels.
    level_values : (G,) ndarray
        The grey level i of each column. Levels absent from every matrix may be left out: every NGTDM sum runs
        over the levels present (n_i > 0) only.
    """
    s = s.astype(np.float64)
    n = n.astype(np.float64)
    nvc = n.sum(axis=1)
    i = np.asarray(level_values, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = n / nvc[:, None]
        present = p > 0
        both = present[:, :, None] & present[:, None, :]
        ngp = present.sum(axis=1).astype(np.float64)
        d = i[:, None] - i[None, :]
        ps = p * s
        sum_ps = ps.sum(axis=1)
        sum_s = s.sum(axis=1)
        pp = p[:, :, None] * p[:, None, :]
        contrast = np.sum(pp * d ** 2, axis=(1, 2)) / (ngp * (ngp - 1)) * sum_s / nvc
        ip = i[None, :] * p
        busy_den = np.sum(np.where(both, np.abs(ip[:, :, None] - ip[:, None, :]), 0.0), axis=(1, 2))
        psum = p[:, :, None] + p[:, None, :]
        cplx = np.where(both, np.abs(d) * (ps[:, :, None] + ps[:, None, :]) / np.where(both, psum, 1.0), 0.0)
        strength_num = np.sum(np.where(both, psum * d ** 2, 0.0), axis=(1, 2))
        out = {
            "coarseness": 1.0 / sum_ps,
            "contrast": contrast,
            "busyness": sum_ps / busy_den,
            "complexity": cplx.sum(axis=(1, 2)) / nvc,
            "strength": strength_num / sum_s,
        }
    out = {name: np.asarray(v, dtype=np.float64) for name, v in out.items()}  # NaN needs floats
    for v in out.values():
        v[nvc == 0] = np.nan
        v[~np.isfinite(v)] = np.nan
    return out
