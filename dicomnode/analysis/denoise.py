"""Noise reduction: box mean, Gaussian, median and non-local means, with sizes in millimetres.

The 3-D / slice-wise rule
-------------------------
Every filter here works in 3-D when the slices are close enough for their neighbours to be similar, and slice by
slice otherwise: a volume is treated as volumetric when ``dz <= max_anisotropy * mean(dy, dx)`` (default
``max_anisotropy = 2.5``), where ``dz`` is the distance between slice centres along the normal (axis 0). A
0.8 x 0.8 x 1.5 mm CT (ratio 1.9) is filtered in 3-D; an 8 mm chest CT or the 3.3 mm / 0.98 mm sarcoma series
(ratio 3.3) slice by slice, so a filter never mixes tissues from slices 8 mm apart.

All filters return float32 (memory: one float32 copy of the input plus the filter's own working set) and keep the
image's unit (HU stays HU).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi

__all__ = ["NLMeansResult", "box_mean", "gaussian", "is_volumetric", "median", "nl_means"]


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3:
        raise ValueError(f"image must be a 3-D (z, y, x) ndarray, got {getattr(image, 'shape', type(image))}")


def _check_spacing(spacing_mm) -> tuple[float, float, float]:
    try:
        sp = tuple(float(s) for s in spacing_mm)
    except TypeError as exc:
        raise ValueError(f"spacing_mm must be 3 positive values (dz, dy, dx) in mm, got {spacing_mm!r}") from exc
    if len(sp) != 3 or not all(np.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing_mm must be 3 positive values (dz, dy, dx) in mm, got {spacing_mm!r}")
    return sp  # type: ignore[return-value]


def _as_float32(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32, copy=False)


def is_volumetric(spacing_mm: tuple[float, float, float], *, max_anisotropy: float = 2.5) -> bool:
    """Whether a volume is filtered in 3-D (True) or slice by slice (False).

    Parameters
    ----------
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x), in mm.
    max_anisotropy : float, optional
        Largest ratio of slice distance to mean in-plane spacing still treated as 3-D. Default 2.5.

    Returns
    -------
    bool
        ``dz <= max_anisotropy * (dy + dx) / 2``.
    """
    if not max_anisotropy > 0:
        raise ValueError(f"max_anisotropy must be > 0, got {max_anisotropy}")
    dz, dy, dx = _check_spacing(spacing_mm)
    return dz <= max_anisotropy * 0.5 * (dy + dx)


def _odd_widths(size_mm: float, spacing_mm: tuple[float, float, float], volumetric: bool) -> tuple[int, int, int]:
    """Odd widths in voxels closest to ``size_mm`` on each axis (1 on axis 0 when slice-wise)."""
    widths = [max(1, 2 * int(round((size_mm / s - 1) / 2)) + 1) for s in spacing_mm]
    if not volumetric:
        widths[0] = 1
    return tuple(widths)  # type: ignore[return-value]


def box_mean(image: np.ndarray, spacing_mm: tuple[float, float, float], *, size_mm: float | None = None,
             n: int | None = None, max_anisotropy: float = 2.5) -> np.ndarray:
    """Mean over a box of neighbours (moving average).

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Intensities in the series' own unit (HU for CT); never rescaled.
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x), in mm.
    size_mm : float, optional
        Box width in mm; on each axis the odd number of voxels closest to it (at least 1). Give this or ``n``.
    n : int, optional
        Box width in voxels (odd, >= 1) on every filtered axis: ``n=3`` averages 3 x 3 x 3 = 27 voxels in 3-D and
        3 x 3 = 9 slice-wise. Give this or ``size_mm``.
    max_anisotropy : float, optional
        The 3-D / slice-wise rule (see the module docstring). Default 2.5.

    Returns
    -------
    (Z, Y, X) ndarray of float32
        The smoothed image, same unit. Borders are handled by reflection.

    Raises
    ------
    ValueError
        If both or neither of ``size_mm`` and ``n`` are given, or a value is out of range.
    """
    if (size_mm is None) == (n is None):
        raise ValueError("give exactly one of size_mm (box width in mm) or n (box width in voxels)")
    if size_mm is not None and not size_mm > 0:
        raise ValueError(f"size_mm must be > 0 mm, got {size_mm}")
    if n is not None and (int(n) != n or n < 1 or n % 2 == 0):
        raise ValueError(f"n must be an odd number of voxels >= 1, got {n}")
    _check_image(image)
    volumetric = is_volumetric(spacing_mm, max_anisotropy=max_anisotropy)
    sp = _check_spacing(spacing_mm)
    if n is not None:
        widths = (int(n) if volumetric else 1, int(n), int(n))
    else:
        widths = _odd_widths(float(size_mm), sp, volumetric)  # type: ignore[arg-type]
    return ndi.uniform_filter(_as_float32(image), size=widths, output=np.float32, mode="reflect")


def gaussian(image: np.ndarray, spacing_mm: tuple[float, float, float], *, sigma_mm: float = 1.0,
             max_anisotropy: float = 2.5) -> np.ndarray:
    """Gaussian smoothing with a kernel width given in millimetres.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Intensities in the series' own unit (HU for CT); never rescaled.
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x), in mm.
    sigma_mm : float, optional
        Standard deviation of the kernel, in mm, on every filtered axis (``sigma_mm / spacing`` voxels). Default
        1.0. 0 returns a float32 copy.
    max_anisotropy : float, optional
        The 3-D / slice-wise rule (see the module docstring). Default 2.5.

    Returns
    -------
    (Z, Y, X) ndarray of float32
        The smoothed image, same unit. The kernel is truncated at 4 sigma; borders are reflected.
    """
    if not sigma_mm >= 0:
        raise ValueError(f"sigma_mm must be >= 0 mm, got {sigma_mm}")
    _check_image(image)
    sp = _check_spacing(spacing_mm)
    volumetric = is_volumetric(sp, max_anisotropy=max_anisotropy)
    sigmas = [sigma_mm / s for s in sp]
    if not volumetric:
        sigmas[0] = 0.0
    src = _as_float32(image)
    halo = int(4.0 * sigmas[0] + 0.5)  # scipy's kernel radius along z (truncate = 4)
    return _z_parallel(src, halo, lambda block, out=np.float32: ndi.gaussian_filter(block, sigmas, output=out,
                                                                                    mode="reflect"))


def _z_parallel(image: np.ndarray, halo: int, fn, *, workers: int | None = None) -> np.ndarray:
    """Apply a z-local filter ``fn`` to slabs of ``image`` in threads (scipy.ndimage releases the GIL).

    Each slab is extended by ``halo`` slices (the filter's radius along z) on the sides where the volume goes on,
    so every output voxel is computed from exactly the neighbours it would see in one call on the whole volume,
    and the volume's own borders keep the filter's boundary mode: the result is identical to ``fn(image)``.
    With no halo (a slice-wise filter) ``fn(block, out=view)`` writes each slab straight into the result (``fn``
    takes an ``out`` keyword: a float32 array of the block's shape), without a slab-sized temporary and a copy.
    """
    from concurrent.futures import ThreadPoolExecutor

    from dicomnode.analysis.threads import thread_budget

    n = image.shape[0]
    workers = workers or thread_budget()
    if workers < 2 or n < 4 * (halo + 1) * workers:
        return fn(image)
    out = np.empty(image.shape, dtype=np.float32)
    edges = np.linspace(0, n, workers + 1).astype(int)

    def run(i: int) -> None:
        lo, hi = int(edges[i]), int(edges[i + 1])
        if halo == 0:
            fn(image[lo:hi], out=out[lo:hi])
            return
        a, b = max(0, lo - halo), min(n, hi + halo)
        out[lo:hi] = fn(image[a:b])[lo - a:lo - a + (hi - lo)]

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(run, range(workers)))
    return out


def median(image: np.ndarray, spacing_mm: tuple[float, float, float], *, size_mm: float = 2.0,
           max_anisotropy: float = 2.5) -> np.ndarray:
    """Median over a box of neighbours; removes impulse noise and keeps step edges.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Intensities in the series' own unit (HU for CT); never rescaled.
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x), in mm.
    size_mm : float, optional
        Box width in mm; on each axis the odd number of voxels closest to it (at least 1). Default 2.0.
    max_anisotropy : float, optional
        The 3-D / slice-wise rule (see the module docstring). Default 2.5.

    Returns
    -------
    (Z, Y, X) ndarray of float32
        The filtered image, same unit.

    Notes
    -----
    The cost grows with the box volume: a 3 x 3 x 3 median takes several seconds on a 512 x 512 x 300 CT, so the
    default CT profile uses :func:`gaussian`.
    """
    if not size_mm > 0:
        raise ValueError(f"size_mm must be > 0 mm, got {size_mm}")
    _check_image(image)
    sp = _check_spacing(spacing_mm)
    widths = _odd_widths(float(size_mm), sp, is_volumetric(sp, max_anisotropy=max_anisotropy))
    return ndi.median_filter(_as_float32(image), size=widths, mode="reflect")


class NLMeansResult(NamedTuple):
    """Result of :func:`nl_means`; unpacks as ``denoised, sigma_estimated``."""

    denoised: np.ndarray
    """(Z, Y, X) float32, same unit as the input."""
    sigma_estimated: float
    """Estimated standard deviation of the (Gaussian) noise of the input, in the image's unit."""


def _estimate_sigma(image: np.ndarray, max_slices: int) -> float:
    """Donoho's wavelet estimator of Gaussian noise SD, per slice, median over at most ``max_slices`` slices.

    The finest diagonal Haar detail ``(a - b - c + d) / 2`` of each 2 x 2 block has the noise SD of the image and
    is almost free of smooth structure; ``sigma = median(|detail|) / 0.6745`` (as ``skimage.restoration
    .estimate_sigma``, which uses db2 wavelets and needs PyWavelets).
    """
    idx = np.unique(np.linspace(0, image.shape[0] - 1, min(max_slices, image.shape[0])).round().astype(int))
    ny, nx = (image.shape[1] // 2) * 2, (image.shape[2] // 2) * 2
    sigmas = []
    for k in idx:
        s = image[k, :ny, :nx].astype(np.float64)
        detail = (s[0::2, 0::2] - s[0::2, 1::2] - s[1::2, 0::2] + s[1::2, 1::2]) / 2.0
        sigmas.append(np.median(np.abs(detail)) / 0.6745)
    return float(np.median(sigmas)) if sigmas else 0.0


def nl_means(image: np.ndarray, spacing_mm: tuple[float, float, float], *, h_factor: float = 0.8,
             patch_size: int = 5, patch_distance: int = 6, fast_mode: bool = True, sigma: float | None = None,
             max_anisotropy: float = 2.5, max_sigma_slices: int = 16) -> NLMeansResult:
    """Non-local means denoising with an estimated noise level.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Intensities in the series' own unit (HU for CT); never rescaled.
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x), in mm. Decides 3-D or slice-wise (module docstring); patches are in voxels.
    h_factor : float, optional
        Filter strength as a multiple of the estimated noise SD: ``h = h_factor * sigma``. Default 0.8 (the value
        scikit-image suggests with ``fast_mode=True``).
    patch_size : int, optional
        Patch width in voxels. Default 5.
    patch_distance : int, optional
        Largest distance in voxels searched for similar patches. Default 6.
    fast_mode : bool, optional
        scikit-image's fast (uniform patch weights) algorithm. Default True.
    sigma : float, optional
        Noise SD in the image's unit; estimated when None (the default).
    max_anisotropy : float, optional
        The 3-D / slice-wise rule (see the module docstring). Default 2.5.
    max_sigma_slices : int, optional
        The noise SD is the median of per-slice wavelet estimates (Donoho's MAD of the finest diagonal Haar
        detail) over at most this many evenly spaced slices. Default 16.

    Returns
    -------
    NLMeansResult
        ``(denoised, sigma_estimated)``: the float32 image, same unit, and the noise SD used (estimated or given).

    Notes
    -----
    Slow: about 1 s per 512 x 512 slice on one core; meant for small volumes and the MR/PET profiles.

    References
    ----------
    .. [1] A. Buades, B. Coll, J.-M. Morel, "A non-local algorithm for image denoising", CVPR 2005.
    .. [2] J. Darbon et al., "Fast nonlocal filtering applied to electron cryomicroscopy", ISBI 2008.
    .. [3] D. L. Donoho, I. M. Johnstone, "Ideal spatial adaptation by wavelet shrinkage", Biometrika 81, 1994.
    """
    if not h_factor > 0:
        raise ValueError(f"h_factor must be > 0, got {h_factor}")
    if int(patch_size) != patch_size or patch_size < 1:
        raise ValueError(f"patch_size must be a number of voxels >= 1, got {patch_size}")
    if int(patch_distance) != patch_distance or patch_distance < 1:
        raise ValueError(f"patch_distance must be a number of voxels >= 1, got {patch_distance}")
    if sigma is not None and not sigma >= 0:
        raise ValueError(f"sigma must be >= 0 (image unit), got {sigma}")
    if max_sigma_slices < 1:
        raise ValueError(f"max_sigma_slices must be >= 1, got {max_sigma_slices}")
    _check_image(image)
    sp = _check_spacing(spacing_mm)
    from skimage.restoration import denoise_nl_means

    img = _as_float32(image)
    sigma_est = _estimate_sigma(img, max_sigma_slices) if sigma is None else float(sigma)
    if sigma_est == 0:
        return NLMeansResult(img.copy(), 0.0)
    kwargs = dict(patch_size=int(patch_size), patch_distance=int(patch_distance), h=h_factor * sigma_est,
                  fast_mode=fast_mode, sigma=sigma_est, preserve_range=True)
    if is_volumetric(sp, max_anisotropy=max_anisotropy) and img.shape[0] > 1:
        out = np.asarray(denoise_nl_means(img, **kwargs), dtype=np.float32)
    else:
        out = np.empty_like(img)
        for k in range(img.shape[0]):
            out[k] = denoise_nl_means(img[k], **kwargs)
    return NLMeansResult(out, sigma_est)
