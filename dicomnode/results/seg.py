"""A label map -> a DICOM Segmentation (BINARY), built with highdicom.

:func:`build_seg` encodes every segment of a :class:`~dicomnode.analysis.volume.LabelMap` as a segment of one
highdicom :class:`~highdicom.seg.Segmentation`: coded category and type (SNOMED CT), AUTOMATIC algorithm
identification, a tracking UID shared with the SR, references to the source images (per frame), overlapping segments
allowed and empty frames omitted. Every UID comes from :class:`~dicomnode.results.uids.ResultUids`, so a re-run
makes the same object.

Speed
-----
highdicom checks whether the segments overlap with ``pixel_array.sum(axis=-1)`` over the whole 4-D boolean stack
(a 300 x 512 x 512 x 6 stack: a 630 MB int64 temporary, ~0.3-0.6 s; perf.md). We know the masks one by one, so we
find the answer ourselves, slab by slab, stopping at the first overlap (the body holds the lungs: a few slices), and
hand highdicom the answer through a subclass whose ``_check_and_cast_pixel_array`` only checks shape and type. The
stack is laid out segment-major in memory (``np.moveaxis`` of a (S, Z, Y, X) array), so each frame highdicom cuts
out of it is contiguous. highdicom is pinned (0.28.2); if that private method disappears, the subclass is not used
and highdicom's own check runs (slower, same result).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import highdicom as hd
import numpy as np
from highdicom.seg import SegmentsOverlapValues

from dicomnode.analysis.volume import Code, LabelMap, Segment
from dicomnode.errors import ResultError
from dicomnode.io.load import LoadedSeries
from dicomnode.results._common import (
    DEVICE_SERIAL_NUMBER,
    MANUFACTURER,
    MODEL_NAME,
    SOFTWARE_VERSION,
    coded,
    fit_character_set,
    frame_anatomy,
    lo,
    source_datasets,
    warnings_without_phi,
)
from dicomnode.results.uids import ResultUids

__all__ = ["ALGORITHM_FAMILY_AI", "DEFAULT_ALGORITHM_FAMILY", "build_seg", "segments_overlap"]

#: Algorithm family (CID 7162) of segments whose algorithm is not in ``algorithm_families``: thresholds and
#: morphology, what our classical segmentation steps do.
DEFAULT_ALGORITHM_FAMILY = Code("123104", "DCM", "Morphological Operations")  # codes.cid7162.MorphologicalOperations
#: The family to give model-based steps in ``algorithm_families``.
ALGORITHM_FAMILY_AI = Code("123110", "DCM", "Artificial Intelligence")  # codes.cid7162.ArtificialIntelligence

#: Slices per slab of the overlap check: small enough to stop early, large enough to keep numpy efficient.
_OVERLAP_SLAB_SLICES = 8


def segments_overlap(masks: Sequence[np.ndarray]) -> bool:
    """Whether any voxel belongs to two or more of the masks.

    Parameters
    ----------
    masks : sequence of (Z, Y, X) bool ndarray
        Masks on one grid.

    Returns
    -------
    bool
        True at the first voxel found in two masks; False after a full pass when none is.
    """
    if len(masks) < 2:
        return False
    n_slices = masks[0].shape[0]
    # only slices where two or more masks are non-empty can overlap
    nonempty = np.stack([m.reshape(n_slices, -1).any(axis=1) for m in masks])
    candidates = np.flatnonzero(nonempty.sum(axis=0) >= 2)
    if candidates.size == 0:
        return False
    seen = np.empty((_OVERLAP_SLAB_SLICES,) + masks[0].shape[1:], dtype=bool)
    both = np.empty_like(seen)
    for start in range(0, candidates.size, _OVERLAP_SLAB_SLICES):
        zs = candidates[start:start + _OVERLAP_SLAB_SLICES]
        n = zs.size
        seen[:n] = False
        for m in masks:
            slab = m[zs]
            np.logical_and(seen[:n], slab, out=both[:n])
            if both[:n].any():
                return True
            seen[:n] |= slab
    return False


class _PrecheckedSegmentation(hd.seg.Segmentation):
    """A highdicom Segmentation whose caller already knows whether the segments overlap (see the module docstring).

    ``_overlap`` is set on the per-call subclasses made by :func:`_segmentation_class`.
    """

    _overlap: SegmentsOverlapValues = SegmentsOverlapValues.UNDEFINED

    @classmethod
    def _check_and_cast_pixel_array(  # type: ignore[override]
        cls,
        pixel_array: np.ndarray,
        segment_numbers: np.ndarray,
        segmentation_type: hd.seg.SegmentationTypeValues,
        dtype: type,
    ) -> tuple[np.ndarray, SegmentsOverlapValues]:
        if (
            segmentation_type != hd.seg.SegmentationTypeValues.BINARY
            or not isinstance(pixel_array, np.ndarray)
            or pixel_array.dtype != np.bool_
            or pixel_array.ndim != 4
            or pixel_array.shape[-1] != len(segment_numbers)
        ):
            return super()._check_and_cast_pixel_array(pixel_array, segment_numbers, segmentation_type, dtype)
        return pixel_array, cls._overlap


class _OverlappingSegmentation(_PrecheckedSegmentation):
    _overlap = SegmentsOverlapValues.YES


class _DisjointSegmentation(_PrecheckedSegmentation):
    _overlap = SegmentsOverlapValues.NO


def _segmentation_class(overlap: bool) -> type[hd.seg.Segmentation]:
    if not callable(getattr(hd.seg.Segmentation, "_check_and_cast_pixel_array", None)):
        return hd.seg.Segmentation  # a highdicom without the private hook: let it check
    return _OverlappingSegmentation if overlap else _DisjointSegmentation


def _check_labels(series: LoadedSeries, labels: LabelMap) -> list[Segment]:
    if not labels.segments:
        raise ResultError(
            f"series {series.series_uid}: the label map has no segments: there is nothing to encode; skip the SEG"
        )
    segments = sorted(labels.segments, key=lambda s: s.info.number)
    numbers = [s.info.number for s in segments]
    if numbers != list(range(1, len(numbers) + 1)):
        raise ResultError(
            f"series {series.series_uid}: segment numbers {numbers} must be 1, 2, ..., N for a BINARY SEG "
            "(highdicom's rule); renumber the label map"
        )
    shape = series.volume.shape
    for s in segments:
        if s.mask.shape != shape:
            raise ResultError(
                f"series {series.series_uid}: segment {s.info.number} ({s.info.label}) has shape {s.mask.shape}, "
                f"the volume {shape}: the label map belongs to another grid"
            )
    return segments


def _source_frame_order(series: LoadedSeries) -> np.ndarray:
    """For each frame of the (single) multi-frame source, its z index in the volume."""
    if len(series.headers) != 1:
        raise ResultError(
            f"series {series.series_uid}: {len(series.headers)} multi-frame source images; a SEG can be derived "
            "from one multi-frame image or from single-frame images only"
        )
    n_frames = int(series.headers[0].NumberOfFrames)
    if n_frames != len(series.frames):
        raise ResultError(
            f"series {series.series_uid}: the source has {n_frames} frames but the volume {len(series.frames)} slices"
        )
    order = np.empty(n_frames, dtype=np.intp)
    for z, (_, frame_number) in enumerate(series.frames):
        order[int(frame_number) - 1] = z  # type: ignore[arg-type]
    return order


def build_seg(
    series: LoadedSeries,
    labels: LabelMap,
    uids: ResultUids,
    *,
    series_number: int = 9001,
    instance_number: int = 1,
    content_creator: str = "DICOMNODE^",
    software_version: str = SOFTWARE_VERSION,
    series_description: str | None = None,
    algorithm_families: Mapping[str, Code] | None = None,
) -> hd.seg.Segmentation:
    """Encode a label map as a BINARY DICOM Segmentation of the source series.

    Parameters
    ----------
    series : LoadedSeries
        The source series (its headers are referenced; they are never modified).
    labels : LabelMap
        Segments on the series' grid, numbered 1..N; they may overlap. Each becomes one SEG segment with the same
        number, label, category and type; ``SegmentInfo.algorithm`` becomes the algorithm name.
    uids : ResultUids
        Where the SEG's Series and SOP Instance UIDs (``seg_series_uid``, ``seg_instance_uid``) and the segments'
        tracking UIDs (``tracking_uid(label)``) come from.
    series_number : int, optional
        Series Number of the SEG. Default 9001.
    instance_number : int, optional
        Instance Number. Default 1.
    content_creator : str, optional
        Content Creator's Name (PN). Default "DICOMNODE^" (a family name: no "retired form" warning).
    software_version : str, optional
        Software Versions, also the algorithms' version. Default: the installed dicomnode version.
    series_description : str, optional
        Series Description; default "dicomnode SEG <profile> <version>".
    algorithm_families : mapping of str to Code, optional
        Algorithm family (CID 7162) per algorithm name, e.g. {"segment.lung_model": ArtificialIntelligence};
        others get :data:`DEFAULT_ALGORITHM_FAMILY`.

    Returns
    -------
    highdicom.seg.Segmentation
        A pydicom Dataset, ready for ``save_as``. Frames that hold no voxel of a segment are omitted; when no segment
        has any voxel, highdicom keeps every (empty) frame.

    Raises
    ------
    ResultError
        When the label map is empty, numbered otherwise than 1..N, on another grid, or highdicom refuses the input.
    """
    segments = _check_labels(series, labels)
    families = dict(algorithm_families or {})

    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=s.info.number,
            segment_label=lo(s.info.label),
            segmented_property_category=coded(s.info.category),
            segmented_property_type=coded(s.info.type),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name=lo(s.info.algorithm),
                family=coded(families.get(s.info.algorithm, DEFAULT_ALGORITHM_FAMILY)),
                version=lo(software_version),
            ),
            tracking_uid=uids.tracking_uid(s.info.label),
            tracking_id=s.info.label,
        )
        for s in segments
    ]

    masks = [s.mask for s in segments]
    overlap = segments_overlap(masks)

    # (S, Z, Y, X) in memory, handed over as (Z, Y, X, S): each frame highdicom takes is one contiguous plane
    if series.is_multiframe:
        order = _source_frame_order(series)  # highdicom wants the frames in the source's own frame order
        stack = np.empty((len(masks),) + masks[0].shape, dtype=bool)
        for i, m in enumerate(masks):
            np.take(m, order, axis=0, out=stack[i])
    else:
        stack = np.stack(masks, axis=0)
    pixel_array = np.moveaxis(stack, 0, -1)

    seg_class = _segmentation_class(overlap)
    try:
        with warnings_without_phi(series.headers[0], series_uid=series.series_uid, what="SEG"):
            seg = seg_class(
                source_images=source_datasets(series),
                pixel_array=pixel_array,
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=descriptions,
                series_instance_uid=uids.seg_series_uid,
                series_number=series_number,
                sop_instance_uid=uids.seg_instance_uid,
                instance_number=instance_number,
                manufacturer=MANUFACTURER,
                manufacturer_model_name=MODEL_NAME,
                software_versions=lo(software_version),
                device_serial_number=DEVICE_SERIAL_NUMBER,
                content_description=lo(f"dicomnode {uids.profile} {uids.profile_version}"),
                content_creator_name=content_creator,
                content_label="DICOMNODE",
                omit_empty_frames=True,
            )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise ResultError(
            f"series {series.series_uid}: highdicom refused to build the SEG: {type(exc).__name__}: {exc}"
        ) from exc
    # Laterality: General Series Laterality (2C) is required unless Frame Laterality is given. Pixelmed (2022 IOD
    # tables) wants one of them; dciodvfy refuses Laterality in a SEG and knows no Frame Anatomy in it (a warning).
    # Frame Anatomy in the shared functional groups satisfies both: anatomic region and laterality of every frame.
    seg.SharedFunctionalGroupsSequence[0].FrameAnatomySequence = [frame_anatomy(series.headers[0])]
    seg.SeriesDescription = lo(series_description or f"dicomnode SEG {uids.profile} {uids.profile_version}")
    fit_character_set(seg)
    return seg

