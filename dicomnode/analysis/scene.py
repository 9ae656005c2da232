"""Scene descriptors: what body region a volume shows, measured from the image alone (no header).

:func:`scene_descriptors` turns a volume into a short vector of image-derived numbers that a classifier
(:mod:`dicomnode.analysis.classify`) maps to a body region (``head``, ``neck``, ``chest``, ``abdomen``, ``pelvis``,
``extremity``). The descriptors are chosen to mean the same on CT, MR and PET and on cropped fields of view:

* the volume is turned so that its slices are axial (patient z is the first axis), whatever the acquisition plane
  (the head MR of the test data is sagittal);
* it is reduced to at most ``max_slices`` slices and about ``pixel_mm`` pixels (block means), so a 512 x 512 x 300 CT
  costs ~0.1 s;
* per slice, the body is the tissue above a threshold (CT: -500 HU; other modalities: a fraction of the median
  foreground intensity), opened, filled and kept where components are >= ``min_component_cm2``;
* inside the filled body, voxels are *dark* (CT: < -400 HU, air and lung; others: < 0.35 x the body's median, i.e.
  lung, air, cortical bone and CSF on T1 MR, cold tissue on PET) or *bright* (CT: > 250 HU, bone; others:
  > 1.8 x the median: fat on T1 MR, hot tissue on PET); the fractions are taken over the whole body, over its
  outer *ring* (within ``ring_mm`` of the outline: the skull of a head) and over its *core* (deeper than
  ``core_mm``: lungs, a femur);
* *organ*: the largest region of homogeneous mid-intensity tissue (3 x 3 local mean within 10-200 HU and local
  standard deviation < 25 HU on CT; 0.5-1.6 x and < 0.15 x the body's median otherwise), eroded once, as a
  fraction of the body: the liver and spleen of the upper abdomen (and thigh muscles), against bowel in fat;
* *lateral bright*: bright tissue of the largest part (the trunk) further than 0.3 x its half-width from its
  centre column, as a fraction of the body, and its largest connected piece: iliac wings and femoral heads
  against a spine-only slice;
* *bone pieces* (CT): separate pieces of bone (> 250 HU, >= 0.2 cm^2 on 2 mm blocks) inside the body: one or two
  long bones in a limb, a vertebra with the arc of ribs in a chest or upper abdomen, the pelvic ring; a crop keeps
  them;
* *uptake* (PET and other non-CT, per slice only, not a model feature): the peak of the 3 x 3 local mean and the
  largest region of moderately raised signal (2-8 x the body's median: the liver on FDG PET), for
  :func:`pet_landmarks`;
* *limb ring* (CT, per slice only, not a model feature): whether the largest body part holds at most two bone
  pieces, one of them a long bone's cortical ring around its medullary cavity (a femur, tibia or humerus shaft),
  for :func:`limb_bone`;
* *liver* (MR and other non-CT, per slice only, not a model feature): the largest homogeneous organ region of the
  trunk, its side of the midline (right and left from the direction cosines) and how much of its mirror image is
  homogeneous too, for :func:`liver_slices` (:func:`_mr_landmarks`);
* shape: total cross-section area (cm^2), number of parts (two thighs, arms beside the trunk: parts that touch
  count apart, see :func:`_body_parts`), the largest part's major axis (mm) and minor/major ratio, the fraction
  of the outline that lies on the image border (a cropped field of view) and the fraction of the field of view
  filled by the body.

Each per-slice value is summarised by its median over the slices that hold body. The per-slice series are kept in
:attr:`SceneDescriptors.per_slice`; CT also gets per-slice tissue fractions (air/lung, fat, soft tissue, bone).

Regions along the body: :func:`scene_profile` measures slices sampled along patient z (LPS, from the volume's
origin and direction, so array order, feet-first and prone do not matter), :func:`profile_slabs` summarises 60 mm
slabs, a slab model gives posteriors, and :func:`recognise` calibrates them, checks them against landmarks (lungs,
skull, sizes of adult anatomy, the vertex), keeps the head-to-feet order and returns :class:`SceneResult`:
regions from head to feet, the dominant label, or ``unknown`` for phantoms, localizers and views too small to tell.

References
----------
Body-part recognition from such coarse, hand-made descriptors follows the idea of Criminisi et al. (regression
forests over intensity context) and of body-part regression (Schuhegger et al. 2021, a per-slice score along z),
reduced to numbers that survive cropping and a change of modality; we classify slabs instead of regressing a
position. Temperature scaling: Guo et al., "On calibration of modern neural networks", ICML 2017.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from dicomnode.analysis.blocks import block_mean
from dicomnode.analysis.threads import thread_budget, thread_map

__all__ = [
    "MIN_CLASS_PATIENTS",
    "MODEL_FEATURES",
    "REGIONS",
    "SceneDescriptors",
    "SceneProfile",
    "descriptor_vector",
    "landmark_label",
    "breast_slices",
    "limb_bone",
    "liver_slices",
    "paired_limbs",
    "pet_landmarks",
    "profile_slabs",
    "scene_descriptors",
    "scene_profile",
    "slab_descriptors",
    "to_axial",
    "vertex_z",
]

#: The six body regions, in the order used by results and models.
REGIONS: tuple[str, ...] = ("head", "neck", "chest", "abdomen", "pelvis", "extremity")

#: Descriptors that mean the same on every modality (shape, and dark: air, lung, cortical bone, CSF).
_SHARED_FEATURES: tuple[str, ...] = (
    "log10_area_cm2", "n_components", "log10_major_axis_mm", "minor_major_ratio", "edge_fraction", "fov_fill",
    "solidity", "dark_fraction", "ring_dark", "core_dark", "dark_blob",
)
#: Descriptors of bright tissue: bone on CT (fixed HU), but fat on T1 MR, fluid on T2 MR and uptake on PET.
_CT_ONLY_FEATURES: tuple[str, ...] = (
    "bright_fraction", "ring_bright", "core_bright", "organ_fraction", "lateral_bright", "lateral_bright_blob",
    "bone_pieces",
)
#: Descriptor names a scene model is trained on, in order (see :func:`descriptor_vector`). Each is given twice,
#: as ``ct_<name>`` (0 on other modalities) and ``other_<name>`` (0 on CT), so that one linear model holds a CT
#: part in HU and a part for MR and PET in relative intensities; bright-tissue descriptors enter the CT part only.
MODEL_FEATURES: tuple[str, ...] = (
    ("is_ct",) + tuple(f"ct_{k}" for k in _SHARED_FEATURES + _CT_ONLY_FEATURES)
    + tuple(f"other_{k}" for k in _SHARED_FEATURES)
)

_CT_BODY_HU = -500.0
_CT_DARK_HU = -400.0
_CT_AIR_HU = -960.0
_CT_BRIGHT_HU = 250.0
_CT_FAT_HU = (-150.0, -30.0)
_CT_SOFT_HU = (-30.0, 150.0)
_REL_DARK = 0.35
_REL_BRIGHT = 1.8
#: "Organ" tissue: 3 x 3 (12 mm) local mean inside this band and local standard deviation below the limit.
_CT_ORGAN_HU = (10.0, 200.0)
_CT_ORGAN_STD_HU = 25.0
_REL_ORGAN = (0.5, 1.6)
_REL_ORGAN_STD = 0.15
#: A block is solid body when at least this fraction of its full-resolution pixels is body (see _body_parts).
_SOLID = 0.9
#: Bright tissue further than this fraction of the half-width from the body's centre column is "lateral".
_LATERAL = 0.3


@dataclass(frozen=True, slots=True)
class SceneDescriptors:
    """Image-derived descriptors of the body region in view.

    Attributes
    ----------
    values : dict of str to float
        Slab summaries (medians over slices with body), at least the names in :data:`MODEL_FEATURES`, plus
        ``extent_z_mm`` (length covered along the patient's long axis), ``slices_with_body`` and, for CT,
        ``air_lung_fraction``, ``fat_fraction``, ``soft_tissue_fraction``, ``bone_fraction``.
    per_slice : dict of str to (S,) ndarray
        The per-slice values behind the medians, for the ``S`` sampled slices (NaN where a slice holds no body).
    notes : tuple of str
        Remarks: oblique acquisition planes, no body found.
    """

    values: dict[str, float]
    per_slice: dict[str, np.ndarray] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def to_axial(image: np.ndarray, spacing_mm: tuple[float, float, float],
             direction: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float], bool]:
    """Permute the axes of a volume so that the first axis runs along the patient's long (z) axis.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        A volume in index order (z, y, x).
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x), in mm.
    direction : (3, 3) ndarray
        Columns are the patient-space unit vectors of increasing x, y and z index (Volume convention).

    Returns
    -------
    axial : (S, A, L) ndarray
        A view of ``image`` with axes ordered (patient z, patient y, patient x); signs are not changed (the
        descriptors do not depend on them).
    spacing_mm : tuple of 3 float
        The spacing of those axes, in mm.
    oblique : bool
        True when an index axis is more than ~25 degrees off its nearest patient axis.
    """
    d = np.abs(np.asarray(direction, dtype=float))
    if d.shape != (3, 3):
        raise ValueError(f"direction must be 3x3, got shape {d.shape}")
    # index axis i (x, y, z) -> array axis 2 - i; patient axis of index axis i = argmax |d[:, i]|
    patient_of_index = [int(np.argmax(d[:, i])) for i in range(3)]
    if len(set(patient_of_index)) != 3:  # degenerate (strongly oblique): keep the array as it is
        return image, tuple(float(s) for s in spacing_mm), True  # type: ignore[return-value]
    order = [0, 0, 0]
    for i, p in enumerate(patient_of_index):
        order[2 - p] = 2 - i
    oblique = bool(min(d[patient_of_index[i], i] for i in range(3)) < 0.9)
    sp = tuple(float(spacing_mm[a]) for a in order)
    return np.transpose(image, order), sp, oblique  # type: ignore[return-value]


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``ndi.binary_fill_holes`` for a 2-D mask, by labelling the background (about 3x faster on 512 x 512)."""
    lab, n = ndi.label(~mask)
    outside = np.zeros(n + 1, dtype=bool)
    outside[np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])] = True
    outside[0] = False
    return ~outside[lab]


def _bbox(mask: np.ndarray, *, margin: int = 0) -> tuple[slice, slice]:
    """The bounding box of a non-empty 2-D mask, widened by ``margin`` pixels and clipped to the image."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return (slice(max(int(rows[0]) - margin, 0), min(int(rows[-1]) + 1 + margin, mask.shape[0])),
            slice(max(int(cols[0]) - margin, 0), min(int(cols[-1]) + 1 + margin, mask.shape[1])))


def _edt_in_box(mask: np.ndarray, sampling: tuple[float, float]) -> np.ndarray:
    """``ndi.distance_transform_edt(mask, sampling=sampling)`` of a 2-D mask, computed on the bounding box of
    ``mask`` plus one pixel of background: the nearest background of every pixel lies in that box (a background
    pixel outside it, moved onto the box's margin, comes nearer along both axes), so the distances are the same."""
    out = np.zeros(mask.shape, dtype=np.float64)
    if mask.any():
        box = _bbox(mask, margin=1)
        out[box] = ndi.distance_transform_edt(mask[box], sampling=sampling)
    return out


def _convex_hull(mask: np.ndarray) -> np.ndarray:
    """``skimage.morphology.convex_hull_image`` of a non-empty 2-D mask, computed on the mask's bounding box.

    The hull of pixel corners lies inside that box, and the hull test of a pixel centre depends only on
    differences of (half-)integer coordinates, which a shift by whole pixels leaves exact: the same pixels.
    """
    from skimage.morphology import convex_hull_image

    box = _bbox(mask)
    out = np.zeros(mask.shape, dtype=bool)
    out[box] = convex_hull_image(mask[box])
    return out


def _hull_size(mask: np.ndarray) -> int:
    """The number of pixels of :func:`_convex_hull` of a non-empty 2-D mask, without drawing it.

    scikit-image's hull is the closed polygon around the midpoints of the pixels' edges, and a pixel belongs to
    it when its centre lies inside or on the outline. The hull of those midpoints is that of the midpoints of each
    row's first and last pixel (the pixels between lie on the segments joining them). In doubled coordinates every
    point is an integer, so the outline's crossing of each row of pixel centres, and the first and last centre on
    or inside it, are found in exact integer arithmetic: the same pixels.
    """
    from scipy.spatial import ConvexHull, QhullError

    rows = np.flatnonzero(mask.any(axis=1))
    sub = mask[rows]
    first = np.argmax(sub, axis=1).astype(np.int64)
    last = mask.shape[1] - 1 - np.argmax(sub[:, ::-1], axis=1).astype(np.int64)
    r2, f2, l2 = 2 * rows.astype(np.int64), 2 * first, 2 * last
    y = np.concatenate([r2, r2 - 1, r2 + 1, r2, r2 - 1, r2 + 1])
    x = np.concatenate([f2 - 1, f2, f2, l2 + 1, l2, l2])
    span = 2 * mask.shape[1] + 4
    key = np.unique(y * span + (x + 2))  # each point once (repeated points can trouble Qhull)
    pts = np.stack([key // span, key % span - 2], axis=1)
    try:
        v = pts[ConvexHull(pts.astype(np.float64)).vertices]
    except QhullError:
        return int(_convex_hull(mask).sum())
    y0, x0 = v[:, 0], v[:, 1]
    y1, x1 = np.roll(y0, -1), np.roll(x0, -1)
    yc = 2 * np.arange(rows[0], rows[-1] + 1, dtype=np.int64)[:, None]  # the rows of pixel centres
    dy = y1 - y0
    sloped = (np.minimum(y0, y1) <= yc) & (yc <= np.maximum(y0, y1)) & (dy != 0)
    sign = np.where(dy < 0, -1, 1)
    den = np.where(dy != 0, dy * sign, 1)
    num = (x0 * dy + (yc - y0) * (x1 - x0)) * sign  # the outline crosses the row at x = num / den
    flat = (dy == 0) & (y0 == yc)  # an edge along the row: its two ends
    far = np.int64(1) << 40
    lo = np.minimum(np.where(sloped, -((-num) // (2 * den)), far).min(axis=1),
                    np.where(flat, -((-np.minimum(x0, x1)) // 2), far).min(axis=1))
    hi = np.maximum(np.where(sloped, num // (2 * den), -far).max(axis=1),
                    np.where(flat, np.maximum(x0, x1) // 2, -far).max(axis=1))
    return int(np.clip(hi - lo + 1, 0, None).sum())


def _body_parts(filled: np.ndarray, solid: np.ndarray, depth_px: float, min_px: float) -> tuple[np.ndarray, int]:
    """Label the body mask ``filled`` into its parts: trunk, arms lying against it, thighs that touch.

    ``solid`` holds the pixels whose whole block is body at full resolution, so the thin gap of air between an
    arm and the trunk, lost in the block means, separates them. Its parts are the watershed basins of the
    distance to its outline, grown from the maxima that stand at least ``depth_px`` above the bridge joining them
    to a deeper part (arms that touch the trunk over a short length). Parts smaller than ``min_px`` pixels are
    dropped; every pixel of ``filled`` then takes the label of the nearest part, and a connected piece of
    ``filled`` holding no part stays a part of its own. The labels partition ``filled`` exactly.
    """
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    solid = solid & filled
    if not solid.any():
        return ndi.label(filled)
    # the distance map, its maxima and the basins are measured on the bounding box of ``solid`` plus one pixel of
    # background: the same values as on the whole slice (every pixel outside is background, the nearest of it
    # lies on that margin, and the background there neither raises a maximum nor joins two basins)
    box = _bbox(solid, margin=1)
    sub = solid[box]
    dist = ndi.distance_transform_edt(sub)
    markers, n = ndi.label(h_maxima(dist, depth_px) & sub)
    if n == 0:
        return ndi.label(filled)
    parts = np.zeros(filled.shape, dtype=np.int32)
    if n == 1:  # one marker: the watershed floods the face-connected piece of ``sub`` that holds it, and only that
        pieces, _ = ndi.label(sub)
        parts[box] = pieces == pieces[markers == 1][0]
    else:
        parts[box] = watershed(-dist, markers, mask=sub)
    sizes = np.bincount(parts.ravel(), minlength=n + 1)[1:]
    big = np.flatnonzero(sizes >= min_px) + 1
    if big.size == 0:
        return ndi.label(filled)
    relabel = np.zeros(n + 1, dtype=np.int32)
    relabel[big] = np.arange(1, big.size + 1)
    core = relabel[parts]
    if big.size == 1:  # the nearest part of every pixel is the one part
        out = filled.astype(np.int32)
    else:
        _, (iy, ix) = ndi.distance_transform_edt(core == 0, return_indices=True)
        out = np.where(filled, core[iy, ix], 0)
    mlab, _ = ndi.label(filled)
    has_core = np.zeros(int(mlab.max()) + 1, dtype=bool)
    has_core[np.unique(mlab[core > 0])] = True
    orphan = filled & ~has_core[mlab]
    n_out = int(big.size)
    if orphan.any():
        olab, n_orphan = ndi.label(orphan)
        out[orphan] = olab[orphan] + n_out
        n_out += n_orphan
    return out, n_out


def _foreground_threshold(values: np.ndarray) -> float:
    """Otsu's threshold on the log intensity (as ``segment_generic``), for values >= 0 in any unit."""
    from skimage.filters import threshold_otsu

    if values.size == 0:
        return 0.0
    hi = float(np.percentile(values, 99.5))
    if not hi > 0:
        return 0.0
    eps = 0.01 * hi
    logv = np.log(np.clip(values, 0, None) + eps)
    if float(logv.max() - logv.min()) < 1e-6:
        return float(values.min()) - 1.0
    return float(np.exp(threshold_otsu(logv)) - eps)


def _thresholds(stack: np.ndarray, is_ct: bool) -> tuple[float, float, float, float, float, float]:
    """(body, dark, bright, organ low, organ high, organ std) thresholds for the sampled slices ``stack``."""
    if is_ct:
        return (_CT_BODY_HU, _CT_DARK_HU, _CT_BRIGHT_HU, _CT_ORGAN_HU[0], _CT_ORGAN_HU[1], _CT_ORGAN_STD_HU)
    v = stack[np.isfinite(stack)]
    body_thr = _foreground_threshold(v)
    bodyvals = v[v > body_thr]
    ref = float(np.median(bodyvals)) if bodyvals.size else 0.0
    return (body_thr, _REL_DARK * ref, _REL_BRIGHT * ref, _REL_ORGAN[0] * ref, _REL_ORGAN[1] * ref,
            _REL_ORGAN_STD * ref)


_NAMES = ("area_cm2", "n_components", "major_axis_mm", "minor_major_ratio", "edge_fraction", "fov_fill",
          "dark_fraction", "bright_fraction", "ring_dark", "ring_bright", "core_dark", "core_bright",
          "organ_fraction", "lateral_bright", "lateral_bright_blob", "solidity", "dark_blob", "bone_pieces")
_CT_NAMES = ("air_lung_fraction", "fat_fraction", "soft_tissue_fraction", "bone_fraction", "limb_ring")
_OTHER_NAMES = ("peak_rel", "uptake_blob_cm2", "right_organ", "right_organ_side", "right_organ_mirror", "front_mm",
                "back_mm", "front_contact", "back_contact")


@dataclass(frozen=True, slots=True)
class SceneProfile:
    """Per-slice scene descriptors along the patient's long axis.

    Attributes
    ----------
    z_mm : (S,) ndarray
        Patient z (LPS, increasing towards the head) of the centre of each sampled axial slice, in mm, in the
        order of the array (not sorted).
    per_slice : dict of str to (S,) ndarray
        Per-slice values (NaN where a slice holds no body).
    is_ct : bool
        Whether fixed HU thresholds were used.
    slice_mm : float
        Distance between neighbouring slices of the volume along z, in mm.
    acquired_slices : int
        Slices (images) of the volume as acquired, in any plane: a localizer has few.
    modality : str
        DICOM modality of the series (upper case).
    notes : tuple of str
    """

    z_mm: np.ndarray
    per_slice: dict[str, np.ndarray]
    is_ct: bool
    slice_mm: float
    acquired_slices: int = 0
    modality: str = ""
    notes: tuple[str, ...] = ()


def _axial_z(shape: tuple[int, ...], spacing_mm, origin_mm, direction: np.ndarray) -> tuple[int, np.ndarray]:
    """The array axis that runs along patient z, and the patient z of each index along it (slice centres)."""
    d = np.asarray(direction, dtype=float)
    a = 2 - int(np.argmax(np.abs(d[2])))  # array axis whose index axis points most along patient z
    centre = sum(((shape[b] - 1) / 2.0) * spacing_mm[b] * d[2, 2 - b] for b in range(3) if b != a)
    z = origin_mm[2] + centre + np.arange(shape[a]) * spacing_mm[a] * d[2, 2 - a]
    return a, z


#: Moderately raised uptake relative to the body's median (FDG PET: the liver; the heart and bladder are hotter).
_UPTAKE_REL = (2.0, 8.0)
#: Bone pieces are counted on ~2 mm blocks (ribs survive, noise does not) and from this size (cm^2).
_BONE_PIECE_MM = 2.0
_BONE_PIECE_MIN_CM2 = 0.2
#: More pieces than this say "trunk" and nothing more (contrast-filled vessels and bowel add pieces): the count
#: saturates there.
_BONE_PIECES_CAP = 20.0


BoneLabels = tuple[np.ndarray, np.ndarray, tuple[int, int], tuple[int, int]]


def _bone_labels(full: np.ndarray, sy: float, sx: float, bone_thr: float, *,
                 body_box: tuple[slice, slice] | None = None) -> BoneLabels:
    """The pieces of bone (CT) inside the body of one full-resolution axial slice (pixel size ``sy`` x ``sx`` mm),
    on ~2 mm block means: their labels, each label's area in cm2 (label 1 first), the block size (fy, fx) and the
    block (row, column) of the labels' first pixel.

    The labels cover the blocks that meet ``body_box`` (the bounding box of ``full > -500 HU`` or any box holding
    it, computed here when not given; nothing when it is empty) and one block more each way: every other block
    holds only pixels at or below -500 HU, so its mean is too (float sums of such values round to such values), it
    is outside the body and its background joins that of the margin; the labels (numbered in raster order, which a
    crop keeps) and their sizes are those of the whole slice."""
    fy = min(max(1, int(round(_BONE_PIECE_MM / sy))), full.shape[0])  # a slice narrower than one block: one block
    fx = min(max(1, int(round(_BONE_PIECE_MM / sx))), full.shape[1])
    ny, nx = full.shape[0] // fy, full.shape[1] // fx
    if body_box is None:
        above = full > _CT_BODY_HU
        body_box = _bbox(above) if above.any() else (slice(0, 0), slice(0, 0))
    rows, cols = body_box
    if rows.stop <= rows.start or cols.stop <= cols.start:
        return np.zeros((0, 0), dtype=np.int32), np.zeros(0), (fy, fx), (0, 0)
    b0, b1 = max(rows.start // fy - 1, 0), min(-(-rows.stop // fy) + 1, ny)
    c0, c1 = max(cols.start // fx - 1, 0), min(-(-cols.stop // fx) + 1, nx)
    sl = block_mean(np.asarray(full[b0 * fy:b1 * fy, c0 * fx:c1 * fx], dtype=np.float32), (fy, fx))
    body = _fill_holes(sl > _CT_BODY_HU)
    lab, n = ndi.label((sl > bone_thr) & body)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:] * (sy * fy * sx * fx / 100.0)
    return lab, sizes, (fy, fx), (b0, c0)


def _label_centres(lab: np.ndarray, index: np.ndarray, offset: tuple[int, int]) -> list[tuple[float, float]]:
    """``ndi.center_of_mass(np.ones_like(lab), lab, index)`` of a label image whose pixel (0, 0) is pixel
    ``offset`` of a larger image, in that image's coordinates: the same sums, in the same (raster) order, of the
    same row and column numbers, so the same floats (background pixels, which add to label 0 only, are skipped)."""
    flat = lab.ravel()
    at = np.flatnonzero(flat)
    labels = flat[at]
    count = np.bincount(labels, weights=np.ones(at.size))
    cy = np.bincount(labels, weights=(at // lab.shape[1] + offset[0]).astype(np.float64))[index] / count[index]
    cx = np.bincount(labels, weights=(at % lab.shape[1] + offset[1]).astype(np.float64))[index] / count[index]
    return list(zip(cy.tolist(), cx.tolist()))


def _bone_pieces(full: np.ndarray, sy: float, sx: float, bone_thr: float, *,
                 bones: BoneLabels | None = None) -> float:
    """Separate pieces of bone (CT) inside the body of one full-resolution axial slice (pixel size ``sy`` x ``sx``
    mm): the topology of the skeleton in view. A limb shows one or two long bones (a femur; tibia and fibula); a
    trunk shows a vertebra with the arc of ribs around it (chest, upper abdomen) or the pelvic ring and femoral
    heads, and does so in a field of view cut inside the body too. Measured on ~2 mm block means
    (:func:`_bone_labels`; ``bones``: its result for this slice, when made already)."""
    sizes = (_bone_labels(full, sy, sx, bone_thr) if bones is None else bones)[1]
    return float(min((sizes >= _BONE_PIECE_MIN_CM2).sum(), _BONE_PIECES_CAP))


#: A limb's long bone in an axial CT section (:func:`_limb_ring`): a ring of cortex around a medullary cavity, its
#: outer equivalent diameter within _RING_DIAMETER_MM (adult humerus shaft ~20 mm, femur 25-35 mm, tibia 25-35 mm;
#: a rib is smaller, a femoral or humeral head, a lumbar vertebral body and the pelvic bones larger or not rings),
#: the cavity at least _RING_CAVITY of the filled section and _RING_CAVITY_MIN_CM2 (femoral canal 10-15 mm wide),
#: the filled section convex (solidity >= _RING_SOLIDITY: a vertebra's arch and processes make it concave) and
#: the cavity at its centre (centroids at most _RING_CENTRED x the diameter apart: a shaft's cortex is 4-8 mm all
#: round, an offset of about 2 mm or 0.07 x 28 mm; a vertebra ringed by its arch has its canal behind the body, about
#: 0.3 x its diameter off centre).
_RING_DIAMETER_MM = (18.0, 40.0)
_RING_CAVITY = 0.1
_RING_CAVITY_MIN_CM2 = 0.3
_RING_SOLIDITY = 0.85
_RING_CENTRED = 0.15
#: Bone pieces a limb's section holds at most (femur; tibia and fibula; radius and ulna).
_LIMB_BONES_PER_PART = 2.0


def _limb_ring(full: np.ndarray, sy: float, sx: float, bone_thr: float, largest: np.ndarray, f4: tuple[int, int],
               *, bones: BoneLabels | None = None) -> float:
    """1.0 when the largest body part of one full-resolution axial CT slice (``largest``: its mask on the 4 mm
    grid, ``f4`` pixels per block) holds at most :data:`_LIMB_BONES_PER_PART` bone pieces and one of them is a long
    bone's cortical ring around its medullary cavity (the limb-bone landmark); else 0.0. Bone pieces as in
    :func:`_bone_pieces`, on ~2 mm block means (``bones``: :func:`_bone_labels` of this slice, when made already)."""
    lab, sizes, (fy, fx), origin = _bone_labels(full, sy, sx, bone_thr) if bones is None else bones
    if sizes.size == 0:
        return 0.0
    bcm2 = sy * fy * sx * fx / 100.0
    pieces = np.flatnonzero(sizes >= _BONE_PIECE_MIN_CM2) + 1
    # the pieces whose centre lies in the largest part (on the 4 mm grid)
    inside = []
    for k, (cy, cx) in zip(pieces, _label_centres(lab, pieces, origin)):
        iy = min(int(cy * fy / f4[0]), largest.shape[0] - 1)
        ix = min(int(cx * fx / f4[1]), largest.shape[1] - 1)
        if largest[iy, ix]:
            inside.append(int(k))
    if not inside or len(inside) > _LIMB_BONES_PER_PART:
        return 0.0
    objs = ndi.find_objects(lab)
    for k in inside:
        box = objs[k - 1]
        piece = np.pad(lab[box] == k, 1)
        filled = _fill_holes(piece)
        area = float(filled.sum()) * bcm2
        cavity = (float(filled.sum()) - float(piece.sum())) * bcm2
        diameter_mm = 20.0 * np.sqrt(area / np.pi)
        if not (_RING_DIAMETER_MM[0] <= diameter_mm <= _RING_DIAMETER_MM[1]):
            continue
        if cavity < max(_RING_CAVITY * area, _RING_CAVITY_MIN_CM2):
            continue
        cy, cx = ndi.center_of_mass(filled)
        hy, hx = ndi.center_of_mass(filled & ~piece)
        if np.hypot((cy - hy) * sy * fy, (cx - hx) * sx * fx) > _RING_CENTRED * diameter_mm:
            continue
        if float(filled.sum()) / max(_hull_size(filled), 1) >= _RING_SOLIDITY:
            return 1.0
    return 0.0


def _measure_slice(sl: np.ndarray, full: np.ndarray, thr, is_ct: bool, py: float, px: float, fy: int, fx: int, *,
                   min_px: float, split_px: float, ring_mm: float, core_mm: float,
                   signs: tuple[int, int] = (1, 1)) -> dict[str, float] | None:
    """Descriptors of one block-averaged axial slice ``sl`` (``full``: the same slice at full resolution).

    The masks are made on the bounding box of the tissue above the body threshold plus one pixel of background
    (``box``): the body, its parts, outline, depth and tissue classes lie inside it, and every morphological step
    (opening, hole filling, labelling, erosion, distance) gives there what it gives on the whole slice (outside the
    box all is background, joined to the image border). Coordinates that enter a float sum (the largest part's
    centre and axes) are those of the whole slice, and the 3 x 3 local mean and deviation are filtered from the
    slice's first row and column (a running sum), so every descriptor is the same float as on the whole slice.
    """
    body_thr, dark_thr, bright_thr, organ_lo, organ_hi, organ_std = thr
    st = ndi.generate_binary_structure(2, 1)
    pix_cm2 = py * px / 100.0
    above = sl > body_thr
    if not above.any():
        return None
    H, W = sl.shape
    box = _bbox(above, margin=1)
    (r0, r1), (c0, c1) = (box[0].start, box[0].stop), (box[1].start, box[1].stop)
    sb = sl[box]
    body = ndi.binary_opening(above[box], structure=st)
    lab, nlab = ndi.label(body)
    if nlab == 0:
        return None
    sizes = np.bincount(lab.ravel())[1:]
    keep = np.flatnonzero(sizes >= min_px) + 1
    if keep.size == 0:
        return None
    wanted = np.zeros(nlab + 1, dtype=bool)
    wanted[keep] = True
    kept = wanted[lab]
    filled = _fill_holes(kept)
    # the image border, where it crosses the box
    border = np.zeros_like(filled)
    border[0, :] |= r0 == 0
    border[-1, :] |= r1 == H
    border[:, 0] |= c0 == 0
    border[:, -1] |= c1 == W
    n_border = H * W - max(H - 2, 0) * max(W - 2, 0)
    # a field of view cut inside the body (a chest crop): dark regions that open onto the image border (lungs)
    # are not holes; inside the convex hull of the tissue they are still inside the body
    if (filled & border).sum() > 0.25 * n_border:
        filled = filled | _convex_hull(kept)
    # solid blocks: hole filling of the full-resolution tissue on its own bounding box (plus one pixel), block
    # means over the box's blocks only
    if (fy, fx) == (1, 1) and full.dtype == sl.dtype:  # one pixel per block (a PET): the tissue is ``above``
        tissue_box: tuple[slice, slice] | None = box
        solid = _fill_holes(above[box])
    else:
        tissue = full > body_thr
        tissue_box = _bbox(tissue, margin=1) if tissue.any() else None
        if tissue_box is None:
            solid = np.zeros(filled.shape, dtype=bool)
        else:
            tissue_filled = np.zeros(tissue.shape, dtype=bool)
            tissue_filled[tissue_box] = _fill_holes(tissue[tissue_box])
            solid = block_mean(tissue_filled[r0 * fy:r1 * fy, c0 * fx:c1 * fx].astype(np.float32), (fy, fx)) \
                >= _SOLID
    lab, nlab = _body_parts(filled, solid, split_px, min_px)
    area_px = int(filled.sum())
    sizes = np.bincount(lab.ravel())[1:]
    big = lab == (int(np.argmax(sizes)) + 1)
    yy, xx = np.nonzero(big)
    yy += r0
    xx += c0
    cov = np.cov(np.stack([yy * py, xx * px])) if yy.size > 2 else np.zeros((2, 2))
    ev = np.sort(np.clip(np.linalg.eigvalsh(cov), 0, None))
    edge = filled & ~ndi.binary_erosion(filled, structure=st, border_value=1)
    n_edge = int(edge.sum()) + int((filled & border).sum())
    # the image border is not the body's outline when the field of view is cropped: measure depth from
    # the outline inside the image only (pad with tissue where the body touches the border)
    depth = _edt_in_box(np.pad(filled, 1, mode="edge"), (py, px))[1:-1, 1:-1]
    dark = (sb < dark_thr) & filled
    bright = (sb > bright_thr) & filled
    ring = filled & (depth <= ring_mm)
    core = filled & (depth > core_mm)
    out = {
        "area_cm2": area_px * pix_cm2,
        "n_components": float(nlab),
        "major_axis_mm": 4.0 * float(np.sqrt(ev[1])),
        "minor_major_ratio": float(np.sqrt(ev[0] / ev[1])) if ev[1] > 0 else 1.0,
        "edge_fraction": float((filled & border).sum()) / max(n_edge, 1),
        "fov_fill": area_px / (H * W),
        "dark_fraction": dark.sum() / area_px,
        "bright_fraction": bright.sum() / area_px,
        "ring_dark": (dark & ring).sum() / max(int(ring.sum()), 1),
        "ring_bright": (bright & ring).sum() / max(int(ring.sum()), 1),
        "core_dark": (dark & core).sum() / max(int(core.sum()), 1),
        "core_bright": (bright & core).sum() / max(int(core.sum()), 1),
    }
    # solidity of the largest part: a phantom's cylinder is convex (1.0); a trunk with arms or a head with ears
    # and nose is a little less
    out["solidity"] = float(big.sum()) / max(_hull_size(big), 1)
    # largest connected dark region as a fraction of the body: a lung (or both), not scattered dark voxels
    # (CT: lung-like, -960 ... -400 HU in 4 mm block means; outside air, which a crop's hull can take in, is
    # below -960)
    dlab, ndl = ndi.label(dark & (sb > _CT_AIR_HU) if is_ct else dark)
    out["dark_blob"] = (np.bincount(dlab.ravel())[1:].max() if ndl else 0) / area_px
    # organ: the largest homogeneous mid-intensity region (liver, spleen; thigh muscles), eroded once so
    # that thin bridges between neighbouring structures do not join them
    # (scipy's 3-tap mean is a running sum along each line from its start: on the slice up to the box's end it
    # gives the whole slice's floats except in the last row and column, the box's margin, where no body lies)
    head = sl[:r1, :c1]
    mean3 = ndi.uniform_filter(head, 3)
    std3 = np.sqrt(np.clip(ndi.uniform_filter(head * head, 3) - mean3 * mean3, 0, None))[r0:, c0:]
    mean3 = mean3[r0:, c0:]
    homogeneous = filled & (mean3 > organ_lo) & (mean3 < organ_hi) & (std3 < organ_std)
    organ = ndi.binary_erosion(homogeneous, structure=st)
    olab, nolab = ndi.label(organ)
    out["organ_fraction"] = (np.bincount(olab.ravel())[1:].max() if nolab else 0) / area_px
    # lateral bright tissue (CT: bone away from the spine: iliac wings, femoral heads, ribs, scapulae)
    half_width = max((xx.max() - xx.min()) / 2.0, 1.0)
    lateral = bright & big & (np.abs(np.arange(c0, c1)[None, :] - xx.mean()) > _LATERAL * half_width)
    llab, nllab = ndi.label(lateral)
    out["lateral_bright"] = lateral.sum() / area_px
    out["lateral_bright_blob"] = (np.bincount(llab.ravel())[1:].max() if nllab else 0) / area_px

    def whole(mask: np.ndarray) -> np.ndarray:  # a mask of the box on the whole slice
        w = np.zeros((H, W), dtype=bool)
        w[box] = mask
        return w

    if is_ct:
        # read by two landmarks; CT's body threshold is the bone labels' -500 HU, so the tissue's box serves
        bones = _bone_labels(full, py / fy, px / fx, bright_thr,
                             body_box=(slice(0, 0), slice(0, 0)) if tissue_box is None else tissue_box)
        out["bone_pieces"] = _bone_pieces(full, py / fy, px / fx, bright_thr, bones=bones)
    else:
        out["bone_pieces"] = 0.0
        # uptake landmarks (PET; any relative scale): the peak of the 3 x 3 local mean and the largest region of
        # moderately raised signal (2-8 x the body's median: the liver on FDG PET), relative to the body's median
        ref = bright_thr / _REL_BRIGHT
        inside = filled & (mean3 > 0)
        out["peak_rel"] = float(mean3[filled].max() / ref) if ref > 0 and filled.any() else 0.0
        ulab, nu = ndi.label(inside & (mean3 > _UPTAKE_REL[0] * ref) & (mean3 < _UPTAKE_REL[1] * ref))
        out["uptake_blob_cm2"] = float(np.bincount(ulab.ravel())[1:].max() * pix_cm2) if nu else 0.0
        out.update(_mr_landmarks(whole(big), whole(organ), whole(homogeneous), py, px, signs))
        out.update(_front_outline(whole(filled), py, signs))
    if is_ct:
        out["air_lung_fraction"] = dark.sum() / area_px
        out["fat_fraction"] = (((sb >= _CT_FAT_HU[0]) & (sb < _CT_FAT_HU[1])) & filled).sum() / area_px
        out["soft_tissue_fraction"] = (((sb >= _CT_SOFT_HU[0]) & (sb < _CT_SOFT_HU[1])) & filled).sum() / area_px
        out["bone_fraction"] = bright.sum() / area_px
        out["limb_ring"] = _limb_ring(full, py / fy, px / fx, bright_thr, whole(big), (fy, fx), bones=bones)
    return out


def _oriented(a: np.ndarray, signs: tuple[int, int]) -> np.ndarray:
    """An axial slice (patient y, patient x) turned so that rows run anterior to posterior and columns from the
    patient's right to left (LPS: both axes increasing)."""
    return a[:: signs[0], :: signs[1]]


def _mr_landmarks(trunk: np.ndarray, organ: np.ndarray, homogeneous: np.ndarray, py: float, px: float,
                  signs: tuple[int, int]) -> dict[str, float]:
    """The liver's landmark on one axial slice, without an intensity scale (MR; measured on any non-CT slice).

    ``right_organ``: the largest homogeneous organ region of the trunk (``organ``: homogeneous mid-intensity
    tissue relative to the patient's own median, eroded once) as a fraction of the trunk, when its centroid lies
    on the patient's right of the trunk's centre column (0 otherwise); ``right_organ_side``: that centroid's offset
    to the right in half-widths of the trunk; ``right_organ_mirror``: the fraction of its mirror image across the
    centre column that is homogeneous tissue too. The liver under the right hemidiaphragm is the one large organ
    without a mirror partner (the spleen on the left is smaller and posterior); muscles (psoas, glutei, thighs,
    the back) come in mirror pairs, the bladder and the brain lie on the midline, the heart left of it. Measured
    only on a section larger than any thigh (>= ``_LIVER_TRUNK_MIN_CM2``) whose outline lies inside the field of
    view: the centre column must be the midline. Right and left come from the direction cosines (``signs``), not
    the array order.
    """
    out = {"right_organ": 0.0, "right_organ_side": np.nan, "right_organ_mirror": np.nan}
    t = _oriented(trunk, signs)
    o = _oriented(organ, signs) & t
    h = _oriented(homogeneous, signs)
    ty, tx = np.nonzero(t)
    on_border = t[0].sum() + t[-1].sum() + t[:, 0].sum() + t[:, -1].sum()
    if tx.size and tx.size * py * px / 100.0 >= _LIVER_TRUNK_MIN_CM2 and on_border <= 0.02 * tx.size:
        lab, n = ndi.label(o)
        if n:
            sizes = np.bincount(lab.ravel())[1:]
            c = lab == int(np.argmax(sizes)) + 1
            cx = float(tx.mean())
            hw = max((tx.max() - tx.min()) / 2.0, 1.0)
            yy, xx = np.nonzero(c)
            side = (cx - float(xx.mean())) / hw
            mx = np.round(2 * cx - xx).astype(int)
            ok = (mx >= 0) & (mx < h.shape[1])
            mirror = float(h[yy[ok], mx[ok]].sum()) / max(xx.size, 1)
            out["right_organ_side"] = side
            out["right_organ_mirror"] = mirror
            if side > 0:
                out["right_organ"] = float(c.sum()) / tx.size
    return out


def _front_outline(filled: np.ndarray, py: float, signs: tuple[int, int]) -> dict[str, float]:
    """The body's anterior outline on one axial slice, for the breast landmark (:func:`breast_slices`).

    ``front_mm``: distance from the image's anterior border to the body's most anterior point (mm; the same frame
    on every slice of a series, so its change along z is the outline's shape); ``back_mm``: the same from the
    posterior border to the most posterior point; ``front_contact`` and
    ``back_contact``: the fraction of the image's anterior and posterior border rows that is body (a field of view
    that cuts the body there). Anterior and posterior come from the direction cosines (``signs``).
    """
    f = _oriented(filled, signs)
    rows = np.flatnonzero(f.any(axis=1))
    if rows.size == 0:
        return {"front_mm": np.nan, "back_mm": np.nan, "front_contact": np.nan, "back_contact": np.nan}
    return {"front_mm": float(rows[0]) * py, "back_mm": float(f.shape[0] - 1 - rows[-1]) * py,
            "front_contact": float(f[0].mean()), "back_contact": float(f[-1].mean())}


def _axial_signs(direction: np.ndarray) -> tuple[int, int]:
    """Signs of patient y and x along the axial view's rows and columns (:func:`to_axial`): +1 when the index
    grows towards posterior (y) and the patient's left (x)."""
    d = np.asarray(direction, dtype=float)
    p_of_i = [int(np.argmax(np.abs(d[:, i]))) for i in range(3)]
    if len(set(p_of_i)) != 3:
        return (1, 1)
    sy = 1 if d[1, p_of_i.index(1)] >= 0 else -1
    sx = 1 if d[0, p_of_i.index(0)] >= 0 else -1
    return (sy, sx)


def scene_profile(image: np.ndarray, spacing_mm: tuple[float, float, float], *,
                  direction: np.ndarray | None = None, origin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
                  modality: str = "", unit: str = "", step_mm: float = 10.0, max_slices: int = 96,
                  min_slices: int = 24, pixel_mm: float = 4.0, min_component_cm2: float = 10.0,
                  ring_mm: float = 12.0, core_mm: float = 25.0, split_mm: float = 12.0) -> SceneProfile:
    """Scene descriptors of axial slices sampled along the patient's long axis.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Voxel values: HU for CT (``modality="CT"`` and ``unit="HU"``), any positive unit otherwise (MR, PET).
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x), in mm.
    direction : (3, 3) ndarray, optional
        Volume direction cosines (columns: patient vectors of the x, y, z index axes). Default identity.
    origin_mm : tuple of 3 float, optional
        Patient position of voxel [0, 0, 0], in mm; gives the slices' patient z. Default 0.
    modality, unit : str, optional
        CT in HU uses fixed HU thresholds; anything else thresholds relative to the body's median.
    step_mm : float, optional
        Slices are sampled about this far apart along z, in mm (every slice when they are further apart); at
        least ``min_slices`` (when the volume has them) and at most ``max_slices``. Default 10.
    pixel_mm : float, optional
        In-plane pixel size after block averaging, in mm. Default 4.
    min_component_cm2, ring_mm, core_mm, split_mm : float, optional
        As for :func:`scene_descriptors`.

    Returns
    -------
    SceneProfile
    """
    if image.ndim != 3:
        raise ValueError(f"image must be 3-D (z, y, x), got shape {image.shape}")
    if len(spacing_mm) != 3 or any(not (s > 0) for s in spacing_mm):
        raise ValueError(f"spacing_mm must be 3 positive values in mm, got {spacing_mm}")
    if (pixel_mm <= 0 or step_mm <= 0 or max_slices < 1 or min_slices < 1 or min_component_cm2 < 0
            or ring_mm <= 0 or core_mm <= 0):
        raise ValueError(f"pixel_mm ({pixel_mm}), step_mm ({step_mm}), ring_mm ({ring_mm}), core_mm ({core_mm}) "
                         f"must be > 0 mm, max_slices ({max_slices}) and min_slices ({min_slices}) >= 1, "
                         f"min_component_cm2 ({min_component_cm2}) >= 0")
    notes: list[str] = []
    d = np.eye(3) if direction is None else np.asarray(direction, dtype=float)
    ax, sp, oblique = to_axial(image, spacing_mm, d)
    if oblique:
        notes.append("scene: oblique acquisition plane, descriptors measured on the nearest axial reformat")
    _, z_all = _axial_z(image.shape, spacing_mm, origin_mm, d)
    is_ct = modality.upper() == "CT" and unit in ("HU", "")
    n = ax.shape[0]
    want = int(np.clip(round(n * sp[0] / step_mm) + 1, min(n, min_slices), max_slices))
    ks = np.unique(np.linspace(0, n - 1, min(n, want)).round().astype(int))
    fy = min(max(1, int(round(pixel_mm / sp[1]))), ax.shape[1])  # a slice narrower than one block: one block
    fx = min(max(1, int(round(pixel_mm / sp[2]))), ax.shape[2])
    slices = [block_mean(np.asarray(ax[k], dtype=np.float32), (fy, fx)) for k in ks]
    py, px = sp[1] * fy, sp[2] * fx
    thr = _thresholds(np.stack(slices), is_ct)
    names = _NAMES + (_CT_NAMES if is_ct else _OTHER_NAMES)
    per = {k: np.full(len(slices), np.nan) for k in names}
    signs = _axial_signs(d)

    def measure(i: int) -> dict[str, float] | None:
        return _measure_slice(slices[i], np.asarray(ax[ks[i]]), thr, is_ct, py, px, fy, fx,
                              min_px=min_component_cm2 / (py * px / 100.0), split_px=split_mm / max(py, px),
                              ring_mm=ring_mm, core_mm=core_mm, signs=signs)

    # each slice is measured on its own (numpy, scipy and scikit-image release the GIL in their loops): the slices
    # are shared among the thread budget's threads, their descriptors stored in slice order, the same floats
    for i, m in enumerate(thread_map(measure, range(len(slices)), thread_budget())):
        if m is not None:
            for k, val in m.items():
                per[k][i] = val
    return SceneProfile(np.asarray(z_all[ks], dtype=float), per, is_ct, float(sp[0]), int(image.shape[0]),
                        modality.upper(), tuple(notes))


def _summarise(per: dict[str, np.ndarray], sel: np.ndarray, is_ct: bool, extent_mm: float,
               notes: list[str]) -> SceneDescriptors:
    sub = {k: v[sel] for k, v in per.items()}
    has = np.isfinite(sub["area_cm2"])
    values: dict[str, float] = {}
    if not has.any():
        notes.append("scene: no body found in any slice; descriptors are 0")
        for k in sub:
            values[k] = 0.0
    elif all(v.dtype == np.float64 for v in sub.values()):
        # one median per row of the stacked series: numpy's median along an axis takes the same order statistics
        # and averages the middle two the same way (NaN where a series has one), so the same floats as one by one
        med = np.median(np.stack([v[has] for v in sub.values()]), axis=1)
        for k, m in zip(sub, med):
            values[k] = float(m)
    else:
        for k, arr in sub.items():
            values[k] = float(np.median(arr[has]))
    values["log10_area_cm2"] = float(np.log10(max(values["area_cm2"], 1e-3)))
    values["log10_major_axis_mm"] = float(np.log10(max(values["major_axis_mm"], 1e-3)))
    values["is_ct"] = 1.0 if is_ct else 0.0
    for k in _SHARED_FEATURES + _CT_ONLY_FEATURES:
        values[f"ct_{k}"] = values[k] if is_ct else 0.0
        values[f"other_{k}"] = 0.0 if is_ct else values[k]
    values["slices_with_body"] = float(has.sum())
    values["extent_z_mm"] = float(extent_mm)
    return SceneDescriptors(values, sub, tuple(notes))


def scene_descriptors(image: np.ndarray, spacing_mm: tuple[float, float, float], *,
                      direction: np.ndarray | None = None, modality: str = "", unit: str = "",
                      pixel_mm: float = 4.0, max_slices: int = 24, min_component_cm2: float = 10.0,
                      ring_mm: float = 12.0, core_mm: float = 25.0, split_mm: float = 12.0) -> SceneDescriptors:
    """Descriptors of the body region shown by a volume as a whole, from its pixels only.

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        Voxel values: HU for CT (``modality="CT"`` and ``unit="HU"``), any positive unit otherwise (MR, PET SUV).
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x), in mm.
    direction : (3, 3) ndarray, optional
        Volume direction cosines (columns: patient vectors of the x, y, z index axes). Default: identity (axial).
    modality : str, optional
        DICOM modality; CT in HU uses fixed HU thresholds, anything else thresholds relative to the body's median.
    unit : str, optional
        Unit of the values ("HU" for CT).
    pixel_mm : float, optional
        In-plane pixel size after block averaging, in mm. Default 4.
    max_slices : int, optional
        At most this many axial slices, evenly spread, are measured. Default 24.
    min_component_cm2 : float, optional
        Smaller body components (table, cables, noise) are dropped, in cm^2. Default 10.
    ring_mm, core_mm : float, optional
        Depth of the outer ring and the minimum depth of the core, from the body outline, in mm. Defaults 12, 25.
    split_mm : float, optional
        Body parts joined by bridges narrower than about twice this (arms lying against the trunk, thighs that
        touch) count as separate components; shape and lateral bone are measured on the largest. Default 12.

    Returns
    -------
    SceneDescriptors
        ``values`` holds every name of :data:`MODEL_FEATURES` (0 when no body was found, with a note).

    Raises
    ------
    ValueError
        When ``image`` is not 3-D, a spacing is not positive, or an option is out of range.
    """
    prof = scene_profile(image, spacing_mm, direction=direction, modality=modality, unit=unit,
                         step_mm=1e-3, max_slices=max_slices, min_slices=1, pixel_mm=pixel_mm,
                         min_component_cm2=min_component_cm2, ring_mm=ring_mm, core_mm=core_mm, split_mm=split_mm)
    n = len(prof.z_mm)
    ax_len = image.shape[2 - int(np.argmax(np.abs(np.asarray(np.eye(3) if direction is None else direction)[2])))]
    return _summarise(prof.per_slice, np.ones(n, dtype=bool), prof.is_ct, ax_len * prof.slice_mm, list(prof.notes))


def profile_slabs(profile: SceneProfile, *, slab_mm: float = 60.0,
                  stride_mm: float = 30.0) -> list[tuple[float, float, SceneDescriptors]]:
    """Slab summaries of a :class:`SceneProfile`: ``(z_lo_mm, z_hi_mm, descriptors)`` from head to feet.

    Slabs are ``slab_mm`` long and start every ``stride_mm`` from the superior end; a profile shorter than a slab
    gives one slab. A slab's descriptors are the medians of its sampled slices; its z range runs over the
    centres of those slices, widened by half a slice each way.
    """
    if slab_mm <= 0 or stride_mm <= 0:
        raise ValueError(f"slab_mm ({slab_mm}) and stride_mm ({stride_mm}) must be > 0 mm")
    z = profile.z_mm
    if z.size == 0:
        return []
    top, bottom = float(z.max()), float(z.min())
    length = top - bottom
    if length <= slab_mm:
        starts = [top]
    else:
        n_slabs = int(np.ceil((length - slab_mm) / stride_mm)) + 1
        starts = [top - min(i * stride_mm, length - slab_mm) for i in range(n_slabs)]
    half = profile.slice_mm / 2.0
    out = []
    for s in starts:
        sel = (z <= s + 1e-6) & (z >= s - slab_mm - 1e-6)
        if not sel.any():
            continue
        desc = _summarise(profile.per_slice, sel, profile.is_ct, float(z[sel].max() - z[sel].min()) + 2 * half, [])
        out.append((float(z[sel].min()) - half, float(z[sel].max()) + half, desc))
    return out


def descriptor_vector(desc: SceneDescriptors, names: tuple[str, ...] = MODEL_FEATURES) -> np.ndarray:
    """The descriptors named ``names``, in that order, as a float64 vector (for a model's ``predict_proba``).

    Raises
    ------
    KeyError
        When a name is not a descriptor; the message lists the known ones.
    """
    missing = [k for k in names if k not in desc.values]
    if missing:
        raise KeyError(f"unknown scene descriptor(s) {missing}; known: {sorted(desc.values)}")
    return np.array([desc.values[k] for k in names], dtype=float)


def slab_descriptors(image: np.ndarray, spacing_mm: tuple[float, float, float], *,
                     direction: np.ndarray | None = None, modality: str = "", unit: str = "",
                     slab_mm: float = 60.0, stride_mm: float = 30.0, keep: tuple[float, float] = (0.0, 1.0),
                     **kwargs) -> list[SceneDescriptors]:
    """Descriptors of overlapping axial slabs of a volume: the training samples of a scene model.

    The same slabs the ``scene`` step classifies (:func:`scene_profile`, then :func:`profile_slabs`).

    Parameters
    ----------
    image : (Z, Y, X) ndarray
        The volume, any acquisition plane (it is turned axial with ``direction``).
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x), in mm.
    direction : (3, 3) ndarray, optional
        Volume direction cosines. Default identity.
    modality, unit : str
        As for :func:`scene_descriptors`.
    slab_mm : float, optional
        Slab length along the patient's long axis, in mm (a volume shorter than that gives one slab). Default 60.
    stride_mm : float, optional
        Distance between slab starts, in mm. Default 30.
    keep : (float, float), optional
        Only slabs whose centre lies within this fraction of the axial extent, counted from the patient's inferior
        (feet) end, are returned, e.g. ``(0.2, 1.0)`` leaves out the lowest fifth. Default all.
    **kwargs
        Passed on to :func:`scene_profile`.

    Returns
    -------
    list of SceneDescriptors
        One per slab, from head to feet.
    """
    if not 0.0 <= keep[0] < keep[1] <= 1.0:
        raise ValueError(f"keep must be (lo, hi) with 0 <= lo < hi <= 1, got {keep}")
    prof = scene_profile(image, spacing_mm, direction=direction, modality=modality, unit=unit, **kwargs)
    slabs = profile_slabs(prof, slab_mm=slab_mm, stride_mm=stride_mm)
    if not slabs:
        return []
    lo, hi = float(prof.z_mm.min()), float(prof.z_mm.max())
    out = []
    for a, b, desc in slabs:
        centre = ((a + b) / 2 - lo) / max(hi - lo, 1e-6)
        if keep[0] <= centre <= keep[1]:
            out.append(desc)
    return out


#: Region labels in head-to-feet order (their rank along the body); ``extremity`` (legs) comes last.
BODY_ORDER: tuple[str, ...] = ("head", "neck", "chest", "abdomen", "pelvis", "extremity")
UNKNOWN = "unknown"
#: On CT, a slab whose largest dark (< -400 HU) region inside the body is at least this fraction of the body
#: holds lungs; one below the lower bound holds none.
_LUNG_BLOB = 0.12
_NO_LUNG_BLOB = 0.02
#: On MR, a chest slab's largest dark region (lung, no signal) is at least this fraction of the body.
_NO_LUNG_BLOB_MR = 0.03


@dataclass(frozen=True, slots=True)
class SceneRegion:
    """One stretch of the body along z with one label.

    Attributes
    ----------
    label : str
        One of :data:`BODY_ORDER` or ``"unknown"``.
    z_mm : (float, float)
        Lowest and highest patient z (LPS, mm) of the stretch.
    probability : float
        Calibrated probability of ``label``; for ``unknown``, one minus the best class's probability.
    source : str
        Empty for the series' own region; for a region borrowed from a series of the same study and frame of
        reference (:func:`dicomnode.analysis.scene_context.merge_sibling_scene`), how notes name that series
        (modality, series number and description; never a name, an ID or a UID).
    """

    label: str
    z_mm: tuple[float, float]
    probability: float
    source: str = ""


@dataclass(frozen=True, slots=True)
class SceneResult:
    """The body region(s) a series shows.

    Attributes
    ----------
    label : str
        The dominant region (the longest labelled stretch), or ``"unknown"``.
    probabilities : dict of str to float
        Calibrated class probabilities of the dominant stretch (of the whole series when none is labelled).
    regions : tuple of SceneRegion
        From head to feet (decreasing z).
    lungs_in_view : bool or None
        CT only: whether a slab holds lungs (None on other modalities: no fixed threshold tells air).
    notes : tuple of str
    body_in_view : bool
        False when what is in view is no body: nothing found, or a test phantom (:func:`phantom_evidence`). A
        localizer, a field of view too small to tell or a body no region is recognised in stay True.
    """

    label: str
    probabilities: dict[str, float]
    regions: tuple[SceneRegion, ...]
    lungs_in_view: bool | None
    notes: tuple[str, ...] = ()
    body_in_view: bool = True


def calibrate(proba: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature scaling of posteriors: ``p_k^(1/T)`` renormalised (Guo et al. 2017); T > 1 softens.

    Parameters
    ----------
    proba : (N, K) ndarray
        Posteriors, rows summing to 1.
    temperature : float
        T > 0.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logp = np.log(np.clip(np.asarray(proba, dtype=float), 1e-300, None)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    p = np.exp(logp)
    return p / p.sum(axis=1, keepdims=True)


def fit_temperature(proba: np.ndarray, truth_index: np.ndarray, groups: np.ndarray | None = None) -> float:
    """The temperature that minimises the negative log-likelihood of held-out posteriors (grid 1 ... 100).

    Parameters
    ----------
    proba : (N, K) ndarray
        Held-out posteriors (each row from a model that did not see its patient).
    truth_index : (N,) ndarray of int
        Column of the true class of each row.
    groups : (N,) ndarray, optional
        Series of each row. When given, the calibrated rows of a series are averaged first and each series
        counts once: the ``scene`` step reports such averages, and slabs of one series err together.
    """
    grid = np.exp(np.linspace(0.0, np.log(100.0), 200))
    idx = np.asarray(truth_index, dtype=int)
    if groups is None:
        sets = [np.array([i]) for i in range(len(idx))]
    else:
        g = np.asarray(groups)
        sets = [np.flatnonzero(g == u) for u in np.unique(g)]
    nll = []
    for t in grid:
        c = calibrate(proba, t)
        nll.append(-np.mean([np.log(max(float(c[ix, idx[ix[0]]].mean()), 1e-12)) for ix in sets]))
    return float(grid[int(np.argmin(nll))])


#: A phantom's section may touch the image border on less than this fraction of its outline (clipped alike on all
#: sides by a field of view a little smaller than the phantom); a crop inside a body is mostly border.
_PHANTOM_MAX_EDGE = 1.0 / 3.0
#: A section whose outline is at least this fraction image border shows less than 15 % of the body's own outline:
#: the field of view, not the anatomy, sets its size and shape, and size-based labels (``extremity``, ``head``)
#: need a landmark. The limb crops of ../shared/data/sts show 0.46-0.80; a 200 mm field inside an abdomen 0.83-0.96.
_FILLED_EDGE = 0.85


def phantom_evidence(profile: SceneProfile) -> str | None:
    """Why the object in view looks like a test phantom rather than a body, or None.

    A phantom holds a cylinder: on at least half of the slices with an object, and on at least 4 slices spanning
    40 mm or more, the cross-section is one part, convex (solidity >= 0.95), round (minor/major >= 0.95), touches
    the image border on less than :data:`_PHANTOM_MAX_EDGE` of its outline, and has the same area (within 3 % of
    their median). Heads are longer than wide (minor/major 0.7-0.9) and change along z; a trunk is wider still;
    limbs taper; a crop inside the body is mostly border (a 200 mm field of view inside an abdomen: 0.83-0.96 of
    the outline), while a phantom a little larger than a tight field of view is clipped on all four sides alike and
    stays round (0.20-0.26 of its outline on the border for the 20 cm Philips phantom in a 200 mm field).
    """
    per = profile.per_slice
    has = np.isfinite(per["area_cm2"])
    if has.sum() < 4:
        return None
    area = per["area_cm2"]
    shape_ok = has & (np.nan_to_num(per["solidity"]) >= 0.95) & (np.nan_to_num(per["minor_major_ratio"]) >= 0.95) \
        & (per["n_components"] == 1) & (np.nan_to_num(per["edge_fraction"], nan=1.0) < _PHANTOM_MAX_EDGE)
    if shape_ok.sum() < 4:
        return None
    med = float(np.median(area[shape_ok]))
    same = shape_ok & (np.abs(np.nan_to_num(area) / med - 1.0) < 0.03)
    span = float(np.ptp(profile.z_mm[same])) + profile.slice_mm if same.any() else 0.0
    if same.sum() >= 4 and same.sum() >= 0.5 * has.sum() and span >= 40.0:
        return (f"a round convex cylinder of constant cross-section ({med:.0f} cm^2 over {span:.0f} mm): a test "
                "phantom, not a body")
    return None


#: Typical adult length of each region along z, in mm (head: vertex to skull base; pelvis: iliac crest to the
#: ischial tuberosities). Two labelled stretches may skip the regions between them only when they are at least
#: ``_SKIP_SHARE`` of those regions' typical lengths apart.
_TYPICAL_MM = {"head": 200.0, "neck": 100.0, "chest": 250.0, "abdomen": 200.0, "pelvis": 180.0, "extremity": 400.0}
_SKIP_SHARE = 0.4
#: Where the body ends inside the field of view at its superior end, slabs centred within this distance of that
#: end (mm) can only be a head (its vertex); anything else there is called unknown.
_VERTEX_MM = 80.0
#: On CT, the trunk's cross-section (chest, abdomen, pelvis) of an adult is larger than this, unless the field of
#: view cuts it; a head is smaller.
_CT_TRUNK_MIN_CM2 = 300.0
#: On CT, a limb's section larger than a hand's or a foot's (cm^2) shows at most a few separate bones (a femur;
#: tibia and fibula; at the knee femur or tibia, fibula and patella): from _LIMB_MAX_BONES pieces per body part on
#: (medians over a slab's slices), it is a trunk (the vertebra with the arc of ribs, the pelvic ring), also when
#: the field of view is cropped.
_LIMB_MAX_BONES = 6.0
_FOOT_MAX_CM2 = 200.0
#: On CT, a skull: bone (> 250 HU) over this fraction of the body's outer 12 mm ring.
_CT_SKULL_RING = 0.15


#: Any modality: an adult head's cross-section is below this (cm^2); larger slabs are not a head.
_HEAD_MAX_CM2 = 400.0
#: Any modality: a trunk's cross-section (chest, abdomen, pelvis) is above this (cm^2) unless the view is cropped.
_TRUNK_MIN_CM2 = 250.0


#: A series is named only when its labelled regions cover at least this fraction of the body in view along z.
_MIN_COVERED = 0.4
#: The slab model alone names a class on a modality group only when at least this many training patients showed it
#: there in real slabs (:func:`recognise`, ``class_patients``). MR and PET: 2. Their descriptors are relative
#: intensities and shapes that vary with scanner, protocol, field of view and arms; from one patient the model has
#: not seen how the region varies between patients, and phantoms do not show it either (two is the fewest with which
#: a leave-one-patient-out check of the class is possible at all). CT: 1. Its descriptors read fixed HU (air, fat,
#: soft tissue, bone), which one patient's slabs and the phantoms carry over to others; a class only phantoms
#: showed on CT is still not named by the model alone. Measured leave one patient out (docs/models.md): 2 on CT
#: too would turn 5 of 19 right held-out series unknown (CT chest, abdomen and pelvis each came from 1-2 patients).
MIN_CLASS_PATIENTS = {"ct": 1, "other": 2}
#: The vertex: the topmost section of the body is at most this fraction of the widest one within _VERTEX_SPAN_MM
#: below it (a cap), the widest is head-sized, and the top _VERTEX_CAP_MM are one part.
_VERTEX_CAP = 0.4
_VERTEX_SPAN_MM = 120.0
_VERTEX_CAP_MM = 60.0
#: Vertex to chin of an adult head, with a margin (mm): below this no slab is a head.
_HEAD_LENGTH_MM = 260.0
#: Likelihood ratio of the vertex landmark for ``head`` against every other region (a head-sized one-part section
#: within a head's length of the vertex). Chosen, not fitted: the landmark is near-decisive, the model on MR is weak.
_HEAD_LR = 10.0


def vertex_z(profile: SceneProfile) -> float | None:
    """Patient z (mm) of the vertex when the body ends at its superior end as a head does, else None.

    A vertex: the body's topmost section is a cap (at most :data:`_VERTEX_CAP` of the widest section within
    :data:`_VERTEX_SPAN_MM` below it), that widest section is head-sized (<= :data:`_HEAD_MAX_CM2`), and the top
    :data:`_VERTEX_CAP_MM` are one part (two breasts, two feet or a pair of legs are not). A field of view that
    cuts the head, a trunk or a limb at its superior end has no vertex.
    """
    per = profile.per_slice
    a = per["area_cm2"]
    has = np.isfinite(a)
    if has.sum() < 4:
        return None
    o = np.argsort(-profile.z_mm[has])
    z, area, nc = profile.z_mm[has][o], a[has][o], per["n_components"][has][o]
    top = float(z[0])
    near = z >= top - _VERTEX_SPAN_MM
    if near.sum() < 3:
        return None
    widest = float(area[near].max())
    cap = z >= top - _VERTEX_CAP_MM
    if widest > _HEAD_MAX_CM2 or area[0] > _VERTEX_CAP * widest or float(np.median(nc[cap])) > 1.0:
        return None
    return top


#: PET uptake landmarks (FDG): the liver is the slice with the largest region of moderately raised uptake
#: (:data:`_UPTAKE_REL`), at least _LIVER_MIN_CM2; its dome is the top of the run of slices holding at least
#: _LIVER_DOME_SHARE of that region; the bladder is the hottest slice between _BLADDER_BELOW_LIVER_MM below the
#: liver, at least _BLADDER_MIN_REL x the body's median. Adult anatomy then places the pelvis from _PELVIS_MM[0]
#: below the bladder to _PELVIS_MM[1] above it (ischial tuberosities to iliac crest), the legs below it, the abdomen
#: from the pelvis to the dome and the chest _CHEST_MM above the dome.
_LIVER_MIN_CM2 = 80.0
_LIVER_DOME_SHARE = 0.6
_BLADDER_BELOW_LIVER_MM = (180.0, 450.0)
_BLADDER_MIN_REL = 15.0
_PELVIS_MM = (60.0, 110.0)
_CHEST_MM = 250.0
#: Probability given to a slab's landmark label on PET (chosen, not fitted: one whole-body PET to check it on).
_LANDMARK_P = 0.8


def pet_landmarks(profile: SceneProfile) -> dict[str, float] | None:
    """Patient z (mm) of FDG PET uptake landmarks: ``liver`` (its largest section), ``dome`` (the liver's top: the
    diaphragm) and ``bladder``, or None when the series does not show both (not PET, a limb, a head).

    Intensities are relative to the body's median, so Bq/ml and SUV give the same landmarks.
    """
    if profile.modality not in ("PT", "PET"):
        return None
    per = profile.per_slice
    if "uptake_blob_cm2" not in per:
        return None
    has = np.isfinite(per["area_cm2"])
    if has.sum() < 8:
        return None
    o = np.argsort(-profile.z_mm[has])
    z = profile.z_mm[has][o]
    blob = per["uptake_blob_cm2"][has][o]
    peak = per["peak_rel"][has][o]
    li = int(np.argmax(blob))
    if blob[li] < _LIVER_MIN_CM2:
        return None
    top = li
    while top > 0 and blob[top - 1] >= _LIVER_DOME_SHARE * blob[li]:
        top -= 1
    window = (z <= z[li] - _BLADDER_BELOW_LIVER_MM[0]) & (z >= z[li] - _BLADDER_BELOW_LIVER_MM[1])
    if not window.any():
        return None
    bi = int(np.flatnonzero(window)[np.argmax(peak[window])])
    if peak[bi] < _BLADDER_MIN_REL:
        return None
    dome = float(z[top] + (z[top - 1] - z[top]) / 2 if top > 0 else z[top])
    return {"liver": float(z[li]), "dome": dome, "bladder": float(z[bi])}


def landmark_label(z: float, marks: Mapping[str, float]) -> str:
    """The region at patient z (mm) from :func:`pet_landmarks` (``unknown`` above the chest)."""
    b, dome = marks["bladder"], marks["dome"]
    if z < b - _PELVIS_MM[0]:
        return "extremity"
    if z < b + _PELVIS_MM[1]:
        return "pelvis"
    if z < dome:
        return "abdomen"
    if z < dome + _CHEST_MM:
        return "chest"
    return UNKNOWN


#: MR liver landmark (:func:`_mr_landmarks`, :func:`liver_slices`): a homogeneous organ of at least _LIVER_MIN of
#: the trunk's section, its centroid at least _LIVER_SIDE half-widths right of the trunk's centre column, and at
#: most _LIVER_MIRROR of its mirror image homogeneous too (paired muscles mirror each other almost wholly).
_LIVER_MIN = 0.04
_LIVER_SIDE = 0.3
#: The liver is looked for only in a body section larger than an adult thigh's (cm^2): an adult abdomen is 450-1000.
_LIVER_TRUNK_MIN_CM2 = 400.0
_LIVER_MIRROR = 0.5
#: Likelihood ratio of the liver landmark for ``abdomen`` (a slab with no lungs whose slices mostly show it).
#: Chosen, not fitted (one abdomen MR patient to check it on), like ``_HEAD_LR``: with the model's odds for abdomen
#: it gives p >= 0.5 only where the model already gives abdomen >= 0.09.
_LIVER_LR = 10.0


def liver_slices(profile: SceneProfile) -> np.ndarray:
    """Per sampled slice of an MR profile, whether it shows the liver landmark (False elsewhere and on CT/PET):
    a large homogeneous organ right of the trunk's midline without a mirror partner on the left."""
    per = profile.per_slice
    if profile.modality != "MR" or "right_organ" not in per:
        return np.zeros(profile.z_mm.shape, dtype=bool)
    return ((np.nan_to_num(per["right_organ"]) >= _LIVER_MIN)
            & (np.nan_to_num(per["right_organ_side"]) >= _LIVER_SIDE)
            & (np.nan_to_num(per["right_organ_mirror"], nan=1.0) <= _LIVER_MIRROR))


#: Breast landmark (:func:`breast_slices`, MR): the body's anterior outline forms a mound along z: on a slice whose
#: image border cuts the body posteriorly (at least _BREAST_BACK of the posterior border row is body: the chest wall
#: runs on beyond a breast coil's field of view) and not anteriorly, the outline recedes posteriorly by at least
#: _BREAST_RECEDE_MM both above and below within _BREAST_WINDOW_MM, and stays within _BREAST_FLAT_MM of it over
#: _BREAST_BROAD_MM above and below (a broad mound, not the nose's spike). An adult breast projects 4-12 cm from the
#: chest wall over a base 10-20 cm high (second to sixth rib); the anterior outline of a limb, an abdomen or a back
#: is a cylinder along z over such spans. The breast lies on the chest wall: the slab is chest, probability
#: _BREAST_P (chosen, not fitted: one breast series to check it on, like _LANDMARK_P).
_BREAST_BACK = 0.3
_BREAST_RECEDE_MM = 30.0
_BREAST_WINDOW_MM = 100.0
_BREAST_FLAT_MM = 15.0
_BREAST_BROAD_MM = 20.0
_BREAST_BACK_SHARE = 0.5
_BREAST_P = 0.8


def breast_slices(profile: SceneProfile) -> np.ndarray:
    """Per sampled slice of an MR profile, whether it shows the breast landmark (False elsewhere and on CT/PET): the
    body's anterior outline a broad mound along z (the apex, and the slices on either side until the outline has
    receded by ``_BREAST_RECEDE_MM``), standing on a chest wall that the field of view cuts behind it or that the
    image does not show as body."""
    per = profile.per_slice
    out = np.zeros(profile.z_mm.shape, dtype=bool)
    if profile.modality != "MR" or "front_mm" not in per:
        return out
    front, z = per["front_mm"], profile.z_mm
    ok = np.isfinite(front) & np.isfinite(per["area_cm2"])
    if not ok.any():
        return out
    # the mound stands on something the image does not show as body: the chest wall cut by the field of view
    # behind it (posterior border contact), or not taken as body at all (a fat-suppressed series' dark muscle): then
    # the body in view ends inside the field of view both above and below, as a breast does and a limb, a trunk or
    # a head (which runs on into the neck) does not
    closed = bool((~ok & (z > z[ok].max())).any() and (~ok & (z < z[ok].min())).any())
    apex: list[int] = []
    for i in np.flatnonzero(ok):
        if per["front_contact"][i] > 0.0 or (per["back_contact"][i] < _BREAST_BACK and not closed):
            continue
        dz = z - z[i]
        above, below = ok & (dz > 0) & (dz <= _BREAST_WINDOW_MM), ok & (dz < 0) & (dz >= -_BREAST_WINDOW_MM)
        if not (above.any() and below.any()):
            continue
        if min(front[above].max(), front[below].max()) < front[i] + _BREAST_RECEDE_MM:
            continue
        near = ok & (np.abs(dz) <= _BREAST_BROAD_MM) & (dz != 0)
        if (near & (dz > 0)).any() and (near & (dz < 0)).any() \
                and float(front[near].max()) <= front[i] + _BREAST_FLAT_MM:
            apex.append(i)
    # the mound: from each apex up and down along z until the outline has receded by _BREAST_RECEDE_MM; its back
    # stands on the chest wall: the posterior outline moves less than _BREAST_BACK_SHARE of the anterior one over
    # the mound and _BREAST_WINDOW_MM around it (a ball, a head or a limb is convex behind as in front)
    order = np.flatnonzero(ok)[np.argsort(z[ok])]
    pos = {int(k): n for n, k in enumerate(order)}
    back = per["back_mm"]
    for i in apex:
        mound = [i]
        for step in (1, -1):
            n = pos[i] + step
            while 0 <= n < len(order) and front[order[n]] < front[i] + _BREAST_RECEDE_MM:
                mound.append(int(order[n]))
                n += step
        lo, hi = z[mound].min() - _BREAST_WINDOW_MM, z[mound].max() + _BREAST_WINDOW_MM
        around = ok & (z >= lo) & (z <= hi)
        if np.ptp(back[around]) <= _BREAST_BACK_SHARE * np.ptp(front[around]):
            out[mound] = True
    return out


def _shape_veto(label: str, d: SceneDescriptors) -> bool:
    """True when the body's cross-section contradicts ``label`` (any modality): sizes of adult anatomy."""
    v = d.values
    cropped = v.get("edge_fraction", 0.0) > 0.15
    if label == "head" and v["area_cm2"] > _HEAD_MAX_CM2 and v.get("n_components", 1) < 3:
        return True
    if label in ("chest", "abdomen", "pelvis") and v["area_cm2"] < _TRUNK_MIN_CM2 and not cropped:
        return True
    return False


def _mr_veto(label: str, d: SceneDescriptors) -> bool:
    """True when MR landmarks contradict ``label``: lungs give no MR signal, so a chest shows a dark region."""
    return label == "chest" and d.values.get("dark_blob", 0.0) < _NO_LUNG_BLOB_MR


def _ct_veto(label: str, d: SceneDescriptors) -> bool:
    """True when CT landmarks contradict ``label`` for a slab (the model and the landmarks disagree)."""
    v = d.values
    blob = v.get("dark_blob", 0.0)
    cropped = v.get("edge_fraction", 0.0) > 0.15
    if blob >= _LUNG_BLOB and label in ("head", "pelvis", "extremity"):
        return True  # lungs in view
    if blob < _NO_LUNG_BLOB and label == "chest":
        return True  # a chest without lungs
    if (label == "extremity" and v["area_cm2"] >= _FOOT_MAX_CM2
            and v.get("bone_pieces", 0.0) >= _LIMB_MAX_BONES * max(v.get("n_components", 1.0), 1.0)):
        return True  # many separate bones in a section larger than a hand or foot: ribs around a spine, a pelvis
    if label in ("chest", "abdomen", "pelvis") and v["area_cm2"] < _CT_TRUNK_MIN_CM2 and not cropped:
        return True  # too small a cross-section for a trunk
    if label in ("abdomen", "pelvis") and v["area_cm2"] < _CT_TRUNK_MIN_CM2 and v.get("n_components", 1.0) >= 2:
        return True  # two separate parts in a small section: two limbs; the trunk is one piece (arms make it larger)
    skull = v.get("ring_bright", 0.0) >= _CT_SKULL_RING and v["area_cm2"] < _CT_TRUNK_MIN_CM2
    if label == "head" and v.get("ring_bright", 0.0) < 0.05 and not cropped:
        return True  # a head without a skull
    if skull and label != "head" and blob < _LUNG_BLOB and v.get("n_components", 1) < 2:
        return True  # a skull, not called head
    return False


#: What can bear on a slab in :func:`recognise`: the vertex, the MR liver, CT limbs (paired limbs or a long bone's
#: ring), the thighs' parting below (only narrows the classes to pelvis/extremity), PET uptake, the MR breast.
_EVIDENCE = ("vertex", "mr_liver", "ct_limbs", "above_limbs", "pet_uptake", "mr_breast")
#: CT limb landmarks (:func:`paired_limbs`, :func:`limb_bone`): extremity evidence with this likelihood ratio on
#: the calibrated odds (once, when either or both hold). Chosen, not fitted, as :data:`_HEAD_LR` and
#: :data:`_LIVER_LR`: p >= 0.5 only where the model already gives extremity >= 0.09.
_LIMBS_LR = 10.0


def paired_limbs(d: SceneDescriptors, *, is_ct: bool = True) -> bool:
    """Whether a CT slab's sections are those of two or more limbs side by side (thighs, legs, feet, arms).

    The section (median over the slab's slices) splits into two or more separate parts, is smaller than an adult
    trunk's (:data:`_CT_TRUNK_MIN_CM2`, cropped or not), holds no lungs (largest lung-like region below
    :data:`_LUNG_BLOB` of the body) and at most :data:`_LIMB_BONES_PER_PART` bone pieces per part. The argument is
    anatomical, the converse of the two-parts veto of :func:`_ct_veto`: an axial section of the head, neck or trunk
    is one piece (arms beside the trunk make the section larger than a trunk's, and bring the ribs or the pelvic ring
    with them); below the perineum the thighs part, and a limb holds one or two long bones. Not used on MR, where
    two breasts of a prone breast series are two small parts too.
    """
    v = d.values
    n = float(v.get("n_components", 1.0))
    return bool(is_ct and n >= 2 and v["area_cm2"] < _CT_TRUNK_MIN_CM2 and v.get("dark_blob", 0.0) < _LUNG_BLOB
                and v.get("bone_pieces", 0.0) <= _LIMB_BONES_PER_PART * n)


def limb_bone(d: SceneDescriptors, *, is_ct: bool = True) -> bool:
    """Whether a CT slab shows a limb's long bone: on most of its slices the largest body part holds at most two
    bone pieces, one of them a cortical ring around a medullary cavity 18-40 mm across (:func:`_limb_ring`: a
    femur, tibia or humerus shaft), and the slab holds no lungs. The trunk's largest part holds a vertebra with the
    ribs or the pelvic ring (more pieces), its vertebral bodies are larger or ringed by their arch (concave), and a
    rib is smaller; the head holds the skull."""
    v = d.values
    return bool(is_ct and v.get("limb_ring", 0.0) >= 0.5 and v.get("dark_blob", 0.0) < _LUNG_BLOB)


#: Above two limbs side by side (:func:`paired_limbs`: the thighs below the perineum), slab centres within this
#: distance (mm) of a paired-limbs slab's centre can only be pelvis or extremity: 40 % (``_SKIP_SHARE``, the share
#: :func:`_may_follow` lets two regions skip) of an adult pelvis' length, iliac crest to ischial tuberosities
#: (``_TYPICAL_MM["pelvis"]``, 180 mm; the thighs part at or below the tuberosities, so the abdomen, which starts
#: at the crest, lies at least that far above them).
_ABOVE_LIMBS_MM = _SKIP_SHARE * _TYPICAL_MM["pelvis"]
#: Classes a section within :data:`_ABOVE_LIMBS_MM` above the thighs' parting may show.
_ABOVE_LIMBS = ("pelvis", "extremity")


def above_paired_limbs(centres_mm: np.ndarray, limbs: np.ndarray) -> np.ndarray:
    """Which slabs lie just above two limbs side by side, where only the pelvis or a limb can be.

    Parameters
    ----------
    centres_mm : (N,) ndarray
        Patient z of the slab centres (LPS: superior is larger), mm.
    limbs : (N,) bool ndarray
        Slabs that are :func:`paired_limbs`.

    Returns
    -------
    (N,) bool ndarray
        Slabs that are not paired limbs themselves and whose centre lies above a paired-limbs slab's centre by at
        most :data:`_ABOVE_LIMBS_MM`. The argument is anatomical: the thighs part at the perineum, at or below the
        ischial tuberosities, and the pelvis reaches from there about 180 mm up to the iliac crest, where the
        abdomen begins; a section within 40 % of that length above the parting is the pelvic outlet, the buttocks
        or the top of the thighs, never the abdomen, the chest, the neck or the head.
    """
    c = np.asarray(centres_mm, dtype=float)
    lim = np.asarray(limbs, dtype=bool)
    out = np.zeros(c.shape, dtype=bool)
    for zl in c[lim]:
        out |= (c > zl) & (c <= zl + _ABOVE_LIMBS_MM + 1e-6)
    return out & ~lim


def _restricted(row: np.ndarray, allowed: list[int]) -> np.ndarray | None:
    """A calibrated posterior row conditioned on the class being one of ``allowed`` (the others set to 0), or None
    when the model gives the allowed classes together less than one class's share under ignorance (1/K): the
    model then sees something else altogether, and conditioning would only amplify its noise."""
    mass = float(row[allowed].sum())
    if mass < 1.0 / len(row) or mass <= 0:
        return None
    out = np.zeros_like(row)
    out[allowed] = row[allowed] / mass
    return out


def _with_lr(row: np.ndarray, j: int, lr: float) -> np.ndarray:
    """A calibrated posterior row with the odds of class ``j`` multiplied by ``lr`` (the rest rescaled)."""
    odds = row[j] / max(1.0 - row[j], 1e-12) * lr
    p = odds / (1.0 + odds)
    rest = row.sum() - row[j]
    out = row * ((1.0 - p) / rest if rest > 0 else 0.0)
    out[j] = p
    return out


def _may_follow(upper: str, lower: str, gap_mm: float) -> bool:
    """Whether a stretch called ``lower`` may lie ``gap_mm`` below one called ``upper`` (head-to-feet order)."""
    a, b = BODY_ORDER.index(upper), BODY_ORDER.index(lower)
    if a > b:
        return False
    skipped = sum(_TYPICAL_MM[r] for r in BODY_ORDER[a + 1:b])
    return gap_mm >= _SKIP_SHARE * skipped - 1e-6


def recognise(profile: SceneProfile, slabs: list[tuple[float, float, SceneDescriptors]], proba: np.ndarray,
              classes: tuple[str, ...], *, temperature: float = 1.0, min_probability: float = 0.5,
              min_area_cm2: float = 25.0, min_extent_mm: float = 20.0, min_slices: int = 8,
              n_slices: int | None = None, diffusion_map: str | None = None,
              class_patients: Mapping[str, int] | None = None,
              min_patients: int | None = None) -> SceneResult:
    """Regions along the body from calibrated slab posteriors and landmark checks.

    Parameters
    ----------
    profile : SceneProfile
        The per-slice descriptors (:func:`scene_profile`).
    slabs : list of (z_lo_mm, z_hi_mm, SceneDescriptors)
        :func:`profile_slabs` of ``profile``, head to feet.
    proba : (N, K) ndarray
        A model's posteriors for the N slabs over ``classes``.
    classes : tuple of str
        Class names of the columns of ``proba`` (a subset of :data:`BODY_ORDER`).
    temperature : float, optional
        Calibration temperature of the model (:func:`fit_temperature`, fitted leave one patient out). Default 1.
    min_probability : float, optional
        A slab whose best calibrated class is below this is ``unknown``. Default 0.5.
    min_area_cm2, min_extent_mm : float, optional
        A series whose body cross-section (median) or length in view is below these is too small to tell.
    min_slices : int, optional
        A series with fewer slices along the body (``n_slices``) is a localizer or too short to tell. Default 8.
    n_slices : int, optional
        Acquired slices of the series. Default: the profile's ``acquired_slices``.
    diffusion_map : str, optional
        Why the series is a diffusion image or map (an ADC map, a trace-weighted DWI), e.g. its ImageType, as the
        step reads it from the header; None for a structural image. The slab model's relative-intensity
        descriptors were learnt on structural MR (T1, T2, contrast), where fat is bright; in diffusion imaging fat
        is suppressed and fluid is bright, so they mean something else. On such a series only the landmarks that
        do not read intensities as tissue (the vertex of a head, the breast mound, the homogeneous liver) name a
        slab; every other slab is ``unknown``, with a note.
    class_patients : mapping of str to int, optional
        For the series' modality group (CT, or other modalities: the model's two descriptor parts), how many
        training patients showed each class in real (not phantom) slabs: the model card's ``class_patients``
        (:func:`dicomnode.scene_training.class_patients`). A slab that only the slab model names (no landmark
        supports it: the vertex, the MR liver or breast, CT limbs or the thighs' parting below, PET uptake, or on CT
        the lungs of a slab called chest) may not take a class that fewer than ``min_patients`` patients showed on
        its group: the model has not seen how that region varies between patients there, so it extrapolates;
        ``unknown``, with a note.
        None (a card without the figures: an older or a site's model): no such guard.
    min_patients : int, optional
        See ``class_patients``. Default: :data:`MIN_CLASS_PATIENTS` of the series' group (CT 1, MR and PET 2).

    Returns
    -------
    SceneResult

    Notes
    -----
    Steps: (1) phantoms and fields of view too small to tell give ``unknown``; (2) slab posteriors are
    calibrated and smoothed along z (1-2-1 weights); (3) each slab takes its best class, or ``unknown`` below
    ``min_probability``, or when a landmark contradicts it (CT: lungs in a slab called head, pelvis or
    extremity; no lungs in one called chest; many separate bones in one called extremity); on PET, uptake
    landmarks (:func:`pet_landmarks`: the liver and its dome, the bladder) set the label of every slab by adult
    anatomy (:func:`landmark_label`, probability ``_LANDMARK_P``); on CT, limbs (:func:`paired_limbs`: two or more
    separate parts smaller than a trunk; :func:`limb_bone`: a long bone's cortical ring) are extremity evidence
    (likelihood ratio ``_LIMBS_LR``), and just above two separate limbs (:func:`above_paired_limbs`) a slab can
    only be pelvis or extremity (its posterior conditioned on the two; ``unknown`` when the model gives them less
    than 1/K together); on a diffusion image (``diffusion_map``) only landmarks name a slab; the vertex (:func:`vertex_z`) is head evidence
    within a head's length below it (likelihood ratio ``_HEAD_LR`` on the calibrated odds) and no slab without a
    vertex above it is a head; a lone slab whose neighbours say otherwise is ``unknown`` (every region is longer
    than one slab);
    (4) runs of equal labels become regions, split half-way between slab centres; (5) labelled regions must follow
    the body's head-to-feet order: the heaviest ordered subset (length x probability) is kept and the rest become
    ``unknown``; (6) when the labelled regions cover less than ``_MIN_COVERED`` of the body in view, the evidence is
    too weak: the series is ``unknown``.
    """
    classes = tuple(str(c) for c in classes)
    k = len(classes)
    # per slab, the landmarks that bear on it (:data:`_EVIDENCE`); a slab with none is named by the slab model alone
    evidence: dict[int, set[str]] = {}
    nowhere: set[int] = set()  # slabs whose landmarks leave the model no class it believes in
    filled: list[str] = []  # size-based labels dropped where the field of view fills with body
    proba = np.asarray(proba, dtype=float).reshape(len(slabs), k) if slabs else np.zeros((0, k))
    notes: list[str] = []
    lungs: bool | None = None
    if profile.is_ct and slabs:
        blobs = np.array([s[2].values.get("dark_blob", 0.0) for s in slabs])
        lungs = bool((blobs >= _LUNG_BLOB).any())
    per = profile.per_slice
    has = np.isfinite(per["area_cm2"])
    zs = profile.z_mm
    z_lo = float(zs.min() - profile.slice_mm / 2) if zs.size else 0.0
    z_hi = float(zs.max() + profile.slice_mm / 2) if zs.size else 0.0

    def abstain(reason: str, p_mean: np.ndarray | None = None, body: bool = True) -> SceneResult:
        notes.append(f"scene: unknown: {reason}")
        probs = {c: (float(p_mean[i]) if p_mean is not None else 1.0 / max(k, 1)) for i, c in enumerate(classes)}
        best = max(probs.values(), default=0.0)
        return SceneResult(UNKNOWN, probs, (SceneRegion(UNKNOWN, (z_lo, z_hi), round(1.0 - best, 6)),),
                           lungs, tuple(notes), body_in_view=body)

    if not has.any() or not slabs:
        return abstain("no body found", body=False)
    n_slices = profile.acquired_slices if n_slices is None else int(n_slices)
    cal = calibrate(proba, temperature)
    why = phantom_evidence(profile)
    if why:
        return abstain(why, cal.mean(axis=0), body=False)
    area = float(np.median(per["area_cm2"][has]))
    zb = zs[has]
    extent = float(zb.max() - zb.min()) + profile.slice_mm
    if n_slices < min_slices:
        return abstain(f"only {n_slices} slices along the body: a localizer or too few slices to tell",
                       cal.mean(axis=0))
    if area < min_area_cm2 or extent < min_extent_mm:
        return abstain(f"field of view too small to tell ({area:.0f} cm^2 of body over {extent:.0f} mm)",
                       cal.mean(axis=0))
    if len(cal) >= 3:
        sm = cal.copy()
        sm[1:-1] = 0.25 * cal[:-2] + 0.5 * cal[1:-1] + 0.25 * cal[2:]
        sm[0] = (2 * cal[0] + cal[1]) / 3
        sm[-1] = (2 * cal[-1] + cal[-2]) / 3
        cal = sm
    # the vertex: a head is the only part of the body that ends, as a cap, at the body's superior end. Within a
    # head's length below it, head-sized one-part sections are head evidence (likelihood ratio _HEAD_LR on the
    # calibrated odds); elsewhere a slab cannot be a head
    vz = vertex_z(profile)
    centres_ = np.array([(a + b) / 2 for a, b, _ in slabs])
    if "head" in classes:
        h = classes.index("head")
        in_head = np.zeros(len(slabs), dtype=bool) if vz is None else (centres_ >= vz - _HEAD_LENGTH_MM)
        for i, (_, _, d) in enumerate(slabs):
            v = d.values
            if in_head[i] and v["area_cm2"] <= _HEAD_MAX_CM2 and v.get("n_components", 1.0) < 1.5:
                evidence.setdefault(i, set()).add("vertex")
                odds = cal[i, h] / max(1.0 - cal[i, h], 1e-12) * _HEAD_LR
                rest = cal[i].sum() - cal[i, h]
                p_head = odds / (1.0 + odds)
                cal[i] = cal[i] * ((1.0 - p_head) / rest if rest > 0 else 0.0)
                cal[i, h] = p_head
        if vz is not None:
            notes.append(f"scene: the vertex (the body's superior end, a head's cap) at z = {vz:.0f} mm")
    # MR: the liver (a large homogeneous organ right of the midline, no mirror partner) in a slab without lungs is
    # abdomen evidence (likelihood ratio _LIVER_LR on the calibrated odds)
    liver = liver_slices(profile)
    if liver.any() and "abdomen" in classes:
        j = classes.index("abdomen")
        n_liver = 0
        for i, (a, b, d) in enumerate(slabs):
            sel = has & (zs >= a) & (zs <= b)
            if sel.sum() >= 2 and liver[sel].mean() >= 0.5 and d.values.get("dark_blob", 1.0) < _NO_LUNG_BLOB_MR:
                odds = cal[i, j] / max(1.0 - cal[i, j], 1e-12) * _LIVER_LR
                rest = cal[i].sum() - cal[i, j]
                p_abd = odds / (1.0 + odds)
                cal[i] = cal[i] * ((1.0 - p_abd) / rest if rest > 0 else 0.0)
                cal[i, j] = p_abd
                evidence.setdefault(i, set()).add("mr_liver")
                n_liver += 1
        if n_liver:
            zl = zs[liver]
            notes.append(f"scene: MR liver landmark (a homogeneous organ right of the midline without a mirror "
                         f"partner) from z = {zl.min():.0f} to {zl.max():.0f} mm: abdomen evidence in {n_liver} "
                         "slab(s) without lungs")
    # CT: two or more separate parts in a section smaller than a trunk's, with a limb's bones and no lungs: limbs
    # side by side (likelihood ratio _LIMBS_LR for extremity on the calibrated odds)
    if profile.is_ct and "extremity" in classes:
        j = classes.index("extremity")
        limbs = [i for i, (_, _, d) in enumerate(slabs) if paired_limbs(d) or limb_bone(d)]
        for i in limbs:
            cal[i] = _with_lr(cal[i], j, _LIMBS_LR)
            evidence.setdefault(i, set()).add("ct_limbs")
        if limbs:
            notes.append(f"scene: CT limbs (two or more separate parts smaller than a trunk with a limb's bones, or a "
                         f"long bone's cortical ring in the largest part; no lungs): extremity evidence in "
                         f"{len(limbs)} slab(s)")
        # just above the thighs' parting only the pelvis or a limb can lie: the posteriors there are conditioned
        # on those two classes (a slab whose model gives them too little mass stays unknown)
        # (not within a head's length below a vertex: there two or more parts are the head and the raised arms)
        pairs = np.array([paired_limbs(d) for _, _, d in slabs], dtype=bool)
        if vz is not None:
            pairs &= centres_ < vz - _HEAD_LENGTH_MM
        allowed = [classes.index(c) for c in _ABOVE_LIMBS if c in classes]
        near = [int(i) for i in np.flatnonzero(above_paired_limbs(centres_, pairs))]
        for i in near:
            evidence.setdefault(i, set()).add("above_limbs")
            row = _restricted(cal[i], allowed)
            if row is None:
                nowhere.add(i)
            else:
                cal[i] = row
        if near:
            notes.append(f"scene: CT: {len(near)} slab(s) within {_ABOVE_LIMBS_MM:.0f} mm above two separate limbs "
                         "can only be pelvis or extremity")
    # PET: uptake landmarks (liver, its dome, the bladder) place the trunk's regions and the legs by adult anatomy
    marks = pet_landmarks(profile)
    forced: dict[int, str] = {}
    if marks is not None:
        notes.append(f"scene: PET landmarks: liver dome at z = {marks['dome']:.0f} mm, bladder at z = "
                     f"{marks['bladder']:.0f} mm")
        for i, c in enumerate(centres_):
            lab = landmark_label(float(c), marks)
            if lab in classes:
                j = classes.index(lab)
                rest = cal[i].sum() - cal[i, j]
                cal[i] = cal[i] * ((1.0 - _LANDMARK_P) / rest if rest > 0 else 0.0)
                cal[i, j] = _LANDMARK_P
                forced[i] = lab
                evidence.setdefault(i, set()).add("pet_uptake")
    # MR: the breast (the anterior outline a broad mound along z, the field of view cutting the chest wall behind
    # it) lies on the chest: chest by anatomy, probability _BREAST_P
    breast = breast_slices(profile)
    on_breast: set[int] = set()
    if breast.any() and "chest" in classes:
        j = classes.index("chest")
        n_breast = 0
        for i, (a, b, _) in enumerate(slabs):
            sel = has & (zs >= a) & (zs <= b)
            if i not in forced and sel.sum() >= 2 and breast[sel].mean() >= 0.5:
                on_breast.add(i)
                rest = cal[i].sum() - cal[i, j]
                cal[i] = cal[i] * ((1.0 - _BREAST_P) / rest if rest > 0 else 0.0)
                cal[i, j] = _BREAST_P
                forced[i] = "chest"
                evidence.setdefault(i, set()).add("mr_breast")
                n_breast += 1
        if n_breast:
            zb_ = zs[breast]
            notes.append(f"scene: MR breast landmark (the anterior outline a mound along z, the chest wall cut "
                         f"behind it) from z = {zb_.min():.0f} to {zb_.max():.0f} mm: chest in {n_breast} slab(s)")
    labels: list[str] = []
    thin: list[str] = []  # labels the slab model alone gave with too few training patients behind them
    if min_patients is None:
        min_patients = MIN_CLASS_PATIENTS["ct" if profile.is_ct else "other"]
    # named by a landmark (not the slab model alone); "above_limbs" only narrows the classes a slab may take
    supported = {i for i, e in evidence.items() if e - {"above_limbs"}}
    if diffusion_map:
        notes.append(f"scene: a diffusion image or map ({diffusion_map}): the scene model does not read its "
                     "intensities (fat suppressed, fluid bright); only landmarks that do not read intensities as "
                     f"tissue name a region ({len(supported)} of {len(slabs)} slab(s))")
    for i, (_, _, d) in enumerate(slabs):
        if i in forced:
            labels.append(forced[i])
            continue
        if (diffusion_map and i not in supported) or i in nowhere:
            labels.append(UNKNOWN)
            continue
        j = int(np.argmax(cal[i]))
        lab = classes[j] if cal[i, j] >= min_probability else UNKNOWN
        if lab != UNKNOWN and (_shape_veto(lab, d) or (profile.is_ct and _ct_veto(lab, d))
                               or (profile.modality == "MR" and _mr_veto(lab, d))):
            lab = UNKNOWN  # the model and the landmarks disagree
        if lab == "head" and (vz is None or centres_[i] < vz - _HEAD_LENGTH_MM):
            lab = UNKNOWN  # no vertex above: not a head (a thigh or a breast is as round and as large)
        if lab in ("extremity", "head") and d.values.get("edge_fraction", 0.0) >= _FILLED_EDGE \
                and not (lab == "extremity" and "ct_limbs" in evidence.get(i, ())):
            filled.append(lab)
            lab = UNKNOWN  # the field of view fills with body: its size says nothing of the anatomy
        lung_chest = profile.is_ct and lab == "chest" and d.values.get("dark_blob", 0.0) >= _LUNG_BLOB
        if (class_patients is not None and lab != UNKNOWN and i not in evidence
                and not lung_chest and int(class_patients.get(lab, 0)) < min_patients):
            thin.append(lab)
            lab = UNKNOWN  # one patient's slabs do not show how the region varies between patients
        labels.append(lab)
    if filled:
        notes.append(f"scene: the field of view is filled with body in {len(filled)} slab(s) (at least "
                     f"{100 * _FILLED_EDGE:.0f} % of the outline is the image border): {', '.join(sorted(set(filled)))}"
                     " told by size only is not a label there; unknown")
    if thin:
        group = "CT" if profile.is_ct else "MR/PET"
        notes.append(f"scene: {len(thin)} slab(s) named {', '.join(sorted(set(thin)))} by the slab model alone, a "
                     f"class fewer than {min_patients} training patients showed on {group}: the model extrapolates "
                     "there; unknown")
    # every region is longer than one slab: a lone slab whose neighbours say otherwise is too weak to name one
    if len(labels) >= 3:
        lone = [i for i, lab in enumerate(labels) if lab != UNKNOWN
                and (i == 0 or labels[i - 1] != lab) and (i == len(labels) - 1 or labels[i + 1] != lab)]
        for i in lone:
            notes.append(f"scene: one slab alone looks like {labels[i]} (every region is longer): unknown")
            labels[i] = UNKNOWN
    # the body ends inside the field of view at its superior end: that end is the vertex of a head (or the upper
    # edge of a breast, whose landmark says so)
    top_body = float(zs[has].max())
    if (zs > top_body + 1.5 * max(profile.slice_mm, 1.0)).sum() >= 2:
        for i, (a, b, _) in enumerate(slabs):
            if (a + b) / 2 > top_body - _VERTEX_MM and labels[i] not in (UNKNOWN, "head") and i not in on_breast:
                labels[i] = UNKNOWN
    # runs of equal labels, boundaries half-way between neighbouring slab centres
    centres = np.array([(a + b) / 2 for a, b, _ in slabs])
    runs: list[list[int]] = []
    for i, lab in enumerate(labels):
        if runs and labels[runs[-1][0]] == lab:
            runs[-1].append(i)
        else:
            runs.append([i])
    bounds = [z_hi] + [float((centres[r[-1]] + centres[r[-1] + 1]) / 2) for r in runs[:-1]] + [z_lo]

    def run_p(r: list[int], lab: str) -> float:
        if lab == UNKNOWN:
            return float(1.0 - cal[r].max(axis=1).mean())
        return float(cal[r, classes.index(lab)].mean())

    # head-to-feet order: heaviest non-decreasing subsequence of labelled runs (weight = length x probability)
    lab_runs = [i for i, r in enumerate(runs) if labels[r[0]] != UNKNOWN]
    w = {i: (bounds[i] - bounds[i + 1]) * run_p(runs[i], labels[runs[i][0]]) for i in lab_runs}
    best_w: dict[int, float] = {}
    prev: dict[int, int | None] = {}
    for a_, i in enumerate(lab_runs):
        best_w[i], prev[i] = w[i], None
        for j in lab_runs[:a_]:
            if _may_follow(labels[runs[j][0]], labels[runs[i][0]], bounds[j + 1] - bounds[i]) \
                    and best_w[j] + w[i] > best_w[i]:
                best_w[i], prev[i] = best_w[j] + w[i], j
    keep: set[int] = set()
    if lab_runs:
        cur: int | None = max(lab_runs, key=lambda i: best_w[i])
        while cur is not None:
            keep.add(cur)
            cur = prev[cur]
    dropped = [labels[runs[i][0]] for i in lab_runs if i not in keep]
    if dropped:
        notes.append(f"scene: {', '.join(dropped)} out of head-to-feet order with the rest; called unknown")
    regions: list[SceneRegion] = []
    for i, r in enumerate(runs):
        lab = labels[r[0]] if (labels[r[0]] == UNKNOWN or i in keep) else UNKNOWN
        p = run_p(r, lab)
        if regions and regions[-1].label == lab:  # merge with the previous stretch (after order clean-up)
            last = regions.pop()
            p = (last.probability * (last.z_mm[1] - last.z_mm[0]) + p * (bounds[i] - bounds[i + 1])) / \
                max(last.z_mm[1] - bounds[i + 1], 1e-6)
            regions.append(SceneRegion(lab, (bounds[i + 1], last.z_mm[1]), round(p, 6)))
        else:
            regions.append(SceneRegion(lab, (bounds[i + 1], bounds[i]), round(p, 6)))
    labelled = [(i, rg) for i, rg in enumerate(regions) if rg.label != UNKNOWN]
    covered = sum(rg.z_mm[1] - rg.z_mm[0] for _, rg in labelled) / max(z_hi - z_lo, 1e-6)
    if labelled and covered < _MIN_COVERED:
        return abstain(f"only {100 * covered:.0f} % of the body in view is recognised (at least "
                       f"{100 * _MIN_COVERED:.0f} % needed): evidence too weak to name a region", cal.mean(axis=0))
    if not labelled:
        return SceneResult(UNKNOWN, {c: float(v) for c, v in zip(classes, cal.mean(axis=0))}, tuple(regions),
                           lungs, tuple(notes + ["scene: unknown: no stretch of the body is recognised with "
                                                 f"p >= {min_probability:g}"]))
    dom = max(labelled, key=lambda t: ((t[1].z_mm[1] - t[1].z_mm[0]) * t[1].probability))[1]
    sel = [i for i, (a, b, _) in enumerate(slabs) if dom.z_mm[0] - 1e-6 <= (a + b) / 2 <= dom.z_mm[1] + 1e-6]
    sel = [i for i in sel if labels[i] == dom.label] or sel
    probs = {c: float(v) for c, v in zip(classes, cal[sel].mean(axis=0))}
    return SceneResult(dom.label, probs, tuple(regions), lungs, tuple(notes))
