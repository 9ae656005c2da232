"""Post-segmentation correction: posterior smoothing, small-component removal, hole filling.

Every correction reports how many voxels it changed, so a result can say what the clean-up did.
Connected components use face connectivity (6 neighbours in 3-D, 4 in a slice) unless told otherwise; holes are
background regions not connected to the border of the grid (or, slice-wise, of the slice), as in
``scipy.ndimage.binary_fill_holes``. Masks are processed inside their bounding box, so the cost follows the size
of the object, not of the volume.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from queue import SimpleQueue

import numpy as np
from scipy import ndimage as ndi

from dicomnode.analysis.denoise import _check_spacing, is_volumetric
from dicomnode.analysis.threads import thread_budget
from dicomnode.analysis.volume import LabelMap, Segment

__all__ = [
    "DEFAULT_HOLE_FILLED_LABELS",
    "PosteriorSmoothing",
    "correct_labels",
    "fill_holes",
    "remove_small_components",
    "smooth_posteriors",
]

#: Class posteriors are kept as uint8 steps of 1/POSTERIOR_SCALE (255 = 1): made by
#: :mod:`dicomnode.analysis.segment` (which re-exports it), smoothed here.
POSTERIOR_SCALE = 255

#: Segments whose holes :func:`correct_labels` fills: solid organs and outlines. Not bone (the spinal canal is a
#: hole in every axial slice of a vertebra) nor tissue classes (their holes are other tissues).
DEFAULT_HOLE_FILLED_LABELS: tuple[str, ...] = ("body", "lung_left", "lung_right")


def _check_mask(mask: np.ndarray) -> None:
    if not isinstance(mask, np.ndarray) or mask.ndim != 3 or mask.dtype != np.bool_:
        raise ValueError(f"mask must be a 3-D bool ndarray, got {getattr(mask, 'dtype', type(mask))} "
                         f"{getattr(mask, 'shape', '')}")


def _bbox(mask: np.ndarray, pad: int) -> tuple[slice, ...] | None:
    """Bounding box of the True voxels, grown by ``pad`` voxels and clipped to the grid; None if empty."""
    slices = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        nz = np.flatnonzero(mask.any(axis=other))
        if nz.size == 0:
            return None
        slices.append(slice(max(0, nz[0] - pad), min(mask.shape[axis], nz[-1] + 1 + pad)))
    return tuple(slices)


def _structure(connectivity: int, slice_wise: bool) -> np.ndarray:
    if connectivity not in (1, 2, 3):
        raise ValueError(f"connectivity must be 1 (faces), 2 (edges) or 3 (corners), got {connectivity}")
    s = ndi.generate_binary_structure(3, connectivity)
    if slice_wise:
        s[0] = False
        s[2] = False
    return s


def _label(mask: np.ndarray, structure: np.ndarray, work: "np.ndarray | list[np.ndarray] | None"
           ) -> tuple[np.ndarray, int]:
    """``ndi.label`` writing into ``work`` (a flat int32 buffer reused across calls) when it is large enough; a
    one-element list holds a uint16 buffer that grows to the largest mask labelled (allocated at the first call's
    size): half the memory of int32 labels. A mask of more than 65535 components (scipy refuses the narrower
    type) is labelled again as int32, as without a buffer; the components and their numbers are the same either
    way (scipy numbers them in scan order whatever the output type)."""
    if isinstance(work, list):
        if not work or work[0].size < mask.size:
            work[:] = []  # the smaller buffer is let go before the larger one is made
            work[:] = [np.empty(mask.size, dtype=np.uint16)]
        labels = work[0][:mask.size].reshape(mask.shape)
        try:
            n = ndi.label(mask, structure=structure, output=labels)
        except RuntimeError:  # "insufficient bit-depth in requested output type"
            return ndi.label(mask, structure=structure)
        return labels, int(n)
    if work is None or work.size < mask.size:
        return ndi.label(mask, structure=structure)
    labels = work[:mask.size].reshape(mask.shape)
    n = ndi.label(mask, structure=structure, output=labels)
    return labels, int(n)


def _holes(mask: np.ndarray, slice_wise: bool, work: "np.ndarray | list[np.ndarray] | None" = None
           ) -> tuple[tuple[slice, ...], np.ndarray] | None:
    """(bounding box, holes inside it) of a mask, or None when it has no holes."""
    box = _bbox(mask, pad=1)
    if box is None:
        return None
    crop = mask[box]
    labels, n = _label(~crop, _structure(1, slice_wise), work)
    if n == 0:
        return None
    # Components on a face of the crop touch the grid's border: each face is either the grid's edge or a padding
    # layer outside the mask's bounding box, which is all background and connected to the outside.
    touching = np.zeros(n + 1, dtype=bool)
    for axis in ((1, 2) if slice_wise else (0, 1, 2)):
        touching[np.unique(np.take(labels, 0, axis=axis))] = True
        touching[np.unique(np.take(labels, labels.shape[axis] - 1, axis=axis))] = True
    touching[0] = True  # label 0 is the mask itself
    if touching.all():
        return None
    return box, ~touching[labels]


def _filled(mask: np.ndarray, slice_wise: bool, work: "np.ndarray | list[np.ndarray] | None" = None, *,
            copy: bool, slab_voxels: int = 1 << 20) -> np.ndarray:
    """``mask`` with its holes filled: ``mask`` itself when it has none, else a copy (``copy``) or ``mask`` filled
    in place.

    Slice-wise holes are found a slab of whole slices (about ``slab_voxels`` voxels of the mask's box) at a time:
    a slice's holes do not depend on the other slices, so the labels, the background and the holes are arrays of
    a slab, not of the box (the same holes as :func:`_holes` over the whole box)."""
    if not slice_wise:
        found = _holes(mask, slice_wise, work)
        if found is None:
            return mask
        box, holes = found
        out = mask.copy() if copy else mask
        out[box] |= holes
        return out
    box = _bbox(mask, pad=1)
    if box is None:
        return mask
    per_slice = (box[1].stop - box[1].start) * (box[2].stop - box[2].start)
    depth = max(1, int(slab_voxels) // max(per_slice, 1))
    out = mask
    for z0 in range(box[0].start, box[0].stop, depth):
        sub = (slice(z0, min(box[0].stop, z0 + depth)), box[1], box[2])
        found = _slab_holes(mask[sub], work)
        if found is not None:
            if out is mask and copy:
                out = mask.copy()
            out[sub] |= found
        del found
    return out


def _slab_holes(crop: np.ndarray, work: "np.ndarray | list[np.ndarray] | None") -> np.ndarray | None:
    """The slice-wise holes of ``crop`` (slices of a mask's box grown by 1 voxel in y and x), or None: what
    :func:`_holes` finds in these slices of the box."""
    labels, n = _label(~crop, _structure(1, slice_wise=True), work)
    if n == 0:
        return None
    touching = np.zeros(n + 1, dtype=bool)
    for axis in (1, 2):
        touching[np.unique(np.take(labels, 0, axis=axis))] = True
        touching[np.unique(np.take(labels, labels.shape[axis] - 1, axis=axis))] = True
    touching[0] = True
    if touching.all():
        return None
    return ~touching[labels]


def fill_holes(mask: np.ndarray, *, slice_wise: bool = False) -> np.ndarray:
    """Fill the holes of a binary mask.

    Parameters
    ----------
    mask : (Z, Y, X) ndarray of bool
        The mask.
    slice_wise : bool, optional
        False (the default): fill 3-D holes (background not connected, through faces, to the grid's border).
        True: fill each slice (axis 0) on its own: background not connected, in that slice, to the slice's
        border. Slice-wise filling also closes tubes open at the top and bottom (airways, the spinal canal).

    Returns
    -------
    (Z, Y, X) ndarray of bool
        A new mask, a superset of ``mask``.
    """
    _check_mask(mask)
    out = _filled(mask, slice_wise, copy=True)
    return mask.copy() if out is mask else out


def _component_sizes(labels: np.ndarray, n: int, chunk: int | None = None) -> np.ndarray:
    """``np.bincount(labels.ravel(), minlength=n + 1)`` about a million voxels at a time: bincount casts its input to
    int64, which for a whole CT's int32 labels is a temporary twice their size. A chunk's int64 copy (8 MiB) stays
    in cache: 4 Mi-voxel chunks took five times as long; with many components the chunk grows to twice their
    number, so that adding the per-chunk counts stays cheap."""
    if chunk is None:
        chunk = max(1 << 20, 2 * (n + 1))
    flat = labels.reshape(-1)
    if flat.size <= chunk:
        return np.bincount(flat, minlength=n + 1)
    sizes = np.zeros(n + 1, dtype=np.int64)
    for start in range(0, flat.size, chunk):
        sizes += np.bincount(flat[start:start + chunk], minlength=n + 1)
    return sizes


def _small_components(mask: np.ndarray, min_voxels: float, connectivity: int,
                      work: "np.ndarray | list[np.ndarray] | None" = None, *, in_place: bool = False
                      ) -> tuple[np.ndarray, int] | None:
    """(a mask with the components below ``min_voxels`` removed, the number of voxels removed), or None when there
    are none. ``in_place``: the components are removed from ``mask`` itself (no copy of it), which is returned."""
    box = _bbox(mask, pad=0)
    if box is None or min_voxels <= 1:
        return None
    labels, n = _label(mask[box], _structure(connectivity, slice_wise=False), work)
    sizes = _component_sizes(labels, n)
    small = np.flatnonzero(sizes[1:] < min_voxels) + 1
    if small.size == 0:
        return None
    removed = int(sizes[small].sum())
    out = mask if in_place else mask.copy()
    crop = out[box]
    if small.size <= 2000:  # few: clear each inside its own bounding box (no pass over the whole crop)
        objects = ndi.find_objects(labels)
        for lab in small:
            sl = objects[lab - 1]
            crop[sl][labels[sl] == lab] = False
    else:
        keep = sizes >= min_voxels
        keep[0] = False
        crop[...] = keep[labels]
    return out, removed


def remove_small_components(mask: np.ndarray, spacing_mm: tuple[float, float, float], *, min_volume_ml: float,
                            connectivity: int = 1) -> np.ndarray:
    """Remove the connected components smaller than a volume.

    Parameters
    ----------
    mask : (Z, Y, X) ndarray of bool
        The mask.
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x), in mm.
    min_volume_ml : float
        Components with a volume below this, in mL (1 mL = 1000 mm^3), are removed. 0 keeps everything.
    connectivity : int, optional
        1 (faces, the default), 2 (edges) or 3 (corners): which neighbours join a component.

    Returns
    -------
    (Z, Y, X) ndarray of bool
        A new mask, a subset of ``mask``.
    """
    if not min_volume_ml >= 0:
        raise ValueError(f"min_volume_ml must be >= 0 mL, got {min_volume_ml}")
    _check_mask(mask)
    sp = _check_spacing(spacing_mm)
    _structure(connectivity, slice_wise=False)
    out = _small_components(mask, min_volume_ml * 1000.0 / (sp[0] * sp[1] * sp[2]), connectivity)
    return mask.copy() if out is None else out[0]


@dataclass(frozen=True, eq=False, slots=True)
class PosteriorSmoothing:
    """Result of :func:`smooth_posteriors`.

    Attributes
    ----------
    labels : (Z, Y, X) ndarray of int8 (int16 past 127 classes)
        Class index (0 .. K-1) of the largest smoothed posterior; -1 where all input posteriors are 0 (outside the
        segmented region).
    posteriors : (K, Z, Y, X) ndarray of float32, or uint8 for uint8 input
        The smoothed posteriors, summing to 1 (uint8: 255 within K / 2 steps) where the input did and 0 elsewhere.
    voxels_changed : int
        Number of voxels whose most probable class changed.
    """

    labels: np.ndarray
    posteriors: np.ndarray
    voxels_changed: int


def _check_smoothing(posteriors: np.ndarray, spacing_mm: tuple[float, float, float], *, sigma_mm: float,
                     iterations: int, slab_voxels: int = 500_000, out: np.ndarray | None = None
                     ) -> tuple[float, float, float]:
    """The checks :func:`smooth_posteriors` makes before it touches anything (a caller that lets go of memory
    before the call makes them first); returns the checked spacing."""
    if not sigma_mm > 0:
        raise ValueError(f"sigma_mm must be > 0 mm, got {sigma_mm}")
    if int(iterations) != iterations or iterations < 0:
        raise ValueError(f"iterations must be an integer >= 0, got {iterations}")
    if not isinstance(posteriors, np.ndarray) or posteriors.ndim != 4:
        raise ValueError(f"posteriors must be a (K, Z, Y, X) ndarray, got {getattr(posteriors, 'shape', None)}")
    if int(slab_voxels) != slab_voxels or slab_voxels < 1:
        raise ValueError(f"slab_voxels must be an integer >= 1, got {slab_voxels}")
    sp = _check_spacing(spacing_mm)
    out_dtype = np.uint8 if posteriors.dtype == np.uint8 else np.float32
    if out is not None and (not isinstance(out, np.ndarray) or out.shape != posteriors.shape
                            or out.dtype != out_dtype or not out.flags.writeable):
        raise ValueError(f"out must be a writeable {np.dtype(out_dtype)} array of shape {posteriors.shape}, got "
                         f"{getattr(out, 'dtype', type(out))} {getattr(out, 'shape', '')}")
    if out is not None and out is not posteriors and np.may_share_memory(out, posteriors):
        raise ValueError("out may be posteriors itself or an array that does not overlap it, not a part of it")
    return sp


def smooth_posteriors(posteriors: np.ndarray, spacing_mm: tuple[float, float, float], *, sigma_mm: float = 1.5,
                      iterations: int = 3, max_anisotropy: float = 2.5,
                      slab_voxels: int = 500_000, out: np.ndarray | None = None,
                      workers: int | None = None) -> PosteriorSmoothing:
    """Iterated neighbourhood smoothing of class posteriors (a mean-field, MRF-like prior).

    Each iteration multiplies the voxel's own (input) posterior by the Gaussian-weighted mean of the current
    posteriors around it and renormalises::

        q_k <- p_k * (G_sigma * q_k) / sum_j p_j * (G_sigma * q_j)

    so a voxel takes its neighbours' class unless its own evidence is strong; isolated misclassified voxels flip.

    Parameters
    ----------
    posteriors : (K, Z, Y, X) ndarray
        Class probabilities per voxel (each voxel sums to 1, or is all 0 outside the region of interest); uint8
        posteriors are steps of 1 / :data:`dicomnode.analysis.segment.POSTERIOR_SCALE` (255 = 1), as
        :func:`~dicomnode.analysis.segment.segment_generic` makes them.
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x), in mm.
    sigma_mm : float, optional
        Neighbourhood width: standard deviation of the Gaussian, in mm. Default 1.5.
    iterations : int, optional
        Number of iterations (0 returns the input's labels). Default 3.
    max_anisotropy : float, optional
        3-D / slice-wise rule of :mod:`dicomnode.analysis.denoise`. Default 2.5.
    slab_voxels : int, optional
        The work runs on slabs of whole slices of about this many voxels per class (memory bound), each extended
        by ``iterations`` times the kernel's radius along z where it is filtered in 3-D, so the result is the whole
        grid's; a slab is at least that extension deep (the halo costs at most twice the slab's own work). Default
        500 000 (the temporaries of a slab are about 10 float32 copies of it: 20 MB).
    out : ndarray, optional
        Where to write the smoothed posteriors: an array of the input's shape, uint8 for uint8 input, else float32;
        it may be ``posteriors`` itself (each slab's result is written once the next slab has read its input, so
        the result is the same as into a new array, without a second posteriors array in memory). Default: a new
        array.
    workers : int, optional
        Slabs smoothed at once, in threads. Default :func:`~dicomnode.analysis.threads.thread_budget`. The result
        does not depend on it (each slab is computed alone, the same way).

    Returns
    -------
    PosteriorSmoothing
        New labels, smoothed posteriors (uint8 steps for uint8 input, else float32) and the number of voxels whose
        class changed.

    References
    ----------
    .. [1] Y. Zhang, M. Brady, S. Smith, "Segmentation of brain MR images through a hidden Markov random field
       model and the expectation-maximization algorithm", IEEE TMI 20(1), 2001 (the mean-field idea).
    """
    sp = _check_smoothing(posteriors, spacing_mm, sigma_mm=sigma_mm, iterations=iterations,
                          slab_voxels=slab_voxels, out=out)
    quantised = posteriors.dtype == np.uint8
    out_dtype = np.uint8 if quantised else np.float32
    in_place = out is posteriors
    grid = posteriors.shape[1:]
    labels = np.full(grid, -1, dtype=np.int8 if posteriors.shape[0] <= 127 else np.int16)
    if out is None:
        smoothed = np.zeros(posteriors.shape, dtype=out_dtype)
    else:
        smoothed = out
        if not in_place:
            smoothed[...] = 0
    # Work inside the bounding box of the region, grown by the kernel's radius: outside it every posterior is 0
    # and stays 0, and the zeros in the margin give the filter what the whole grid would (the result is identical).
    volumetric = is_volumetric(sp, max_anisotropy=max_anisotropy)
    radius = [int(4.0 * sigma_mm / s + 0.5) for s in sp]  # scipy's own reach: int(truncate * sigma + 0.5)
    if not volumetric:
        radius[0] = 0
    box = _region_box(posteriors)
    if box is None:
        if in_place:
            smoothed[...] = 0
        return PosteriorSmoothing(labels, smoothed, 0)
    box = tuple(slice(max(0, b.start - r), min(n, b.stop + r)) for b, r, n in zip(box, radius, grid))
    # Slabs along z, each extended by ``halo`` slices inside the box: an error at a slab's cut edge travels one
    # kernel radius per iteration, so after all iterations the slab's own slices are exact.
    halo = int(iterations) * radius[0]
    zb = box[0]
    per_slice = (box[1].stop - box[1].start) * (box[2].stop - box[2].start)
    # at least the halo deep: the halo's work is then at most the slab's own, and (in place) a slab's lower halo
    # lies in the slab before it, whose result is written only after this slab has read its input
    slab = max(1, int(slab_voxels) // max(per_slice, 1), halo)
    sigmas = [sigma_mm / s for s in sp]  # as denoise.gaussian: the kernel truncated at 4 sigma, borders reflected
    if not volumetric:
        sigmas[0] = 0.0
    # The slabs are independent: each reads its own extended input and yields its own slices, so they run in
    # threads (numpy and scipy.ndimage release the GIL), their results written in slab order. A slab's result is
    # written only once the next slab has read its input (in place, a slab's lower halo lies in the slab before
    # it); at most ``workers`` slabs are in flight beside the one being read (each about 20 MB at the default
    # slab size).
    workers = max(1, int(workers) if workers is not None else thread_budget())
    changed = 0
    in_flight: deque = deque()

    def write(result: tuple[tuple[slice, ...], np.ndarray, np.ndarray, int]) -> int:
        inner, after, q_out, n_changed = result
        labels[inner] = after
        smoothed[(slice(None),) + inner] = q_out
        return n_changed

    pool = ThreadPoolExecutor(workers) if workers > 1 else None
    try:
        for lo in range(zb.start, zb.stop, slab):
            hi = min(zb.stop, lo + slab)
            a, b = max(zb.start, lo - halo), min(zb.stop, hi + halo)
            ext = (slice(a, b), box[1], box[2])
            p0c = posteriors[(slice(None),) + ext].astype(np.float32)
            validc = _region(posteriors, ext)  # read, as p0c, before the slab before is written (in place)
            args = (p0c, validc, slice(lo - a, lo - a + (hi - lo)), (slice(lo, hi), box[1], box[2]), sigmas,
                    int(iterations), quantised, out_dtype)
            del p0c, validc
            if pool is None:
                changed += write(_smooth_slab(*args))
                continue
            in_flight.append(pool.submit(_smooth_slab, *args))
            del args
            while len(in_flight) > workers:  # every slab in flight was read before this one: its result may go
                changed += write(in_flight.popleft().result())
        while in_flight:
            changed += write(in_flight.popleft().result())
    finally:
        for f in in_flight:
            f.cancel()
        if pool is not None:
            pool.shutdown(wait=True)
    return PosteriorSmoothing(labels, smoothed, changed)


def _smooth_slab(p0c: np.ndarray, validc: np.ndarray, own: slice, inner: tuple[slice, ...], sigmas: list[float],
                 iterations: int, quantised: bool, out_dtype: type
                 ) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray, int]:
    """One slab of :func:`smooth_posteriors`: ``p0c`` the float32 posteriors of its extended box (uint8 steps not
    yet scaled), ``validc`` the region there, ``own`` its own slices within them, ``inner`` those slices' box on the
    grid. Returns (inner, labels there, smoothed posteriors there in the output's type, voxels changed)."""
    if quantised:
        p0c /= np.float32(POSTERIOR_SCALE)
    q = p0c.copy()
    for _ in range(iterations):
        for k in range(q.shape[0]):  # each class filtered in place (scipy's 1-D passes buffer their lines)
            _gaussian_in_place(q[k], sigmas)
        q *= p0c
        total = _class_sum(q)
        np.divide(q, total, out=q, where=total > 0)
        # Where a voxel's own evidence and its neighbourhood disagree completely, keep its own posterior.
        lost = validc & ~(total > 0)
        if lost.any():
            q[:, lost] = p0c[:, lost]
        del total, lost
    q = q[:, own]
    validc = validc[own]
    before = _argmax_classes(p0c[:, own])
    del p0c
    after = _argmax_classes(q)
    changed = int(np.count_nonzero((before != after) & validc))
    after[~validc] = -1
    if quantised:
        q *= np.float32(POSTERIOR_SCALE)
        q += np.float32(0.5)
    # to the output's type as the assignment into it would (uint8: p * 255 + 0.5, truncated)
    return inner, after, q.astype(out_dtype), changed


def _region(posteriors: np.ndarray, box: tuple[slice, ...]) -> np.ndarray:
    """Where any class's posterior is > 0, over ``box`` of the grid."""
    valid = posteriors[0][box] > 0
    for k in range(1, posteriors.shape[0]):
        valid |= posteriors[k][box] > 0
    return valid


def _region_box(posteriors: np.ndarray, slab: int = 16) -> tuple[slice, ...] | None:
    """``_bbox(region, pad=0)`` of the voxels where any class's posterior is > 0, made ``slab`` slices at a time
    (no mask of the grid's size)."""
    nz, ny, nx = posteriors.shape[1:]
    along = [np.zeros(nz, dtype=bool), np.zeros(ny, dtype=bool), np.zeros(nx, dtype=bool)]
    for z0 in range(0, nz, slab):
        v = _region(posteriors, (slice(z0, min(nz, z0 + slab)), slice(None), slice(None)))
        along[0][z0:z0 + v.shape[0]] = v.any(axis=(1, 2))
        along[1] |= v.any(axis=(0, 2))
        along[2] |= v.any(axis=(0, 1))
    slices = []
    for a in along:
        idx = np.flatnonzero(a)
        if idx.size == 0:
            return None
        slices.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return tuple(slices)


def _gaussian_in_place(a: np.ndarray, sigmas: list[float]) -> None:
    ndi.gaussian_filter(a, sigmas, output=a, mode="reflect")


def _class_sum(p: np.ndarray) -> np.ndarray:
    """``p.sum(axis=0)`` for a few contiguous classes, class by class (faster than the strided reduction)."""
    out = p[0].copy()
    for k in range(1, p.shape[0]):
        out += p[k]
    return out


def _argmax_classes(p: np.ndarray) -> np.ndarray:
    """``np.argmax(p, axis=0)`` as int8 (int16 past 127 classes) for a few classes (first maximum on ties), without an int64 temporary.

    A class-by-class pass over contiguous volumes is several times faster than numpy's strided reduction over the
    leading axis.
    """
    out = np.zeros(p.shape[1:], dtype=np.int8 if p.shape[0] <= 127 else np.int16)
    best = p[0].copy()
    for k in range(1, p.shape[0]):
        better = p[k] > best
        out[better] = k
        np.maximum(best, p[k], out=best)
    return out


def correct_labels(labels: LabelMap, spacing_mm: tuple[float, float, float], *, min_volume_ml: float = 0.1,
                   fill_holes: bool = True, slice_wise: bool = True,
                   hole_filled_labels: Collection[str] = DEFAULT_HOLE_FILLED_LABELS,
                   connectivity: int = 1) -> tuple[LabelMap, dict[str, int]]:
    """Clean every segment of a label map: drop small components, then fill holes of solid segments.

    Parameters
    ----------
    labels : LabelMap
        The segments to correct (not modified).
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x), in mm.
    min_volume_ml : float, optional
        Components below this volume, in mL, are removed from every segment. Default 0.1 mL. 0 disables.
    fill_holes : bool, optional
        Fill the holes of the segments named in ``hole_filled_labels``. Default True.
    slice_wise : bool, optional
        Fill holes per slice (True, the default: closes vessels inside the lungs on each axial slice) or in 3-D.
    hole_filled_labels : collection of str, optional
        Labels whose holes are filled. Default :data:`DEFAULT_HOLE_FILLED_LABELS` (body and lungs).
    connectivity : int, optional
        Component connectivity for the size filter: 1 (faces, default), 2 or 3.

    Returns
    -------
    (LabelMap, dict of str to int)
        The corrected label map (segments left empty are dropped and listed in ``not_found``) and, per segment
        label, the number of voxels changed (removed + filled).
    """
    return correct_segments(list(labels.segments), labels.not_found, spacing_mm, min_volume_ml=min_volume_ml,
                            fill_holes=fill_holes, slice_wise=slice_wise, hole_filled_labels=hole_filled_labels,
                            connectivity=connectivity)


def correct_segments(segments: list[Segment | None], not_found: Collection[str],
                     spacing_mm: tuple[float, float, float], *, min_volume_ml: float = 0.1,
                     fill_holes: bool = True, slice_wise: bool = True,
                     hole_filled_labels: Collection[str] = DEFAULT_HOLE_FILLED_LABELS,
                     connectivity: int = 1, owned: Collection[int] = (),
                     workers: int | None = None) -> tuple[LabelMap, dict[str, int]]:
    """:func:`correct_labels` over a list of segments handed over by the caller, with ``not_found`` the labels
    already not found: each entry of ``segments`` is set to None as soon as it is corrected, so that where nothing
    else holds a segment its mask before the correction is let go before the next segment's is made (not every
    mask twice in memory at the end). The options are checked before any entry is touched.

    ``owned``: indices of ``segments`` whose masks nothing else holds (not shared with another segment either):
    those whose holes are not filled lose their small components in place, without a copy of the mask (the
    number of voxels changed is then the number removed).

    ``workers``: segments corrected at once, in threads (scipy's labelling releases the GIL), each thread with its
    own label buffer; the result does not depend on it. Default 1: two segments at once hold two segments' working
    sets, and the masks made in a thread's own heap arena keep its pages (the MR bench's correct step peaked 84 MB
    higher, and 34 MB more stayed after the heap was trimmed, for 0.3 s less wall time with a free core). Every
    entry is checked before any is touched.

    Returns the same as :func:`correct_labels`."""
    if not min_volume_ml >= 0:
        raise ValueError(f"min_volume_ml must be >= 0 mL, got {min_volume_ml}")
    _structure(connectivity, slice_wise=False)
    fill = fill_holes
    filled_labels = set(hole_filled_labels)
    owned = frozenset(owned)
    out: list[Segment] = []
    not_found = list(not_found)
    changed: dict[str, int] = {}
    min_voxels = min_volume_ml * 1000.0 / float(np.prod(_check_spacing(spacing_mm)))
    for i in range(len(segments)):
        if segments[i] is None:
            raise ValueError(f"segments[{i}] is None: a list already handed to correct_segments")
    # Segments are independent: with ``workers`` above one they are corrected in threads, each with its own label
    # buffer, and the results are gathered in segment order.
    workers = max(1, int(workers) if workers is not None else 1)
    workers = min(workers, len(segments))
    # one uint16 label buffer per thread, reused for its segments (allocating and page-faulting a fresh one per
    # call costs more than the labelling itself on large volumes), as large as the largest box it labelled (not
    # the whole grid)
    buffers: SimpleQueue = SimpleQueue()
    for _ in range(max(workers, 1)):
        buffers.put([])

    def one(seg: Segment, i: int) -> tuple[int, Segment | None]:
        work = buffers.get()
        try:
            filled = fill and seg.info.label in filled_labels
            # a mask of the caller's that is not hole-filled is cleaned in place: the voxels removed are the change
            return _correct_one(seg, min_voxels if min_volume_ml > 0 else None, connectivity,
                                slice_wise if filled else None, in_place=i in owned and not filled, work=work)
        finally:
            buffers.put(work)

    results: list = []
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            for i in range(len(segments)):
                seg, segments[i] = segments[i], None
                results.append((seg.info.label, pool.submit(one, seg, i)))  # type: ignore[arg-type]
                del seg
            results = [(label, f.result()) for label, f in results]
    else:
        for i in range(len(segments)):
            seg, segments[i] = segments[i], None
            results.append((seg.info.label, one(seg, i)))  # type: ignore[arg-type]
            del seg
    for label, (n_changed, kept) in results:
        changed[label] = n_changed
        if kept is not None:
            out.append(kept)
        elif label not in not_found:
            not_found.append(label)
    del results
    return LabelMap(tuple(out), tuple(not_found)), changed


def _correct_one(seg: Segment, min_voxels: float | None, connectivity: int, fill_slice_wise: bool | None, *,
                 in_place: bool, work: list[np.ndarray]) -> tuple[int, Segment | None]:
    """One segment of :func:`correct_segments`: (voxels changed, the corrected segment or None when emptied).

    ``min_voxels`` None: no size filter; ``fill_slice_wise`` None: no hole filling, else how. Works on the segment's
    crop (its bounding box: everything outside is background, connected to the grid's border, so the components
    and holes inside are those of the whole grid); an unchanged segment is returned itself (its crop shared with
    the input, no copy)."""
    mask = seg.crop
    removed = 0
    if min_voxels is not None and mask.size:
        cleaned = _small_components(mask, min_voxels, connectivity, work, in_place=in_place)
        if cleaned is not None:
            mask, removed = cleaned
        del cleaned
    if fill_slice_wise is not None and mask.size:
        mask = _filled(mask, fill_slice_wise, work, copy=mask is seg.crop)
    if in_place:
        n_changed = removed
    else:
        n_changed = 0 if mask is seg.crop else _count_changed(mask, seg.crop)
    if not mask.any():
        return n_changed, None
    return n_changed, (seg if mask is seg.crop and not removed else
                       Segment(seg.info, mask, box=seg.box, shape=seg.shape))


def _count_changed(a: np.ndarray, b: np.ndarray, slab: int = 16) -> int:
    """``np.count_nonzero(a != b)`` a few slices at a time (no temporary of the masks' size)."""
    return sum(int(np.count_nonzero(a[z:z + slab] != b[z:z + slab])) for z in range(0, a.shape[0], slab))
