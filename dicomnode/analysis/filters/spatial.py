"""IBSI-2 filters defined in the spatial domain: mean, Laplacian of Gaussian, Laws, Gabor, separable wavelets.

Every function takes a (Z, Y, X) image and returns a new float array of the same shape (float32 unless noted). Widths
that IBSI-2 gives in millimetres (LoG and Gabor sigma, Gabor wavelength) are converted with the voxel spacing; the
ones it gives in voxels (mean support, Laws energy window, wavelet taps) stay in voxels. "2D" (``in_plane_only``)
filters each axial (Y, X) slice on its own. Kernel letters and wavelet maps are in the IBSI (x, y, z) order, i.e.
the first letter acts along our X axis (axis 2).

References
----------
Depeursinge A., Andrearczyk V., Whybra P. et al., "Standardised convolutional filtering for radiomics" (IBSI
chapter 2), arXiv:2006.05470; Whybra P. et al., Radiology 2024;310(2):e231319.
"""

from __future__ import annotations

import math
from enum import Enum

import numpy as np
import scipy.fft
from scipy import ndimage as ndi

from dicomnode.analysis.features.processing import check_spacing
from dicomnode.analysis.filters._common import (
    Boundary,
    Pooling,
    _Pool,
    fft_workers,
    fftn,
    ifftn,
    pad,
    rotations,
)

__all__ = [
    "GaborResponse",
    "LAWS_KERNELS",
    "WAVELETS",
    "gabor",
    "laplacian_of_gaussian",
    "laws",
    "mean",
    "separable_wavelet",
]

# Normalised Laws kernels (IBSI-2 Table 4.1); convolution puts index 0 at the lowest coordinate.
LAWS_KERNELS: dict[str, np.ndarray] = {
    "L3": np.array([1.0, 2.0, 1.0]) / math.sqrt(6.0),
    "E3": np.array([-1.0, 0.0, 1.0]) / math.sqrt(2.0),
    "S3": np.array([-1.0, 2.0, -1.0]) / math.sqrt(6.0),
    "L5": np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / math.sqrt(70.0),
    "E5": np.array([-1.0, -2.0, 0.0, 2.0, 1.0]) / math.sqrt(10.0),
    "S5": np.array([-1.0, 0.0, 2.0, 0.0, -1.0]) / math.sqrt(6.0),
    "W5": np.array([-1.0, 2.0, 0.0, -2.0, 1.0]) / math.sqrt(10.0),
    "R5": np.array([1.0, -4.0, 6.0, -4.0, 1.0]) / math.sqrt(70.0),
}

# Decomposition filters (low-pass, high-pass) of the supported wavelets, as PyWavelets 1.9 gives them (dec_lo, dec_hi).
WAVELETS: dict[str, tuple[np.ndarray, np.ndarray]] = {
    "haar": (
        np.array([0.7071067811865476, 0.7071067811865476]),
        np.array([-0.7071067811865476, 0.7071067811865476]),
    ),
    "db2": (
        np.array([-0.12940952255126037, 0.2241438680420134, 0.8365163037378079, 0.48296291314453416]),
        np.array([-0.48296291314453416, 0.8365163037378079, -0.2241438680420134, -0.12940952255126037]),
    ),
    "db3": (
        np.array([0.03522629188570953, -0.08544127388202666, -0.13501102001025458, 0.45987750211849154,
                  0.8068915093110925, 0.33267055295008263]),
        np.array([-0.33267055295008263, 0.8068915093110925, -0.45987750211849154, -0.13501102001025458,
                  0.08544127388202666, 0.03522629188570953]),
    ),
    "coif1": (
        np.array([-0.015655728135791993, -0.07273261951252645, 0.3848648468648578, 0.8525720202116004,
                  0.3378976624574818, -0.07273261951252645]),
        np.array([0.07273261951252645, 0.3378976624574818, -0.8525720202116004, 0.3848648468648578,
                  0.07273261951252645, -0.015655728135791993]),
    ),
}


class GaborResponse(str, Enum):
    """Which part of the complex Gabor response is kept."""

    MODULUS = "modulus"
    REAL = "real"
    IMAGINARY = "imaginary"
    ARGUMENT = "argument"


def _as_float(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim != 3:
        raise ValueError(f"image must be a (Z, Y, X) array, got {a.ndim} dimensions")
    return a.astype(np.float64, copy=False)


def _axes(in_plane_only: bool) -> tuple[int, ...]:
    """Filtered axes in IBSI (x, y, z) order: X, Y (and Z unless slice-wise)."""
    return (2, 1) if in_plane_only else (2, 1, 0)


def mean(image: np.ndarray, *, support_voxels: int, boundary: Boundary | str = Boundary.MIRROR,
         in_plane_only: bool = False) -> np.ndarray:
    """IBSI-2 mean filter: the average over a cube (square in 2D) of `support_voxels` voxels per side.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Intensities in the image's unit.
    support_voxels : int
        Odd side of the support, in voxels (IBSI-2 gives it in voxels).
    boundary : Boundary or str, optional
        IBSI boundary condition. Default mirror.
    in_plane_only : bool, optional
        2D: average within each axial slice. Default False.

    Returns
    -------
    (Z, Y, X) ndarray of float32
    """
    if int(support_voxels) != support_voxels or support_voxels < 1 or support_voxels % 2 == 0:
        raise ValueError(f"support_voxels must be an odd integer >= 1, got {support_voxels}")
    b = Boundary.parse(boundary)
    size = [1 if in_plane_only else int(support_voxels), int(support_voxels), int(support_voxels)]
    return ndi.uniform_filter(_as_float(image), size=size, mode=b.ndimage_mode).astype(np.float32)


def laplacian_of_gaussian(image: np.ndarray, spacing_mm: tuple[float, float, float], *, sigma_mm: float,
                          truncate: float = 4.0, boundary: Boundary | str = Boundary.MIRROR,
                          in_plane_only: bool = False) -> np.ndarray:
    """IBSI-2 Laplacian of Gaussian, with the Gaussian's standard deviation in mm.

    The kernel is the sampled Gaussian's second derivatives summed over the filtered axes, each in units of
    voxel^-2 (as scipy's ``gaussian_laplace`` and the IBSI-2 consensus maps); not scale-normalised.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Intensities in the image's unit.
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x), in mm.
    sigma_mm : float
        Standard deviation of the Gaussian, in mm (> 0).
    truncate : float, optional
        Kernel half-width in standard deviations. Default 4 (IBSI-2).
    boundary : Boundary or str, optional
        Default mirror.
    in_plane_only : bool, optional
        2D: filter each axial slice. Default False.

    Returns
    -------
    (Z, Y, X) ndarray of float32
        Response in the image's unit per voxel^2.
    """
    spacing = check_spacing(spacing_mm, 3)
    if not (math.isfinite(sigma_mm) and sigma_mm > 0):
        raise ValueError(f"sigma_mm must be > 0 mm, got {sigma_mm}")
    if not truncate > 0:
        raise ValueError(f"truncate must be > 0 standard deviations, got {truncate}")
    b = Boundary.parse(boundary)
    sig = [0.0 if (in_plane_only and ax == 0) else sigma_mm / s for ax, s in enumerate(spacing)]
    img = _as_float(image)
    out = np.zeros(img.shape, dtype=np.float64)
    for axis in _axes(in_plane_only):
        part = img
        for ax, s in enumerate(sig):
            if s > 0:
                part = ndi.gaussian_filter1d(part, s, axis=ax, order=2 if ax == axis else 0,
                                             mode=b.ndimage_mode, truncate=truncate)
        out += part
    return out.astype(np.float32)


def laplacian_of_gaussian_margin_mm(sigma_mm: float, truncate: float = 4.0) -> float:
    return float(truncate * sigma_mm)


def _parse_laws(kernel: str, in_plane_only: bool) -> list[np.ndarray]:
    name = kernel.strip().upper()
    parts = [name[i:i + 2] for i in range(0, len(name), 2)]
    want = 2 if in_plane_only else 3
    if len(parts) != want or any(p not in LAWS_KERNELS for p in parts):
        raise ValueError(
            f"laws kernel must be {want} of {sorted(LAWS_KERNELS)} in (x, y{'' if in_plane_only else ', z'}) order, "
            f"e.g. {'L5E5' if in_plane_only else 'L5E5E5'}; got {kernel!r}"
        )
    return [LAWS_KERNELS[p] for p in parts]


def _separable(img: np.ndarray, kernels: list[np.ndarray], axes: tuple[int, ...], mode: str) -> np.ndarray:
    out = img
    for k, ax in zip(kernels, axes):
        out = ndi.convolve1d(out, k, axis=ax, mode=mode)
    return out


def _rotated_chains(chains: list[tuple[np.ndarray, ...]], axes: tuple[int, ...]):
    """Per right-angle rotation, the 1D filter chain of every image axis, for filtering without rotating the image.

    Rotating the image, filtering axis ``axes[i]`` with ``chains[i]`` and rotating back equals filtering the original
    image along ``axes[perm[i]]`` with ``chains[i]`` reversed when the rotation flips that axis (odd-length, centred
    filters; every IBSI boundary is symmetric under a flip). Yields one tuple of (axis, chain) pairs per rotation.
    """
    for perm, flips in rotations(len(axes)):
        per_axis = {}
        for i, chain in enumerate(chains):
            per_axis[axes[perm[i]]] = tuple(h[::-1] for h in chain) if flips[i] else chain
        yield tuple((ax, per_axis[ax]) for ax in axes)


def _pooled_separable(img: np.ndarray, rotations_chains, mode: str, pooling: Pooling) -> np.ndarray:
    """Pool separable responses over rotations, sharing the 1D passes that rotations have in common.

    Rotations are visited in an order where consecutive ones share the longest prefix of per-axis chains; the
    intermediate results of that prefix are kept (one array per axis), so e.g. the 24 rotations of a level-2 HHH
    wavelet need 28 1D passes instead of 144. Identical rotations are computed once and weighted.
    """
    keyed: dict[tuple, list] = {}
    for rc in rotations_chains:
        key = tuple((ax, tuple(h.tobytes() for h in chain)) for ax, chain in rc)
        keyed.setdefault(key, [rc, 0])[1] += 1
    acc = _Pool(pooling)
    stack: list[tuple[tuple, np.ndarray]] = []  # (prefix key, result after that prefix)
    for key in sorted(keyed):
        rc, weight = keyed[key]
        depth = 0
        while depth < len(stack) and depth < len(key) and stack[depth][0] == key[: depth + 1]:
            depth += 1
        del stack[depth:]
        out = stack[-1][1] if stack else img
        for level in range(depth, len(key)):
            ax, chain = rc[level]
            for h in chain:
                out = ndi.convolve1d(out, h, axis=ax, mode=mode)
            stack.append((key[: level + 1], out))
        for _ in range(weight if pooling is Pooling.AVERAGE else 1):
            acc.add(out)
    return acc.result()


def laws(image: np.ndarray, *, kernel: str, boundary: Boundary | str = Boundary.MIRROR, in_plane_only: bool = False,
         rotation_invariant: bool = False, pooling: Pooling | str = Pooling.MAX,
         energy_delta_voxels: int | None = None) -> np.ndarray:
    """IBSI-2 Laws filter: a separable product of normalised Laws kernels, optionally rotation-invariant and energy.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Intensities.
    kernel : str
        Kernel letters in (x, y[, z]) order, e.g. "E5L5S5" (3D) or "L5S5" (2D).
    boundary : Boundary or str, optional
        Default mirror.
    in_plane_only : bool, optional
        2D filtering of each axial slice (the kernel then has two letters). Default False.
    rotation_invariant : bool, optional
        Pool the responses of the kernel's right-angle rotations (24 in 3D, 4 in 2D). Default False.
    pooling : Pooling or str, optional
        max, average or min over the rotations. Default max.
    energy_delta_voxels : int, optional
        If given, return the energy map: the mean of |response| over a (2 delta + 1)^d window (same boundary),
        computed on the pooled response.

    Returns
    -------
    (Z, Y, X) ndarray of float32
    """
    kernels = _parse_laws(kernel, in_plane_only)
    b = Boundary.parse(boundary)
    axes = _axes(in_plane_only)
    img = _as_float(image)
    if rotation_invariant:
        out = _pooled_separable(img, _rotated_chains([(k,) for k in kernels], axes), b.ndimage_mode,
                                Pooling.parse(pooling))
    else:
        out = _separable(img, kernels, axes, b.ndimage_mode)
    if energy_delta_voxels is not None:
        d = int(energy_delta_voxels)
        if d != energy_delta_voxels or d < 0:
            raise ValueError(f"energy_delta_voxels must be an integer >= 0, got {energy_delta_voxels}")
        size = [2 * d + 1] * 3
        if in_plane_only:
            size[0] = 1
        out = ndi.uniform_filter(np.abs(out), size=size, mode=b.ndimage_mode)
    return out.astype(np.float32)


def gabor(image: np.ndarray, spacing_mm: tuple[float, float, float], *, sigma_mm: float, wavelength_mm: float,
          gamma: float = 1.0, theta_rad: float = 0.0, boundary: Boundary | str = Boundary.MIRROR,
          response: GaborResponse | str = GaborResponse.MODULUS, rotation_invariant: bool = False,
          dtheta_rad: float | None = None, pooling: Pooling | str = Pooling.AVERAGE,
          orthogonal_planes: bool = False, truncate: float = 4.0) -> np.ndarray:
    """IBSI-2 Gabor filter: an unnormalised 2D complex Gabor kernel applied to each plane, by FFT.

    ``g(x, y) = exp(-(x'^2 + gamma^2 y'^2) / (2 sigma^2)) exp(2 pi i x' / lambda)`` with
    ``x' = x cos(theta) + y sin(theta)``, ``y' = -x sin(theta) + y cos(theta)`` in mm; theta runs from x towards y.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Intensities.
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x), in mm.
    sigma_mm, wavelength_mm : float
        Gaussian standard deviation and carrier wavelength, in mm (> 0).
    gamma : float, optional
        Spatial aspect ratio (> 0). Default 1.
    theta_rad : float, optional
        Orientation, in radians, when not rotation-invariant. Default 0.
    boundary : Boundary or str, optional
        Default mirror.
    response : GaborResponse or str, optional
        modulus (default), real, imaginary or argument of the complex response.
    rotation_invariant : bool, optional
        Pool the responses for theta = 0, dtheta, 2 dtheta, ... < 2 pi. Default False.
    dtheta_rad : float, optional
        Angular step for rotation invariance, in radians (must divide 2 pi). Required with rotation_invariant.
    pooling : Pooling or str, optional
        Over the orientations. Default average.
    orthogonal_planes : bool, optional
        Apply in the axial (Y, X), coronal (Z, X) and sagittal (Z, Y) planes and average (IBSI-2 3D Gabor).
        Default False: axial planes only (2D).
    truncate : float, optional
        Kernel half-width in the envelope's largest standard deviation, max(sigma, sigma / gamma). Default 4.

    Returns
    -------
    (Z, Y, X) ndarray of float32
    """
    spacing = check_spacing(spacing_mm, 3)
    for name, v in (("sigma_mm", sigma_mm), ("wavelength_mm", wavelength_mm), ("gamma", gamma),
                    ("truncate", truncate)):
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be > 0, got {v}")
    b = Boundary.parse(boundary)
    resp = GaborResponse(response)
    if rotation_invariant:
        if dtheta_rad is None or not dtheta_rad > 0:
            raise ValueError(f"rotation-invariant Gabor needs dtheta_rad > 0, got {dtheta_rad}")
        n = int(round(2 * math.pi / dtheta_rad))
        if n < 1 or abs(n * dtheta_rad - 2 * math.pi) > 1e-6:
            raise ValueError(f"dtheta_rad must divide 2 pi, e.g. pi/8; got {dtheta_rad}")
        thetas = [k * dtheta_rad for k in range(n)]
        if n % 2 == 0 and resp in (GaborResponse.MODULUS, GaborResponse.REAL):
            # for a real image the kernel at theta + pi is the conjugate one: same modulus and real part, so the
            # pooled (max, min or average) map needs only theta in [0, pi)
            thetas = thetas[: n // 2]
    else:
        thetas = [float(theta_rad)]
    img = _as_float(image)
    # (plane axes as (x, y)): axial (X, Y), coronal (X, Z), sagittal (Y, Z)
    planes = [(2, 1), (2, 0), (1, 0)] if orthogonal_planes else [(2, 1)]
    total = np.zeros(img.shape, dtype=np.float64)
    for ax_x, ax_y in planes:
        acc = _Pool(Pooling.parse(pooling))
        for r in _gabor_plane(img, spacing, ax_x, ax_y, sigma_mm, wavelength_mm, gamma, thetas, b, resp, truncate):
            acc.add(r)
        total += acc.result()
    total /= len(planes)
    return total.astype(np.float32)


def _gabor_kernel(sx: float, sy: float, rx: int, ry: int, sigma: float, lam: float, gamma: float,
                  theta: float) -> np.ndarray:
    """Kernel on a (2 ry + 1, 2 rx + 1) grid indexed [y, x], coordinates in mm."""
    y, x = np.mgrid[-ry:ry + 1, -rx:rx + 1].astype(np.float64)
    x *= sx
    y *= sy
    xt = x * math.cos(theta) + y * math.sin(theta)
    yt = -x * math.sin(theta) + y * math.cos(theta)
    return np.exp(-(xt**2 + gamma**2 * yt**2) / (2 * sigma**2)) * np.exp(2j * math.pi * xt / lam)


def _gabor_plane(img, spacing, ax_x, ax_y, sigma, lam, gamma, thetas, b, resp, truncate):
    """Yield the response for each theta, filtering every plane spanned by (ax_x, ax_y)."""
    reach_mm = truncate * sigma * max(1.0, 1.0 / gamma)
    rx = int(math.ceil(reach_mm / spacing[ax_x]))
    ry = int(math.ceil(reach_mm / spacing[ax_y]))
    # put the plane axes last as (y, x)
    other = [a for a in range(3) if a not in (ax_x, ax_y)][0]
    work = np.transpose(img, (other, ax_y, ax_x))
    padded = pad(work, ((0, 0), (ry, ry), (rx, rx)), b)
    # zero-extend to a fast FFT size: outputs [r, r + n) read only [0, n + 2r), so nothing wraps into them
    shape = tuple(scipy.fft.next_fast_len(n, real=False) for n in padded.shape[1:])
    spec = scipy.fft.fftn(padded.astype(np.complex64), s=shape, axes=(1, 2), workers=fft_workers())
    ny, nx = work.shape[1:]
    for theta in thetas:
        k = _gabor_kernel(spacing[ax_x], spacing[ax_y], rx, ry, sigma, lam, gamma, theta)
        kfull = np.zeros(shape, dtype=np.complex64)
        kfull[: 2 * ry + 1, : 2 * rx + 1] = k
        kfull = np.roll(kfull, (-ry, -rx), axis=(0, 1))  # kernel centre at index 0: circular convolution
        conv = ifftn(spec * fftn(kfull, axes=(0, 1))[None], axes=(1, 2))[:, ry:ry + ny, rx:rx + nx]
        if resp is GaborResponse.MODULUS:
            part = np.abs(conv)
        elif resp is GaborResponse.REAL:
            part = conv.real
        elif resp is GaborResponse.IMAGINARY:
            part = conv.imag
        else:
            part = np.angle(conv)
        yield np.transpose(part, np.argsort((other, ax_y, ax_x)))


def _wavelet_filters(wavelet: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        return WAVELETS[wavelet.strip().lower()]
    except KeyError:
        raise ValueError(f"wavelet must be one of {sorted(WAVELETS)}, got {wavelet!r}") from None


def _dilate(h: np.ndarray, level: int) -> np.ndarray:
    """The a-trous filter of `level`: 2^(level-1) - 1 zeros between the taps."""
    step = 2 ** (level - 1)
    out = np.zeros((len(h) - 1) * step + 1)
    out[::step] = h
    return out


def _wavelet_once(img: np.ndarray, lo: np.ndarray, hi: np.ndarray, letters: str, axes, level: int, mode: str):
    """Undecimated decomposition down to `level`; the map `letters` of the last level."""
    low = img
    for lev in range(1, level):
        low = _separable(low, [_dilate(_alignment(lo), lev)] * len(axes), axes, mode)
    ks = [_dilate(_alignment(lo if c == "L" else hi), level) for c in letters]
    return _separable(low, ks, axes, mode)


def _alignment(h: np.ndarray) -> np.ndarray:
    """Even-length filters get a trailing zero so scipy's convolution centres them as IBSI-2 does.

    The zero is added before the a-trous dilation, so level n shifts by 2^(n-1) like the consensus maps 7.a.
    """
    return np.append(h, 0.0) if len(h) % 2 == 0 else h


def separable_wavelet(image: np.ndarray, *, wavelet: str, wavelet_map: str, level: int = 1,
                      boundary: Boundary | str = Boundary.MIRROR, rotation_invariant: bool = False,
                      pooling: Pooling | str = Pooling.AVERAGE) -> np.ndarray:
    """IBSI-2 undecimated separable wavelet response (stationary / a-trous transform).

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Intensities.
    wavelet : str
        "haar", "db2", "db3" or "coif1" (decomposition filters).
    wavelet_map : str
        Low/high-pass letters in (x, y[, z]) order: "LH" (2D, each axial slice) or "LHL" (3D).
    level : int, optional
        Decomposition level >= 1: level n filters the level n-1 low-pass (all L) image with filters dilated by
        2^(n-1). Default 1.
    boundary : Boundary or str, optional
        Default mirror.
    rotation_invariant : bool, optional
        Pool over the image's right-angle rotations (24 in 3D, 4 in 2D), each response rotated back. Default False.
    pooling : Pooling or str, optional
        Default average.

    Returns
    -------
    (Z, Y, X) ndarray of float32
    """
    lo, hi = _wavelet_filters(wavelet)
    letters = wavelet_map.strip().upper()
    if len(letters) not in (2, 3) or set(letters) - {"L", "H"}:
        raise ValueError(f"wavelet_map must be 2 (2D) or 3 (3D) letters L/H in (x, y, z) order, e.g. 'LHL'; "
                         f"got {wavelet_map!r}")
    if int(level) != level or level < 1:
        raise ValueError(f"level must be an integer >= 1, got {level}")
    b = Boundary.parse(boundary)
    axes = _axes(len(letters) == 2)
    img = _as_float(image)
    if not rotation_invariant:
        return _wavelet_once(img, lo, hi, letters, axes, int(level), b.ndimage_mode).astype(np.float32)
    chains = []
    for c in letters:  # level-1 ... level-(n-1) low-pass, then the map's filter at level n, on each axis
        chain = [_dilate(_alignment(lo), lev) for lev in range(1, int(level))]
        chains.append((*chain, _dilate(_alignment(lo if c == "L" else hi), int(level))))
    return _pooled_separable(img, _rotated_chains(chains, axes), b.ndimage_mode,
                             Pooling.parse(pooling)).astype(np.float32)
