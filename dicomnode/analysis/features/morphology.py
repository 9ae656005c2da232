"""IBSI-1 morphological features.

The surface is a marching-cubes mesh (isovalue 0.5) of the morphological mask padded by one empty voxel, in mm.
Mesh volume and area come from the faces (signed tetrahedra with the origin; half cross products), the voxel point
set (voxel centres in mm) gives the principal axes, the intensity mask and the image give the intensity-weighted
features. Moran's I and Geary's C are exact over all voxel pairs, with the pair sums done as FFT convolutions with an
inverse-distance kernel: O(B log B) for a bounding box of B voxels instead of O(N^2) for N voxels.

References
----------
IBSI reference manual (theibsi/ibsi-doc ``docs/03_Image_features.rst``), "Morphological features".
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numpy.polynomial import legendre
from scipy import fft as sfft
from scipy.spatial import ConvexHull
from skimage.measure import marching_cubes

from dicomnode.analysis.features.base import FeatureValue
from dicomnode.analysis.features.processing import check_spacing, roi_bounding_box
from dicomnode.analysis.threads import thread_budget

__all__ = [
    "ellipsoid_area",
    "max_pairwise_distance",
    "mesh",
    "mesh_volume_area",
    "minimum_bounding_box",
    "moran_geary",
    "morphology_features",
]

_MORPH = "morphology"


def mesh(morph_mask: np.ndarray, spacing_mm: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Marching-cubes surface of a binary mask (isovalue 0.5, mask padded by one empty voxel).

    Parameters
    ----------
    morph_mask : (Z, Y, X) ndarray of bool
        Morphological ROI mask (at least one voxel). Crop it to the ROI first for speed.
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x), in mm.

    Returns
    -------
    vertices : (V, 3) ndarray of float64
        Vertex positions (z, y, x) in mm, relative to the centre of the voxel before the mask's first voxel.
    faces : (F, 3) ndarray of int
        Triangles as vertex indices, consistently oriented.
    """
    spacing = check_spacing(spacing_mm)
    padded = np.pad(np.asarray(morph_mask, dtype=np.float32), 1)
    vertices, faces, _, _ = marching_cubes(padded, level=0.5, spacing=spacing, allow_degenerate=True)
    return vertices.astype(np.float64), faces


#: Faces per chunk of :func:`mesh_volume_area` (its (chunk, 3) float64 temporaries: 1.5 MiB each).
_FACE_CHUNK = 1 << 16


def mesh_volume_area(vertices: np.ndarray, faces: np.ndarray) -> tuple[float, float]:
    """Volume (|sum of signed tetrahedra a.(b x c)/6|, mm^3) and area (sum of |ab x ac|/2, mm^2) of a closed mesh.

    The per-face vectors are made :data:`_FACE_CHUNK` faces at a time into two (F, 3) arrays (the first corners and
    ``b x c``) and one (F,) array of the area terms, each sum then taken over the whole array as before: the same
    values, bit for bit, with two (F, 3) float64 arrays in memory instead of about five."""
    # Centre first: the volume does not depend on the origin for a closed mesh, and centring limits round-off.
    v = vertices - vertices.mean(axis=0)
    n = len(faces)
    a = v[faces[:, 0]]
    bc = np.empty((n, 3), dtype=v.dtype)
    for s in range(0, n, _FACE_CHUNK):
        f = faces[s:s + _FACE_CHUNK]
        _cross(v[f[:, 1]], v[f[:, 2]], out=bc[s:s + _FACE_CHUNK])
    volume = abs(float(np.einsum("ij,ij->", a, bc))) / 6.0
    del bc
    norms = np.empty(n, dtype=v.dtype)
    for s in range(0, n, _FACE_CHUNK):
        f, a_s = faces[s:s + _FACE_CHUNK], a[s:s + _FACE_CHUNK]
        norms[s:s + _FACE_CHUNK] = np.linalg.norm(_cross(v[f[:, 1]] - a_s, v[f[:, 2]] - a_s), axis=1)
    area = float(norms.sum()) / 2.0
    return volume, area


def _cross(b: np.ndarray, c: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``np.cross(b, c)`` of (N, 3) arrays, component by component (the same products and differences, bit for
    bit, in about half the time of numpy's general version); into ``out`` when given."""
    if out is None:
        out = np.empty(np.broadcast_shapes(b.shape, c.shape), dtype=np.result_type(b, c))
    for k, (i, j) in enumerate(((1, 2), (2, 0), (0, 1))):
        np.multiply(b[:, i], c[:, j], out=out[:, k])
        out[:, k] -= b[:, j] * c[:, i]
    return out


def max_pairwise_distance(points: np.ndarray, *, block: int = 2048) -> float:
    """Largest Euclidean distance between two of the points (exact, blocked so memory stays O(block * P)).

    Parameters
    ----------
    points : (P, D) ndarray
        Point coordinates, e.g. convex hull vertices in mm.

    Returns
    -------
    float
        The diameter of the point set, in the points' unit; 0 for fewer than 2 points.
    """
    p = np.asarray(points, dtype=np.float64)
    if len(p) < 2:
        return 0.0
    p = p - p.mean(axis=0)
    sq = np.einsum("ij,ij->i", p, p)
    best = 0.0
    for i in range(0, len(p), block):
        q = p[i : i + block]
        d2 = sq[i : i + block, None] + sq[None, :] - 2.0 * (q @ p.T)
        best = max(best, float(d2.max()))
    return math.sqrt(max(best, 0.0))


def ellipsoid_area(a: float, b: float, c: float, *, n_terms: int = 20) -> float:
    """IBSI approximation of an ellipsoid's surface area by the Legendre series, stopped after nu = `n_terms`.

    ``A = 4 pi a b sum_nu (alpha beta)^nu / (1 - 4 nu^2) P_nu((alpha^2 + beta^2) / (2 alpha beta))`` with
    ``alpha = sqrt(1 - b^2/a^2)``, ``beta = sqrt(1 - c^2/a^2)``. Each term is expanded as a polynomial in alpha and
    beta, so spheres and spheroids (alpha beta = 0) need no special case.

    This is the manual's definition, which the IBSI references follow (phantom: area density (AEE) 1.36); it is not
    the exact ellipsoid area (that series takes both eccentricities relative to the least axis,
    sqrt(1 - c^2/a^2) and sqrt(1 - c^2/b^2)): for the phantom's semi-axes it is ~4 % lower than exact.

    Parameters
    ----------
    a, b, c : float
        Semi-axis lengths, a >= b >= c > 0, in mm.

    Returns
    -------
    float
        Surface area, in mm^2.
    """
    a, b, c = sorted((float(a), float(b), float(c)), reverse=True)
    if c <= 0:
        raise ValueError(f"semi-axes must be > 0 mm, got {a}, {b}, {c}")
    alpha2, beta2 = 1.0 - (b / a) ** 2, 1.0 - (c / a) ** 2
    prod2, mean2 = alpha2 * beta2, (alpha2 + beta2) / 2.0  # (alpha beta)^2 and (alpha^2 + beta^2) / 2
    total = 0.0
    for nu in range(n_terms + 1):
        # (alpha beta)^nu P_nu(x / (alpha beta)) with x = mean2: P_nu has only powers nu, nu-2, ... of its argument.
        coef = _legendre_power_coefficients(nu)
        term = sum(coef[nu - 2 * k] * prod2**k * mean2 ** (nu - 2 * k) for k in range(nu // 2 + 1))
        total += term / (1.0 - 4.0 * nu * nu)
    return 4.0 * math.pi * a * b * total


@functools.lru_cache(maxsize=64)
def _legendre_power_coefficients(nu: int) -> np.ndarray:
    """``legendre.leg2poly(e_nu)``: the power-series coefficients of the Legendre polynomial P_nu (made once per nu:
    numpy's conversion cost 10 ms per :func:`ellipsoid_area` call). Read-only."""
    coef = legendre.leg2poly(np.eye(nu + 1)[nu])
    coef.setflags(write=False)
    return coef


def minimum_bounding_box(points: np.ndarray, *, max_directions: int = 64) -> tuple[float, float]:
    """Approximate oriented minimum bounding box of a 3-D point set: (volume mm^3, area mm^2).

    Candidate boxes have one face flush with a face of the points' convex hull (the `max_directions` largest
    hull faces, plus the coordinate axes); within that plane the minimum-area rectangle is found exactly by
    rotating callipers over the edges of the projected 2-D hull. The smallest-volume candidate wins. This is the
    usual approximation of O'Rourke's exact algorithm (IBSI: "commonly approximated").

    Parameters
    ----------
    points : (P, 3) ndarray
        Points in mm (e.g. mesh vertices), at least 4 not coplanar.
    max_directions : int, optional
        Number of hull-face normals tried. Default 64.
    """
    p = np.asarray(points, dtype=np.float64)
    p = p - p.mean(axis=0)
    hull = ConvexHull(p)
    hv = p[hull.vertices]
    normals = hull.equations[:, :3]
    tri = p[hull.simplices]
    face_area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    # Merge (nearly) parallel normals, keep the largest total face area first.
    key = np.round(normals * 1e4).astype(np.int64)
    _, inverse = np.unique(key, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    area_per = np.bincount(inverse, weights=face_area)
    first = np.full(area_per.size, -1)
    first[inverse[::-1]] = np.arange(len(inverse))[::-1]
    order = np.argsort(-area_per)[:max_directions]
    candidates = np.vstack([np.eye(3), normals[first[order]]])
    best = (math.inf, math.inf)
    for n in candidates:
        n = n / np.linalg.norm(n)
        u = _cross3(n, (1.0, 0.0, 0.0) if abs(n[0]) < 0.9 else (0.0, 1.0, 0.0))
        u /= np.linalg.norm(u)
        w = _cross3(n, u)
        height = float(np.ptp(hv @ n))
        uv = np.column_stack([hv @ u, hv @ w])
        width, depth = _min_area_rectangle(uv)
        volume = width * depth * height
        if volume < best[0]:
            best = (volume, 2.0 * (width * depth + width * height + depth * height))
    return best


def _cross3(a: np.ndarray, b: "np.ndarray | tuple[float, float, float]") -> np.ndarray:
    """``np.cross(a, b)`` of two 3-vectors (float64), bit for bit: numpy forms each component as one product minus
    another, each rounded to float64, as Python's float arithmetic does; without numpy's general set-up (moved axes,
    broadcasting), which cost more than the products for one pair of vectors."""
    a0, a1, a2 = (float(x) for x in a)
    b0, b1, b2 = (float(x) for x in b)
    return np.array([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0])


def _min_area_rectangle(points2d: np.ndarray) -> tuple[float, float]:
    """Side lengths of the minimum-area enclosing rectangle of 2-D points (rotating callipers over hull edges)."""
    try:
        hull = ConvexHull(points2d)
    except Exception:  # degenerate (collinear) projection: a flat box
        return float(np.ptp(points2d[:, 0])), float(np.ptp(points2d[:, 1]))
    h = points2d[hull.vertices]
    edges = np.concatenate((h[1:], h[:1])) - h  # np.roll(h, -1, axis=0) - h
    edges = edges / np.linalg.norm(edges, axis=1, keepdims=True)
    normals = np.column_stack([-edges[:, 1], edges[:, 0]])
    along = h @ edges.T  # (hull points, edge directions)
    across = h @ normals.T
    widths, depths = np.ptp(along, axis=0), np.ptp(across, axis=0)
    i = int(np.argmin(widths * depths))
    return float(widths[i]), float(depths[i])


_MORAN_FLOAT64_MAX_PADDED = 2**21  # padded grids up to this many voxels (16 MB in float64) use float64 FFTs


def moran_geary(
    values: np.ndarray, intensity_mask: np.ndarray, spacing_mm: tuple[float, float, float]
) -> tuple[float, float]:
    """Exact Moran's I and Geary's C over all voxel pairs with inverse-distance weights (in mm).

    With z = x - mean on the ROI (0 outside) and K the kernel K(r) = 1/|r| (K(0) = 0):
    ``sum_ij w_ij z_i z_j = sum_i z_i (K * z)_i``, ``W = sum_ij w_ij = sum_i (K * m)_i`` for the mask m, and
    ``sum_ij w_ij (x_i - x_j)^2 = 2 sum_i z_i^2 (K * m)_i - 2 sum_i z_i (K * z)_i``. The convolutions are linear
    (zero-padded) FFTs over the bounding box.

    Parameters
    ----------
    values : (Z, Y, X) ndarray
        Intensities, cropped to (at least) the intensity mask's bounding box.
    intensity_mask : (Z, Y, X) ndarray of bool
        ROI intensity mask, same shape.
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x), in mm (anisotropic spacing changes the weights).

    Returns
    -------
    moran_i, geary_c : float
        Both 1.0 when all ROI intensities are equal (as MIRP); NaN for fewer than 2 voxels.
    """
    spacing = check_spacing(spacing_mm)
    box = roi_bounding_box(intensity_mask)
    m = np.asarray(intensity_mask[box], dtype=bool)
    x = np.asarray(values[box], dtype=np.float64)
    n = int(m.sum())
    if n < 2:
        return float("nan"), float("nan")
    z = np.where(m, x - x[m].mean(), 0.0)
    zz = float(np.dot(z[m], z[m]))
    if zz == 0.0:
        return 1.0, 1.0
    shape = m.shape
    # The FFTs run in float32 when the padded grid is large: half the memory and half the memory traffic (two
    # jobs side by side ran this 1.5-1.8 s each in float64, 0.9 s in float32, alone both take 0.87 s); the sums
    # are taken in float64. Relative error stays below 1e-5 (tests/analysis/features/test_morphology.py
    # checks both paths against the direct sum over all pairs).
    n_padded = math.prod(2 * k - 1 for k in shape)
    ftype = np.float32 if n_padded > _MORAN_FLOAT64_MAX_PADDED else np.float64
    axes = [np.arange(-(k - 1), k) * s for k, s in zip(shape, spacing)]
    dz, dy, dx = np.meshgrid(*axes, indexing="ij", sparse=True)
    dist = np.sqrt(dz * dz + dy * dy + dx * dx).astype(ftype)
    dist[tuple(k - 1 for k in shape)] = np.inf  # the centre: no self pairs
    kernel = np.reciprocal(dist, out=dist)
    fshape = [sfft.next_fast_len(2 * k - 1, real=True) for k in shape]
    kf = sfft.rfftn(kernel, fshape, workers=thread_budget())
    del kernel, dist
    crop = tuple(slice(k - 1, 2 * k - 1) for k in shape)

    def convolve(a: np.ndarray) -> np.ndarray:
        spectrum = sfft.rfftn(a.astype(ftype, copy=False), fshape, workers=thread_budget())
        spectrum *= kf
        return sfft.irfftn(spectrum, fshape, workers=thread_budget())[crop][m].astype(np.float64)

    kz = convolve(z)
    km = convolve(m)
    w_sum = float(km.sum())
    zm = z[m]
    zkz = float(np.dot(zm, kz))
    moran = n / w_sum * zkz / zz
    geary_num = 2.0 * float(np.dot(zm**2, km)) - 2.0 * zkz
    geary = (n - 1) / (2.0 * w_sum) * geary_num / zz
    return moran, geary


def morphology_features(
    morph_mask: np.ndarray,
    spacing_mm: tuple[float, float, float],
    *,
    image: np.ndarray | None = None,
    intensity_mask: np.ndarray | None = None,
) -> list[FeatureValue]:
    """The IBSI morphological features.

    Parameters
    ----------
    morph_mask : (Z, Y, X) ndarray of bool
        Morphological ROI mask (the segmentation, after interpolation; holes are kept).
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x), in mm.
    image : (Z, Y, X) ndarray, optional
        Intensities in the image's unit; needed for centre of mass shift, integrated intensity, Moran's I and
        Geary's C, which are left out without it.
    intensity_mask : (Z, Y, X) ndarray of bool, optional
        ROI intensity mask (after re-segmentation). Default: `morph_mask`.

    Returns
    -------
    list of FeatureValue
        Family "morphology", names as the IBSI tables: volumes in mm^3, areas in mm^2, lengths in mm, ratios
        dimensionless, integrated intensity in image unit x mm^3. PCA uses the sample covariance (N - 1) of the
        voxel centres; densities use the mesh volume and area; OMBB is approximate (see
        :func:`minimum_bounding_box`).

    Raises
    ------
    ValueError
        On shape mismatch, invalid spacing, or an empty mask.
    """
    spacing = check_spacing(spacing_mm)
    morph = np.asarray(morph_mask, dtype=bool)
    imask = morph if intensity_mask is None else np.asarray(intensity_mask, dtype=bool)
    if morph.ndim != 3 or imask.shape != morph.shape or (image is not None and image.shape != morph.shape):
        raise ValueError("morph_mask, intensity_mask and image must be the same 3-D shape")
    if not morph.any():
        raise ValueError("the morphological mask is empty")
    box = roi_bounding_box(morph | imask)
    morph, imask = morph[box], imask[box]
    sub_image = None if image is None else np.asarray(image[box], dtype=np.float64)

    vertices, faces = mesh(morph, spacing)
    volume, area = mesh_volume_area(vertices, faces)
    voxel_volume = float(morph.sum()) * spacing[0] * spacing[1] * spacing[2]
    hull = ConvexHull(vertices - vertices.mean(axis=0))
    diameter = max_pairwise_distance(vertices[hull.vertices])

    centres = np.argwhere(morph) * np.asarray(spacing)
    if len(centres) > 1:
        eig = np.sort(np.clip(np.linalg.eigvalsh(np.cov(centres, rowvar=False)), 0.0, None))[::-1]
    else:
        eig = np.zeros(3)
    major, minor, least = (4.0 * math.sqrt(e) for e in eig)
    a, b, c = major / 2.0, minor / 2.0, least / 2.0
    extent = np.ptp(vertices, axis=0)
    aabb_volume = float(np.prod(extent))
    aabb_area = 2.0 * float(extent[0] * extent[1] + extent[1] * extent[2] + extent[0] * extent[2])
    ombb_volume, ombb_area = minimum_bounding_box(vertices[hull.vertices])
    aee_volume = 4.0 * math.pi * a * b * c / 3.0
    aee_area = ellipsoid_area(a, b, c) if c > 0 else float("nan")

    def ratio(num: float, den: float) -> float:
        return num / den if den > 0 else float("nan")

    out = [
        ("volume (mesh)", volume),
        ("volume (voxel counting)", voxel_volume),
        ("surface area (mesh)", area),
        ("surface to volume ratio", ratio(area, volume)),
        ("compactness 1", ratio(volume, math.sqrt(math.pi) * area**1.5)),
        ("compactness 2", ratio(36.0 * math.pi * volume**2, area**3)),
        ("spherical disproportion", ratio(area, (36.0 * math.pi * volume**2) ** (1 / 3))),
        ("sphericity", ratio((36.0 * math.pi * volume**2) ** (1 / 3), area)),
        ("asphericity", ratio(area**3, 36.0 * math.pi * volume**2) ** (1 / 3) - 1.0),
    ]
    if sub_image is not None:
        weights = sub_image[imask]
        com_geom = centres.mean(axis=0)
        total = weights.sum()
        if total != 0:
            com_gl = (np.argwhere(imask) * np.asarray(spacing)).T @ weights / total
            out.append(("centre of mass shift", float(np.linalg.norm(com_geom - com_gl))))
        else:  # intensities summing to 0 (all 0, or +- balanced): no intensity-weighted centre (IBSI: undefined)
            out.append(("centre of mass shift", float("nan")))
    out += [
        ("maximum 3D diameter", diameter),
        ("major axis length", major),
        ("minor axis length", minor),
        ("least axis length", least),
        ("elongation", ratio(math.sqrt(eig[1]), math.sqrt(eig[0]))),
        ("flatness", ratio(math.sqrt(eig[2]), math.sqrt(eig[0]))),
        ("volume density (AABB)", ratio(volume, aabb_volume)),
        ("area density (AABB)", ratio(area, aabb_area)),
        ("volume density (OMBB)", ratio(volume, ombb_volume)),
        ("area density (OMBB)", ratio(area, ombb_area)),
        ("volume density (AEE)", ratio(volume, aee_volume)),
        ("area density (AEE)", ratio(area, aee_area)),
        ("volume density (convex hull)", ratio(volume, hull.volume)),
        ("area density (convex hull)", ratio(area, hull.area)),
    ]
    if sub_image is not None:
        moran, geary = moran_geary(sub_image, imask, spacing)
        out += [
            ("integrated intensity", volume * float(sub_image[imask].mean())),
            ("Moran\u2019s I index", moran),
            ("Geary\u2019s C measure", geary),
        ]
    return [FeatureValue(_MORPH, name, "", float(value)) for name, value in out]
