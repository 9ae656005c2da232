"""IBSI-2 filters defined in the Fourier domain: the Simoncelli wavelet and Riesz transforms (plain and steered).

Arrays are (Z, Y, X); Riesz orders are given in the IBSI (x, y, z) order, i.e. ``(1, 0, 0)`` differentiates along X
(axis 2). The transforms are periodic by construction; for the zero, nearest and mirror boundaries the image is
first extended by :func:`fourier_margin_voxels` with that boundary and the result cropped back.

References
----------
Depeursinge A. et al., "Standardised convolutional filtering for radiomics" (IBSI chapter 2), arXiv:2006.05470,
sections on the Simoncelli wavelet and the Riesz transform; Unser M., Van De Ville D., "Wavelet steerability and the
higher-order Riesz transform", IEEE TIP 19(3), 2010.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from dicomnode.analysis.features.processing import check_spacing
from dicomnode.analysis.filters._common import Boundary, fftn, frequency_grid, ifftn, pad

__all__ = ["fourier_margin_voxels", "riesz", "simoncelli", "steered_riesz"]


def fourier_margin_voxels(level: int = 1) -> int:
    """Voxels added on each side before a Fourier-domain filter of `level` (non-periodic boundaries): 4 * 2^level."""
    return 4 * 2 ** int(level)


def _extend(img: np.ndarray, boundary: Boundary, axes: tuple[int, ...], margin: int) -> tuple[np.ndarray, tuple]:
    if boundary is Boundary.PERIODIC or margin == 0:
        return img, tuple(slice(None) for _ in range(img.ndim))
    widths = [(margin, margin) if ax in axes else (0, 0) for ax in range(img.ndim)]
    crop = tuple(slice(margin, margin + n) if ax in axes else slice(None) for ax, n in enumerate(img.shape))
    return pad(img, widths, boundary), crop


def _check_image(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim != 3:
        raise ValueError(f"image must be a (Z, Y, X) array, got {a.ndim} dimensions")
    return a.astype(np.float64, copy=False)


def _simoncelli_transfer(shape: tuple[int, ...], axes: tuple[int, ...], level: int) -> np.ndarray:
    """Transfer function in fftn order (zero frequency first), broadcastable to `shape`.

    The frequency grid is the consensus one of IBSI-2 (tests 8.a): ``linspace(-pi, pi, n)`` laid over the centred
    (fftshift-ed) spectrum; with fftfreq's grid levels 2 and 3 miss the consensus maps by 2.5 % and 8 % of range.
    """
    radius2 = 0.0
    for a in axes:
        sh = [1] * len(shape)
        sh[a] = shape[a]
        w = np.fft.ifftshift(np.linspace(-math.pi, math.pi, shape[a])).reshape(sh)
        radius2 = radius2 + w**2
    vb = math.pi / 2 ** (level - 1)  # level j: the band (vb/4, vb)
    radius = np.sqrt(radius2)
    band = (radius > vb / 4) & (radius < vb)
    h = np.zeros(radius.shape)
    h[band] = np.cos(math.pi / 2 * np.log2(2 * radius[band] / vb))
    return h


def simoncelli(image: np.ndarray, *, level: int = 1, boundary: Boundary | str = Boundary.PERIODIC,
               in_plane_only: bool = False) -> np.ndarray:
    """IBSI-2 non-separable Simoncelli wavelet, band-pass map of `level` (isotropic, defined by its frequency response).

    ``H(w) = cos(pi/2 log2(2 |w| / pi))`` for ``pi/4 < |w| < pi``, else 0, with ``|w|`` replaced by
    ``2^(level-1) |w|`` at coarser levels; frequencies in radians per voxel on the consensus grid (see
    ``_simoncelli_transfer``).

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Intensities.
    level : int, optional
        Decomposition level >= 1. Default 1.
    boundary : Boundary or str, optional
        periodic (the transform's own, default) or zero / nearest / mirror padding of
        :func:`fourier_margin_voxels` voxels.
    in_plane_only : bool, optional
        2D: each axial slice. Default False.

    Returns
    -------
    (Z, Y, X) ndarray of float32
    """
    if int(level) != level or level < 1:
        raise ValueError(f"level must be an integer >= 1, got {level}")
    b = Boundary.parse(boundary)
    axes = (1, 2) if in_plane_only else (0, 1, 2)
    img, crop = _extend(_check_image(image), b, axes, fourier_margin_voxels(level))
    h = _simoncelli_transfer(img.shape, axes, int(level))
    return ifftn(fftn(img, axes) * h, axes).real[crop].astype(np.float32)


def _check_order(order, ndim: int) -> tuple[int, ...]:
    o = tuple(int(v) for v in order)
    if len(o) != ndim or any(v < 0 for v in o) or sum(o) < 1:
        raise ValueError(f"riesz order must be {ndim} integers >= 0 in (x, y{', z' if ndim == 3 else ''}) order "
                         f"with a sum >= 1, e.g. {(1, 0, 0)[:ndim]}; got {order}")
    return o


def _riesz_parts(img: np.ndarray, axes: tuple[int, ...], orders: list[tuple[int, ...]]) -> list[np.ndarray]:
    """Real Riesz components of `img` for each order (orders in the order of `axes`, i.e. (x, y, z))."""
    spec = fftn(img, axes)
    every = frequency_grid(img.shape)
    grids = [every[a] for a in axes]  # sparse, each along its own array axis
    norm = np.sqrt(sum(g**2 for g in grids))
    norm[(0,) * img.ndim] = 1.0  # DC: the transfer function is 0 there anyway (numerator 0)
    out = []
    for o in orders:
        total = sum(o)
        coef = (-1j) ** total * math.sqrt(math.factorial(total) / math.prod(math.factorial(v) for v in o))
        h = coef * math.prod(g**v for g, v in zip(grids, o)) / norm**total
        out.append(ifftn(spec * h, axes).real)
    return out


def riesz(response: np.ndarray, *, order: tuple[int, ...], boundary: Boundary | str = Boundary.PERIODIC,
          in_plane_only: bool = False, margin_voxels: int = 16) -> np.ndarray:
    """IBSI-2 Riesz transform of order ``l = (l_x, l_y[, l_z])`` of a (band-pass filtered) response map.

    Transfer function ``(-i)^L sqrt(L! / prod l_i!) prod(w_i^l_i) / |w|^L`` with ``L = sum l_i``. Apply it to a
    LoG or Simoncelli response (IBSI-2 tests 9 and 10).

    Parameters
    ----------
    response : (Z, Y, X) ndarray
        The map to transform (already band-pass filtered).
    order : tuple of int
        (l_x, l_y, l_z), or (l_x, l_y) in 2D.
    boundary : Boundary or str, optional
        periodic (default), or padding by `margin_voxels` with zero / nearest / mirror.
    in_plane_only : bool, optional
        2D: each axial slice (order of 2 numbers).
    margin_voxels : int, optional
        Padding for non-periodic boundaries. Default 16.

    Returns
    -------
    (Z, Y, X) ndarray of float32
    """
    axes = (2, 1) if in_plane_only else (2, 1, 0)
    o = _check_order(order, len(axes))
    img, crop = _extend(_check_image(response), Boundary.parse(boundary), axes, int(margin_voxels))
    return _riesz_parts(img, axes, [o])[0][crop].astype(np.float32)


def steered_riesz(response: np.ndarray, image: np.ndarray, spacing_mm: tuple[float, float, float], *,
                  order: tuple[int, ...], structure_tensor_sigma_mm: float,
                  boundary: Boundary | str = Boundary.PERIODIC, margin_voxels: int = 16) -> np.ndarray:
    """Riesz transform of order 1 or 2 steered voxel by voxel into the frame of the local structure tensor (3D).

    The structure tensor of `image` (outer product of its central-difference gradient, in image unit per mm,
    smoothed by a Gaussian of `structure_tensor_sigma_mm`) gives at each voxel an orthonormal frame: its
    eigenvectors by decreasing eigenvalue are the local x', y', z'. The Riesz components of `response` are rotated
    into that frame (order 1 as a vector, order 2 as a symmetric tensor) and component `order` is returned. Not
    standardised: IBSI-2 has no consensus for it (tests 9.b.2, 10.b.2).

    Parameters
    ----------
    response : (Z, Y, X) ndarray
        Band-pass filtered map to transform.
    image : (Z, Y, X) ndarray
        Image whose structure tensor steers (usually the unfiltered image).
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x), in mm.
    order : tuple of 3 int
        (l_x, l_y, l_z) in the local frame; total order 1 or 2.
    structure_tensor_sigma_mm : float
        Gaussian window of the structure tensor, in mm (> 0).
    boundary, margin_voxels
        As :func:`riesz`.

    Returns
    -------
    (Z, Y, X) ndarray of float32
    """
    spacing = check_spacing(spacing_mm, 3)
    o = _check_order(order, 3)
    total = sum(o)
    if total not in (1, 2):
        raise ValueError(f"steered Riesz supports total order 1 or 2, got {order}")
    if not structure_tensor_sigma_mm > 0:
        raise ValueError(f"structure_tensor_sigma_mm must be > 0 mm, got {structure_tensor_sigma_mm}")
    b = Boundary.parse(boundary)
    axes = (2, 1, 0)
    frame = _structure_frame(_check_image(image), spacing, structure_tensor_sigma_mm, b)  # (..., 3 xyz, 3 vectors)
    img, crop = _extend(_check_image(response), b, axes, int(margin_voxels))
    if total == 1:
        comps = [p[crop] for p in _riesz_parts(img, axes, [(1, 0, 0), (0, 1, 0), (0, 0, 1)])]
        k = o.index(1)
        out = sum(frame[..., a, k] * comps[a] for a in range(3))
    else:
        # order-2 parts without the sqrt(2) of mixed terms: R_ab = -(w_a w_b / |w|^2) F
        pairs = [(a, c) for a in range(3) for c in range(a, 3)]
        orders = [tuple((a == i) + (c == i) for i in range(3)) for a, c in pairs]
        parts = _riesz_parts(img, axes, orders)
        tensor = {}
        for (a, c), od, p in zip(pairs, orders, parts):
            scale = math.sqrt(2 / math.prod(math.factorial(v) for v in od))  # undo the component's normalisation
            tensor[(a, c)] = tensor[(c, a)] = p[crop] / scale
        ks = [i for i in range(3) for _ in range(o[i])]
        u, v = frame[..., :, ks[0]], frame[..., :, ks[1]]
        norm = math.sqrt(2 / math.prod(math.factorial(x) for x in o))
        out = norm * sum(u[..., a] * v[..., c] * tensor[(a, c)] for a in range(3) for c in range(3))
    return np.asarray(out, dtype=np.float32)


def _structure_frame(img: np.ndarray, spacing, sigma_mm: float, b: Boundary) -> np.ndarray:
    """Per-voxel eigenvectors of the structure tensor, (Z, Y, X, 3 components in (x, y, z), 3 vectors)."""
    grads = np.gradient(img, *spacing)  # along z, y, x
    g = [grads[2], grads[1], grads[0]]  # (x, y, z)
    sig = [sigma_mm / s for s in spacing]
    t = np.empty(img.shape + (3, 3))
    for a in range(3):
        for c in range(a, 3):
            t[..., a, c] = t[..., c, a] = ndi.gaussian_filter(g[a] * g[c], sig, mode=b.ndimage_mode)
    w, v = np.linalg.eigh(t)  # ascending eigenvalues
    return v[..., ::-1]
