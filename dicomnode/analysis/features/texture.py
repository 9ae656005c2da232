"""IBSI-1 texture features: GLCM, GLRLM, GLSZM, GLDZM, NGTDM and NGLDM, with every IBSI aggregation.

Settings are the IBSI-1 defaults the reference values assume: symmetric GLCM at Chebyshev distance 1; runs along the
13 (3D) or 4 (in-plane) directions; zones linked by 26-connectivity (3D) or 8-connectivity (in plane); GLDZM distance
to the edge of the morphological mask by 6- (3D) or 4-connectivity (in plane), edge voxels at distance 1; NGTDM and
NGLDM over the 26 (3D) or 8 (in-plane) neighbours at Chebyshev distance 1 that lie in the intensity mask; NGLDM
coarseness alpha = 0, so a neighbour is dependent when it has the same grey level, and the dependence count includes
the centre voxel (j = 1 + dependent neighbours); no distance weighting. Slices are the (y, x) planes stacked along
z (axis 0).

Texture works on grid steps, not millimetres, so no function here takes a spacing: resample first (in
``features.processing``) if the features must be comparable across voxel sizes.

Aggregations (the ``aggregation`` of each :class:`FeatureValue`, as in the IBSI reference tables):

* GLCM, GLRLM: ``"2D, averaged"`` (one matrix per slice and in-plane direction, features averaged),
  ``"2D, slice-merged"`` (directions merged per slice, averaged over slices), ``"2.5D, direction-merged"`` (slices
  merged per in-plane direction, averaged over directions), ``"2.5D, merged"`` (one matrix of all slices and in-plane
  directions), ``"3D, averaged"`` (one matrix per 3D direction, averaged), ``"3D, merged"`` (one matrix of all 13);
* GLSZM, GLDZM, NGTDM, NGLDM: ``"2D"`` (per slice, averaged), ``"2.5D"`` (slice matrices merged), ``"3D"``.

Merging sums the matrix counts before computing the feature. For GLRLM run percentage, N_v is multiplied by the
number of merged directions. Averages skip matrices without counts (a slice without ROI voxels, a direction without
pairs) and matrices for which a feature is undefined (NaN, e.g. GLCM correlation of a single grey level); a feature
that is undefined everywhere is NaN.

References
----------
Zwanenburg A. et al., The Image Biomarker Standardization Initiative: standardized quantitative radiomics for
high-throughput image-based phenotyping, Radiology 2020;295:328-338. IBSI reference manual, theibsi/ibsi-doc
``docs/03_Image_features.rst``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from dicomnode.analysis.features._texture_formulas import (
    GLCM_FEATURES,
    NGTDM_FEATURES,
    ZONE_FEATURES,
    glcm_formulas,
    ngtdm_formulas,
    zone_formulas,
)
from dicomnode.analysis.features._texture_matrices import (
    DIRECTIONS_2D,
    DIRECTIONS_3D,
    Cooc,
    _Roi,
    glcm_counts,
    make_roi,
    neighbour_sums,
    runs_along,
    zones,
)
from dicomnode.analysis.features.base import FeatureValue

__all__ = [
    "AGGREGATIONS",
    "FAMILIES",
    "FEATURES",
    "gldzm_features",
    "glcm_features",
    "glrlm_features",
    "glszm_features",
    "ngldm_features",
    "ngtdm_features",
    "texture_features",
]

FAMILIES = ("GLCM", "GLRLM", "GLSZM", "GLDZM", "NGTDM", "NGLDM")
_DIRECTIONAL = ("2D, averaged", "2D, slice-merged", "2.5D, direction-merged", "2.5D, merged", "3D, averaged",
                "3D, merged")
_ZONAL = ("2D", "2.5D", "3D")
AGGREGATIONS: dict[str, tuple[str, ...]] = {
    "GLCM": _DIRECTIONAL, "GLRLM": _DIRECTIONAL,
    "GLSZM": _ZONAL, "GLDZM": _ZONAL, "NGTDM": _ZONAL, "NGLDM": _ZONAL,
}
FEATURES: dict[str, tuple[str, ...]] = {"GLCM": GLCM_FEATURES, "NGTDM": NGTDM_FEATURES, **ZONE_FEATURES}
_CHUNK_ELEMENTS = 1 << 20  # elements per formula call (see _batched)


# ----------------------------------------------------------------------------------------------- public API
def texture_features(levels: np.ndarray, intensity_mask: np.ndarray, n_levels: int, *,
                     morph_mask: np.ndarray | None = None,
                     families: Sequence[str] = FAMILIES,
                     aggregations: Sequence[str] | None = None) -> list[FeatureValue]:
    """IBSI-1 texture features of a region, for the requested families and aggregations.

    Parameters
    ----------
    levels : (Z, Y, X) ndarray of int
        Discretised grey levels, 1..`n_levels` inside `intensity_mask`; values outside it are ignored.
    intensity_mask : (Z, Y, X) ndarray of bool
        The intensity mask of the ROI (after re-segmentation): the voxels that enter the texture matrices.
    n_levels : int
        N_g, the number of grey levels of the discretisation (not only those present), e.g. 32 for fixed bin number
        32. It sets the matrix size and enters the normalised GLCM inverse differences.
    morph_mask : (Z, Y, X) ndarray of bool, optional
        The morphological mask, used only for the GLDZM distance to the ROI edge. Default: `intensity_mask`.
    families : sequence of str, optional
        Any of "GLCM", "GLRLM", "GLSZM", "GLDZM", "NGTDM", "NGLDM". Default: all six.
    aggregations : sequence of str, optional
        Aggregation names (e.g. "3D, merged", "2D") or dimensionality prefixes ("2D", "2.5D", "3D"), which select
        every aggregation of that dimensionality. Default None: every aggregation of each family.

    Returns
    -------
    list of FeatureValue
        Family by family (in the order of `families`), aggregation by aggregation, feature by feature; family,
        feature and aggregation names as in the IBSI reference tables. Values are dimensionless (grey-level, count
        or voxel-step based). An empty intensity mask gives NaN values.

    Raises
    ------
    ValueError
        For an unknown family or aggregation, arrays that are not 3D or differ in shape, a non-integer `levels`,
        `n_levels` < 1, or grey levels outside 1..`n_levels` inside the mask.

    References
    ----------
    IBSI reference manual, theibsi/ibsi-doc ``docs/03_Image_features.rst``.
    """
    fams = _check_families(families)
    wanted = _check_aggregations(aggregations)
    roi = _prepare(levels, intensity_mask, n_levels, morph_mask)
    out: list[FeatureValue] = []
    for family in fams:
        aggs = _select(family, wanted)
        if aggs:
            out.extend(_FAMILY_FUNCS[family](roi, aggs, n_levels))
    return out


def glcm_features(levels: np.ndarray, intensity_mask: np.ndarray, n_levels: int, *,
                  aggregations: Sequence[str] | None = None) -> list[FeatureValue]:
    """Grey level co-occurrence matrix features (25), symmetric, Chebyshev distance 1.

    Parameters and Raises as :func:`texture_features`. Returns the "GLCM" rows.
    """
    return texture_features(levels, intensity_mask, n_levels, families=("GLCM",), aggregations=aggregations)


def glrlm_features(levels: np.ndarray, intensity_mask: np.ndarray, n_levels: int, *,
                   aggregations: Sequence[str] | None = None) -> list[FeatureValue]:
    """Grey level run length matrix features (16). Parameters and Raises as :func:`texture_features`."""
    return texture_features(levels, intensity_mask, n_levels, families=("GLRLM",), aggregations=aggregations)


def glszm_features(levels: np.ndarray, intensity_mask: np.ndarray, n_levels: int, *,
                   aggregations: Sequence[str] | None = None) -> list[FeatureValue]:
    """Grey level size zone matrix features (16). Parameters and Raises as :func:`texture_features`."""
    return texture_features(levels, intensity_mask, n_levels, families=("GLSZM",), aggregations=aggregations)


def gldzm_features(levels: np.ndarray, intensity_mask: np.ndarray, n_levels: int, *,
                   morph_mask: np.ndarray | None = None,
                   aggregations: Sequence[str] | None = None) -> list[FeatureValue]:
    """Grey level distance zone matrix features (16). Parameters and Raises as :func:`texture_features`."""
    return texture_features(levels, intensity_mask, n_levels, morph_mask=morph_mask, families=("GLDZM",),
                            aggregations=aggregations)


def ngtdm_features(levels: np.ndarray, intensity_mask: np.ndarray, n_levels: int, *,
                   aggregations: Sequence[str] | None = None) -> list[FeatureValue]:
    """Neighbourhood grey tone difference matrix features (5). Parameters and Raises as :func:`texture_features`."""
    return texture_features(levels, intensity_mask, n_levels, families=("NGTDM",), aggregations=aggregations)


def ngldm_features(levels: np.ndarray, intensity_mask: np.ndarray, n_levels: int, *,
                   aggregations: Sequence[str] | None = None) -> list[FeatureValue]:
    """Neighbouring grey level dependence matrix features (17). Parameters and Raises as :func:`texture_features`."""
    return texture_features(levels, intensity_mask, n_levels, families=("NGLDM",), aggregations=aggregations)


# ------------------------------------------------------------------------------------------------ checks
def _check_families(families: Sequence[str]) -> tuple[str, ...]:
    if isinstance(families, str):
        raise ValueError(f"families must be a sequence of names, e.g. ('GLCM',), got the string {families!r}")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown texture families {unknown}; use any of {list(FAMILIES)}")
    return tuple(dict.fromkeys(families))


def _check_aggregations(aggregations: Sequence[str] | None) -> frozenset[str] | None:
    if aggregations is None:
        return None
    if isinstance(aggregations, str):
        raise ValueError(f"aggregations must be a sequence, e.g. ('3D',), got the string {aggregations!r}")
    known = set(_DIRECTIONAL) | set(_ZONAL)
    unknown = [a for a in aggregations if a not in known]
    if unknown:
        raise ValueError(f"unknown aggregations {unknown}; use names from {sorted(known)} or the prefixes "
                         "'2D', '2.5D', '3D'")
    return frozenset(aggregations)


def _select(family: str, wanted: frozenset[str] | None) -> tuple[str, ...]:
    aggs = AGGREGATIONS[family]
    if wanted is None:
        return aggs
    return tuple(a for a in aggs if a in wanted or a.split(",")[0] in wanted)


def _prepare(levels: np.ndarray, intensity_mask: np.ndarray, n_levels: int,
             morph_mask: np.ndarray | None) -> _Roi | None:
    if isinstance(n_levels, bool) or not isinstance(n_levels, (int, np.integer)) or n_levels < 1:
        raise ValueError(f"n_levels must be an integer >= 1 (the number of grey levels), got {n_levels!r}")
    levels = np.asarray(levels)
    if levels.ndim != 3:
        raise ValueError(f"levels must be a (Z, Y, X) array, got {levels.ndim} dimensions; use levels[None] for "
                         "a single slice")
    if not np.issubdtype(levels.dtype, np.integer):
        raise ValueError(f"levels must hold integer grey levels, got dtype {levels.dtype}; discretise first")
    imask = np.asarray(intensity_mask).astype(bool, copy=False)
    mmask = imask if morph_mask is None else np.asarray(morph_mask).astype(bool, copy=False)
    for name, m in (("intensity_mask", imask), ("morph_mask", mmask)):
        if m.shape != levels.shape:
            raise ValueError(f"{name} has shape {m.shape}, levels has {levels.shape}; they must match")
    return make_roi(levels, imask, mmask, int(n_levels))


# ------------------------------------------------------------------------------------------------ helpers
def _batched(fn: Callable[..., dict[str, np.ndarray]], *stacks: np.ndarray, **kwargs) -> dict[str, np.ndarray]:
    """Apply a formula to stacks of matrices in chunks along the first axis; concatenate the results.

    A chunk holds about `_CHUNK_ELEMENTS` elements of the largest pairwise temporary (G x G per NGTDM matrix, the
    matrix itself otherwise), which bounds memory for many slices and many grey levels."""
    k = stacks[0].shape[0]
    per_matrix = max(int(np.prod(stacks[0].shape[1:])), stacks[0].shape[-1] ** 2)
    chunk = max(1, _CHUNK_ELEMENTS // per_matrix)
    parts = [fn(*(s[a:a + chunk] for s in stacks), **kwargs) for a in range(0, max(k, 1), chunk)]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def _mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _emit(family: str, aggregation: str, table: dict[str, np.ndarray]) -> list[FeatureValue]:
    return [FeatureValue(family, name, aggregation, _mean(table[name])) for name in FEATURES[family]]


def _nan_rows(family: str, aggs: Sequence[str]) -> list[FeatureValue]:
    return [FeatureValue(family, f, a, float("nan")) for a in aggs for f in FEATURES[family]]


def _zone_counts(key: np.ndarray, level: np.ndarray, j: np.ndarray, n_keys: int,
                 n_levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense (n_keys, Ng, U) counts over the distinct j values present; returns (counts, j_values)."""
    j = j.astype(np.int64, copy=False)
    present = np.bincount(j, minlength=2) > 0  # j >= 0 small integers: index the distinct values without sorting
    present[1] |= not present.any()  # no entries at all: one dummy column, j = 1
    j_values = np.flatnonzero(present)
    j_index = (np.cumsum(present) - 1)[j]
    u = j_values.size
    flat = (key.astype(np.int64) * n_levels + (level.astype(np.int64) - 1)) * u + j_index
    counts = np.bincount(flat, minlength=n_keys * n_levels * u).reshape(n_keys, n_levels, u)
    return counts, j_values


def _needs(aggs: Sequence[str], prefix: tuple[str, ...]) -> bool:
    return any(a.split(",")[0] in prefix for a in aggs)


# ------------------------------------------------------------------------------------------------ families
def _glcm(roi: _Roi | None, aggs: Sequence[str], n_levels: int) -> list[FeatureValue]:
    if roi is None:
        return _nan_rows("GLCM", aggs)
    nz = roi.core_shape[0]
    # One sparse matrix per slice for each in-plane direction; one matrix for each other 3D direction.
    in_plane = [glcm_counts(roi, d, per_slice=True) for d in DIRECTIONS_2D]
    zs = np.arange(nz)
    plans: dict[str, tuple[list[Cooc], list[np.ndarray], int]] = {
        "2D, averaged": (in_plane, [zs + k * nz for k in range(4)], 4 * nz),
        "2D, slice-merged": (in_plane, [zs] * 4, nz),
        "2.5D, direction-merged": (in_plane, [np.full(nz, k) for k in range(4)], 4),
        "2.5D, merged": (in_plane, [np.zeros(nz, dtype=np.int64)] * 4, 1),
    }
    if _needs(aggs, ("3D",)):
        volume = in_plane + [glcm_counts(roi, d, per_slice=False) for d in DIRECTIONS_3D[4:]]
        plans["3D, averaged"] = (volume, [np.full(nz, k) for k in range(4)] + [np.array([k]) for k in range(4, 13)], 13)
        plans["3D, merged"] = (volume, [np.zeros(nz, dtype=np.int64)] * 4 + [np.zeros(1, dtype=np.int64)] * 9, 1)
    out: list[FeatureValue] = []
    for agg in aggs:
        parts, mats, n_mats = plans[agg]
        m = Cooc.merge(parts, mats, n_mats, n_levels)
        table = glcm_formulas(m.mat, m.i, m.j, m.count, n_mats=n_mats, n_levels=n_levels)
        out += _emit("GLCM", agg, table)
    return out


def _glrlm(roi: _Roi | None, aggs: Sequence[str], n_levels: int) -> list[FeatureValue]:
    if roi is None:
        return _nan_rows("GLRLM", aggs)
    dirs = DIRECTIONS_3D if _needs(aggs, ("3D",)) else DIRECTIONS_2D
    runs = [runs_along(roi, d) for d in dirs]
    nz = roi.core_shape[0]
    slice_voxels = roi.slice_voxels()
    n_total = int(slice_voxels.sum())
    level = np.concatenate([r.level for r in runs])
    length = np.concatenate([r.length for r in runs])
    z = np.concatenate([r.z for r in runs])
    direction = np.concatenate([np.full(r.level.size, k, dtype=np.int64) for k, r in enumerate(runs)])
    in_plane = direction < 4
    out: list[FeatureValue] = []
    for agg in aggs:
        sel = in_plane if agg.startswith("2") else slice(None)
        if agg == "2D, averaged":
            key, n_keys, nv = direction[sel] * nz + z[sel], 4 * nz, np.tile(slice_voxels, 4)
        elif agg == "2D, slice-merged":
            key, n_keys, nv = z[sel], nz, 4 * slice_voxels
        elif agg == "2.5D, direction-merged":
            key, n_keys, nv = direction[sel], 4, np.full(4, n_total)
        elif agg == "2.5D, merged":
            key, n_keys, nv = np.zeros(int(in_plane.sum()), dtype=np.int64), 1, np.array([4 * n_total])
        elif agg == "3D, averaged":
            key, n_keys, nv = direction, 13, np.full(13, n_total)
        else:  # "3D, merged"
            key, n_keys, nv = np.zeros(level.size, dtype=np.int64), 1, np.array([13 * n_total])
        counts, j_values = _zone_counts(key, level[sel], length[sel], n_keys, n_levels)
        out += _emit("GLRLM", agg, _batched(zone_formulas, counts, nv, family="GLRLM", j_values=j_values))
    return out


def _zone_family(family: str, roi: _Roi | None, aggs: Sequence[str], n_levels: int) -> list[FeatureValue]:
    if roi is None:
        return _nan_rows(family, aggs)
    with_distance = family == "GLDZM"
    slice_voxels = roi.slice_voxels()
    nz = roi.core_shape[0]
    out: list[FeatureValue] = []
    zones_2d = zones(roi, in_plane=True, with_distance=with_distance) if _needs(aggs, ("2D", "2.5D")) else None
    for agg in aggs:
        zn = zones_2d if agg != "3D" else zones(roi, in_plane=False, with_distance=with_distance)
        j = zn.distance if with_distance else zn.size
        if agg == "2D":
            key, n_keys, nv = zn.z, nz, slice_voxels
        else:
            key, n_keys, nv = np.zeros(zn.level.size, dtype=np.int64), 1, np.array([slice_voxels.sum()])
        counts, j_values = _zone_counts(key, zn.level, j, n_keys, n_levels)
        out += _emit(family, agg, _batched(zone_formulas, counts, nv, family=family, j_values=j_values))
    return out


def _neighbourhood_family(family: str, roi: _Roi | None, aggs: Sequence[str], n_levels: int) -> list[FeatureValue]:
    if roi is None:
        return _nan_rows(family, aggs)
    core = roi.core()
    nz = roi.core_shape[0]
    inside = core > 0
    total, count, same = neighbour_sums(roi, DIRECTIONS_2D)
    sums = {}
    if _needs(aggs, ("2D", "2.5D")):
        sums["2D"] = (total, count, same)
    if "3D" in aggs:
        t3, c3, s3 = neighbour_sums(roi, DIRECTIONS_3D[4:])
        sums["3D"] = (total + t3, count + c3, same + s3)
    out: list[FeatureValue] = []
    for agg in aggs:
        t, c, s = sums["3D" if agg == "3D" else "2D"]
        zidx = np.nonzero(inside)[0] if agg == "2D" else None
        n_keys = nz if agg == "2D" else 1
        if family == "NGTDM":
            valid = inside & (c > 0)  # voxels without a neighbour in the mask do not enter the NGTDM
            lv = core[valid].astype(np.int64)
            with np.errstate(invalid="ignore", divide="ignore"):
                diff = np.abs(lv - t[valid] / c[valid])
            key = (np.nonzero(valid)[0] * n_levels if agg == "2D" else 0) + (lv - 1)
            s_i = np.bincount(key, weights=diff, minlength=n_keys * n_levels).reshape(n_keys, n_levels)
            n_i = np.bincount(key, minlength=n_keys * n_levels).reshape(n_keys, n_levels)
            present = n_i.sum(axis=0) > 0  # NGTDM sums run over the levels present only
            if not present.any():  # no voxel has a neighbour in the mask (one voxel): the NGTDM is empty
                out += _nan_rows(family, (agg,))
                continue
            out += _emit(family, agg, _batched(ngtdm_formulas, s_i[:, present], n_i[:, present],
                                               level_values=np.flatnonzero(present) + 1))
        else:
            key = zidx if agg == "2D" else np.zeros(int(inside.sum()), dtype=np.int64)
            nv = roi.slice_voxels() if agg == "2D" else np.array([int(inside.sum())])
            counts, j_values = _zone_counts(key, core[inside], s[inside] + 1, n_keys, n_levels)
            out += _emit(family, agg, _batched(zone_formulas, counts, nv, family=family, j_values=j_values))
    return out


_FAMILY_FUNCS: dict[str, Callable[[_Roi | None, Sequence[str], int], list[FeatureValue]]] = {
    "GLCM": _glcm,
    "GLRLM": _glrlm,
    "GLSZM": lambda roi, aggs, g: _zone_family("GLSZM", roi, aggs, g),
    "GLDZM": lambda roi, aggs, g: _zone_family("GLDZM", roi, aggs, g),
    "NGTDM": lambda roi, aggs, g: _neighbourhood_family("NGTDM", roi, aggs, g),
    "NGLDM": lambda roi, aggs, g: _neighbourhood_family("NGLDM", roi, aggs, g),
}

