"""Contrast enhancement: background blending (unsharp masking), windowing and CLAHE, with sizes in millimetres.

:func:`background_blend` and :func:`window` keep the image's unit (HU stays HU); :func:`clahe` and
``window(..., normalise=True)`` map to [0, 1] and say so. Whether a step works in 3-D or slice by slice follows
the rule of :mod:`dicomnode.analysis.denoise` (``dz <= 2.5 * mean(dy, dx)`` -> 3-D).
"""

from __future__ import annotations

import numpy as np

from dicomnode.analysis.denoise import _as_float32, _check_image, _check_spacing, gaussian, is_volumetric

__all__ = ["background_blend", "clahe", "window"]


def background_blend(image: np.ndarray, spacing_mm: tuple[float, float, float], *, alpha: float = 1.5,
                     background_sigma_mm: float = 20.0, max_anisotropy: float = 2.5) -> np.ndarray:
    """Blend an image with its large-scale background: ``alpha * I + (1 - alpha) * B``.

    ``B`` is ``I`` smoothed with a Gaussian of ``background_sigma_mm`` (see :func:`denoise.gaussian`, which
    handles anisotropic spacing and the 3-D / slice-wise rule).

    * ``alpha > 1`` sharpens: it is unsharp masking, ``I + (alpha - 1) * (I - B)``, which amplifies structures
      smaller than about ``background_sigma_mm`` by the factor ``alpha``;
    * ``0 <= alpha < 1`` flattens the image towards its background (softens local contrast);
    * ``alpha = 1`` returns ``I``.

    Uniform regions keep their value (``B = I`` there), so HU stays HU far from edges; near edges values may
    overshoot the input range when ``alpha > 1``.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Intensities in the series' own unit (HU for CT).
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x), in mm.
    alpha : float, optional
        Weight of the image; ``1 - alpha`` is the weight of the background. Default 1.5. Must be >= 0.
    background_sigma_mm : float, optional
        Standard deviation of the background's Gaussian, in mm. Default 20.0. Must be > 0.
    max_anisotropy : float, optional
        The 3-D / slice-wise rule. Default 2.5.

    Returns
    -------
    (Z, Y, X) ndarray of float32
        The blended image, in the input's unit.

    References
    ----------
    .. [1] R. C. Gonzalez, R. E. Woods, Digital Image Processing, 4th ed., section 3.6 (unsharp masking and
       highboost filtering).
    """
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0 (1 = unchanged, > 1 sharpens), got {alpha}")
    if not background_sigma_mm > 0:
        raise ValueError(f"background_sigma_mm must be > 0 mm, got {background_sigma_mm}")
    _check_image(image)
    img = _as_float32(image)
    background = gaussian(img, spacing_mm, sigma_mm=background_sigma_mm, max_anisotropy=max_anisotropy)
    background *= np.float32(1.0 - alpha)
    background += np.float32(alpha) * img  # reuse the background's buffer: one extra float32 volume in all
    return background


def window(image: np.ndarray, *, center: float, width: float, normalise: bool = False) -> np.ndarray:
    """Clip intensities to a display window.

    Parameters
    ----------
    image : ndarray
        Intensities in the series' own unit (HU for CT), any shape.
    center : float
        Window centre, in the image's unit (e.g. -600 HU for lung, 40 HU for soft tissue).
    width : float
        Window width, in the image's unit (> 0), e.g. 1500 HU for lung, 400 HU for soft tissue.
    normalise : bool, optional
        False (the default): return values clipped to ``[center - width/2, center + width/2]``, still in the
        image's unit. True: map that window linearly to [0, 1] (unitless).

    Returns
    -------
    ndarray of float32
        Same shape as ``image``.
    """
    if not width > 0:
        raise ValueError(f"width must be > 0 (image unit), got {width}")
    if not np.isfinite(center):
        raise ValueError(f"center must be finite, got {center}")
    lo, hi = center - width / 2.0, center + width / 2.0
    out = np.clip(_as_float32(np.asarray(image)), np.float32(lo), np.float32(hi)).astype(np.float32, copy=False)
    if normalise:
        out -= np.float32(lo)
        out /= np.float32(width)
    return out


def clahe(image: np.ndarray, spacing_mm: tuple[float, float, float], *, clip_limit: float = 0.01,
          kernel_size_mm: float = 50.0, value_range: tuple[float, float], nbins: int = 256,
          max_anisotropy: float = 2.5) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (CLAHE), with the tile size in mm.

    The image is clipped to ``value_range`` and scaled to [0, 1], then equalised by
    ``skimage.exposure.equalize_adapthist`` in 3-D or slice by slice (the rule of :mod:`denoise`).

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Intensities in the series' own unit (HU for CT).
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x), in mm (may be passed by keyword).
    clip_limit : float, optional
        Histogram clip limit, normalised to (0, 1]; higher gives more contrast. Default 0.01.
    kernel_size_mm : float, optional
        Width of the contextual regions (tiles), in mm, on every equalised axis (at least 2 voxels). Default 50.
    value_range : (float, float)
        (low, high) in the image's unit mapped to 0 and 1 before equalisation, e.g. (-1000, 1000) HU; values
        outside are clipped. Required: CLAHE depends on it and there is no sensible default across modalities.
    nbins : int, optional
        Number of histogram bins. Default 256.
    max_anisotropy : float, optional
        The 3-D / slice-wise rule. Default 2.5.

    Returns
    -------
    (Z, Y, X) ndarray of float32
        Equalised values in [0, 1] (unitless: **not** in the image's unit any more).

    References
    ----------
    .. [1] K. Zuiderveld, "Contrast Limited Adaptive Histogram Equalization", Graphics Gems IV, 1994.
    """
    if not 0 < clip_limit <= 1:
        raise ValueError(f"clip_limit must be in (0, 1], got {clip_limit}")
    if not kernel_size_mm > 0:
        raise ValueError(f"kernel_size_mm must be > 0 mm, got {kernel_size_mm}")
    lo, hi = (float(v) for v in value_range)
    if not hi > lo:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}")
    if int(nbins) != nbins or nbins < 2:
        raise ValueError(f"nbins must be an integer >= 2, got {nbins}")
    _check_image(image)
    sp = _check_spacing(spacing_mm)
    from skimage.exposure import equalize_adapthist

    scaled = window(image, center=(lo + hi) / 2.0, width=hi - lo, normalise=True)
    kernel = [max(2, int(round(kernel_size_mm / s))) for s in sp]
    if is_volumetric(sp, max_anisotropy=max_anisotropy) and scaled.shape[0] > 1:
        kernel[0] = min(kernel[0], scaled.shape[0])
        return equalize_adapthist(scaled, kernel_size=kernel, clip_limit=clip_limit, nbins=int(nbins)).astype(
            np.float32, copy=False)
    out = np.empty_like(scaled)
    for k in range(scaled.shape[0]):
        out[k] = equalize_adapthist(scaled[k], kernel_size=kernel[1:], clip_limit=clip_limit, nbins=int(nbins))
    return out
