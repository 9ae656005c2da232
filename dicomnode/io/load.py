"""DICOM files -> one :class:`~dicomnode.analysis.volume.Volume`: the one way into the analysis.

:func:`load_series` reads the files of one series, single-frame slices or (enhanced / legacy converted) multi-frame
images, decodes compressed pixel data through pydicom's plugins (pylibjpeg), sorts the frames along the slice normal,
applies the modality rescale and returns float32 voxels (z, y, x) with the geometry of the Volume conventions.
Anything that cannot become one regular volume raises :class:`~dicomnode.errors.SeriesLoadError` whose message names
the file, the DICOM attribute and what to do.

:func:`group_series` sorts a pile of files into series for batch runs, :func:`read_header` reads one header.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from dicomnode.analysis.volume import Volume
from dicomnode.errors import SeriesLoadError
from dicomnode.io.suv import SuvConversion, suvbw_conversion

__all__ = ["LoadedSeries", "group_series", "load_series", "read_header"]

log = logging.getLogger(__name__)

#: Relative tolerance for "the same" orientation cosine, pixel spacing or slice distance.
_ORIENTATION_TOL = 1e-4
#: Slice distances may differ from the median by this fraction (and at least by _SPACING_ABS_TOL_MM).
_SPACING_REL_TOL = 0.01
_SPACING_ABS_TOL_MM = 0.01
#: Irregular steps are accepted on a regular grid up to this fraction of the mean step, when no slice drifts more than
#: _DRIFT_REL_TOL of a step from its DICOM position.
_IRREGULAR_REL_TOL = 0.05
_DRIFT_REL_TOL = 0.1

_UID_FIELDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
_PIXEL_FIELDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_GREYSCALE = ("MONOCHROME1", "MONOCHROME2")

#: PET Units (0054,1001) that already mean a standardized uptake value (GML: g/ml, i.e. SUV body weight).
_PET_SUV_UNITS = {"GML": "SUV", "SUV": "SUV", "SUVBW": "SUV"}
#: Other PET units we pass on, spelled in UCUM.
_PET_OTHER_UNITS = {"BQML": "Bq/mL", "CNTS": "{counts}", "PCNT": "%"}


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


def load_series(paths: Sequence[Path]) -> LoadedSeries:
    """Load the files of one series into a volume.

    Frames are sorted by their position along the slice normal (ImageOrientationPatient row x column cosines, dotted
    with ImagePositionPatient), not by InstanceNumber. Stored values are rescaled with RescaleSlope/Intercept (per
    frame, also from the Pixel Value Transformation functional group of multi-frame images). PET values are kept as
    they are: the unit is "SUV" when the series' Units (0054,1001) say GML (g/ml), as in series converted to SUV.

    Parameters
    ----------
    paths : sequence of Path
        The files of one series: single-frame images, or one or more multi-frame images with per-frame functional
        groups (Plane Position, Plane Orientation, Pixel Measures). Compressed transfer syntaxes are decoded by
        pydicom's pixel data plugins.

    Returns
    -------
    LoadedSeries
        The volume, float32 (Z, Y, X), unit "HU" for CT, "SUV" for PET in SUV, "" when arbitrary (MR), with
        ``spacing_mm`` (dz, dy, dx) where dz is the distance between consecutive sorted slice positions; plus the
        source headers and the (SOP Instance UID, frame number) of each z index.

    Raises
    ------
    SeriesLoadError
        The message names the file and the attribute: no files or a single slice; empty or invalid UIDs; files of
        more than one series; no pixel data; a colour or unknown photometric interpretation; pixel data that cannot
        be decoded; mixed image sizes, orientations or pixel spacings; duplicate slice positions, gaps or uneven
        slice spacing; slices sheared against their normal (gantry tilt).
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise SeriesLoadError("no files given: load_series needs the files of one series")

    datasets = [_read(p, stop_before_pixels=False) for p in paths]
    for path, ds in zip(paths, datasets):
        _check_uids(path, ds)
    _check_one_series(paths, datasets)
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

    direction, normal = _check_orientation(paths, frames)
    pixel_spacing = _check_pixel_spacing(paths, frames)
    order = _sort_along_normal(paths, frames, normal)
    frames = [frames[i] for i in order]
    notes: list[str] = []
    dz_mm = _check_slice_spacing(paths, frames, normal, notes)

    array = _decode(paths, datasets, frames)

    first = datasets[frames[0].file_index]
    modality = str(first.get("Modality", "") or "")
    unit = _unit(first, modality)
    suv = None
    if modality == "PT" and unit == "Bq/mL":
        suv = suvbw_conversion([datasets[f.file_index] for f in frames])
        notes.append(suv.note)
        if suv.factors is not None:
            array *= np.asarray(suv.factors, dtype=np.float32)[:, None, None]
            unit = "SUV"
    volume = Volume(
        array=array,
        spacing_mm=(dz_mm, float(pixel_spacing[0]), float(pixel_spacing[1])),
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
    frame_refs = tuple((str(datasets[f.file_index].SOPInstanceUID), f.frame_number) for f in frames)

    loaded = LoadedSeries(
        volume=volume,
        headers=headers,
        frames=frame_refs,
        study_uid=str(first.StudyInstanceUID),
        series_uid=str(first.SeriesInstanceUID),
        modality=modality,
        sop_class_uid=str(first.SOPClassUID),
        notes=tuple(notes),
        suv=suv,
    )
    log.debug(
        "series loaded",
        extra={"series_uid": loaded.series_uid, "files": len(paths), "shape": volume.shape, "unit": volume.unit},
    )
    return loaded


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
        ))
    return out


def _describe(paths: list[Path], frame: _Frame) -> str:
    path = paths[frame.file_index]
    return f"{path}" if frame.frame_number is None else f"{path} frame {frame.frame_number}"


def _check_orientation(paths: list[Path], frames: list[_Frame]) -> tuple[np.ndarray, np.ndarray]:
    iop = frames[0].orientation
    row, col = iop[:3], iop[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or abs(row @ col) > 1e-3:
        raise SeriesLoadError(
            f"{_describe(paths, frames[0])}: ImageOrientationPatient {iop.tolist()} is not two orthogonal unit vectors"
        )
    for frame in frames[1:]:
        if not np.allclose(frame.orientation, iop, atol=_ORIENTATION_TOL, rtol=0):
            raise SeriesLoadError(
                f"{_describe(paths, frame)}: ImageOrientationPatient {frame.orientation.tolist()} differs from "
                f"{iop.tolist()} in {_describe(paths, frames[0])}: the series mixes orientations (e.g. a localizer "
                "or a multi-plane series); send one stack"
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
            f"{_describe(paths, a)} ({sorted_d[same[0]]:.3f} mm along the normal): two images at one position "
            "(duplicates, several phases or echoes?); send one image per position"
        )
    return order


def _check_slice_spacing(paths: list[Path], frames: list[_Frame], normal: np.ndarray, notes: list[str]) -> float:
    positions = np.stack([f.position for f in frames])
    steps = np.diff(positions, axis=0)
    along = steps @ normal
    dz_mm = float(np.median(along))
    tol_mm = max(_SPACING_ABS_TOL_MM, _SPACING_REL_TOL * dz_mm)
    uneven = np.flatnonzero(np.abs(along - dz_mm) > tol_mm)
    if uneven.size:
        # small scanner irregularities (a whole-body PET's 3.19...3.29 mm steps) are kept on one regular grid when
        # no slice then lies more than a fraction of a slice from its true position
        mean_mm = float((positions[-1] - positions[0]) @ normal) / (len(frames) - 1)
        drift_mm = float(np.max(np.abs((positions - positions[0]) @ normal - mean_mm * np.arange(len(frames)))))
        if np.all(np.abs(along - mean_mm) <= _IRREGULAR_REL_TOL * mean_mm) and drift_mm <= _DRIFT_REL_TOL * mean_mm:
            notes.append(
                f"slice spacing varies from {along.min():.3f} to {along.max():.3f} mm ({uneven.size} irregular "
                f"step(s)); the volume uses the mean {mean_mm:.4f} mm, every slice within {drift_mm:.3f} mm of its "
                "DICOM position"
            )
            dz_mm = mean_mm
            uneven = np.array([], dtype=int)
    for k in uneven:
        a, b = frames[k], frames[k + 1]
        kind = "a gap" if along[k] > dz_mm else "uneven spacing"
        missing = f", about {round(along[k] / dz_mm) - 1} slice(s) missing" if along[k] > 1.5 * dz_mm else ""
        raise SeriesLoadError(
            f"{_describe(paths, b)}: ImagePositionPatient: {kind} between z index {k} ({_describe(paths, a)}, "
            f"{a.position.tolist()}) and z index {k + 1}: {along[k]:.3f} mm where the slices are {dz_mm:.3f} mm "
            f"apart{missing}; send the complete series"
        )
    sideways = np.linalg.norm(steps - along[:, None] * normal[None, :], axis=1)
    worst = int(np.argmax(sideways))
    if sideways[worst] > max(_SPACING_ABS_TOL_MM, 0.01 * abs(dz_mm)):
        raise SeriesLoadError(
            f"{_describe(paths, frames[worst + 1])}: ImagePositionPatient moves {sideways[worst]:.3f} mm across the "
            "slice plane from the previous slice: the stack is sheared (gantry tilt?) and is not a regular grid; "
            "reconstruct it without tilt"
        )
    return dz_mm


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
