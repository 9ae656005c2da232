"""Rule-based segmentation: body, lungs, bone, fat and soft tissue on CT; foreground and intensity classes elsewhere.

CT (:func:`segment_ct`) works in two passes to stay fast on 512 x 512 x 300 volumes:

1. *Coarse decisions* on a grid subsampled to about ``coarse_mm`` (3 mm by default): the body (threshold, table
   removal by an in-plane opening, largest components, slice-wise hole filling), the lungs (air inside the body's
   filled outline, large components with lung-like density, trachea removed, split at the body's mid-sagittal
   plane into the patient's left and right using ``direction``).
2. *Full-resolution refinement*: each coarse mask becomes a sure *core* (eroded by one coarse voxel) and a
   *zone* (dilated by one coarse voxel); at full resolution a voxel belongs to the segment if it is in the core,
   or in the zone and passes the threshold. Boundaries therefore follow the full-resolution image, while
   components, holes and the table are decided on the small grid. Bone, adipose and soft tissue are HU ranges
   inside the full-resolution body.

Everything else (MR, PET, ...) goes to :func:`segment_generic`: foreground by Otsu's threshold on the log
intensity, and tissue classes from a 1-D Gaussian mixture whose per-voxel posteriors are kept for
:func:`dicomnode.analysis.correct.smooth_posteriors`.

Both handle cropped series whose field of view lies inside the body (the sarcoma series): the body segment is
then the tissue in view, a note says so, and what is not there (lungs in a thigh) is listed in
``LabelMap.not_found``. Nothing found is a result, not an error.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from dicomnode.analysis.codes import segment_codes
from dicomnode.analysis.correct import POSTERIOR_SCALE, _component_sizes, _label, fill_holes
from dicomnode.analysis.denoise import _check_image, _check_spacing
from dicomnode.analysis.threads import thread_budget
from dicomnode.analysis.volume import LabelMap, Segment, SegmentInfo, mask_box

__all__ = ["FOV_INSIDE_BODY_NOTE", "POSTERIOR_SCALE", "SegmentationResult", "segment_ct", "segment_generic"]

FOV_INSIDE_BODY_NOTE = "field of view inside the body: body segment is the whole tissue in view, not a body outline"

#: Class posteriors are kept as uint8 steps of 1/POSTERIOR_SCALE (a quarter of float32's memory: a whole-body
#: PET's three posteriors take 45 MB instead of 180 MB); a probability p is stored as round(p * POSTERIOR_SCALE).
#: Defined in :mod:`dicomnode.analysis.correct`, whose smoothing reads it (no import cycle).


@dataclass(frozen=True, eq=False, slots=True)
class SegmentationResult:
    """What a segmentation step found.

    Attributes
    ----------
    labels : LabelMap
        The segments (possibly overlapping: lungs lie inside the body) and the labels searched for but not found.
    posteriors : (K, Z, Y, X) ndarray of uint8 or None
        Per-voxel class probabilities of the intensity classes in steps of 1 / :data:`POSTERIOR_SCALE` (255 = 1;
        0 outside the foreground; a voxel's values sum to 255 within K / 2 steps), or None when the step has none
        (CT thresholds).
    classes : tuple of str
        Segment labels in the order of the posteriors' first axis (CT: the labels searched for).
    notes : tuple of str
        Human-readable remarks: thresholds used, field of view inside the body, what was left out and why.
    """

    labels: LabelMap
    posteriors: np.ndarray | None
    classes: tuple[str, ...]
    notes: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.posteriors is not None and self.posteriors.shape[0] != len(self.classes):
            raise ValueError(f"posteriors has {self.posteriors.shape[0]} classes, classes names {len(self.classes)}")


# ---------------------------------------------------------------------------------------------------- helpers


def _info(number: int, label: str, algorithm: str) -> SegmentInfo:
    category, type_ = segment_codes(label)
    return SegmentInfo(number, label, category, type_, algorithm)


def _disk(radius_vox: tuple[float, float]) -> np.ndarray:
    """An in-plane elliptical structuring element of shape (1, 2ry+1, 2rx+1), radii in voxels."""
    ry, rx = (max(0.0, r) for r in radius_vox)
    ny, nx = int(np.floor(ry)), int(np.floor(rx))
    y, x = np.ogrid[-ny:ny + 1, -nx:nx + 1]
    disk = (y / max(ry, 1e-9)) ** 2 + (x / max(rx, 1e-9)) ** 2 <= 1.0 + 1e-9
    disk[ny, nx] = True
    return disk[None]


_CROSS_2D = ndi.generate_binary_structure(3, 1)
_CROSS_2D[0] = False
_CROSS_2D[2] = False
_FACES_3D = ndi.generate_binary_structure(3, 1)


def _keep_large_components(mask: np.ndarray, *, min_fraction: float, min_voxels: float = 1) -> np.ndarray:
    """Keep the largest component and every other one with at least ``min_fraction`` of its size.

    Labelled inside the mask's bounding box (air around a body costs nothing); one kept component is selected by a
    comparison, not a per-voxel table look-up (several times faster on large volumes)."""
    out = np.zeros(mask.shape, dtype=bool)
    box = mask_box(mask)
    if box is None:
        return out
    labels, n = _label(mask[box], _FACES_3D, [])  # uint16 (int32 past 65535 components): the same components
    sizes = _component_sizes(labels, n)
    sizes[0] = 0
    keep = (sizes >= min_fraction * sizes.max()) & (sizes >= min_voxels)
    keep[0] = False
    kept = np.flatnonzero(keep)
    if kept.size == 1:
        np.equal(labels, kept[0], out=out[box])
    elif kept.size:
        out[box] = keep[labels]
    return out


def _open_in_plane(mask: np.ndarray) -> np.ndarray:
    """``ndi.binary_opening(mask, structure=_CROSS_2D)`` (in-plane 4-neighbour cross, outside the grid = False),
    with shifted boolean ANDs and ORs: the same voxels, several times faster."""
    ero = mask.copy()
    ero[:, 1:, :] &= mask[:, :-1, :]
    ero[:, :-1, :] &= mask[:, 1:, :]
    ero[:, :, 1:] &= mask[:, :, :-1]
    ero[:, :, :-1] &= mask[:, :, 1:]
    ero[:, 0, :] = False
    ero[:, -1, :] = False
    ero[:, :, 0] = False
    ero[:, :, -1] = False
    out = ero.copy()
    out[:, 1:, :] |= ero[:, :-1, :]
    out[:, :-1, :] |= ero[:, 1:, :]
    out[:, :, 1:] |= ero[:, :, :-1]
    out[:, :, :-1] |= ero[:, :, 1:]
    return out


def _border_fraction(mask: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Fraction of the in-plane border voxels of the field of view that are in the mask.

    The border is rows/columns 0 and -1 of every slice, or, with ``valid`` (the reconstructed field of view, e.g. a
    circle inside padding), the valid voxels with an invalid in-plane neighbour or on the image's edge."""
    if valid is None or valid.all():
        faces = (mask[:, 0, :], mask[:, -1, :], mask[:, 1:-1, 0], mask[:, 1:-1, -1])
        total = sum(f.size for f in faces)
        return float(sum(np.count_nonzero(f) for f in faces)) / max(total, 1)
    edge = valid & ~ndi.binary_erosion(valid, structure=_CROSS_2D, border_value=0)
    return float(np.count_nonzero(mask & edge)) / max(int(np.count_nonzero(edge)), 1)


def _constant_padding(coarse: np.ndarray, max_value: float = -1000.0, min_fraction: float = 0.01) -> np.ndarray:
    """Padding a reader filled with one constant (the loader writes PixelPaddingValue voxels as the lowest real
    value, -1000 HU or below): the voxels at the grid's minimum, when that minimum is at most ``max_value``, they
    form solid regions (an in-plane erosion keeps at least ``min_fraction`` of the grid: air clamped at -1024 HU
    is speckled with noise) and the rest touches the image's edge (a circular field of view inscribed in it)."""
    lo = float(coarse.min()) if coarse.size else 0.0
    none = np.zeros(coarse.shape, dtype=bool)
    if not lo <= max_value:
        return none
    const = coarse == lo
    solid = ndi.binary_erosion(const, structure=np.ones((1, 3, 3), dtype=bool), border_value=1)
    if np.count_nonzero(solid) < min_fraction * const.size:
        return none
    rest = ~const
    if not (rest[:, 0, :].any() or rest[:, -1, :].any() or rest[:, :, 0].any() or rest[:, :, -1].any()):
        return none  # a noise-free phantom's air around a body inside the image: air, not padding
    return const


def _edge_lungs(coarse: np.ndarray, open_air: np.ndarray, spacing_mm: tuple[float, float, float],
                min_volume_ml: float, parenchyma_hu: float, thick_body: np.ndarray, min_thickness_mm: float = 15.0,
                min_vessel_fraction: float = 0.003, min_enclosed_fraction: float = 0.5) -> np.ndarray:
    """The components of ``open_air`` (air not enclosed by the body in its slice) that are lung, not outside air.

    A lung cut by the edge of the field of view is: at least ``min_volume_ml``; of lung density (median above
    ``parenchyma_hu``: lung is about -850 HU, air -1000 HU); thick (somewhere at least ``min_thickness_mm`` from its
    outline in plane, the image's edge counting as outline: the foam mattress under the patient, about -800 HU
    too, is a thin layer); and holed by vessels (at least ``min_vessel_fraction`` of its filled area, slice by
    slice: foam and outside air have no holes)."""
    from skimage.morphology import convex_hull_image

    out = np.zeros_like(open_air)
    labels, n = ndi.label(open_air, structure=_FACES_3D)
    if n == 0:
        return out
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    boxes = ndi.find_objects(labels)
    for k in np.flatnonzero(sizes[1:] * voxel_ml >= min_volume_ml) + 1:
        box = boxes[k - 1]
        m = labels[box] == k
        if not np.count_nonzero(coarse[box][m] > parenchyma_hu) > 0.5 * np.count_nonzero(m):  # median above
            continue
        pad = np.pad(m, ((0, 0), (1, 1), (1, 1)))
        depth = ndi.distance_transform_edt(pad, sampling=(1e4 * max(spacing_mm), spacing_mm[1], spacing_mm[2]))
        if depth.max() < min_thickness_mm:
            continue
        holes = np.count_nonzero(fill_holes(m, slice_wise=True)) - np.count_nonzero(m)
        if holes < min_vessel_fraction * (holes + np.count_nonzero(m)):
            continue
        hull = np.zeros_like(m)
        for z in range(m.shape[0]):
            tb = thick_body[box[0].start + z]
            if m[z].any() and tb.any():
                hull[z] = convex_hull_image(tb)[box[1:]]
        if np.count_nonzero(hull & m) < min_enclosed_fraction * np.count_nonzero(m):
            continue
        out[box] |= m
    return out


def _lung_sides(lungs: np.ndarray, plane_left: np.ndarray, *, whole: bool = False) -> np.ndarray:
    """Which lung voxels are the patient's left: a 3-D component that lies at least 90 % on one side of the
    mid-sagittal plane goes to that side whole (an off-centre crop, the anterior junction); else by the plane.
    ``whole``: every component goes whole to the side where most of it lies (the plane is only a guess: a field of
    view inside the body, where a plane through a lung would cut it in two)."""
    out = lungs & plane_left
    labels, n = ndi.label(lungs, structure=_FACES_3D)
    if n == 0:
        return out
    lab = labels[lungs]
    left = np.bincount(lab, weights=np.broadcast_to(plane_left, lungs.shape)[lungs], minlength=n + 1)[1:]
    left /= np.maximum(np.bincount(lab, minlength=n + 1)[1:], 1)
    del lab
    side = np.full(n + 1, -1, dtype=np.int8)
    side[1:][left >= (0.5 if whole else 0.9)] = 1
    side[1:][left < 0.5 if whole else left <= 0.1] = 0
    per_voxel = side[labels]
    out[per_voxel == 1] = True
    out[per_voxel == 0] = False
    return out


def _lung_envelope(lung: np.ndarray, spacing_mm: tuple[float, float, float], closing_mm: float,
                   grid_mm: float = 5.0) -> np.ndarray:
    """Per slice: ``lung`` closed in plane by a disk of ``closing_mm`` (distance transforms), within the lung's
    convex hull in that slice; the lung itself excluded (the additions only).

    The closing runs on the lung's bounding box subsampled in plane to about ``grid_mm`` (a 30 mm closing needs no
    finer grid; it costs a sixth of the full coarse grid); the hull and the result are on the input grid."""
    from skimage.morphology import convex_hull_image

    out = np.zeros_like(lung)
    zs = np.flatnonzero(lung.reshape(lung.shape[0], -1).any(axis=1))
    if zs.size == 0:
        return out
    ys = np.flatnonzero(lung.any(axis=(0, 2)))
    xs = np.flatnonzero(lung.any(axis=(0, 1)))
    box = (slice(int(ys[0]), int(ys[-1]) + 1), slice(int(xs[0]), int(xs[-1]) + 1))
    sub = lung[zs][:, box[0], box[1]]
    ky = max(1, int(grid_mm / spacing_mm[1]))
    kx = max(1, int(grid_mm / spacing_mm[2]))
    small = sub[:, ky // 2::ky, kx // 2::kx]
    sy, sx = spacing_mm[1] * ky, spacing_mm[2] * kx
    py = int(np.ceil(closing_mm / sy)) + 1
    px = int(np.ceil(closing_mm / sx)) + 1
    m = np.pad(small, ((0, 0), (py, py), (px, px)))
    # a slice distance far beyond the radius makes one 3-D distance transform act slice by slice
    sampling = (1e4 * closing_mm, sy, sx)
    dil = ndi.distance_transform_edt(~m, sampling=sampling) <= closing_mm
    closed = (ndi.distance_transform_edt(dil, sampling=sampling) > closing_mm)[:, py:-py, px:-px]
    closed &= ~small  # what the closing adds on its own grid: nothing for a convex lung
    closed = np.repeat(np.repeat(closed, ky, axis=1), kx, axis=2)
    # the subsampled grid's voxel k covers input rows k*ky .. k*ky+ky-1; pad the last partial block
    full = np.zeros(sub.shape, dtype=bool)
    ny, nx = min(sub.shape[1], closed.shape[1]), min(sub.shape[2], closed.shape[2])
    full[:, :ny, :nx] = closed[:, :ny, :nx]
    if ny < sub.shape[1]:
        full[:, ny:, :nx] = closed[:, ny - 1:ny, :nx]
    if nx < sub.shape[2]:
        full[:, :, nx:] = full[:, :, nx - 1:nx]
    for i, z in enumerate(zs):
        add = full[i] & ~sub[i]
        if add.any():
            out[z, box[0], box[1]] = add & convex_hull_image(sub[i])
    return out


def _split_lungs(lungs: np.ndarray, lateral: np.ndarray, spacing_mm: tuple[float, float, float], voxel_ml: float,
                 min_volume_ml: float, max_erosion_mm: float = 20.0) -> tuple[np.ndarray, float] | None:
    """The patient's left lung and the mid-sagittal plane's lateral coordinate, from the lungs themselves: for a
    field of view inside the body, where the body's centre is only the crop's.

    The lung air is eroded in plane (its outline, not the image's edge, is the boundary) by 0, 1, 2... in-plane
    voxels, up to ``max_erosion_mm``, until two cores remain apart (the lungs joined at the anterior junction, the
    carina or by a sharp kernel's noise come apart, as in Hu et al. 2001); every lung voxel goes to the nearer
    core. Accepted when each side holds at least ``min_volume_ml``; the left is the side of larger lateral
    coordinate (``lateral``: patient x, + = left), the plane half-way between the sides' centroids. None when the
    lungs do not come apart into two such sides (one lung in view)."""
    if not lungs.any():
        return None
    lat = np.broadcast_to(lateral, lungs.shape)
    depth = ndi.distance_transform_edt(lungs, sampling=(1e4 * max(spacing_mm), spacing_mm[1], spacing_mm[2]))
    step = max(spacing_mm[1], spacing_mm[2])
    for k in range(int(max_erosion_mm // step) + 1):
        cores, n = ndi.label(depth > k * step, structure=_FACES_3D)
        if n < 2:
            if n == 0:
                return None
            continue
        big = np.argsort(np.bincount(cores.ravel(), minlength=n + 1)[1:])[::-1][:2] + 1
        seeds = np.zeros(lungs.shape, dtype=np.int8)
        seeds[cores == big[0]] = 1
        seeds[cores == big[1]] = 2
        nearest = ndi.distance_transform_edt(seeds == 0, sampling=spacing_mm, return_distances=False,
                                             return_indices=True)
        side = seeds[tuple(nearest)]
        del nearest
        side[~lungs] = 0
        a, b = side == 1, side == 2
        if min(np.count_nonzero(a), np.count_nonzero(b)) * voxel_ml < min_volume_ml:
            continue
        ca, cb = float(lat[a].mean()), float(lat[b].mean())
        return (a if ca > cb else b), 0.5 * (ca + cb)
    return None


def _coarse_factors(spacing_mm: tuple[float, float, float], coarse_mm: float) -> tuple[int, int, int]:
    return tuple(max(1, int(coarse_mm / s)) for s in spacing_mm)  # type: ignore[return-value]


def _lateral_coordinate(shape: tuple[int, int, int], spacing_mm: tuple[float, float, float],
                        direction: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patient x (mm, relative to voxel 0; + = patient's left in LPS) as three broadcastable terms (z, y, x)."""
    d = np.asarray(direction, dtype=float)
    dz, dy, dx = spacing_mm
    tz = (d[0, 2] * dz * np.arange(shape[0]))[:, None, None]
    ty = (d[0, 1] * dy * np.arange(shape[1]))[None, :, None]
    tx = (d[0, 0] * dx * np.arange(shape[2]))[None, None, :]
    return tz, ty, tx


# ---------------------------------------------------------------------------------------------------- CT


def segment_ct(image: np.ndarray, spacing_mm: tuple[float, float, float], *, direction: np.ndarray | None = None,
               body_threshold_hu: float = -500.0, lung_threshold_hu: float = -400.0,
               bone_range_hu: tuple[float, float] = (200.0, 3000.0),
               adipose_range_hu: tuple[float, float] = (-190.0, -30.0),
               soft_tissue_range_hu: tuple[float, float] = (-29.0, 150.0),
               coarse_mm: float = 3.0, table_max_thickness_mm: float = 16.0,
               min_body_part_fraction: float = 0.1, min_lung_volume_ml: float = 30.0,
               lung_parenchyma_hu: float = -950.0, min_lung_parenchyma_fraction: float = 0.5,
               trachea_max_area_mm2: float = 700.0, trachea_midline_mm: float = 30.0,
               fov_inside_body_fraction: float = 0.25, padding_below_hu: float = -1500.0,
               lung_envelope_closing_mm: float = 30.0) -> SegmentationResult:
    """Segment body, left and right lung, bone, adipose tissue and soft tissue on a CT volume in HU.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        CT values in HU (float32 preferred; never rescaled). Axis 0 is the slice axis (sorted along the normal).
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x), in mm.
    direction : (3, 3) ndarray, optional
        Columns: patient-space (LPS) unit vectors of increasing x, y and z index (``Volume.direction``). Decides
        which lung is the patient's left (larger patient x). Default: identity (standard axial, column index
        increasing towards the patient's left). The lungs are told apart at the body's mid-sagittal plane, or, in a
        field of view inside the body (whose centre is the crop's, not the patient's), where they come apart on
        their own (:func:`_split_lungs`); one lung in view is not cut.
    body_threshold_hu : float, optional
        Body = tissue above this, in HU. Default -500.
    lung_threshold_hu : float, optional
        Lung = air below this inside the body's filled outline, in HU. Default -400.
    bone_range_hu, adipose_range_hu, soft_tissue_range_hu : (float, float), optional
        Inclusive HU ranges inside the body. Defaults (200, 3000), (-190, -30) and (-29, 150). Soft tissue is
        muscle plus organs and blood: CT cannot tell them apart by density. Bone's upper limit leaves out metal.
        Contrast-filled vessels above 200 HU end up in bone.
    coarse_mm : float, optional
        Target spacing of the coarse grid, in mm (integer subsampling per axis, never finer than the input).
        Default 3.0.
    table_max_thickness_mm : float, optional
        Structures thinner than this in-plane (the patient table, its mattress, cables) are not body. Default 16.
    min_body_part_fraction : float, optional
        Besides the largest body component, keep components with at least this fraction of its volume (the other
        leg in a pelvic crop, an arm beside the chest). Default 0.1.
    min_lung_volume_ml : float, optional
        An air component inside the body counts as lung only from this volume, in mL. Default 30.
    lung_parenchyma_hu, min_lung_parenchyma_fraction : float, optional
        ...and only if at least ``min_lung_parenchyma_fraction`` of its coarse voxels are above
        ``lung_parenchyma_hu`` (lung tissue is about -850 HU; bowel gas and the airways are about -1000 HU).
        Defaults -950 HU and 0.5.
    trachea_max_area_mm2, trachea_midline_mm : float, optional
        Per slice, a lung candidate blob smaller than ``trachea_max_area_mm2`` whose centre lies within
        ``trachea_midline_mm`` of the body's mid-sagittal plane is the trachea or a main bronchus and is dropped.
        Defaults 700 mm^2 and 30 mm.
    fov_inside_body_fraction : float, optional
        If more than this fraction of the field of view's in-plane border is body, the field of view lies inside
        the body (a crop): the body segment is then the tissue in view and a note says so. Default 0.25: a full
        field of view touches its border only where the neck, arms or table leave it (0.07 on the chest CT, 0.10
        on the sagittal head MR of the test data); the 5 cm sarcoma crops have 0.52 to 0.68. The border is that
        of the reconstructed field of view: the image's edge and the edge of the padding (below).
    padding_below_hu : float, optional
        Values below this are no data, not air: the padding outside a circular reconstruction field of view
        (PixelPaddingValue, or the -2000 / -3024 HU some scanners write there, whatever the rescale intercept).
        Air is about -1000 HU. Default -1500.
    lung_envelope_closing_mm : float, optional
        The lungs are the lung *fields*, disease included ([3]_): besides what the air threshold finds (and the
        nodules it encloses), each lung gains, slice by slice, the tissue that an in-plane closing by a disk of this
        radius adds to it *within the lung's own convex hull*: a tumour against the chest wall or the mediastinum
        that bites into the lung. A concavity wider than twice the radius (the heart's, about 10 cm) keeps its
        middle out; only its corners are added. 0 turns it off. Default 30.

    Returns
    -------
    SegmentationResult
        Segments ``body``, ``lung_left``, ``lung_right``, ``bone``, ``adipose_tissue``, ``soft_tissue`` (those
        found, numbered from 1 in that order; the others in ``labels.not_found``), ``posteriors=None``,
        ``classes`` = the six labels, and notes.

    Notes
    -----
    Speed and memory: the coarse pass costs a few hundred ms; the refinement runs slab by slab (about 4 M voxels
    at a time), so besides the input only the six bool outputs are full size. On a 512 x 512 x 300 CT: about
    1.5 s and +0.5 GB (``python -m dicomnode.bench.analysis``).

    References
    ----------
    .. [1] S. Hu, E. A. Hoffman, J. M. Reinhardt, "Automatic lung segmentation for accurate quantitation of
       volumetric X-ray CT images", IEEE TMI 20(6), 2001 (air threshold, trachea removal, left/right split).
    .. [2] W. Shen et al., "Total body skeletal muscle and adipose tissue volumes estimated by MRI and CT",
       J Appl Physiol 97, 2004 (-190..-30 HU adipose, -29..150 HU muscle).
    .. [3] J. Hofmanninger et al., "Automatic lung segmentation in routine imaging is primarily a data diversity
       problem, not a methodology problem", Eur Radiol Exp 4:50, 2020 (lung masks that include tumours and
       effusions).
    """
    for name, rng_ in (("bone_range_hu", bone_range_hu), ("adipose_range_hu", adipose_range_hu),
                       ("soft_tissue_range_hu", soft_tissue_range_hu)):
        if len(rng_) != 2 or not rng_[0] <= rng_[1]:
            raise ValueError(f"{name} must be (low, high) in HU with low <= high, got {rng_}")
    for name, value in (("coarse_mm", coarse_mm), ("table_max_thickness_mm", table_max_thickness_mm)):
        if not value > 0:
            raise ValueError(f"{name} must be > 0 mm, got {value}")
    for name, value in (("min_body_part_fraction", min_body_part_fraction),
                        ("min_lung_parenchyma_fraction", min_lung_parenchyma_fraction),
                        ("fov_inside_body_fraction", fov_inside_body_fraction)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    if not min_lung_volume_ml >= 0:
        raise ValueError(f"min_lung_volume_ml must be >= 0 mL, got {min_lung_volume_ml}")
    if not lung_envelope_closing_mm >= 0:
        raise ValueError(f"lung_envelope_closing_mm must be >= 0 mm, got {lung_envelope_closing_mm}")
    if not padding_below_hu < min(lung_threshold_hu, lung_parenchyma_hu):
        raise ValueError(f"padding_below_hu must lie below air (e.g. -1500 HU), got {padding_below_hu}")
    if not lung_threshold_hu < body_threshold_hu + 500:
        raise ValueError("lung_threshold_hu must be a lung/air threshold (e.g. -400 HU) below soft tissue")
    d = np.eye(3) if direction is None else np.asarray(direction, dtype=float)
    if d.shape != (3, 3):
        raise ValueError(f"direction must be 3x3 (columns: patient vectors of x, y, z index), got {d.shape}")
    _check_image(image)
    sp = _check_spacing(spacing_mm)

    img = image if image.dtype == np.float32 else image.astype(np.float32)
    notes: list[str] = []
    # at most the image's own size along each axis (a tiny series still has a coarse grid of one voxel or more)
    fz, fy, fx = factors = tuple(min(f, n) for f, n in zip(_coarse_factors(sp, coarse_mm), img.shape))
    coarse = np.ascontiguousarray(img[fz // 2::fz, fy // 2::fy, fx // 2::fx])
    csp = (sp[0] * fz, sp[1] * fy, sp[2] * fx)
    cvox_ml = csp[0] * csp[1] * csp[2] / 1000.0

    # --- body (coarse) ----------------------------------------------------------------------------------------
    # Fill the holes first (lungs, gas): the chest is then a thick solid even where its wall is thin, and an
    # in-plane opening removes only what is thin as a whole, the table and its mattress.
    const_pad = _constant_padding(coarse)
    pad_value = float(coarse.min()) if const_pad.any() else None
    valid = (coarse >= padding_below_hu) & ~const_pad  # in the reconstructed field of view
    del const_pad
    n_padding = int(valid.size - np.count_nonzero(valid))
    if n_padding:
        what = f"below {padding_below_hu:g} HU" + ("" if pad_value is None else f" or a solid {pad_value:g} HU fill")
        notes.append(f"{100.0 * n_padding / valid.size:.0f} % of the grid is padding ({what}): outside the "
                     "reconstructed field of view, not air")
    thr = coarse > body_threshold_hu
    thr_filled = fill_holes(thr, slice_wise=True)
    # Air cut by the edge of the field of view is not filled. Outside air is about -1000 HU; a region of lung
    # density (median above lung_parenchyma_hu) and lung size that touches the edge is lung in a crop inside the
    # chest, not the air around the patient.
    radius = table_max_thickness_mm / 2.0
    disk = _disk((radius / csp[1], radius / csp[2]))
    eroded = ndi.binary_erosion(thr_filled | ~valid, structure=disk, border_value=1) & valid
    edge_lungs = _edge_lungs(coarse, valid & ~thr_filled & (coarse < lung_threshold_hu), csp, min_lung_volume_ml,
                             lung_parenchyma_hu, _keep_large_components(eroded, min_fraction=min_body_part_fraction))
    if edge_lungs.any():
        thr_filled = fill_holes(thr_filled | edge_lungs, slice_wise=True)
        eroded = ndi.binary_erosion(thr_filled | ~valid, structure=disk, border_value=1) & valid
    kept = _keep_large_components(eroded, min_fraction=min_body_part_fraction)
    body_filled_c = ndi.binary_dilation(kept, structure=disk) & thr_filled
    if not body_filled_c.any():  # nothing thick enough (small phantoms, thin slabs): the raw threshold
        body_filled_c = _keep_large_components(thr_filled, min_fraction=min_body_part_fraction)
    body_c = body_filled_c & (thr | edge_lungs)
    found_body = bool(body_c.any())
    inside_fov = _border_fraction(body_filled_c, valid) > fov_inside_body_fraction
    if inside_fov:
        notes.append(FOV_INSIDE_BODY_NOTE)
    if edge_lungs.any():
        notes.append("lungs cut by the edge of the field of view (air of lung density, not outside air)")

    # --- lungs (coarse) ---------------------------------------------------------------------------------------
    lung_left_c = np.zeros_like(body_c)
    lung_right_c = np.zeros_like(body_c)
    lung_like_ml = 0.0
    if found_body:
        tz, ty, tx = _lateral_coordinate(coarse.shape, csp, d)
        zz, yy, xx = np.nonzero(body_filled_c)
        midline = float(np.mean(tz.ravel()[zz]) + np.mean(ty.ravel()[yy]) + np.mean(tx.ravel()[xx]))
        del zz, yy, xx
        air = body_filled_c & (coarse < lung_threshold_hu) & valid
        labels, n = ndi.label(air, structure=_FACES_3D)
        if n:
            sizes = np.bincount(labels.ravel(), minlength=n + 1)
            parenchyma = np.bincount(labels.ravel(), weights=(coarse > lung_parenchyma_hu).ravel(), minlength=n + 1)
            ok = (sizes * cvox_ml >= min_lung_volume_ml) & (parenchyma >= min_lung_parenchyma_fraction * sizes)
            ok[0] = False
            lungs = ok[labels]
            lung_like_ml = float(np.count_nonzero(lungs)) * cvox_ml
            del labels
            dropped = int(np.count_nonzero((sizes * cvox_ml >= min_lung_volume_ml)[1:] & ~ok[1:]))
            if dropped:
                notes.append(f"{dropped} large air region(s) inside the body without lung density (gas) left out")
            split = None
            if inside_fov:  # the body's centre is the crop's: the plane lies between the lungs in view, if two are
                split = _split_lungs(lungs, tz + ty + tx, csp, cvox_ml, min_lung_volume_ml)
                if split is not None:
                    midline = split[1]
            # trachea and main bronchi: small blobs on the mid-sagittal plane, slice by slice
            blobs, nb = ndi.label(lungs, structure=_CROSS_2D)
            if nb:
                idx = np.arange(1, nb + 1)
                area = ndi.sum_labels(np.ones_like(lungs, dtype=np.uint8), blobs, idx) * csp[1] * csp[2]
                lateral = ndi.mean(np.broadcast_to(tz + ty + tx, lungs.shape), blobs, idx) - midline
                trachea = np.zeros(nb + 1, dtype=bool)
                trachea[1:] = (area < trachea_max_area_mm2) & (np.abs(lateral) < trachea_midline_mm)
                lungs &= ~trachea[blobs]
                del blobs
            # a crop: the sides the lungs came apart into; one lung in view stays whole (no plane through it)
            side_left = (lungs & split[0]) if split is not None else _lung_sides(lungs, (tz + ty + tx) > midline,
                                                                                 whole=inside_fov)
            del split
            lung_left_c = lungs & side_left
            lung_right_c = lungs & ~side_left
            del side_left
            for side in (lung_left_c, lung_right_c):
                if np.count_nonzero(side) * cvox_ml < min_lung_volume_ml:
                    side[...] = False
    # the lung fields: disease that bites into a lung from the chest wall or the mediastinum
    env_left_c = np.zeros_like(body_c)
    env_right_c = np.zeros_like(body_c)
    if lung_envelope_closing_mm > 0 and (lung_left_c.any() or lung_right_c.any()):
        solid = body_filled_c & (coarse >= lung_threshold_hu) & (coarse < bone_range_hu[0])
        reach_left = _lung_envelope(lung_left_c, csp, lung_envelope_closing_mm)
        reach_right = _lung_envelope(lung_right_c, csp, lung_envelope_closing_mm)
        both = reach_left & reach_right  # a voxel both could claim (between the lungs) goes to neither
        env_left_c = reach_left & solid & ~lung_right_c & ~both
        env_right_c = reach_right & solid & ~lung_left_c & ~both
        del reach_left, reach_right, both

    # --- full-resolution refinement ---------------------------------------------------------------------------
    # core: the filled mask eroded in-plane by one coarse voxel (sure inside, holes included);
    # zone: the mask dilated by one coarse voxel (in-plane only when slices were not subsampled, so that a slice's
    # decision, e.g. "this gas under the diaphragm is not lung", is not overridden by its neighbour's)
    zone_structure = _CROSS_2D if fz == 1 else _FACES_3D

    def core_zone(mask_c: np.ndarray, solid_c: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        core = ndi.binary_erosion(fill_holes(mask_c, slice_wise=True), structure=_CROSS_2D, border_value=1)
        if solid_c is not None:  # solid additions (the lung envelope) are decided on the coarse grid: all core
            core |= solid_c
        return core, ndi.binary_dilation(mask_c, structure=zone_structure)

    flags_c = np.zeros(coarse.shape, dtype=np.uint8)
    bits = {"body": (1, 2), "lung_left": (4, 8), "lung_right": (16, 32)}
    for name, mask_c, solid_c in (("body", body_c, None), ("lung_left", lung_left_c, env_left_c),
                                  ("lung_right", lung_right_c, env_right_c)):
        core, zone = core_zone(mask_c, solid_c)
        flags_c[core] |= bits[name][0]
        flags_c[zone] |= bits[name][1]
    # a voxel near the midline in both lungs' zones goes to neither lung's zone (only a core can claim it)
    both = ((flags_c & 8) != 0) & ((flags_c & 32) != 0)
    flags_c[both] &= ~np.uint8(8 | 32)
    del both, thr, thr_filled, eroded, kept

    # Slab by slab: the upsampled flags and the temporaries stay small; only the six outputs are full size.
    names = ("body", "lung_left", "lung_right", "bone", "adipose_tissue", "soft_tissue")
    out = {name: np.empty(img.shape, dtype=np.bool_) for name in names}
    zi, yi, xi = (np.minimum(np.arange(n) // f, nc - 1) for n, nc, f in zip(img.shape, flags_c.shape, factors))
    slab = max(1, int(4_000_000 // (img.shape[1] * img.shape[2])))
    for z0 in range(0, img.shape[0], slab):
        z1 = min(img.shape[0], z0 + slab)
        im = img[z0:z1]
        f = flags_c[zi[z0:z1]][:, yi][:, :, xi]
        o = {name: out[name][z0:z1] for name in names}
        body = o["body"]
        np.greater(im, body_threshold_hu, out=body)
        body &= (f & 2) != 0
        body |= (f & 1) != 0
        if n_padding:
            body &= im >= padding_below_hu  # a coarse core never reaches into the padding
            if pad_value is not None:
                body &= im != pad_value
        air = im < lung_threshold_hu
        air &= body
        lungs_any = np.zeros_like(body)
        for name in ("lung_left", "lung_right"):
            core_bit, zone_bit = bits[name]
            lung = o[name]
            np.not_equal(f & zone_bit, 0, out=lung)
            lung &= air
            lung |= (f & core_bit) != 0
            lung &= body
            lungs_any |= lung
        for name, (lo, hi) in (("bone", bone_range_hu), ("adipose_tissue", adipose_range_hu),
                               ("soft_tissue", soft_tissue_range_hu)):
            m = o[name]
            np.greater_equal(im, lo, out=m)
            m &= im <= hi
            m &= body
        o["adipose_tissue"] &= (f & (8 | 32)) == 0  # partial-volume rims of the lungs fall in the fat range
        o["soft_tissue"] &= ~lungs_any
    algorithms = {"body": "segment.ct_body", "lung_left": "segment.ct_lungs", "lung_right": "segment.ct_lungs"}
    segments = [(name, out[name], algorithms.get(name, "segment.ct_threshold")) for name in names
                if out[name].any()]

    wanted = names
    found = {name for name, _, _ in segments}
    not_found = tuple(name for name in wanted if name not in found)
    missing = [name for name in ("lung_left", "lung_right") if name in not_found]
    if missing:
        # "not in view" only when no air region of lung size and density lies inside the body (enclosed in its
        # slices or cut by the edge of the field of view as a lung is): else the lungs were there and not taken
        if lung_like_ml < min_lung_volume_ml:
            notes.append("no lungs in view" if len(missing) == 2 else f"{missing[0]} not in view")
        else:
            notes.append(f"{' and '.join(missing)} not found although {lung_like_ml:.0f} mL of air of lung size and "
                         "density lies inside the body")
    notes.append(f"thresholds HU: body > {body_threshold_hu:g}, lung < {lung_threshold_hu:g}, bone "
                 f"{bone_range_hu[0]:g}..{bone_range_hu[1]:g}, adipose {adipose_range_hu[0]:g}.."
                 f"{adipose_range_hu[1]:g}, soft tissue {soft_tissue_range_hu[0]:g}..{soft_tissue_range_hu[1]:g}")
    lm = LabelMap(tuple(Segment(_info(i + 1, name, algo), mask) for i, (name, mask, algo) in enumerate(segments)),
                  not_found)
    return SegmentationResult(lm, None, wanted, tuple(notes))


# ---------------------------------------------------------------------------------------------------- generic


def _log_otsu_threshold(image: np.ndarray, max_samples: int = 2_000_000) -> float:
    """Otsu's threshold on log(I - min + eps), eps = 1e-3 of the 2..98 % range, mapped back to intensity."""
    from skimage.filters import threshold_otsu

    step = max(1, image.size // max_samples)
    sample = image.ravel()[::step].astype(np.float64)
    lo = float(sample.min())
    # the percentiles partition the sample in place (no copy of it; Otsu's histogram does not depend on the order)
    p2, p98 = np.percentile(sample, [2, 98], overwrite_input=True)
    eps = max(1e-3 * float(p98 - p2), 1e-12)
    # log(sample - lo + eps) in place: the same values, without temporaries of the sample's size (a job's heap
    # keeps what a step frees until the step ends: these were 35 MB of a whole-body PET segment step's peak)
    log_sample = sample
    log_sample -= lo
    log_sample += eps
    np.log(log_sample, out=log_sample)
    if np.ptp(log_sample) == 0:
        return float("inf")
    # the histogram skimage's threshold_otsu makes of a float image (256 bins over its range; bin centres as its
    # exposure.histogram), made here without its two copies of the sample
    counts, edges = np.histogram(log_sample, bins=256, range=(log_sample.min(), log_sample.max()))
    centres = (edges[:-1] + edges[1:]) / 2.0
    return float(np.exp(threshold_otsu(hist=(counts, centres))) - eps + lo)


def _draw_distinct(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """``size`` distinct integers of ``range(n)`` in random order (uniform without replacement, ``size < n``): drawn
    with replacement in rounds, each value kept at its first draw. Memory of a few times ``size``, not of ``n``."""
    out = np.empty(0, dtype=np.int64)
    while out.size < size:
        more = rng.integers(0, n, size=size - out.size + (size - out.size) // 8 + 16, dtype=np.int64)
        both = np.concatenate([out, more])
        _, first = np.unique(both, return_index=True)
        first.sort()  # first draws, in the order drawn (the earlier rounds' values first, all of them distinct)
        out = both[first]
    return out[:size]


def segment_generic(image: np.ndarray, spacing_mm: tuple[float, float, float], *, rng: np.random.Generator,
                    n_classes: int = 3, foreground_threshold: float | None = None,
                    min_part_fraction: float = 0.1, max_samples: int = 50_000,
                    fov_inside_body_fraction: float = 0.25, chunk_voxels: int = 250_000) -> SegmentationResult:
    """Segment the foreground and intensity classes of an MR, PET or other volume.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Intensities in the series' own unit (SUV for PET, arbitrary for MR); never rescaled.
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x), in mm.
    rng : numpy.random.Generator
        Source of randomness (voxel subsample, mixture initialisation): the same seed gives the same result.
    n_classes : int, optional
        Number of intensity classes (Gaussian mixture components), 1 to 8. Default 3.
    foreground_threshold : float, optional
        Foreground = intensity above this, in the image's unit. Default: Otsu's threshold on the log intensity,
        which separates the near-zero background (air in MR and PET) from tissue across orders of magnitude;
        on linear intensities Otsu would split tissue classes (e.g. a hot lesion from the rest in PET).
    min_part_fraction : float, optional
        Besides the largest foreground component, keep those with at least this fraction of its size. Default 0.1.
    max_samples : int, optional
        The mixture is fitted on at most this many foreground voxels drawn with ``rng``. Default 50 000 (a 1-D
        mixture of a few classes needs no more; 200 000 cost 2 s on a whole-body PET).
    fov_inside_body_fraction : float, optional
        As in :func:`segment_ct`. Default 0.25.
    chunk_voxels : int, optional
        Posteriors are computed for slabs of whole slices of about this many voxels (memory bound). Default
        250 000.

    Returns
    -------
    SegmentationResult
        Segments ``body`` (the foreground) and ``tissue_class_1`` .. ``tissue_class_K`` (sorted by increasing mean
        intensity; each voxel in its most probable class), ``posteriors`` as uint8 (K, Z, Y, X) in steps of
        1 / :data:`POSTERIOR_SCALE` (0 outside the foreground), ``classes`` = the class labels, and notes giving the
        threshold and each class's mean and SD.
    """
    if int(n_classes) != n_classes or not 1 <= n_classes <= 8:
        raise ValueError(f"n_classes must be an integer in 1..8, got {n_classes}")
    if not 0 <= min_part_fraction <= 1:
        raise ValueError(f"min_part_fraction must be in [0, 1], got {min_part_fraction}")
    if int(max_samples) != max_samples or max_samples < 100:
        raise ValueError(f"max_samples must be an integer >= 100, got {max_samples}")
    if not 0 <= fov_inside_body_fraction <= 1:
        raise ValueError(f"fov_inside_body_fraction must be in [0, 1], got {fov_inside_body_fraction}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng)}")
    if foreground_threshold is not None and not np.isfinite(foreground_threshold):
        raise ValueError(f"foreground_threshold must be finite, got {foreground_threshold}")
    _check_image(image)
    _check_spacing(spacing_mm)
    from dicomnode.analysis.mixture import fit_mixture_1d

    img = image if image.dtype == np.float32 else image.astype(np.float32)
    classes = tuple(f"tissue_class_{k + 1}" for k in range(int(n_classes)))
    notes: list[str] = []
    t = _log_otsu_threshold(img) if foreground_threshold is None else float(foreground_threshold)
    notes.append(f"foreground threshold {t:.4g} ({'Otsu on log intensity' if foreground_threshold is None else 'given'})")
    fg = img > t
    fg = _open_in_plane(fg)
    fg = _keep_large_components(fg, min_fraction=min_part_fraction)
    fg = fill_holes(fg, slice_wise=True)
    n_fg = int(np.count_nonzero(fg))
    if n_fg < max(10, n_classes * 10):
        notes.append("no foreground found")
        return SegmentationResult(LabelMap((), ("body",) + classes), None, classes, tuple(notes))
    if _border_fraction(fg) > fov_inside_body_fraction:
        notes.append(FOV_INSIDE_BODY_NOTE)

    # subsample foreground voxels without materialising their indices
    want = min(int(max_samples), n_fg)
    frac = n_fg / fg.size
    draw = int(min(fg.size, np.ceil(want / frac * 1.3) + 100))
    if draw >= fg.size:
        flat_idx = np.arange(fg.size)
    elif draw > max(10_000, fg.size // 50):
        # numpy's choice without replacement would shuffle an int64 index of the whole grid here (127 MB for a
        # whole-body PET, the segment step's peak): draw with replacement instead and keep each index's first
        # draw, in the order drawn (a uniform sample without replacement: the same distribution, another sample)
        flat_idx = _draw_distinct(rng, fg.size, draw)
    else:  # Floyd's algorithm inside numpy: memory of the sample's size
        flat_idx = rng.choice(fg.size, size=draw, replace=False)
    flat_idx = flat_idx[fg.ravel()[flat_idx]][:want]
    sample = img.ravel()[flat_idx].astype(np.float64)[:, None]
    k_eff = int(min(n_classes, np.unique(sample).size))
    if k_eff < n_classes:
        notes.append(f"only {k_eff} distinct intensities in the foreground: {n_classes - k_eff} class(es) empty")
    # scikit-learn's GaussianMixture's model (k-means init, EM to tol 1e-3) in numpy: importing sklearn.mixture
    # cost a fresh job process 56 MB it never gave back; one draw of ``rng`` seeds it, as it seeded sklearn's
    fit_means, fit_sds, fit_weights = fit_mixture_1d(sample[:, 0], k_eff,
                                                     rng=np.random.default_rng(int(rng.integers(2**31 - 1))),
                                                     reg_covar=1e-6 * float(np.var(sample) + 1e-12))
    order = np.argsort(fit_means)
    means = fit_means[order]
    sds = fit_sds[order]
    log_w = np.log(fit_weights[order])
    notes.append("classes (mean, SD): " + ", ".join(f"{classes[k]} {means[k]:.4g} +/- {sds[k]:.3g}"
                                                   for k in range(k_eff)))

    c = (log_w - np.log(sds) - 0.5 * np.log(2 * np.pi)).astype(np.float32)
    inv = (1.0 / sds).astype(np.float32)
    mu = means.astype(np.float32)
    # Slab by slab over the foreground's bounding box, dense over each slab's box (streaming array passes, no
    # gather or scatter of foreground voxels; the same float32 operations per voxel, so the same values): the
    # posteriors go straight into their quantised full-size array (0 outside the foreground) and each voxel's
    # class into its mask; no (K, n_foreground) float array, no int64 index or argmax over the whole foreground.
    posteriors = np.zeros((int(n_classes),) + img.shape, dtype=np.uint8)
    zb, yb, xb = mask_box(fg)  # type: ignore[misc]
    # each class's mask over the foreground's bounding box only (the segment stores it cropped): no whole-grid mask
    fg_box = (zb, yb, xb)
    masks = [np.zeros(tuple(b.stop - b.start for b in fg_box), dtype=bool) for _ in range(k_eff)]
    per_slice = (yb.stop - yb.start) * (xb.stop - xb.start)
    slab = max(1, int(chunk_voxels) // per_slice)
    scale = np.float32(POSTERIOR_SCALE)

    def posterior_slab(z0: int) -> None:
        """The posteriors and classes of the slab of whole slices from ``z0``."""
        box = (slice(z0, min(zb.stop, z0 + slab)), yb, xb)
        inside = fg[box]
        x = img[box]
        logp = np.empty((k_eff,) + x.shape, dtype=np.float32)
        for k in range(k_eff):  # c - 0.5 * ((x - mu) * inv) ** 2, as for a gathered vector
            zk = logp[k]
            np.subtract(x, mu[k], out=zk)
            zk *= inv[k]
            zk *= zk
            zk *= np.float32(-0.5)
            zk += c[k]
        # the maximum and the sum over the classes class by class: the same values as max/sum(axis=0), without
        # numpy's strided reduction over the leading axis
        top = logp[0].copy()
        for k in range(1, k_eff):
            np.maximum(top, logp[k], out=top)
        logp -= top
        np.exp(logp, out=logp)
        np.copyto(top, logp[0])
        for k in range(1, k_eff):
            top += logp[k]
        logp /= top
        del top
        best = logp[0].copy()
        winner = np.zeros(x.shape, dtype=np.int8)
        for k in range(1, k_eff):  # first maximum on ties, as argmax
            better = logp[k] > best
            winner[better] = k
            np.maximum(best, logp[k], out=best)
        del best
        logp *= scale
        logp += np.float32(0.5)
        for k in range(k_eff):
            # to the nearest step: p * 255 + 0.5, truncated; 0 outside the foreground
            np.copyto(posteriors[(k,) + box], logp[k], casting="unsafe", where=inside)
            np.logical_and(winner == k, inside, out=masks[k][z0 - zb.start:z0 - zb.start + inside.shape[0]])

    # the slabs write disjoint parts of the posteriors and masks: in threads (numpy releases the GIL), the same
    # values as one after the other
    starts = range(zb.start, zb.stop, slab)
    workers = min(thread_budget(), len(starts))
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(posterior_slab, starts))
    else:
        for z0 in starts:
            posterior_slab(z0)
    segments = [Segment(_info(1, "body", "segment.foreground"), fg)]
    not_found: list[str] = []
    for k, name in enumerate(classes):
        if k < k_eff and masks[k].any():
            segments.append(Segment(_info(len(segments) + 1, name, "segment.gaussian_mixture"), masks[k], box=fg_box,
                                    shape=img.shape))
        else:
            not_found.append(name)
    return SegmentationResult(LabelMap(tuple(segments), tuple(not_found)), posteriors, classes, tuple(notes))
