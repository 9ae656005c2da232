"""The volume and label-map model shared by every analysis step.

A :class:`Volume` is a (z, y, x) array in physical units with its voxel spacing and the patient-space geometry that
maps voxel indices to DICOM patient coordinates (LPS, mm). A :class:`LabelMap` is a tuple of possibly overlapping
binary segments, each named and coded (SNOMED CT by default).

Conventions
-----------
* Axis order is always (z, y, x): z = slice index (sorted along the slice normal), y = row, x = column.
* ``spacing_mm`` is (dz, dy, dx) in mm; dz is the distance between slice centres along the normal.
* ``origin_mm`` is the patient (x, y, z) position of the centre of voxel [0, 0, 0] (DICOM ImagePositionPatient of
  the first slice).
* ``direction`` is a 3x3 matrix whose *columns* are unit vectors in patient space: column 0 points along
  increasing x index (DICOM ImageOrientationPatient[0:3]), column 1 along increasing y index (IOP[3:6]), column 2
  along increasing z index (the slice normal in the direction the slices were sorted).
* The patient position of voxel (k, j, i) is ``origin + direction @ ([i, j, k] * [dx, dy, dz])``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True, slots=True)
class Code:
    """A coded concept: (code value, coding scheme designator, code meaning), e.g. SNOMED CT."""

    value: str
    scheme: str
    meaning: str


# SNOMED CT codes used for segments (DICOM CID 7150 / 7151 / 7153).
CATEGORY_TISSUE = Code("85756007", "SCT", "Tissue")
CATEGORY_ANATOMICAL_STRUCTURE = Code("123037004", "SCT", "Anatomical Structure")
CATEGORY_MORPHOLOGICALLY_ABNORMAL = Code("49755003", "SCT", "Morphologically Altered Structure")


@dataclass(frozen=True, eq=False, slots=True)
class Volume:
    """An image volume in physical units.

    Parameters
    ----------
    array : (Z, Y, X) ndarray
        Voxel values in the series' own unit (HU for CT, SUV for PET where known); float32 by convention.
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x), in mm.
    origin_mm : tuple of 3 float
        Patient (x, y, z) position of the centre of voxel [0, 0, 0], in mm.
    direction : (3, 3) ndarray
        Columns are the patient-space unit vectors of increasing x, y and z index.
    modality : str
        DICOM modality of the source ("CT", "MR", "PT", ...).
    unit : str
        Unit of the values: "HU", "SUV", or "" when arbitrary.
    """

    array: np.ndarray
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    modality: str = ""
    unit: str = ""

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"Volume.array must be 3-D (z, y, x), got shape {self.array.shape}")
        if len(self.spacing_mm) != 3 or any(not (s > 0) for s in self.spacing_mm):
            raise ValueError(f"Volume.spacing_mm must be 3 positive values in mm, got {self.spacing_mm}")
        d = np.asarray(self.direction, dtype=float)
        if d.shape != (3, 3):
            raise ValueError(f"Volume.direction must be 3x3, got shape {d.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def voxel_volume_mm3(self) -> float:
        dz, dy, dx = self.spacing_mm
        return float(dz * dy * dx)

    def index_to_patient(self, zyx: np.ndarray) -> np.ndarray:
        """Map (N, 3) voxel indices (z, y, x), fractional allowed, to (N, 3) patient (x, y, z) in mm."""
        zyx = np.atleast_2d(np.asarray(zyx, dtype=float))
        ijk = zyx[:, ::-1] * np.asarray(self.spacing_mm[::-1])  # (x, y, z) offsets in mm along the index axes
        return np.asarray(self.origin_mm) + ijk @ np.asarray(self.direction, dtype=float).T

    def patient_to_index(self, xyz: np.ndarray) -> np.ndarray:
        """Map (N, 3) patient (x, y, z) in mm to (N, 3) fractional voxel indices (z, y, x)."""
        xyz = np.atleast_2d(np.asarray(xyz, dtype=float))
        d = np.asarray(self.direction, dtype=float)
        ijk_mm = (xyz - np.asarray(self.origin_mm)) @ np.linalg.inv(d).T
        return (ijk_mm / np.asarray(self.spacing_mm[::-1]))[:, ::-1]

    def with_array(self, array: np.ndarray, *, unit: str | None = None) -> "Volume":
        """A new volume with the same geometry and another array of the same shape."""
        if array.shape != self.array.shape:
            raise ValueError(f"shape {array.shape} differs from the volume's {self.array.shape}")
        return Volume(array, self.spacing_mm, self.origin_mm, self.direction, self.modality,
                      self.unit if unit is None else unit)


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """What a segment is.

    Parameters
    ----------
    number : int
        Segment number, 1-based, unique within a label map (becomes the SEG SegmentNumber).
    label : str
        Short name, e.g. "body", "lung_left" (becomes the SEG SegmentLabel and the results.json ``label``).
    category : Code
        SNOMED CT segmented property category.
    type : Code
        SNOMED CT segmented property type.
    algorithm : str
        Name of the step that made it, e.g. "segment.ct_body".
    """

    number: int
    label: str
    category: Code
    type: Code
    algorithm: str = "dicomnode"


Box = tuple[slice, slice, slice]


def mask_box(mask: np.ndarray) -> Box | None:
    """The bounding box of a 3-D mask's True voxels (slices with start and stop), or None when it has none."""
    zs = np.flatnonzero(mask.any(axis=(1, 2)))
    if zs.size == 0:
        return None
    sub = mask[zs[0]:zs[-1] + 1]
    ys = np.flatnonzero(sub.any(axis=(0, 2)))
    xs = np.flatnonzero(sub.any(axis=(0, 1)))
    return slice(int(zs[0]), int(zs[-1]) + 1), slice(int(ys[0]), int(ys[-1]) + 1), slice(int(xs[0]), int(xs[-1]) + 1)


def grow_box(box: tuple[slice, ...], margin: "int | tuple[int, ...]", shape: tuple[int, ...]) -> tuple[slice, ...]:
    """``box`` grown by ``margin`` voxels (one number, or one per axis) on each side, clipped to a grid of
    ``shape``."""
    margins = np.broadcast_to(np.asarray(margin, dtype=int), (len(shape),))
    return tuple(slice(max(b.start - int(m), 0), min(b.stop + int(m), n)) for b, m, n in zip(box, margins, shape))


@dataclass(frozen=True, eq=False, slots=True, init=False)
class Segment:
    """A named binary mask on a volume's grid. Segments of a label map may overlap (lungs lie inside the body).

    Stored cropped: ``crop`` is the mask inside ``box`` (its bounding box on the grid of ``shape``; every voxel
    outside is False), so a small segment (a finding, a lung) costs its box, not the grid: on a whole-body PET
    the body, its three uptake classes and five findings take 25 MB instead of 143 MB. ``mask`` gives the whole
    grid's mask, made anew on each access (a new array: writing to it does not change the segment); steps that
    need only the voxels inside work on ``crop`` and ``box``.

    ``Segment(info, mask)`` takes a whole-grid mask and crops it (a copy of the box: the caller's array is not
    kept); ``Segment(info, crop, box=box, shape=shape)`` takes a mask already cropped to ``box`` of a grid of
    ``shape`` (kept as given, not cropped further: a step that cleans a crop in place keeps it).
    """

    info: SegmentInfo
    crop: np.ndarray  # (z, y, x) bool inside box
    box: Box
    shape: tuple[int, int, int]

    def __init__(self, info: SegmentInfo, mask: np.ndarray, *, box: Box | None = None,
                 shape: "tuple[int, int, int] | None" = None) -> None:
        if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.ndim != 3:
            raise ValueError(f"Segment.mask must be a 3-D bool array, got {getattr(mask, 'dtype', type(mask))} "
                             f"{getattr(mask, 'shape', '')}")
        if (box is None) != (shape is None):
            raise ValueError("Segment: give box and shape together (a cropped mask), or neither (a whole-grid mask)")
        if box is None:
            box, shape = (slice(0, 0),) * 3, tuple(int(n) for n in mask.shape)
            inner = mask_box(mask)
            crop = mask[inner].copy() if inner is not None else np.zeros((0, 0, 0), dtype=bool)
            box = inner if inner is not None else box
        else:
            shape = tuple(int(n) for n in shape)  # type: ignore[union-attr]
            box = tuple(slice(*b.indices(n)[:2]) for b, n in zip(box, shape))  # type: ignore[assignment]
            if len(shape) != 3 or tuple(b.stop - b.start for b in box) != mask.shape:
                raise ValueError(f"Segment: a crop of shape {mask.shape} does not fill the box {box} of {shape}")
            crop = mask if mask.base is None else mask.copy()  # a view would keep a larger array alive
        object.__setattr__(self, "info", info)
        object.__setattr__(self, "crop", crop)
        object.__setattr__(self, "box", box)
        object.__setattr__(self, "shape", shape)

    @property
    def mask(self) -> np.ndarray:
        """The (Z, Y, X) bool mask on the whole grid: a new array on each access."""
        out = np.zeros(self.shape, dtype=bool)
        out[self.box] = self.crop
        return out

    def in_box(self, box: Box) -> np.ndarray:
        """The mask on ``box`` of the grid (slices with start and stop): a new bool array of the box's shape, True
        where the segment is (what of the box lies outside the segment's own box is False)."""
        out = np.zeros(tuple(b.stop - b.start for b in box), dtype=bool)
        inner = tuple(slice(max(b.start, c.start), min(b.stop, c.stop)) for b, c in zip(self.box, box))
        if all(i.start < i.stop for i in inner):
            out[tuple(slice(i.start - c.start, i.stop - c.start) for i, c in zip(inner, box))] = \
                self.crop[tuple(slice(i.start - b.start, i.stop - b.start) for i, b in zip(inner, self.box))]
        return out

    def any(self) -> bool:
        """Whether the segment has any voxel."""
        return bool(self.crop.any())

    def count(self) -> int:
        """The number of its voxels."""
        return int(np.count_nonzero(self.crop))


@dataclass(frozen=True, eq=False, slots=True)
class LabelMap:
    """An ordered tuple of segments on one grid, plus notes on what was searched for and not found."""

    segments: tuple[Segment, ...] = ()
    not_found: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        numbers = [s.info.number for s in self.segments]
        if len(set(numbers)) != len(numbers):
            raise ValueError(f"segment numbers must be unique, got {numbers}")
        shapes = {s.shape for s in self.segments}
        if len(shapes) > 1:
            raise ValueError(f"all segments must share one grid, got shapes {sorted(shapes)}")

    def by_label(self, label: str) -> Segment | None:
        for s in self.segments:
            if s.info.label == label:
                return s
        return None

    def add(self, info: SegmentInfo, mask: np.ndarray) -> "LabelMap":
        return LabelMap(self.segments + (Segment(info, mask),), self.not_found)

    def next_number(self) -> int:
        return max((s.info.number for s in self.segments), default=0) + 1

    def renumbered(self) -> "tuple[LabelMap, dict[int, int]]":
        """The same segments numbered 1, 2, ..., N in the order of their numbers (a BINARY SEG needs 1..N), and the
        map from each old number to its new one (for what is keyed by number: measurements, findings)."""
        new_of = {n: i + 1 for i, n in enumerate(sorted(s.info.number for s in self.segments))}
        if all(k == v for k, v in new_of.items()):
            return self, new_of
        return LabelMap(tuple(Segment(replace(s.info, number=new_of[s.info.number]), s.crop, box=s.box,
                                      shape=s.shape) for s in self.segments), self.not_found), new_of


@dataclass(frozen=True, slots=True)
class Measurement:
    """One named value, with its unit (UCUM) and, where one exists, a code.

    ``name`` is the stable key used in results.json (e.g. "volume_ml", "mean", "ibsi.morphology.sphericity").
    """

    name: str
    value: float
    unit: str
    code: Code | None = None
    derivation: str = ""
