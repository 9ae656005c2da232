"""Filter responses as feature maps (convolutional filters of IBSI-2), with kernel widths in mm.

Every filter takes the voxel spacing and converts widths in mm to voxels per axis, so anisotropic CT
(e.g. 0.8 x 0.8 x 1.5 mm) gets a physically round kernel. Derivatives are in physical units (per mm, per mm^2).
Boundaries are padded by mirroring (IBSI-2 default "mirror", scipy's "reflect"). Compute maps on the ROI's bounding
box plus :func:`support_margin_mm` (the kernel's reach) rather than the whole volume: same values, far less work.
Then extract the usual intensity statistics from the response inside the ROI.

References
----------
Depeursinge A. et al., "Standardised convolutional filtering for radiomics" (IBSI chapter 2), arXiv:2006.05470;
scikit-image ``filters/_gaussian.py``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from dicomnode.analysis.features.processing import check_spacing

__all__ = [
    "difference_of_gaussians",
    "filter_bank",
    "gaussian",
    "gradient_magnitude",
    "laplacian_of_gaussian",
    "mean",
    "support_margin_mm",
]

_MODES = ("reflect", "nearest", "wrap", "constant", "mirror")


def _sigmas(spacing_mm: tuple[float, ...], sigma_mm: float, in_plane_only: bool) -> list[float]:
    sig = [sigma_mm / s for s in spacing_mm]
    if in_plane_only:
        sig[0] = 0.0  # 2-D filtering: slices stay independent
    return sig


def _check(image: np.ndarray, spacing_mm: tuple[float, float, float], sigma_mm: float, mode: str, truncate: float):
    if not np.isfinite(sigma_mm) or sigma_mm <= 0:
        raise ValueError(f"sigma_mm must be > 0 mm, got {sigma_mm}")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if truncate <= 0:
        raise ValueError(f"truncate must be > 0 standard deviations, got {truncate}")
    spacing = check_spacing(spacing_mm, image.ndim)
    return np.asarray(image, dtype=np.float32), spacing


def _kernel(sigma_vox: float, order: int, truncate: float) -> np.ndarray:
    """Sampled Gaussian (derivative) kernel for ndi.correlate1d, normalised to be exact on polynomials.

    Order 0 sums to 1; order 1 is odd with sum(t w) = 1 (exact on ramps); order 2 is even with sum(w) = 0 and
    sum(t^2 w) / 2 = 1 (exact on parabolas). Plain sampled derivative kernels miss this by several per cent when
    sigma is below ~1 voxel, e.g. 1 mm across 2 mm slices.
    """
    radius = max(int(truncate * sigma_vox + 0.5), order)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (t / sigma_vox) ** 2)
    g /= g.sum()
    if order == 0:
        return g
    if order == 1:
        w = t * g
        return w / np.sum(t * w)
    w = (t * t / sigma_vox**2 - 1.0) * g
    w -= g * w.sum()  # sum(w) = 0 without breaking the symmetry
    return w / (0.5 * np.sum(t * t * w))


def _derivative(img: np.ndarray, sig: list[float], axis: int, order: int, mode: str, truncate: float) -> np.ndarray:
    """Gaussian-smoothed derivative of `order` along `axis`, per voxel^order; smoothing only along axes with sigma."""
    out = img
    for a, s in enumerate(sig):
        if a == axis:
            out = ndi.correlate1d(out, _kernel(s, order, truncate), axis=a, mode=mode, output=np.float32)
        elif s > 0:
            out = ndi.correlate1d(out, _kernel(s, 0, truncate), axis=a, mode=mode, output=np.float32)
    return out


def support_margin_mm(sigma_mm: float, *, truncate: float = 4.0) -> float:
    """Reach of a Gaussian-based kernel, in mm: crop to the ROI plus this margin before filtering."""
    return float(truncate * sigma_mm)


def gaussian(
    image: np.ndarray,
    spacing_mm: tuple[float, float, float],
    *,
    sigma_mm: float,
    truncate: float = 4.0,
    mode: str = "reflect",
    in_plane_only: bool = False,
) -> np.ndarray:
    """Gaussian smoothing with a standard deviation in mm.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Intensities, in the image's unit (never rescaled).
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x), in mm.
    sigma_mm : float
        Standard deviation of the kernel, in mm.
    truncate : float, optional
        Kernel half-width in standard deviations. Default 4.
    mode : str, optional
        Boundary padding, scipy.ndimage name. Default "reflect" (IBSI-2 "mirror").
    in_plane_only : bool, optional
        Filter each slice separately (IBSI 2D). Default False.

    Returns
    -------
    (Z, Y, X) ndarray of float32
        Smoothed intensities, in the image's unit.
    """
    img, spacing = _check(image, spacing_mm, sigma_mm, mode, truncate)
    return ndi.gaussian_filter(img, _sigmas(spacing, sigma_mm, in_plane_only), mode=mode, truncate=truncate)


def laplacian_of_gaussian(
    image: np.ndarray,
    spacing_mm: tuple[float, float, float],
    *,
    sigma_mm: float,
    scale_normalised: bool = True,
    truncate: float = 4.0,
    mode: str = "reflect",
    in_plane_only: bool = False,
) -> np.ndarray:
    """Laplacian of Gaussian (blob detector), derivatives in mm.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Intensities, in the image's unit.
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x), in mm.
    sigma_mm : float
        Gaussian standard deviation, in mm. A bright blob of radius r responds most strongly (most negative) near
        sigma = r / sqrt(3) in 3-D (r / sqrt(2) in 2-D) when scale-normalised.
    scale_normalised : bool, optional
        Multiply by sigma_mm^2 so responses compare across scales (unit: the image's unit). Otherwise the unit is
        image unit / mm^2. Default True.
    truncate, mode, in_plane_only
        As :func:`gaussian`.

    Returns
    -------
    (Z, Y, X) ndarray of float32
        Sum of the second derivatives of the smoothed image over the filtered axes.
    """
    img, spacing = _check(image, spacing_mm, sigma_mm, mode, truncate)
    sig = _sigmas(spacing, sigma_mm, in_plane_only)
    out = np.zeros(img.shape, dtype=np.float32)
    for axis in range(img.ndim):
        if sig[axis] == 0.0:
            continue
        out += _derivative(img, sig, axis, 2, mode, truncate) / spacing[axis] ** 2
    if scale_normalised:
        out *= sigma_mm**2
    return out


def gradient_magnitude(
    image: np.ndarray,
    spacing_mm: tuple[float, float, float],
    *,
    sigma_mm: float,
    truncate: float = 4.0,
    mode: str = "reflect",
    in_plane_only: bool = False,
) -> np.ndarray:
    """Magnitude of the Gaussian-smoothed gradient, in image unit per mm.

    Parameters are those of :func:`gaussian`; with `in_plane_only` only the y and x derivatives count.

    Returns
    -------
    (Z, Y, X) ndarray of float32
    """
    img, spacing = _check(image, spacing_mm, sigma_mm, mode, truncate)
    sig = _sigmas(spacing, sigma_mm, in_plane_only)
    total = np.zeros(img.shape, dtype=np.float32)
    for axis in range(img.ndim):
        if in_plane_only and axis == 0:
            continue
        d = _derivative(img, sig, axis, 1, mode, truncate) / spacing[axis]
        total += d * d
    return np.sqrt(total, out=total)


def difference_of_gaussians(
    image: np.ndarray,
    spacing_mm: tuple[float, float, float],
    *,
    sigma_mm: float,
    sigma_high_mm: float | None = None,
    truncate: float = 4.0,
    mode: str = "reflect",
    in_plane_only: bool = False,
) -> np.ndarray:
    """Band-pass: Gaussian(sigma_mm) - Gaussian(sigma_high_mm), in the image's unit.

    Parameters
    ----------
    sigma_mm : float
        The smaller standard deviation, in mm.
    sigma_high_mm : float, optional
        The larger one, in mm; must exceed `sigma_mm`. Default 1.6 * sigma_mm (approximates the LoG).
    Other parameters as :func:`gaussian`.

    Returns
    -------
    (Z, Y, X) ndarray of float32
    """
    high = 1.6 * sigma_mm if sigma_high_mm is None else float(sigma_high_mm)
    if not high > sigma_mm:
        raise ValueError(f"sigma_high_mm ({high}) must be larger than sigma_mm ({sigma_mm})")
    kwargs = dict(truncate=truncate, mode=mode, in_plane_only=in_plane_only)
    return gaussian(image, spacing_mm, sigma_mm=sigma_mm, **kwargs) - gaussian(
        image, spacing_mm, sigma_mm=high, **kwargs
    )


def mean(
    image: np.ndarray, *, support_voxels: int, mode: str = "reflect", in_plane_only: bool = False
) -> np.ndarray:
    """IBSI-2 mean filter: average over a cube (square in 2-D) of `support_voxels` voxels per side.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Intensities, in the image's unit.
    support_voxels : int
        Odd side length of the support, in voxels (IBSI-2 defines it in voxels, not mm).
    mode, in_plane_only
        As :func:`gaussian`.

    Returns
    -------
    (Z, Y, X) ndarray of float32
    """
    if int(support_voxels) != support_voxels or support_voxels < 1 or support_voxels % 2 == 0:
        raise ValueError(f"support_voxels must be an odd integer >= 1, got {support_voxels}")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    size = [int(support_voxels)] * image.ndim
    if in_plane_only:
        size[0] = 1
    return ndi.uniform_filter(np.asarray(image, dtype=np.float32), size=size, mode=mode)


def filter_bank(
    image: np.ndarray,
    spacing_mm: tuple[float, float, float],
    *,
    sigmas_mm: tuple[float, ...] = (1.0, 2.0, 4.0),
    in_plane_only: bool = False,
) -> dict[str, np.ndarray]:
    """A standard set of response maps: Gaussian, LoG, gradient magnitude and DoG at each sigma.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Intensities, in the image's unit; crop to the ROI plus ``support_margin_mm(max(sigmas_mm) * 1.6)`` first.
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x), in mm.
    sigmas_mm : tuple of float, optional
        Scales, in mm. Default (1, 2, 4).
    in_plane_only : bool, optional
        2-D filtering. Default False.

    Returns
    -------
    dict of str to (Z, Y, X) ndarray of float32
        Keys like ``"log_sigma2mm"``, ``"gaussian_sigma1mm"``, ``"gradient_sigma4mm"``, ``"dog_sigma1mm"``.
    """
    if not sigmas_mm:
        raise ValueError("sigmas_mm is empty: give at least one scale in mm")
    out: dict[str, np.ndarray] = {}
    for s in sigmas_mm:
        tag = f"sigma{s:g}mm"
        out[f"gaussian_{tag}"] = gaussian(image, spacing_mm, sigma_mm=s, in_plane_only=in_plane_only)
        out[f"log_{tag}"] = laplacian_of_gaussian(image, spacing_mm, sigma_mm=s, in_plane_only=in_plane_only)
        out[f"gradient_{tag}"] = gradient_magnitude(image, spacing_mm, sigma_mm=s, in_plane_only=in_plane_only)
        out[f"dog_{tag}"] = difference_of_gaussians(image, spacing_mm, sigma_mm=s, in_plane_only=in_plane_only)
    return out
