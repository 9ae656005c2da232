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
* shape: total cross-section area (cm^2), number of parts (two thighs, arms beside the trunk: parts that touch
  count apart, see :func:`_body_parts`), the largest part's major axis (mm) and minor/major ratio, the fraction
  of the outline that lies on the image border (a cropped field of view) and the fraction of the field of view
  filled by the body.

Each per-slice value is summarised by its median over the slices that hold body. The per-slice series are kept in
:attr:`SceneDescriptors.per_slice`; CT also gets per-slice tissue fractions (air/lung, fat, soft tissue, bone).

References
----------
Body-part recognition from such coarse, hand-made descriptors follows the idea of Criminisi et al. (regression
forests over intensity context) and of many "body part regression" papers, reduced to numbers that survive
cropping and a change of modality.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "MODEL_FEATURES",
    "REGIONS",
    "SceneDescriptors",
    "descriptor_vector",
    "scene_descriptors",
    "slab_descriptors",
    "to_axial",
]

#: The six body regions, in the order used by results and models.
REGIONS: tuple[str, ...] = ("head", "neck", "chest", "abdomen", "pelvis", "extremity")

#: Descriptor names a scene model is trained on, in order (see :func:`descriptor_vector`).
MODEL_FEATURES: tuple[str, ...] = (
    "log10_area_cm2",
    "n_components",
    "log10_major_axis_mm",
    "minor_major_ratio",
    "edge_fraction",
    "fov_fill",
    "dark_fraction",
    "bright_fraction",
    "ring_dark",
    "ring_bright",
    "core_dark",
    "core_bright",
    "organ_fraction",
    "lateral_bright",
    "lateral_bright_blob",
    "is_ct",
)

_CT_BODY_HU = -500.0
_CT_DARK_HU = -400.0
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


def _block_mean(sl: np.ndarray, fy: int, fx: int) -> np.ndarray:
    y = (sl.shape[0] // fy) * fy
    x = (sl.shape[1] // fx) * fx
    if y == 0 or x == 0:
        return sl.astype(np.float32)
    return sl[:y, :x].reshape(y // fy, fy, x // fx, fx).mean(axis=(1, 3), dtype=np.float32)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``ndi.binary_fill_holes`` for a 2-D mask, by labelling the background (about 3x faster on 512 x 512)."""
    lab, n = ndi.label(~mask)
    outside = np.zeros(n + 1, dtype=bool)
    outside[np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])] = True
    outside[0] = False
    return ~outside[lab]


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
    dist = ndi.distance_transform_edt(solid)
    markers, n = ndi.label(h_maxima(dist, depth_px) & solid) if solid.any() else (None, 0)
    if n == 0:
        return ndi.label(filled)
    parts = watershed(-dist, markers, mask=solid)
    sizes = np.bincount(parts.ravel(), minlength=n + 1)[1:]
    big = np.flatnonzero(sizes >= min_px) + 1
    if big.size == 0:
        return ndi.label(filled)
    relabel = np.zeros(n + 1, dtype=np.int32)
    relabel[big] = np.arange(1, big.size + 1)
    core = relabel[parts]
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


def scene_descriptors(image: np.ndarray, spacing_mm: tuple[float, float, float], *,
                      direction: np.ndarray | None = None, modality: str = "", unit: str = "",
                      pixel_mm: float = 4.0, max_slices: int = 24, min_component_cm2: float = 10.0,
                      ring_mm: float = 12.0, core_mm: float = 25.0, split_mm: float = 12.0) -> SceneDescriptors:
    """Descriptors of the body region shown by a volume, from its pixels only.

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
    if image.ndim != 3:
        raise ValueError(f"image must be 3-D (z, y, x), got shape {image.shape}")
    if len(spacing_mm) != 3 or any(not (s > 0) for s in spacing_mm):
        raise ValueError(f"spacing_mm must be 3 positive values in mm, got {spacing_mm}")
    if pixel_mm <= 0 or max_slices < 1 or min_component_cm2 < 0 or ring_mm <= 0 or core_mm <= 0:
        raise ValueError(f"pixel_mm ({pixel_mm}), ring_mm ({ring_mm}), core_mm ({core_mm}) must be > 0 mm, "
                         f"max_slices ({max_slices}) >= 1, min_component_cm2 ({min_component_cm2}) >= 0")
    notes: list[str] = []
    ax, sp, oblique = to_axial(image, spacing_mm, np.eye(3) if direction is None else direction)
    if oblique:
        notes.append("scene: oblique acquisition plane, descriptors measured on the nearest axial reformat")
    is_ct = modality.upper() == "CT" and unit in ("HU", "")
    n = ax.shape[0]
    ks = np.unique(np.linspace(0, n - 1, min(n, max_slices)).round().astype(int))
    fy = max(1, int(round(pixel_mm / sp[1])))
    fx = max(1, int(round(pixel_mm / sp[2])))
    slices = [_block_mean(np.asarray(ax[k], dtype=np.float32), fy, fx) for k in ks]
    py, px = sp[1] * fy, sp[2] * fx
    pix_cm2 = py * px / 100.0
    stack = np.stack(slices)

    if is_ct:
        body_thr, dark_thr, bright_thr = _CT_BODY_HU, _CT_DARK_HU, _CT_BRIGHT_HU
    else:
        v = stack[np.isfinite(stack)]
        body_thr = _foreground_threshold(v)
        bodyvals = v[v > body_thr]
        ref = float(np.median(bodyvals)) if bodyvals.size else 0.0
        dark_thr, bright_thr = _REL_DARK * ref, _REL_BRIGHT * ref

    if is_ct:
        organ_lo, organ_hi, organ_std = _CT_ORGAN_HU[0], _CT_ORGAN_HU[1], _CT_ORGAN_STD_HU
    else:
        organ_lo, organ_hi, organ_std = _REL_ORGAN[0] * ref, _REL_ORGAN[1] * ref, _REL_ORGAN_STD * ref
    names = ("area_cm2", "n_components", "major_axis_mm", "minor_major_ratio", "edge_fraction", "fov_fill",
             "dark_fraction", "bright_fraction", "ring_dark", "ring_bright", "core_dark", "core_bright",
             "organ_fraction", "lateral_bright", "lateral_bright_blob")
    ct_names = ("air_lung_fraction", "fat_fraction", "soft_tissue_fraction", "bone_fraction")
    per = {k: np.full(len(slices), np.nan) for k in names + (ct_names if is_ct else ())}
    min_px = min_component_cm2 / pix_cm2
    split_px = split_mm / max(py, px)
    st = ndi.generate_binary_structure(2, 1)
    for i, sl in enumerate(slices):
        body = ndi.binary_opening(sl > body_thr, structure=st)
        lab, nlab = ndi.label(body)
        if nlab == 0:
            continue
        sizes = np.bincount(lab.ravel())[1:]
        keep = np.flatnonzero(sizes >= min_px) + 1
        if keep.size == 0:
            continue
        filled = ndi.binary_fill_holes(np.isin(lab, keep))
        solid = _block_mean(_fill_holes(np.asarray(ax[ks[i]]) > body_thr).astype(np.float32), fy, fx) >= _SOLID
        lab, nlab = _body_parts(filled, solid, split_px, min_px)
        area_px = int(filled.sum())
        sizes = np.bincount(lab.ravel())[1:]
        big = lab == (int(np.argmax(sizes)) + 1)
        yy, xx = np.nonzero(big)
        cov = np.cov(np.stack([yy * py, xx * px])) if yy.size > 2 else np.zeros((2, 2))
        ev = np.sort(np.clip(np.linalg.eigvalsh(cov), 0, None))
        major = 4.0 * float(np.sqrt(ev[1]))
        ratio = float(np.sqrt(ev[0] / ev[1])) if ev[1] > 0 else 1.0
        edge = filled & ~ndi.binary_erosion(filled, structure=st, border_value=1)
        border = np.zeros_like(filled)
        border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
        n_edge = int(edge.sum()) + int((filled & border).sum())
        # the image border is not the body's outline when the field of view is cropped: measure depth from
        # the outline inside the image only (pad with tissue where the body touches the border)
        depth = ndi.distance_transform_edt(np.pad(filled, 1, mode="edge"), sampling=(py, px))[1:-1, 1:-1]
        dark = (sl < dark_thr) & filled
        bright = (sl > bright_thr) & filled
        ring = filled & (depth <= ring_mm)
        core = filled & (depth > core_mm)
        per["area_cm2"][i] = area_px * pix_cm2
        per["n_components"][i] = nlab
        per["major_axis_mm"][i] = major
        per["minor_major_ratio"][i] = ratio
        per["edge_fraction"][i] = float((filled & border).sum()) / max(n_edge, 1)
        per["fov_fill"][i] = area_px / filled.size
        per["dark_fraction"][i] = dark.sum() / area_px
        per["bright_fraction"][i] = bright.sum() / area_px
        per["ring_dark"][i] = (dark & ring).sum() / max(int(ring.sum()), 1)
        per["ring_bright"][i] = (bright & ring).sum() / max(int(ring.sum()), 1)
        per["core_dark"][i] = (dark & core).sum() / max(int(core.sum()), 1)
        per["core_bright"][i] = (bright & core).sum() / max(int(core.sum()), 1)
        # organ: the largest homogeneous mid-intensity region (liver, spleen; thigh muscles), eroded once so
        # that thin bridges between neighbouring structures do not join them
        mean3 = ndi.uniform_filter(sl, 3)
        std3 = np.sqrt(np.clip(ndi.uniform_filter(sl * sl, 3) - mean3 * mean3, 0, None))
        organ = ndi.binary_erosion(filled & (mean3 > organ_lo) & (mean3 < organ_hi) & (std3 < organ_std),
                                   structure=st)
        olab, nolab = ndi.label(organ)
        per["organ_fraction"][i] = (np.bincount(olab.ravel())[1:].max() if nolab else 0) / area_px
        # lateral bright tissue (CT: bone away from the spine: iliac wings, femoral heads, ribs, scapulae)
        half_width = max((xx.max() - xx.min()) / 2.0, 1.0)
        lateral = bright & big & (np.abs(np.arange(sl.shape[1])[None, :] - xx.mean()) > _LATERAL * half_width)
        llab, nllab = ndi.label(lateral)
        per["lateral_bright"][i] = lateral.sum() / area_px
        per["lateral_bright_blob"][i] = (np.bincount(llab.ravel())[1:].max() if nllab else 0) / area_px
        if is_ct:
            per["air_lung_fraction"][i] = dark.sum() / area_px
            per["fat_fraction"][i] = (((sl >= _CT_FAT_HU[0]) & (sl < _CT_FAT_HU[1])) & filled).sum() / area_px
            per["soft_tissue_fraction"][i] = (((sl >= _CT_SOFT_HU[0]) & (sl < _CT_SOFT_HU[1])) & filled).sum() / area_px
            per["bone_fraction"][i] = bright.sum() / area_px

    has = np.isfinite(per["area_cm2"])
    values: dict[str, float] = {}
    if not has.any():
        notes.append("scene: no body found in any slice; descriptors are 0")
        for k in per:
            values[k] = 0.0
    else:
        for k, arr in per.items():
            values[k] = float(np.median(arr[has]))
    values["log10_area_cm2"] = float(np.log10(max(values["area_cm2"], 1e-3)))
    values["log10_major_axis_mm"] = float(np.log10(max(values["major_axis_mm"], 1e-3)))
    values["is_ct"] = 1.0 if is_ct else 0.0
    values["slices_with_body"] = float(has.sum())
    values["extent_z_mm"] = float(n * sp[0])
    return SceneDescriptors(values, per, tuple(notes))


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
        Passed on to :func:`scene_descriptors`.

    Returns
    -------
    list of SceneDescriptors
        One per slab, in axial order.
    """
    if slab_mm <= 0 or stride_mm <= 0:
        raise ValueError(f"slab_mm ({slab_mm}) and stride_mm ({stride_mm}) must be > 0 mm")
    if not 0.0 <= keep[0] < keep[1] <= 1.0:
        raise ValueError(f"keep must be (lo, hi) with 0 <= lo < hi <= 1, got {keep}")
    d = np.eye(3) if direction is None else np.asarray(direction, dtype=float)
    ax, sp, _ = to_axial(image, spacing_mm, d)
    superior_first = d[2, int(np.argmax(np.abs(d[2])))] < 0  # array index grows towards the feet
    n = ax.shape[0]
    w = max(2, int(round(slab_mm / sp[0])))
    step = max(1, int(round(stride_mm / sp[0])))
    starts = list(range(0, max(n - w, 0) + 1, step)) or [0]
    out = []
    for s in starts:
        centre = (s + min(n, s + w) - 1) / 2 / max(n - 1, 1)
        centre = 1.0 - centre if superior_first else centre
        if not keep[0] <= centre <= keep[1]:
            continue
        out.append(scene_descriptors(ax[s:s + w], sp, modality=modality, unit=unit, **kwargs))
    return out
