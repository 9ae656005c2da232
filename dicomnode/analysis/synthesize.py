"""Image synthesis: thick-slab projections along the slice axis, as weighted sums of shifted images.

A slab ``k`` of thickness ``T`` mm is centred at ``c_k = c_0 + k * S`` along the slice normal (``S`` the slab spacing in
mm; ``c_0`` puts the first slab's lower edge at the lower edge of the first slice). Source slice ``i`` covers
``[z_i - dz/2, z_i + dz/2]``; its weight in slab ``k`` is the length of its overlap with ``[c_k - T/2, c_k + T/2]``,
in mm. The average projection is the weighted mean of the shifted slices, ``sum_i w_ki I_i / sum_i w_ki``; the maximum
and minimum projections take the extreme over the slices that overlap the slab by at least half a slice (a slice that
only grazes the slab does not set its maximum). As many slabs as fit in the volume's extent are made; a slab
thicker than the volume becomes one slab over the whole volume.

The result is a :class:`~dicomnode.analysis.volume.Volume` with the source's in-plane geometry, spacing ``S`` along the
normal and origin at the first slab's centre: each output slice sits at its slab's centre in patient space.
"""

from __future__ import annotations

import math

import numpy as np

from dicomnode.analysis.volume import Volume

__all__ = ["PROJECTIONS", "slab_weights", "thick_slab"]

#: Projection names -> what they compute.
PROJECTIONS = {"mip": "maximum intensity projection", "minip": "minimum intensity projection",
               "avg": "average intensity projection"}


def slab_weights(n_slices: int, dz_mm: float, *, slab_mm: float, spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Overlap weights of source slices in thick slabs.

    Parameters
    ----------
    n_slices : int
        Number of source slices.
    dz_mm : float
        Distance between source slice centres, mm.
    slab_mm : float
        Slab thickness, mm (> 0).
    spacing_mm : float
        Distance between slab centres, mm (> 0).

    Returns
    -------
    weights : (K, n_slices) ndarray of float
        Overlap of each source slice with each slab, mm.
    centres : (K,) ndarray of float
        Slab centres in source slice index units (fractional z index).
    """
    if n_slices < 1:
        raise ValueError(f"n_slices must be >= 1, got {n_slices}")
    for name, v in (("dz_mm", dz_mm), ("slab_mm", slab_mm), ("spacing_mm", spacing_mm)):
        if not (v > 0 and math.isfinite(v)):
            raise ValueError(f"{name} must be > 0 mm, got {v}")
    extent = n_slices * dz_mm
    lower = -0.5 * dz_mm  # lower edge of slice 0, in mm from its centre
    if slab_mm >= extent:
        centres_mm = np.array([lower + 0.5 * extent])
        half = 0.5 * extent
    else:
        k = int(math.floor((extent - slab_mm) / spacing_mm + 1e-9)) + 1
        centres_mm = lower + 0.5 * slab_mm + spacing_mm * np.arange(k)
        half = 0.5 * slab_mm
    z = dz_mm * np.arange(n_slices)
    lo = np.maximum(z[None, :] - 0.5 * dz_mm, centres_mm[:, None] - half)
    hi = np.minimum(z[None, :] + 0.5 * dz_mm, centres_mm[:, None] + half)
    return np.clip(hi - lo, 0.0, None), centres_mm / dz_mm


def thick_slab(volume: Volume, *, projection: str, slab_mm: float, spacing_mm: float | None = None) -> Volume:
    """Thick-slab maximum, minimum or average projection along the slice axis.

    Parameters
    ----------
    volume : Volume
        The source (z, y, x), in its own unit; never rescaled.
    projection : {"mip", "minip", "avg"}
        Maximum, minimum or (overlap-weighted) average intensity.
    slab_mm : float
        Slab thickness, mm.
    spacing_mm : float, optional
        Distance between slab centres, mm. Default: ``slab_mm`` (contiguous slabs).

    Returns
    -------
    Volume
        (K, Y, X) float32; spacing (spacing_mm, dy, dx) (for a single slab: its thickness); origin at the first
        slab's centre; same direction, modality and unit.

    Raises
    ------
    ValueError
        For an unknown projection or a non-positive thickness or spacing.
    """
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {sorted(PROJECTIONS)}, got {projection!r}")
    spacing = float(slab_mm if spacing_mm is None else spacing_mm)
    dz = float(volume.spacing_mm[0])
    w, centres = slab_weights(volume.shape[0], dz, slab_mm=float(slab_mm), spacing_mm=spacing)
    a = volume.array
    out = np.empty((w.shape[0],) + a.shape[1:], dtype=np.float32)
    for k in range(w.shape[0]):
        if projection == "avg":
            idx = np.flatnonzero(w[k] > 0)
            wk = (w[k, idx] / w[k, idx].sum()).astype(np.float32)
            acc = np.zeros(a.shape[1:], dtype=np.float32)
            for i, wi in zip(idx, wk):  # a weighted sum of shifted images
                acc += wi * a[i]
            out[k] = acc
        else:
            idx = np.flatnonzero(w[k] >= 0.5 * dz - 1e-6)
            if idx.size == 0:
                idx = np.array([int(np.argmax(w[k]))])
            reduce = np.max if projection == "mip" else np.min
            out[k] = reduce(a[idx[0]:idx[-1] + 1], axis=0)
    origin = volume.index_to_patient(np.array([[centres[0], 0.0, 0.0]]))[0]
    out_dz = spacing if w.shape[0] > 1 else float(min(slab_mm, volume.shape[0] * dz))
    return Volume(out, (out_dz, volume.spacing_mm[1], volume.spacing_mm[2]),
                  (float(origin[0]), float(origin[1]), float(origin[2])), np.asarray(volume.direction),
                  volume.modality, volume.unit)
