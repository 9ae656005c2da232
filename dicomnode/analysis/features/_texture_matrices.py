"""Texture matrix builders for :mod:`dicomnode.analysis.features.texture` (private).

Every builder works on a :class:`_Roi`: the grey levels cropped to the bounding box of the masks, with 0 outside the
intensity mask, padded by one voxel of zeros on every side so that a neighbour one step away is always a valid index.
Builders return the raw counts as compact arrays (per slice, per direction) and never compute features; the formulas
are in :mod:`dicomnode.analysis.features._texture_formulas`.

Conventions: axes (z, y, x); slices are the (y, x) planes stacked along z (axis 0); grey levels 1..n_levels; a
direction is a (dz, dy, dx) step whose first non-zero component is +1, so each of the 13 (3D) or 4 (in-plane)
directions stands for itself and its opposite.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import label as _label_same_value

# The 4 in-plane directions come first, so the 2D and 3D sets share them.
DIRECTIONS_2D: tuple[tuple[int, int, int], ...] = ((0, 0, 1), (0, 1, 0), (0, 1, 1), (0, 1, -1))
DIRECTIONS_3D: tuple[tuple[int, int, int], ...] = DIRECTIONS_2D + (
    (1, 0, 0), (1, 0, 1), (1, 0, -1), (1, 1, 0), (1, -1, 0), (1, 1, 1), (1, 1, -1), (1, -1, 1), (1, -1, -1),
)


@dataclass(frozen=True, slots=True)
class _Roi:
    """Cropped, zero-padded grey levels and masks.

    levels : (Z+2, Y+2, X+2) int32, 0 outside the intensity mask.
    morph : (Z+2, Y+2, X+2) bool, the morphological mask (for GLDZM distances).
    n_levels : number of grey levels N_g.
    """

    levels: np.ndarray
    morph: np.ndarray
    n_levels: int

    @property
    def core_shape(self) -> tuple[int, int, int]:
        z, y, x = self.levels.shape
        return z - 2, y - 2, x - 2

    def core(self, array: np.ndarray | None = None) -> np.ndarray:
        a = self.levels if array is None else array
        return a[1:-1, 1:-1, 1:-1]

    def shifted(self, step: tuple[int, int, int], array: np.ndarray | None = None) -> np.ndarray:
        """View of `array` (default: levels) at core voxel + step, aligned with the core."""
        a = self.levels if array is None else array
        z, y, x = self.core_shape
        dz, dy, dx = step
        return a[1 + dz:1 + dz + z, 1 + dy:1 + dy + y, 1 + dx:1 + dx + x]

    def slice_voxels(self) -> np.ndarray:
        """(Z,) int64: intensity-mask voxels per slice."""
        return np.count_nonzero(self.core() > 0, axis=(1, 2)).astype(np.int64)


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Smallest box holding every True voxel of a (Z, Y, X) mask, or None if it has none."""
    ranges = []
    for ax in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))
        if hit.size == 0:
            return None
        ranges.append((int(hit[0]), int(hit[-1]) + 1))
    return tuple(slice(a, b) for a, b in ranges)


def make_roi(levels: np.ndarray, intensity_mask: np.ndarray, morph_mask: np.ndarray, n_levels: int) -> _Roi | None:
    """Crop to the bounding box of both masks and pad by one voxel; None if the intensity mask is empty.

    Raises ValueError if a grey level inside the intensity mask lies outside 1..n_levels.
    """
    box_i = bounding_box(intensity_mask)
    if box_i is None:
        return None
    box_m = box_i if morph_mask is intensity_mask else bounding_box(morph_mask)
    if box_m is not None:
        box_i = tuple(slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(box_i, box_m))
    imask = intensity_mask[box_i]
    inside = levels[box_i][imask]
    lo, hi = int(inside.min()), int(inside.max())
    if lo < 1 or hi > n_levels:
        raise ValueError(f"grey levels inside the mask span {lo}..{hi}, outside 1..{n_levels}; "
                         "re-segment or discretise with the same n_levels")
    lv = np.zeros(imask.shape, dtype=np.int32)
    lv[imask] = inside
    return _Roi(levels=np.pad(lv, 1), morph=np.pad(morph_mask[box_i], 1), n_levels=n_levels)


# --------------------------------------------------------------------------------------------------------- GLCM
_DENSE_KEYS = 1 << 22  # key spaces up to this size are counted with bincount, larger ones by sorting


def coalesce(key: np.ndarray, weights: np.ndarray | None, n_keys: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct keys (sorted) and their summed weights (or counts if `weights` is None)."""
    if n_keys <= _DENSE_KEYS:
        total = np.bincount(key, weights=weights, minlength=n_keys)
        nz = np.flatnonzero(total)
        return nz, total[nz]
    uniq, inverse = np.unique(key, return_inverse=True)
    return uniq, np.bincount(inverse, weights=weights, minlength=uniq.size)


@dataclass(frozen=True, slots=True)
class Cooc:
    """Sparse symmetric co-occurrence counts: matrix index, grey levels i and j (1..Ng), count (both orders)."""

    mat: np.ndarray
    i: np.ndarray
    j: np.ndarray
    count: np.ndarray

    @staticmethod
    def merge(parts: list[Cooc], mats: list[np.ndarray], n_mats: int, n_levels: int) -> Cooc:
        """Re-index each part's matrices by `mats` (old index -> new index) and sum the counts that meet."""
        g = n_levels
        key = np.concatenate([(m[p.mat] * g + (p.i - 1)) * g + (p.j - 1) for p, m in zip(parts, mats)])
        weight = np.concatenate([p.count for p in parts]).astype(np.float64)
        uniq, total = coalesce(key, weight, n_mats * g * g)
        mat, rest = np.divmod(uniq, g * g)
        i, j = np.divmod(rest, g)
        return Cooc(mat=mat, i=i + 1, j=j + 1, count=total)


def glcm_counts(roi: _Roi, d: tuple[int, int, int], *, per_slice: bool) -> Cooc:
    """Symmetric co-occurrence counts at Chebyshev distance 1 along `d` (pairs counted in both orders).

    With `per_slice` the matrix index is the slice of the pair (meant for in-plane directions), else 0.
    """
    g = roi.n_levels
    nz = roi.core_shape[0] if per_slice else 1
    a = np.ascontiguousarray(roi.core()).ravel()
    b = roi.shifted(d).ravel()
    idx = np.flatnonzero((a > 0) & (b > 0))
    av = a[idx].astype(np.int64) - 1
    bv = b[idx].astype(np.int64) - 1
    mat = idx // (roi.core_shape[1] * roi.core_shape[2]) if per_slice else np.zeros(idx.size, dtype=np.int64)
    key = np.concatenate([(mat * g + av) * g + bv, (mat * g + bv) * g + av])
    uniq, total = coalesce(key, None, nz * g * g)
    m, rest = np.divmod(uniq, g * g)
    i, j = np.divmod(rest, g)
    return Cooc(mat=m, i=i + 1, j=j + 1, count=total.astype(np.float64))


# -------------------------------------------------------------------------------------------------------- GLRLM
@dataclass(frozen=True, slots=True)
class Runs:
    """All runs along one direction: grey level, run length (voxels) and slice index of the run's first voxel."""

    level: np.ndarray
    length: np.ndarray
    z: np.ndarray


def runs_along(roi: _Roi, d: tuple[int, int, int]) -> Runs:
    """Maximal runs of equal grey level inside the intensity mask along direction `d`.

    A run starts where the previous voxel (-d) differs or lies outside the mask and ends where the next voxel (+d)
    does. Starts and ends are paired by sorting both on (line, position along the line).
    """
    core = roi.core()
    inside = core > 0
    starts = np.nonzero(inside & (roi.shifted((-d[0], -d[1], -d[2])) != core))
    ends = np.nonzero(inside & (roi.shifted(d) != core))
    axis = next(i for i in range(3) if d[i] != 0)  # d[axis] == +1
    s = max(roi.core_shape) + 2
    base = 3 * s

    def order_key(coords: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
        t = coords[axis].astype(np.int64)
        line = np.zeros_like(t)
        for c in range(3):
            line = line * base + (coords[c] - t * d[c] + s)
        return line * s + t, t

    ks, ts = order_key(starts)
    ke, te = order_key(ends)
    os_ = np.argsort(ks, kind="stable")
    oe = np.argsort(ke, kind="stable")
    length = te[oe] - ts[os_] + 1
    zs = starts[0][os_]
    level = core[starts[0][os_], starts[1][os_], starts[2][os_]]
    return Runs(level=level, length=length, z=zs)


# ------------------------------------------------------------------------------------------------- GLSZM / GLDZM
@dataclass(frozen=True, slots=True)
class Zones:
    """Connected zones of equal grey level: level, size (voxels), slice (2D zones; 0 in 3D), distance to the edge."""

    level: np.ndarray
    size: np.ndarray
    z: np.ndarray
    distance: np.ndarray | None


_CROSS_2D = np.zeros((3, 3, 3), dtype=bool)
_CROSS_2D[1, 1, :] = _CROSS_2D[1, :, 1] = True


def zones(roi: _Roi, *, in_plane: bool, with_distance: bool) -> Zones:
    """Zones linked by 8-connectivity within slices (`in_plane`) or 26-connectivity in 3D.

    With `with_distance`, each zone also gets its GLDZM distance: the smallest, over its voxels, of the taxicab
    distance (4-connected in plane, 6-connected in 3D) to the nearest voxel outside the morphological mask, so edge
    voxels are at distance 1.
    """
    core = roi.core()
    nz = core.shape[0]
    if in_plane:
        # Interleave empty planes: 26-connectivity then never links two slices, and links 8-connected in-plane.
        spread = np.zeros((2 * nz + 1,) + core.shape[1:], dtype=core.dtype)
        spread[1::2] = core
        lab = _label_same_value(spread, background=0, connectivity=3)[1::2]
    else:
        lab = _label_same_value(core, background=0, connectivity=3)
    flat = lab.ravel()
    idx = np.flatnonzero(flat)
    ids = flat[idx]
    n = int(lab.max()) if idx.size else 0
    size = np.bincount(ids, minlength=n + 1)[1:]
    level = np.zeros(n + 1, dtype=np.int64)
    level[ids] = core.ravel()[idx]
    zslice = np.zeros(n + 1, dtype=np.int64)
    if in_plane:
        zslice[ids] = idx // (core.shape[1] * core.shape[2])
    distance = None
    if with_distance:
        metric = _CROSS_2D if in_plane else "taxicab"
        dist = ndi.distance_transform_cdt(roi.morph, metric=metric)
        dcore = roi.core(dist).ravel()[idx].astype(np.int64)
        big = np.iinfo(np.int64).max
        dmin = np.full(n + 1, big, dtype=np.int64)
        np.minimum.at(dmin, ids, dcore)
        # A zone voxel outside the morphological mask (distance 0) counts as an edge voxel: IBSI defines no such case.
        distance = np.maximum(dmin[1:], 1)
    return Zones(level=level[1:], size=size, z=zslice[1:], distance=distance)


# ------------------------------------------------------------------------------------------------- NGTDM / NGLDM
def neighbour_sums(roi: _Roi, steps: tuple[tuple[int, int, int], ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Over the given neighbour steps (both signs of each): sum of grey levels in the mask, number of neighbours in
    the mask, number of neighbours with the same grey level (NGLDM dependence, alpha = 0). Each (Z, Y, X) int32."""
    core = roi.core()
    inside = (roi.levels > 0).astype(np.int32)
    total = np.zeros(core.shape, dtype=np.int32)
    count = np.zeros(core.shape, dtype=np.int32)
    same = np.zeros(core.shape, dtype=np.int32)
    for d in steps:
        for sign in (1, -1):
            step = (sign * d[0], sign * d[1], sign * d[2])
            nb = roi.shifted(step)
            total += nb
            count += roi.shifted(step, inside)
            same += nb == core
    return total, count, same
