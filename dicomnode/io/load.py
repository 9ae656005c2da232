"""DICOM files -> one :class:`~dicomnode.analysis.volume.Volume`: the one way into the analysis.

:func:`load_series` reads the files of one series, single-frame slices or (enhanced / legacy converted) multi-frame
images, decodes compressed pixel data through pydicom's plugins (pylibjpeg), sorts the frames along the slice normal,
applies the modality rescale (per frame) and returns float32 voxels (z, y, x) with the geometry of the Volume
conventions. What real series need and what the loader does about it, each said in ``LoadedSeries.notes``:

* non-image objects in the series (Raw Data, ...): ignored;
* several images per position (temporal phases): split into phases, one loaded (``phase``);
* gantry tilt: kept as acquired on a sheared grid (``Volume.direction`` column 2 is then the slice-to-slice step per
  mm along the normal, not a unit vector), so every voxel keeps its DICOM position and volumes stay exact;
* small slice-spacing irregularities: one regular grid; mixed spacing (two slice thicknesses): resampled onto a
  regular grid, and :func:`on_source_slices` maps label maps back onto the source slices for the SEG;
* PixelPaddingValue: no data (CT: -2048 HU, below air; otherwise the lowest real value), never tissue;
* PET in Bq/ml: SUVbw (:mod:`dicomnode.io.suv`), or Bq/ml with the reason; Philips' counts (CNTS) with its private
  scale factors: SUVbw too; PET in other units (CNTS without them, PCNT): kept, and said to be no SUV.

Anything that cannot become one volume raises :class:`~dicomnode.errors.SeriesLoadError` (a multi-plane localizer:
:class:`~dicomnode.errors.SeriesRefusedError`) whose message names the file, the DICOM attribute and what to do.

:func:`group_series` sorts a pile of files into series for batch runs, :func:`read_header` reads one header.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Literal, Union

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from dicomnode.analysis.volume import LabelMap, Segment, Volume
from dicomnode.errors import SeriesLoadError, SeriesRefusedError
from dicomnode.io.headers import is_image_storage
from dicomnode.io.suv import SuvConversion, counts_conversion, suvbw_conversion

__all__ = ["LoadedSeries", "PhaseChoice", "group_series", "load_series", "on_source_slices", "read_header"]

log = logging.getLogger(__name__)

#: CT voxels outside the reconstructed field of view (PixelPaddingValue): no data, below any real HU (air is -1000).
CT_NO_DATA_HU = -2048.0
#: Relative tolerance for "the same" orientation cosine, pixel spacing or slice distance.
_ORIENTATION_TOL = 1e-4
#: Slice distances may differ from the median by this fraction (and at least by _SPACING_ABS_TOL_MM).
_SPACING_REL_TOL = 0.01
_SPACING_ABS_TOL_MM = 0.01
#: Irregular steps are accepted on a regular grid up to this fraction of the mean step, when no slice drifts more than
#: _DRIFT_REL_TOL of a step from its DICOM position.
_IRREGULAR_REL_TOL = 0.05
_DRIFT_REL_TOL = 0.1
#: Mixed slice spacing is resampled when no step exceeds this many times the finest repeated step (else: a gap).
_MAX_RESAMPLED_STEP = 2.5

_UID_FIELDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
_PIXEL_FIELDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_GREYSCALE = ("MONOCHROME1", "MONOCHROME2")

#: PET Units (0054,1001) that already mean a standardized uptake value (GML: g/ml, i.e. SUV body weight).
_PET_SUV_UNITS = {"GML": "SUV", "SUV": "SUV", "SUVBW": "SUV"}
#: Other PET units we pass on, spelled in UCUM.
_PET_OTHER_UNITS = {"BQML": "Bq/mL", "CNTS": "{counts}", "PCNT": "%"}


#: Which temporal phase to load: "first", "last" or the 1-based number.
PhaseChoice = Union[Literal["first", "last"], int]


@dataclass(frozen=True, eq=False)
class LoadedSeries:
    """One loaded series: the volume and what the result objects need to reference its source.

    Parameters
    ----------
    volume : Volume
        Voxels (z, y, x) as float32 in the series' unit, with spacing and patient geometry.
    headers : tuple of pydicom.Dataset
        The source datasets without pixel data, one per file; sorted along z for single-frame series (for
        multi-frame files: in the order of their first frame along z).
    frames : tuple of (str, int or None)
        Per z index: the SOP Instance UID of the source and its frame number (1-based), or None for a single-frame
        image.
    study_uid, series_uid : str
        Study and Series Instance UIDs of the source.
    modality : str
        DICOM Modality of the source ("CT", "MR", "PT", ...).
    sop_class_uid : str
        SOP Class UID of the source images.
    notes : tuple of str
        What the loader did that the analysis and the reader of ``results.json`` should know (the SUV conversion and
        its inputs, or why the values stay in Bq/ml; ignored non-image objects; the phase chosen; tilt). No PHI.
    suv : SuvConversion or None
        For PET in BQML: the conversion applied (``suv.ok``) or why none was (values left in Bq/ml).
    n_phases, phase : int
        How many temporal phases the series holds (images per position) and which one (1-based) was loaded.
    source_z : tuple of float, or None
        When the loader resampled the stack onto a regular grid (mixed slice spacing): the fractional z index of
        each source slice, sorted along the normal; ``frames`` then names the nearest source slice of each z index.
        None when every z index is a source slice.
    source_frames : tuple of (str, int or None), or None
        With ``source_z``: the (SOP Instance UID, frame number) of each source slice, sorted along the normal.
    """

    volume: Volume
    headers: tuple[Dataset, ...]
    frames: tuple[tuple[str, int | None], ...]
    study_uid: str
    series_uid: str
    modality: str
    sop_class_uid: str
    notes: tuple[str, ...] = ()
    suv: SuvConversion | None = None
    n_phases: int = 1
    phase: int = 1
    source_z: tuple[float, ...] | None = None
    source_frames: tuple[tuple[str, int | None], ...] | None = None

    @property
    def is_multiframe(self) -> bool:
        """True when the frames come from multi-frame images."""
        return any(f is not None for _, f in self.frames)


@dataclass(frozen=True, slots=True)
class _Frame:
    """One 2-D frame of a source file, with everything needed to place and rescale it."""

    file_index: int
    frame_number: int | None  # 1-based, None for single-frame images
    position: np.ndarray      # ImagePositionPatient (3,)
    orientation: np.ndarray   # ImageOrientationPatient (6,)
    pixel_spacing: np.ndarray  # (row spacing, column spacing) in mm
    slope: float
    intercept: float
    temporal: tuple[float, ...] = ()  # sort key of the image among others at its position (phases, echoes)


def read_header(path: Path | str) -> Dataset:
    """Read one DICOM header without its pixel data.

    Parameters
    ----------
    path : Path or str
        A DICOM Part 10 file (a file without a preamble is accepted).

    Returns
    -------
    pydicom.Dataset
        The dataset up to, not including, the pixel data.

    Raises
    ------
    SeriesLoadError
        When the file cannot be read or is not DICOM.
    """
    return _read(Path(path), stop_before_pixels=True)


def group_series(paths: Sequence[Path]) -> dict[str, list[Path]]:
    """Group files by Series Instance UID, for batch runs.

    Parameters
    ----------
    paths : sequence of Path
        DICOM files of any number of series.

    Returns
    -------
    dict of str to list of Path
        Series Instance UID -> its files, in the order given. Files whose Series Instance UID is empty or absent are
        grouped under the key ``""``: :func:`load_series` refuses them with a message that says why.

    Raises
    ------
    SeriesLoadError
        When a file cannot be read as DICOM.
    """
    groups: dict[str, list[Path]] = defaultdict(list)
    for path in paths:
        ds = read_header(path)
        groups[str(ds.get("SeriesInstanceUID", "") or "").strip()].append(Path(path))
    return dict(groups)


def load_series(paths: Sequence[Path], *, phase: PhaseChoice = "first") -> LoadedSeries:
    """Load the files of one series into a volume.

    Frames are sorted by their position along the slice normal (ImageOrientationPatient row x column cosines, dotted
    with ImagePositionPatient), not by InstanceNumber. Stored values are rescaled with RescaleSlope/Intercept (per
    frame, also from the Pixel Value Transformation functional group of multi-frame images); PixelPaddingValue
    voxels become no data (CT: ``CT_NO_DATA_HU``, -2048 HU; otherwise the lowest real value), never tissue. PET in BQML
    is converted to SUVbw (:mod:`dicomnode.io.suv`); the unit is "SUV" then, or when the series' Units say GML.

    Input the loader adapts to, each said in ``notes``: non-image objects in the series (Raw Data, ...) are ignored;
    several images per position (temporal phases, told apart by TemporalPositionIdentifier, TriggerTime,
    AcquisitionTime, ContentTime, AcquisitionNumber or EchoNumbers) are split into phases and ``phase`` chooses one;
    a gantry tilt keeps the slices as acquired on a sheared grid (``Volume.direction`` column 2 is the step from one
    slice to the next per mm along the normal, so every voxel maps to its DICOM position); small irregularities in
    slice spacing are kept on one grid; slices of mixed spacing (two slice thicknesses) are resampled linearly onto
    a regular grid, and :func:`on_source_slices` maps label maps back to the source slices.

    Parameters
    ----------
    paths : sequence of Path
        The files of one series: single-frame images, or one or more multi-frame images with per-frame functional
        groups (Plane Position, Plane Orientation, Pixel Measures). Compressed transfer syntaxes are decoded by
        pydicom's pixel data plugins.
    phase : "first", "last" or int, optional
        Which temporal phase to load when the series holds several images per position: the earliest (default:
        for a DCE series the pre-contrast baseline), the latest, or the N-th (1-based). Ignored otherwise.
        ``LoadedSeries.n_phases`` says how many there are (a caller that wants "all" loads each).

    Returns
    -------
    LoadedSeries
        The volume, float32 (Z, Y, X), unit "HU" for CT, "SUV" for PET in SUV, "Bq/mL" for PET that cannot be
        converted, "" when arbitrary (MR), with ``spacing_mm`` (dz, dy, dx) where dz is the distance between
        consecutive slices along the normal; plus the source headers, the (SOP Instance UID, frame number) of each
        z index and the notes.

    Raises
    ------
    SeriesRefusedError
        A readable series that is not one volume: several orientations in one series (a multi-plane localizer).
    SeriesLoadError
        The message names the file and the attribute: no files or a single slice; empty or invalid UIDs; files of
        more than one series; no image; a colour or unknown photometric interpretation; pixel data that cannot be
        decoded; mixed image sizes or pixel spacings; duplicate slice positions; missing slices; slices that move
        irregularly across the slice plane; a phase that does not exist.
    """
    phase = _check_phase(phase)
    paths = [Path(p) for p in paths]
    if not paths:
        raise SeriesLoadError("no files given: load_series needs the files of one series")

    datasets = [_read(p, stop_before_pixels=False) for p in paths]
    for path, ds in zip(paths, datasets):
        _check_uids(path, ds)
    _check_one_series(paths, datasets)
    notes: list[str] = []
    paths, datasets = _images_only(paths, datasets, notes)
    for path, ds in zip(paths, datasets):
        _check_pixel_module(path, ds)
    _check_same(paths, datasets, "SOPClassUID")
    _check_same(paths, datasets, "Modality")
    _check_same(paths, datasets, "Rows", fix="all images of a series must share one size")
    _check_same(paths, datasets, "Columns", fix="all images of a series must share one size")

    frames: list[_Frame] = []
    for index, (path, ds) in enumerate(zip(paths, datasets)):
        frames.extend(_frames_of(index, path, ds))
    if len(frames) < 2:
        raise SeriesLoadError(
            f"{paths[0]}: only one slice (1 file, NumberOfFrames {datasets[0].get('NumberOfFrames', 1)}): a volume "
            "needs at least 2 slices; send the whole series"
        )

    direction, normal = _check_orientation(paths, datasets, frames)
    pixel_spacing = _check_pixel_spacing(paths, frames)
    frames, n_phases, phase_index = _choose_phase(paths, frames, normal, phase, notes)
    order = _sort_along_normal(paths, frames, normal)
    frames = [frames[i] for i in order]
    grid = _stack_geometry(paths, datasets, frames, normal, float(min(pixel_spacing)), notes)
    direction[:, 2] = grid.z_axis

    array = _decode(paths, datasets, frames)
    first = datasets[frames[0].file_index]
    modality = str(first.get("Modality", "") or "")
    _fill_padding(datasets, frames, array, modality, notes)

    unit = _unit(first, modality)
    suv = None
    if modality == "PT" and unit in ("Bq/mL", "{counts}"):
        slices = [datasets[f.file_index] for f in frames]
        suv = suvbw_conversion(slices) if unit == "Bq/mL" else counts_conversion(slices)
        notes.append(suv.note)
        if suv.factors is not None:
            array *= np.asarray(suv.factors, dtype=np.float32)[:, None, None]
            unit = "SUV"
    elif modality == "PT" and unit != "SUV":
        units = str(first.get("Units", "") or "").strip().upper()
        notes.append(f"PET values left in {units or 'unknown units (Units (0054,1001) missing)'}, not SUV: only BQML "
                     "(with weight, dose and times), Philips' CNTS (with its scale factors) or GML give SUV; SUV "
                     "thresholds do not apply to this series")

    frame_refs = [(str(datasets[f.file_index].SOPInstanceUID), f.frame_number) for f in frames]
    source_z, source_frames = None, None
    if grid.resample_at is not None:
        array, nearest = _resample_along_stack(array, grid.along_mm, grid.resample_at)
        source_z = tuple(float(v) for v in (grid.along_mm - grid.along_mm[0]) / grid.dz_mm)
        source_frames = tuple(frame_refs)
        frame_refs = [frame_refs[k] for k in nearest]

    volume = Volume(
        array=array,
        spacing_mm=(grid.dz_mm, float(pixel_spacing[0]), float(pixel_spacing[1])),
        origin_mm=tuple(float(v) for v in frames[0].position),  # type: ignore[arg-type]
        direction=direction,
        modality=modality,
        unit=unit,
    )

    # headers: one per file, ordered by the first z index at which each file appears
    file_order: list[int] = []
    for f in frames:
        if f.file_index not in file_order:
            file_order.append(f.file_index)
    for ds in datasets:
        for field in _PIXEL_FIELDS:
            if field in ds:
                del ds[field]
    headers = tuple(datasets[i] for i in file_order)

    loaded = LoadedSeries(
        volume=volume,
        headers=headers,
        frames=tuple(frame_refs),
        study_uid=str(first.StudyInstanceUID),
        series_uid=str(first.SeriesInstanceUID),
        modality=modality,
        sop_class_uid=str(first.SOPClassUID),
        notes=tuple(notes),
        suv=suv,
        n_phases=n_phases,
        phase=phase_index,
        source_z=source_z,
        source_frames=source_frames,
    )
    log.debug(
        "series loaded",
        extra={"series_uid": loaded.series_uid, "files": len(paths), "shape": volume.shape, "unit": volume.unit,
               "phases": n_phases, "resampled": source_z is not None},
    )
    return loaded


def on_source_slices(series: LoadedSeries, labels: LabelMap) -> tuple[LoadedSeries, LabelMap]:
    """The series and a label map on the source's own slices, for results that reference each source frame (SEG).

    The identity unless the loader resampled the series along the stack (mixed slice spacing): then each source
    slice takes the labels of the nearest resampled slice, and the returned series has one z index per source slice.
    Its volume holds no voxel values (zeros, shared memory) and its spacing is the mean step: it is for
    referencing, not for analysis.

    Parameters
    ----------
    series : LoadedSeries
        As returned by :func:`load_series`.
    labels : LabelMap
        Segments on ``series.volume``'s grid.

    Returns
    -------
    (LoadedSeries, LabelMap)
        On the source slices, sorted along the normal.
    """
    if series.source_z is None:
        return series, labels
    z = np.clip(np.rint(np.asarray(series.source_z)).astype(int), 0, series.volume.shape[0] - 1)
    shape = (len(z),) + series.volume.shape[1:]
    span = float(series.source_z[-1] - series.source_z[0]) * series.volume.spacing_mm[0]
    dz = span / max(len(z) - 1, 1) or series.volume.spacing_mm[0]
    volume = Volume(np.broadcast_to(np.float32(0), shape), (dz, *series.volume.spacing_mm[1:]),
                    series.volume.origin_mm, series.volume.direction, series.volume.modality, series.volume.unit)
    on_source = replace(series, volume=volume, frames=series.source_frames or (), source_z=None, source_frames=None)
    mapped = LabelMap(tuple(Segment(s.info, np.ascontiguousarray(s.mask[z])) for s in labels.segments),
                      labels.not_found)
    return on_source, mapped


# --- reading and checks -------------------------------------------------------------------------------------------


def _read(path: Path, *, stop_before_pixels: bool) -> Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except FileNotFoundError as exc:
        raise SeriesLoadError(f"{path}: file not found") from exc
    except InvalidDicomError as exc:
        raise SeriesLoadError(f"{path}: not a DICOM file ({exc}); remove it from the series") from exc
    except Exception as exc:  # truncated or corrupt files raise anything from struct.error to ValueError
        raise SeriesLoadError(f"{path}: cannot be read as DICOM ({type(exc).__name__}: {exc})") from exc


def _check_uids(path: Path, ds: Dataset) -> None:
    empty = [name for name in _UID_FIELDS if not str(ds.get(name, "") or "").strip()]
    if empty:
        hint = ""
        meta = getattr(ds, "file_meta", None)
        if meta is not None and "SOPInstanceUID" in empty and str(meta.get("MediaStorageSOPInstanceUID", "")):
            hint = " (the file meta header still holds a Media Storage SOP Instance UID)"
        raise SeriesLoadError(
            f"{path}: {', '.join(empty)} {'is' if len(empty) == 1 else 'are'} empty or missing{hint}; the instance "
            "has no usable identity: repair the UIDs at the source (e.g. from the file meta) and send it again"
        )
    for name in _UID_FIELDS:
        value = str(ds.get(name)).strip()
        if not UID(value).is_valid:
            raise SeriesLoadError(
                f"{path}: {name} {value!r} is not a valid UID (digits and dots, at most 64 characters): "
                "repair it at the source"
            )


def _check_one_series(paths: list[Path], datasets: list[Dataset]) -> None:
    by_series: dict[str, list[Path]] = defaultdict(list)
    for path, ds in zip(paths, datasets):
        by_series[str(ds.SeriesInstanceUID).strip()].append(path)
    if len(by_series) > 1:
        parts = "; ".join(f"{uid} ({len(ps)} files, e.g. {ps[0]})" for uid, ps in by_series.items())
        raise SeriesLoadError(
            f"files of {len(by_series)} series given (SeriesInstanceUID differs): {parts}; "
            "load one series at a time (group_series splits them)"
        )


def _images_only(paths: list[Path], datasets: list[Dataset],
                 notes: list[str]) -> tuple[list[Path], list[Dataset]]:
    """Set aside objects of a non-image SOP class (Raw Data, SR, RT, SEG...) that share the series."""
    keep = [i for i, ds in enumerate(datasets)
            if not str(ds.get("SOPClassUID", "") or "").strip() or is_image_storage(str(ds.SOPClassUID))]
    others: dict[str, int] = defaultdict(int)
    for i, ds in enumerate(datasets):
        if i not in keep:
            others[f"{UID(str(ds.SOPClassUID)).name} ({ds.SOPClassUID})"] += 1
    listed = ", ".join(f"{n} {name}" for name, n in others.items())
    if not keep:
        raise SeriesLoadError(
            f"{paths[0]}: no image among the {len(paths)} file(s) of series {datasets[0].SeriesInstanceUID}: "
            f"{listed} {'is' if len(paths) == 1 else 'are'} not image storage, so there is nothing to analyse; "
            "send the image series (these objects are stored and forwarded, not analysed)"
        )
    if others:
        notes.append(f"ignored {sum(others.values())} non-image object(s) in the series: {listed}")
    return [paths[i] for i in keep], [datasets[i] for i in keep]


def _check_pixel_module(path: Path, ds: Dataset) -> None:
    if not any(field in ds for field in _PIXEL_FIELDS):
        raise SeriesLoadError(
            f"{path}: no pixel data (PixelData (7FE0,0010) is missing): not an image; "
            f"SOP class {ds.get('SOPClassUID', '?')} cannot be loaded as a volume"
        )
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if not photometric:
        raise SeriesLoadError(
            f"{path}: PhotometricInterpretation (0028,0004) is missing: cannot tell how to read the pixels"
        )
    if photometric not in _GREYSCALE:
        colour = photometric.startswith(("RGB", "YBR", "PALETTE", "HSV", "ARGB", "CMYK"))
        kind = "a colour" if colour else "an unknown"
        raise SeriesLoadError(
            f"{path}: PhotometricInterpretation (0028,0004) is {photometric!r}, {kind} interpretation; only "
            "greyscale (MONOCHROME1/MONOCHROME2) images can be analysed"
        )
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise SeriesLoadError(f"{path}: SamplesPerPixel (0028,0002) is {samples}; only greyscale (1) is supported")


def _check_same(paths: list[Path], datasets: list[Dataset], keyword: str, *, fix: str = "") -> None:
    first = datasets[0].get(keyword)
    for path, ds in zip(paths[1:], datasets[1:]):
        value = ds.get(keyword)
        if value != first:
            raise SeriesLoadError(
                f"{path}: {keyword} is {value!r} but {first!r} in {paths[0]}"
                + (f": {fix}" if fix else ": the files do not form one series")
            )


# --- frames and geometry -----------------------------------------------------------------------------------------


def _first_item(ds: Dataset | None, sequence: str) -> Dataset | None:
    if ds is None or sequence not in ds or not ds[sequence].value:
        return None
    return ds[sequence].value[0]


def _functional(per_frame: Dataset | None, shared: Dataset | None, sequence: str, keyword: str) -> object:
    """An attribute of a functional group macro: the per-frame item wins over the shared one."""
    for group in (per_frame, shared):
        item = _first_item(group, sequence)
        if item is not None and keyword in item and item[keyword].value is not None:
            return item[keyword].value
    return None


def _floats(path: Path, value: object, field: str, count: int) -> np.ndarray:
    if value is None:
        raise SeriesLoadError(f"{path}: {field} is missing: the slice cannot be placed in patient space")
    try:
        arr = np.asarray([float(v) for v in value], dtype=float)  # type: ignore[union-attr]
    except (TypeError, ValueError) as exc:
        raise SeriesLoadError(f"{path}: {field} is {value!r}, not {count} numbers") from exc
    if arr.shape != (count,) or not np.all(np.isfinite(arr)):
        raise SeriesLoadError(f"{path}: {field} is {value!r}, not {count} finite numbers")
    return arr


def _number(path: Path, value: object, field: str, default: float) -> float:
    if value is None or value == "":
        return default
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise SeriesLoadError(f"{path}: {field} is {value!r}, not a number") from exc
    if not np.isfinite(out):
        raise SeriesLoadError(f"{path}: {field} is {value!r}, not a finite number")
    return out


def _frames_of(index: int, path: Path, ds: Dataset) -> list[_Frame]:
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if "PerFrameFunctionalGroupsSequence" not in ds and "SharedFunctionalGroupsSequence" not in ds:
        if n_frames > 1:
            raise SeriesLoadError(
                f"{path}: multi-frame image ({n_frames} frames) without PerFrameFunctionalGroupsSequence "
                "(5200,9230): the frames cannot be placed in patient space"
            )
        return [_Frame(
            file_index=index,
            frame_number=None,
            position=_floats(path, ds.get("ImagePositionPatient"), "ImagePositionPatient (0020,0032)", 3),
            orientation=_floats(path, ds.get("ImageOrientationPatient"), "ImageOrientationPatient (0020,0037)", 6),
            pixel_spacing=_floats(path, ds.get("PixelSpacing"), "PixelSpacing (0028,0030)", 2),
            slope=_number(path, ds.get("RescaleSlope"), "RescaleSlope (0028,1053)", 1.0),
            intercept=_number(path, ds.get("RescaleIntercept"), "RescaleIntercept (0028,1052)", 0.0),
            temporal=_temporal_single(ds),
        )]

    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    per_frame_items = list(ds.get("PerFrameFunctionalGroupsSequence", []) or [])
    if per_frame_items and len(per_frame_items) != n_frames:
        raise SeriesLoadError(
            f"{path}: PerFrameFunctionalGroupsSequence (5200,9230) has {len(per_frame_items)} items but "
            f"NumberOfFrames is {n_frames}"
        )
    out = []
    for k in range(n_frames):
        item = per_frame_items[k] if per_frame_items else None
        where = f"frame {k + 1}: "

        def get(sequence: str, keyword: str) -> object:
            return _functional(item, shared, sequence, keyword)

        out.append(_Frame(
            file_index=index,
            frame_number=k + 1,
            position=_floats(path, get("PlanePositionSequence", "ImagePositionPatient"),
                             where + "PlanePositionSequence/ImagePositionPatient", 3),
            orientation=_floats(path, get("PlaneOrientationSequence", "ImageOrientationPatient"),
                                where + "PlaneOrientationSequence/ImageOrientationPatient", 6),
            pixel_spacing=_floats(path, get("PixelMeasuresSequence", "PixelSpacing"),
                                  where + "PixelMeasuresSequence/PixelSpacing", 2),
            slope=_number(path, get("PixelValueTransformationSequence", "RescaleSlope"),
                          where + "PixelValueTransformationSequence/RescaleSlope",
                          _number(path, ds.get("RescaleSlope"), "RescaleSlope", 1.0)),
            intercept=_number(path, get("PixelValueTransformationSequence", "RescaleIntercept"),
                              where + "PixelValueTransformationSequence/RescaleIntercept",
                              _number(path, ds.get("RescaleIntercept"), "RescaleIntercept", 0.0)),
            temporal=_temporal_frame(item, shared, k),
        ))
    return out


def _describe(paths: list[Path], frame: _Frame) -> str:
    path = paths[frame.file_index]
    return f"{path}" if frame.frame_number is None else f"{path} frame {frame.frame_number}"


def _plane_name(normal: np.ndarray) -> str:
    axis = int(np.argmax(np.abs(normal)))
    if abs(normal[axis]) < 0.8:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def _check_orientation(paths: list[Path], datasets: list[Dataset],
                       frames: list[_Frame]) -> tuple[np.ndarray, np.ndarray]:
    iop = frames[0].orientation
    row, col = iop[:3], iop[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or abs(row @ col) > 1e-3:
        raise SeriesLoadError(
            f"{_describe(paths, frames[0])}: ImageOrientationPatient {iop.tolist()} is not two orthogonal unit vectors"
        )
    groups: list[list[_Frame]] = []
    for frame in frames:
        for group in groups:
            if np.allclose(frame.orientation, group[0].orientation, atol=_ORIENTATION_TOL, rtol=0):
                group.append(frame)
                break
        else:
            groups.append([frame])
    if len(groups) > 1:
        parts = []
        for group in groups:
            o = group[0].orientation
            parts.append(f"{len(group)} {_plane_name(np.cross(o[:3], o[3:]))} (ImageOrientationPatient "
                         f"{[round(float(v), 4) for v in o]}, e.g. {_describe(paths, group[0])})")
        image_type = "\\".join(str(v) for v in (datasets[frames[0].file_index].get("ImageType") or []))
        raise SeriesRefusedError(
            f"{len(groups)} image orientations in one series: {'; '.join(parts)}"
            + (f"; ImageType {image_type}" if image_type else "")
            + ". A multi-plane series such as a localizer (scout) is not one volume, so it is refused and not "
            "analysed; route only single-stack diagnostic series to the analysis (e.g. a rule on ImageType or "
            "SeriesDescription)"
        )
    row = row / np.linalg.norm(row)
    col = col / np.linalg.norm(col)
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)
    return np.stack([row, col, normal], axis=1), normal


def _check_pixel_spacing(paths: list[Path], frames: list[_Frame]) -> np.ndarray:
    ps = frames[0].pixel_spacing
    if np.any(ps <= 0):
        raise SeriesLoadError(f"{_describe(paths, frames[0])}: PixelSpacing {ps.tolist()} must be positive (mm)")
    for frame in frames[1:]:
        if not np.allclose(frame.pixel_spacing, ps, rtol=_ORIENTATION_TOL, atol=0):
            raise SeriesLoadError(
                f"{_describe(paths, frame)}: PixelSpacing {frame.pixel_spacing.tolist()} mm differs from "
                f"{ps.tolist()} mm in {_describe(paths, frames[0])}: the series mixes pixel spacings"
            )
    return ps


def _sort_along_normal(paths: list[Path], frames: list[_Frame], normal: np.ndarray) -> list[int]:
    distances = np.array([f.position @ normal for f in frames])
    order = [int(i) for i in np.argsort(distances, kind="stable")]
    sorted_d = distances[order]
    same = np.flatnonzero(np.diff(sorted_d) < _SPACING_ABS_TOL_MM)
    if same.size:
        a, b = frames[order[same[0]]], frames[order[same[0] + 1]]
        raise SeriesLoadError(
            f"{_describe(paths, b)}: ImagePositionPatient {b.position.tolist()} repeats the slice position of "
            f"{_describe(paths, a)} ({sorted_d[same[0]]:.3f} mm along the normal), and no acquisition time, "
            f"acquisition, temporal position or echo number tells them apart: duplicates; send one image per position"
        )
    return order


# --- temporal phases ----------------------------------------------------------------------------------------------

_TEMPORAL_NAMES = ("TemporalPositionIdentifier", "TriggerTime", "AcquisitionDateTime/AcquisitionTime",
                   "ContentTime", "AcquisitionNumber", "EchoNumbers/EchoTime", "InstanceNumber")


def _check_phase(phase: object) -> PhaseChoice:
    if phase in ("first", "last"):
        return phase  # type: ignore[return-value]
    if isinstance(phase, int) and not isinstance(phase, bool) and phase >= 1:
        return phase
    raise ValueError(f"phase = {phase!r}: use \"first\", \"last\" or a phase number >= 1")


def _seconds(date: object, time: object) -> float:
    """A DICOM DA + TM (or DT in ``date`` alone) as seconds; 0.0 when absent or unreadable."""
    text = str(date or "").strip()
    t = str(time or "").strip()
    if len(text) > 8 and not t:
        text, t = text[:8], text[8:]
    try:
        day = datetime.strptime(text[:8], "%Y%m%d").toordinal() * 86400.0 if len(text) >= 8 else 0.0
        t = t.replace(":", "")
        tod = (int(t[0:2]) * 3600 + (int(t[2:4]) if len(t) >= 4 else 0) * 60
               + (float(t[4:].split("+")[0].split("-")[0]) if len(t) > 4 else 0.0)) if len(t) >= 2 else 0.0
    except ValueError:
        return 0.0
    return day + tod


def _number_or_zero(value: object) -> float:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0
    return out if np.isfinite(out) else 0.0


def _temporal_single(ds: Dataset) -> tuple[float, ...]:
    acquisition = (_seconds(ds.get("AcquisitionDateTime"), None) if ds.get("AcquisitionDateTime")
                   else _seconds(ds.get("AcquisitionDate"), ds.get("AcquisitionTime")) if ds.get("AcquisitionTime")
                   else 0.0)
    content = _seconds(ds.get("ContentDate"), ds.get("ContentTime")) if ds.get("ContentTime") else 0.0
    echo = ds.get("EchoNumbers")
    echo = echo[0] if isinstance(echo, (list, tuple)) or type(echo).__name__ == "MultiValue" else echo
    return (_number_or_zero(ds.get("TemporalPositionIdentifier")), _number_or_zero(ds.get("TriggerTime")),
            acquisition, content, _number_or_zero(ds.get("AcquisitionNumber")), _number_or_zero(echo),
            _number_or_zero(ds.get("InstanceNumber")))


def _temporal_frame(per_frame: Dataset | None, shared: Dataset | None, k: int) -> tuple[float, ...]:
    def get(sequence: str, keyword: str) -> object:
        return _functional(per_frame, shared, sequence, keyword)

    acquired = get("FrameContentSequence", "FrameAcquisitionDateTime")
    return (_number_or_zero(get("FrameContentSequence", "TemporalPositionIndex")),
            _number_or_zero(get("CardiacSynchronizationSequence", "NominalCardiacTriggerDelayTime")),
            _seconds(acquired, None) if acquired else 0.0, 0.0, 0.0,
            _number_or_zero(get("MREchoSequence", "EffectiveEchoTime")), float(k + 1))


def _choose_phase(paths: list[Path], frames: list[_Frame], normal: np.ndarray, phase: PhaseChoice,
                  notes: list[str]) -> tuple[list[_Frame], int, int]:
    """Split several images per slice position into phases (by time, then acquisition/echo); keep one."""
    distances = np.array([f.position @ normal for f in frames])
    order = np.argsort(distances, kind="stable")
    groups: list[list[_Frame]] = [[frames[order[0]]]]
    for i, j in zip(order[:-1], order[1:]):
        if distances[j] - distances[i] < _SPACING_ABS_TOL_MM:
            groups[-1].append(frames[j])
        else:
            groups.append([frames[j]])
    counts = {len(g) for g in groups}
    if counts == {1}:
        return frames, 1, 1
    separating: set[int] = set()
    for g in groups:
        g.sort(key=lambda f: f.temporal)
        for a, b in zip(g[:-1], g[1:]):
            differs = [i for i in range(len(_TEMPORAL_NAMES) - 1) if a.temporal[i] != b.temporal[i]]
            if not differs:
                return frames, 1, 1  # true duplicates: _sort_along_normal names them
            separating.add(differs[0])
    n = max(counts)
    if len(counts) > 1:
        short = next(g for g in groups if len(g) < n)
        raise SeriesLoadError(
            f"{_describe(paths, short[0])}: {len(short)} image(s) at this slice position but {n} at others: several "
            f"images per position (temporal phases or echoes) with one incomplete; send the complete series"
        )
    index = 1 if phase == "first" else n if phase == "last" else int(phase)
    if index > n:
        raise SeriesLoadError(
            f"phase {index} asked for (profile [load] phase), but the series holds {n} images per position "
            f"({len(groups)} positions): use a phase from 1 to {n}, \"first\" or \"last\""
        )
    by = ", ".join(_TEMPORAL_NAMES[i] for i in sorted(separating))
    which = {1: "the earliest", n: "the latest"}.get(index, f"number {index}")
    notes.append(
        f"{n} images at each of {len(groups)} slice positions, told apart by {by}: {n} phases; phase {index} of {n} "
        f"({which}, load phase = {phase!r}) analysed, the others not (set [load] phase = \"first\", \"last\", a "
        f"number or \"all\" in the profile)"
    )
    return [g[index - 1] for g in groups], n, index


# --- slice geometry -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Grid:
    dz_mm: float                   # step between z indices along the slice normal
    z_axis: np.ndarray             # patient-space step per mm along the normal: the normal plus the tilt shear
    along_mm: np.ndarray           # each sorted source slice's position along the normal
    resample_at: np.ndarray | None  # positions along the normal of a regular grid to resample onto, or None


def _stack_geometry(paths: list[Path], datasets: list[Dataset], frames: list[_Frame], normal: np.ndarray,
                    pixel_mm: float, notes: list[str]) -> _Grid:
    positions = np.stack([f.position for f in frames])
    along = (positions - positions[0]) @ normal
    steps = np.diff(along)

    # sideways movement: zero, or proportional to the distance along the normal (gantry tilt: a sheared stack)
    off = (positions - positions[0]) - along[:, None] * normal[None, :]
    shear = (off.T @ along) / float(along @ along)
    residual = np.linalg.norm(off - along[:, None] * shear[None, :], axis=1)
    worst = int(np.argmax(residual))
    if residual[worst] > max(0.05, 0.1 * pixel_mm):
        raise SeriesLoadError(
            f"{_describe(paths, frames[worst])}: ImagePositionPatient lies {residual[worst]:.3f} mm across the slice "
            "plane from where the other slices put it: the slices do not form one stack (moved table, several "
            "stacks?); send a series of parallel slices on one line"
        )
    z_axis = normal + shear
    sideways_mm = float(np.linalg.norm(shear) * abs(along[-1]))
    if sideways_mm > max(_SPACING_ABS_TOL_MM, 0.05 * pixel_mm):
        header_tilt = datasets[frames[0].file_index].get("GantryDetectorTilt")
        notes.append(
            f"gantry tilt: the slices step {np.degrees(np.arctan(np.linalg.norm(shear))):.1f} degrees off their "
            f"normal (GantryDetectorTilt {header_tilt if header_tilt is not None else 'absent'}); the slices are kept "
            f"as acquired on a sheared grid ({sideways_mm:.1f} mm sideways over the stack), so every voxel keeps its "
            "DICOM position and volumes are exact"
        )

    dz_mm = float(np.median(steps))
    tol_mm = max(_SPACING_ABS_TOL_MM, _SPACING_REL_TOL * dz_mm)
    uneven = np.flatnonzero(np.abs(steps - dz_mm) > tol_mm)
    if not uneven.size:
        return _Grid(dz_mm, z_axis, along, None)

    ratio = steps[uneven] / dz_mm
    if np.all(np.abs(ratio - np.rint(ratio)) <= 0.05) and np.all(np.rint(ratio) >= 2):
        _raise_gap(paths, frames, steps, dz_mm, int(uneven[0]))

    # small scanner irregularities (a whole-body PET's 3.19...3.29 mm steps) stay on one regular grid when no slice
    # then lies more than a fraction of a slice from its true position
    mean_mm = float(along[-1]) / (len(frames) - 1)
    drift_mm = float(np.max(np.abs(along - mean_mm * np.arange(len(frames)))))
    if np.all(np.abs(steps - mean_mm) <= _IRREGULAR_REL_TOL * mean_mm) and drift_mm <= _DRIFT_REL_TOL * mean_mm:
        notes.append(
            f"slice spacing varies from {steps.min():.3f} to {steps.max():.3f} mm ({uneven.size} irregular step(s)); "
            f"the volume uses the mean {mean_mm:.4f} mm, every slice within {drift_mm:.3f} mm of its DICOM position"
        )
        return _Grid(mean_mm, z_axis, along, None)

    # mixed spacing (e.g. thin slices through the skull base, thick ones above): resample onto the finest regular
    # step that the series repeats
    repeated = [st for st in steps if np.sum(np.abs(steps - st) <= max(tol_mm, _SPACING_REL_TOL * st)) >= 2]
    target = float(min(repeated)) if repeated else dz_mm
    if target <= _SPACING_ABS_TOL_MM or float(steps.max()) > _MAX_RESAMPLED_STEP * target:
        _raise_gap(paths, frames, steps, target, int(np.argmax(steps)))
    count = int(np.floor(float(along[-1]) / target + 1e-6)) + 1
    thickness = sorted({round(_number_or_zero(datasets[f.file_index].get("SliceThickness")), 3) for f in frames})
    notes.append(
        f"slice spacing varies from {steps.min():.2f} to {steps.max():.2f} mm (SliceThickness "
        f"{', '.join(f'{t:g}' for t in thickness)} mm): resampled by linear interpolation between neighbouring slices "
        f"onto a regular {target:.3f} mm grid ({count} slices from {len(frames)}); measurements use that grid, the "
        "SEG is mapped back onto the source slices"
    )
    return _Grid(target, z_axis, along, float(along[0]) + target * np.arange(count))


def _raise_gap(paths: list[Path], frames: list[_Frame], steps: np.ndarray, dz_mm: float, k: int) -> None:
    a, b = frames[k], frames[k + 1]
    kind = "a gap" if steps[k] > dz_mm else "uneven spacing"
    missing = f", about {round(steps[k] / dz_mm) - 1} slice(s) missing" if steps[k] > 1.5 * dz_mm else ""
    raise SeriesLoadError(
        f"{_describe(paths, b)}: ImagePositionPatient: {kind} between z index {k} ({_describe(paths, a)}, "
        f"{a.position.tolist()}) and z index {k + 1}: {steps[k]:.3f} mm where the slices are {dz_mm:.3f} mm "
        f"apart{missing}; send the complete series"
    )


def _resample_along_stack(array: np.ndarray, along: np.ndarray,
                          targets: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Linear interpolation of slices at ``along`` (increasing, mm) onto ``targets``; and each target's nearest."""
    out = np.empty((len(targets),) + array.shape[1:], dtype=np.float32)
    b = np.clip(np.searchsorted(along, targets, side="right"), 1, len(along) - 1)
    a = b - 1
    w = np.clip((targets - along[a]) / (along[b] - along[a]), 0.0, 1.0)
    w[w < 1e-6], w[w > 1 - 1e-6] = 0.0, 1.0  # a target on a source slice copies it exactly
    for j in range(len(targets)):
        np.multiply(array[a[j]], np.float32(1.0 - w[j]), out=out[j])
        out[j] += np.float32(w[j]) * array[b[j]]
    nearest = [int(np.argmin(np.abs(along - t))) for t in targets]
    return out, nearest


# --- pixel values -------------------------------------------------------------------------------------------------


def _fill_padding(datasets: list[Dataset], frames: list[_Frame], array: np.ndarray, modality: str,
                  notes: list[str]) -> None:
    """Voxels holding PixelPaddingValue (outside the reconstructed field of view) -> no data, never tissue.

    CT: :data:`CT_NO_DATA_HU`, one value below any real HU whatever the vendor's padding and intercept (the
    segmentation reads values below -1500 HU as outside the field of view, not air). Other modalities: the lowest real
    value of the series.
    """
    padded = np.zeros(array.shape, dtype=bool)
    values = set()
    for z, frame in enumerate(frames):
        ds = datasets[frame.file_index]
        ppv = ds.get("PixelPaddingValue")
        if ppv is None or isinstance(ppv, (bytes, bytearray)):
            continue
        limit = ds.get("PixelPaddingRangeLimit")
        lo_stored, hi_stored = (float(ppv), float(ppv)) if limit is None else sorted((float(ppv), float(limit)))
        lo = np.float32(lo_stored) * np.float32(frame.slope) + np.float32(frame.intercept)
        hi = np.float32(hi_stored) * np.float32(frame.slope) + np.float32(frame.intercept)
        lo, hi = min(lo, hi), max(lo, hi)
        padded[z] = (array[z] >= lo) & (array[z] <= hi)
        values.add(int(ppv) if limit is None else f"{int(ppv)}...{int(limit)}")
    n = int(padded.sum())
    if not n or n == padded.size:
        return
    fill = CT_NO_DATA_HU if modality == "CT" else float(array[~padded].min())
    array[padded] = np.float32(fill)
    notes.append(
        f"{n} voxels ({100.0 * n / padded.size:.1f} %) hold PixelPaddingValue "
        f"{', '.join(map(str, sorted(values, key=str)))} "
        f"(outside the reconstructed field of view): set to {fill:g}"
        f"{' HU (no data, below air)' if modality == 'CT' else ', the lowest real value'}, so they never count as "
        "tissue"
    )


def _decode(paths: list[Path], datasets: list[Dataset], frames: list[_Frame]) -> np.ndarray:
    rows, cols = int(datasets[0].Rows), int(datasets[0].Columns)
    out = np.empty((len(frames), rows, cols), dtype=np.float32)
    pixels: dict[int, np.ndarray] = {}
    for z, frame in enumerate(frames):
        if frame.file_index not in pixels:
            ds = datasets[frame.file_index]
            try:
                pixels[frame.file_index] = ds.pixel_array
            except Exception as exc:  # a missing codec or corrupt data: pydicom raises many kinds
                raise SeriesLoadError(
                    f"{paths[frame.file_index]}: PixelData cannot be decoded (TransferSyntaxUID "
                    f"{ds.file_meta.get('TransferSyntaxUID', '?')}): {type(exc).__name__}: {exc}"
                ) from exc
        data = pixels[frame.file_index]
        plane = data if frame.frame_number is None else (data[frame.frame_number - 1] if data.ndim == 3 else data)
        if plane.shape != (rows, cols):
            raise SeriesLoadError(
                f"{_describe(paths, frame)}: PixelData decodes to {plane.shape}, not Rows x Columns ({rows}, {cols})"
            )
        np.multiply(plane, np.float32(frame.slope), out=out[z], casting="unsafe")
        if frame.intercept:
            out[z] += np.float32(frame.intercept)
    return out


def _unit(ds: Dataset, modality: str) -> str:
    if modality == "CT":
        return "HU"
    if modality == "PT":
        units = str(ds.get("Units", "") or "").strip().upper()
        if units in _PET_SUV_UNITS:
            return _PET_SUV_UNITS[units]
        return _PET_OTHER_UNITS.get(units, "")
    return ""
