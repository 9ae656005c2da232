"""Regions from anywhere: an RTSTRUCT ROI or a DICOM SEG segment as a boolean mask on a loaded series' grid.

:func:`read_region` opens the file and dispatches on its SOP class:

* **RT Structure Set**: the ROI chosen by name or number; its CLOSED_PLANAR contours are mapped from patient
  coordinates (mm) to fractional voxel indices through the series' geometry, matched to the slice whose centre is
  nearest along the slice normal (within half a slice), and filled by the even-odd rule over all contours of a slice
  together, so a contour inside another cuts a hole and overlapping contours XOR. A voxel belongs to the region when
  its centre lies inside (scanline fill, half-open at the edges: a contour of area A covers A / pixel area voxels up
  to its boundary pixels).
* **Segmentation (SEG)**: the segment chosen by number or label, read with highdicom as a volume and sampled at our
  voxel centres by nearest neighbour in patient space, so a SEG on the same grid maps voxel for voxel (whatever its
  frame order, frame subset or referencing) and one on another grid is resampled.

Errors (:class:`~dicomnode.errors.SeriesLoadError`) name the file and the DICOM field: an ROI name that is absent
(with the names present), a region that references another series or frame of reference, contours off the slices.

References
----------
DICOM PS3.3 C.8.8.6 (ROI Contour Module: CLOSED_PLANAR, contour points in patient coordinates), C.8.20 (Segmentation).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import RTStructureSetStorage, SegmentationStorage

from dicomnode.errors import SeriesLoadError
from dicomnode.io.load import LoadedSeries

__all__ = ["Region", "RegionKind", "fill_polygons", "rasterise_rtstruct", "read_region", "read_seg_segment",
           "region_names"]

log = logging.getLogger(__name__)

#: A contour's points may spread this fraction of a slice along the normal and still count as on one slice.
_PLANAR_TOL_SLICES = 0.1


class RegionKind:
    RTSTRUCT = "RTSTRUCT"
    SEG = "SEG"


@dataclass(frozen=True, eq=False)
class Region:
    """One region on a series' grid.

    Parameters
    ----------
    label : str
        ROI Name (RTSTRUCT) or Segment Label (SEG).
    number : int
        ROI Number or Segment Number.
    mask : (Z, Y, X) ndarray of bool
        The region on the grid of the series it was read for.
    kind : str
        "RTSTRUCT" or "SEG".
    dataset : pydicom.Dataset
        The RTSTRUCT or SEG header (no pixel data), for references in results.
    path : Path or None
        The file it came from.
    """

    label: str
    number: int
    mask: np.ndarray
    kind: str
    dataset: Dataset
    path: Path | None = None

    @property
    def sop_class_uid(self) -> str:
        return str(self.dataset.SOPClassUID)

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)


def read_region(path: str | Path, series: LoadedSeries, *, name: str | None = None,
                number: int | None = None) -> Region:
    """Read one region of an RTSTRUCT or SEG file onto the grid of ``series``.

    Parameters
    ----------
    path : str or Path
        An RT Structure Set or a Segmentation file.
    series : LoadedSeries
        The image series whose grid the mask is made for.
    name : str, optional
        ROI Name / Segment Label: exact, else case-insensitive, else a unique case-insensitive prefix
        ("GTV_Mass" finds "GTV_Mass_CT").
    number : int, optional
        ROI Number / Segment Number. Neither given: the file must hold exactly one region.

    Returns
    -------
    Region

    Raises
    ------
    SeriesLoadError
        The file is not DICOM or neither an RTSTRUCT nor a SEG; the region is not found (the message lists those
        present); it references another series or frame of reference; it has no voxel on this grid.
    """
    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # not DICOM, truncated: pydicom raises many kinds
        raise SeriesLoadError(f"{path}: cannot be read as DICOM ({type(exc).__name__}: {exc})") from exc
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class == RTStructureSetStorage:
        return rasterise_rtstruct(ds, series, name=name, number=number, path=path)
    if sop_class == SegmentationStorage:
        return read_seg_segment(ds, series, label=name, number=number, path=path)
    raise SeriesLoadError(f"{path}: SOPClassUID {sop_class} ({ds.get('Modality', '?')}) is neither an RT Structure "
                          "Set nor a Segmentation: give an RTSTRUCT or SEG file as the region")


def region_names(path: str | Path) -> list[tuple[int, str]]:
    """(number, name) of every ROI of an RTSTRUCT or segment of a SEG, in file order."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    if str(ds.get("SOPClassUID", "")) == SegmentationStorage:
        return [(int(s.SegmentNumber), str(s.get("SegmentLabel", ""))) for s in ds.get("SegmentSequence", [])]
    return [(int(r.ROINumber), str(r.get("ROIName", ""))) for r in ds.get("StructureSetROISequence", [])]


# --------------------------------------------------------------------------------------------------- choosing
def _choose(path: Path | None, items: list[tuple[int, str]], name: str | None, number: int | None,
            what: str, field: str) -> tuple[int, str]:
    listing = ", ".join(f"{n}: {lbl!r}" for n, lbl in items) or "none"
    where = f"{path}: " if path else ""
    if number is not None:
        hits = [it for it in items if it[0] == int(number)]
        if not hits:
            raise SeriesLoadError(f"{where}no {what} number {number} in {field}; present: {listing}")
        if name is not None and hits[0][1] != name and hits[0][1].lower() != name.lower():
            raise SeriesLoadError(f"{where}{what} number {number} is named {hits[0][1]!r}, not {name!r}; give one "
                                  f"of them (present: {listing})")
        return hits[0]
    if name is None:
        if len(items) == 1:
            return items[0]
        raise SeriesLoadError(f"{where}{len(items)} {what}s in {field}; choose one by name or number (present: "
                              f"{listing})")
    for match in (lambda s: s == name, lambda s: s.lower() == name.lower(),
                  lambda s: s.lower().startswith(name.lower())):
        hits = [it for it in items if match(it[1])]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise SeriesLoadError(f"{where}{what} name {name!r} matches several in {field}: "
                                  f"{', '.join(repr(h[1]) for h in hits)}; give the number or the full name")
    raise SeriesLoadError(f"{where}no {what} named {name!r} in {field}; present: {listing}")


def _series_frame_of_reference(series: LoadedSeries) -> str:
    return str(series.headers[0].get("FrameOfReferenceUID", "") or "")


# --------------------------------------------------------------------------------------------------- RTSTRUCT
def rasterise_rtstruct(ds: Dataset, series: LoadedSeries, *, name: str | None = None, number: int | None = None,
                       path: Path | None = None) -> Region:
    """Rasterise one ROI of an RT Structure Set onto the grid of ``series``.

    Parameters and Raises as :func:`read_region`. Contours other than CLOSED_PLANAR (POINT, OPEN_PLANAR) have no
    inside and are skipped; contours more than half a slice from every slice centre are skipped and logged.
    """
    where = f"{path}" if path else f"RTSTRUCT {ds.get('SOPInstanceUID', '?')}"
    rois = [(int(r.ROINumber), str(r.get("ROIName", ""))) for r in ds.get("StructureSetROISequence", [])]
    roi_number, roi_name = _choose(path, rois, name, number, "ROI", "StructureSetROISequence (3006,0020)")
    _check_rtstruct_references(ds, series, roi_number, where)

    volume = series.volume
    shape = volume.shape
    polygons: dict[int, list[np.ndarray]] = {}
    skipped = 0
    contours = None
    for rc in ds.get("ROIContourSequence", []):
        if int(rc.get("ReferencedROINumber", -1)) == roi_number:
            contours = rc.get("ContourSequence", [])
            break
    if contours is None:
        raise SeriesLoadError(f"{where}: ROI {roi_number} ({roi_name!r}) has no item in ROIContourSequence "
                              "(3006,0039): the structure set holds no contours for it")
    for c in contours:
        if str(c.get("ContourGeometricType", "CLOSED_PLANAR")).upper() != "CLOSED_PLANAR":
            continue
        pts = np.asarray([float(v) for v in c.ContourData], dtype=float)
        if pts.size < 9 or pts.size % 3:
            raise SeriesLoadError(f"{where}: ROI {roi_name!r}: a ContourData (3006,0050) holds {pts.size} values; a "
                                  "closed contour needs 3 or more (x, y, z) points")
        idx = volume.patient_to_index(pts.reshape(-1, 3))  # (N, 3) fractional (z, y, x)
        z = idx[:, 0]
        if np.ptp(z) > 2 * _PLANAR_TOL_SLICES + 1e-6:
            raise SeriesLoadError(f"{where}: ROI {roi_name!r}: a contour spans {np.ptp(z):.2f} slices along the "
                                  "normal: it is not parallel to the image planes (another orientation?); contours "
                                  "must lie in the slices of the series")
        k = int(np.round(z.mean()))
        if not 0 <= k < shape[0] or abs(z.mean() - k) > 0.5 - 1e-6 + _PLANAR_TOL_SLICES:
            skipped += 1
            continue
        polygons.setdefault(k, []).append(idx[:, 1:])
    if skipped:
        log.info("contours outside the slices skipped", extra={"rtstruct": str(ds.get("SOPInstanceUID", "")),
                                                                "roi_number": roi_number, "skipped": skipped})
    mask = np.zeros(shape, dtype=bool)
    for k, polys in polygons.items():
        mask[k] = fill_polygons(polys, shape[1:])
    if not mask.any():
        raise SeriesLoadError(f"{where}: ROI {roi_name!r} (number {roi_number}) covers no voxel centre of series "
                              f"{series.series_uid} ({len(contours)} contours, {skipped} off the slices)")
    header = ds.copy()
    return Region(roi_name, roi_number, mask, RegionKind.RTSTRUCT, header, path)


def _check_rtstruct_references(ds: Dataset, series: LoadedSeries, roi_number: int, where: str) -> None:
    series_for = _series_frame_of_reference(series)
    roi_for = ""
    for r in ds.get("StructureSetROISequence", []):
        if int(r.ROINumber) == roi_number:
            roi_for = str(r.get("ReferencedFrameOfReferenceUID", "") or "")
    referenced_series = set()
    for rf in ds.get("ReferencedFrameOfReferenceSequence", []):
        for st in rf.get("RTReferencedStudySequence", []):
            for se in st.get("RTReferencedSeriesSequence", []):
                referenced_series.add(str(se.SeriesInstanceUID))
    if referenced_series and series.series_uid not in referenced_series:
        raise SeriesLoadError(
            f"{where}: ReferencedFrameOfReferenceSequence/RTReferencedSeriesSequence names series "
            f"{', '.join(sorted(referenced_series))}, not the image series {series.series_uid}: the contours were "
            "drawn on another series; give the images they were drawn on")
    if roi_for and series_for and roi_for != series_for:
        raise SeriesLoadError(
            f"{where}: StructureSetROISequence/ReferencedFrameOfReferenceUID {roi_for} differs from the image "
            f"series' FrameOfReferenceUID {series_for}: the contours are in another patient coordinate system")


def fill_polygons(polygons: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Even-odd fill of closed polygons on a pixel grid: a pixel is inside when its centre is.

    All polygons are filled together by the even-odd rule, so a polygon inside another cuts a hole and two that
    overlap XOR. Scanline with half-open rules (an edge counts on rows ``ymin <= y < ymax``; a span covers columns
    ``x_in <= x < x_out``), so two polygons sharing an edge never both claim a pixel.

    Parameters
    ----------
    polygons : sequence of (N, 2) ndarray
        Vertices as fractional (row, column) pixel-centre coordinates; closed implicitly (last to first).
    shape : (int, int)
        (rows, columns) of the grid.

    Returns
    -------
    (rows, columns) ndarray of bool
    """
    rows, cols = shape
    ys, xs = [], []
    for poly in polygons:
        p = np.asarray(poly, dtype=float)
        if len(p) < 3:
            continue
        y0, x0 = p[:, 0], p[:, 1]
        y1, x1 = np.roll(y0, -1), np.roll(x0, -1)
        keep = y0 != y1
        y0, x0, y1, x1 = y0[keep], x0[keep], y1[keep], x1[keep]
        lo, hi = np.minimum(y0, y1), np.maximum(y0, y1)
        first = np.clip(np.ceil(lo), 0, rows).astype(np.int64)  # rows j with lo <= j < hi
        stop = np.clip(np.ceil(hi), 0, rows).astype(np.int64)
        n = np.maximum(stop - first, 0)
        if not n.any():
            continue
        edge = np.repeat(np.arange(len(n)), n)
        j = first[edge] + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))
        t = (j - y0[edge]) / (y1[edge] - y0[edge])
        ys.append(j)
        xs.append(x0[edge] + t * (x1[edge] - x0[edge]))
    out = np.zeros(shape, dtype=bool)
    if not ys:
        return out
    y = np.concatenate(ys)
    x = np.concatenate(xs)
    order = np.lexsort((x, y))
    y, x = y[order], x[order]
    # Every closed polygon crosses a row an even number of times: consecutive pairs are in/out.
    y_in, x_in, x_out = y[0::2], x[0::2], x[1::2]
    a = np.clip(np.ceil(x_in), 0, cols).astype(np.int64)
    b = np.clip(np.ceil(x_out), 0, cols).astype(np.int64)
    diff = np.zeros((rows, cols + 1), dtype=np.int32)
    np.add.at(diff, (y_in, a), 1)
    np.add.at(diff, (y_in, b), -1)
    return np.cumsum(diff[:, :cols], axis=1) > 0


# --------------------------------------------------------------------------------------------------- SEG
def read_seg_segment(ds: Dataset, series: LoadedSeries, *, label: str | None = None, number: int | None = None,
                     path: Path | None = None) -> Region:
    """One segment of a DICOM SEG on the grid of ``series``.

    The segment is read as a volume with highdicom (binary, or fractional thresholded at 0.5) and sampled at each
    voxel centre of the series by nearest neighbour in patient coordinates: exact for a SEG on the same grid,
    a resampling otherwise.

    Parameters and Raises as :func:`read_region` (``label`` is the Segment Label).
    """
    import highdicom as hd

    where = f"{path}" if path else f"SEG {ds.get('SOPInstanceUID', '?')}"
    segments = [(int(s.SegmentNumber), str(s.get("SegmentLabel", ""))) for s in ds.get("SegmentSequence", [])]
    seg_number, seg_label = _choose(path, segments, label, number, "segment", "SegmentSequence (0062,0002)")
    seg_for = str(ds.get("FrameOfReferenceUID", "") or "")
    series_for = _series_frame_of_reference(series)
    if seg_for and series_for and seg_for != series_for:
        raise SeriesLoadError(f"{where}: FrameOfReferenceUID {seg_for} differs from the image series' "
                              f"{series_for}: the segmentation is in another patient coordinate system")
    try:
        seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
        vol = seg.get_volume(segment_numbers=[seg_number], combine_segments=False, skip_overlap_checks=True)
    except Exception as exc:  # highdicom refuses irregular frame geometry (and some dimension indexes) variously
        log.debug("highdicom cannot read the SEG as a volume; placing its frames one by one",
                  extra={"error": f"{type(exc).__name__}: {exc}"})
        mask = _place_seg_frames(ds, seg_number, series, where)
    else:
        data = np.asarray(vol.array)
        if data.ndim == 4:
            data = data[..., 0]
        data = data >= 0.5 if data.dtype.kind == "f" else data.astype(bool)
        mask = _sample_nearest(data, np.asarray(vol.affine, dtype=float), series)
    if not mask.any():
        raise SeriesLoadError(f"{where}: segment {seg_number} ({seg_label!r}) covers no voxel of series "
                              f"{series.series_uid}: it lies outside the images")
    header = ds.copy()
    for field in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if field in header:
            del header[field]
    return Region(seg_label, seg_number, mask, RegionKind.SEG, header, path)


def _place_seg_frames(ds: Dataset, seg_number: int, series: LoadedSeries, where: str) -> np.ndarray:
    """Each SEG frame of the segment placed by its own plane position/orientation; pixels -> our nearest voxel.

    The fallback for SEGs whose dimension index highdicom cannot use (e.g. a fractional SEG indexed by stack
    position only); fractional values count from half the MaximumFractionalValue.
    """
    def functional(item: Dataset | None, sequence: str, keyword: str) -> object:
        for group in (item, shared):
            if group is not None and sequence in group and group[sequence].value:
                inner = group[sequence].value[0]
                if keyword in inner:
                    return inner[keyword].value
        return None

    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence", []) or [])
    try:
        pixels = np.asarray(ds.pixel_array)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on bad pixel data
        raise SeriesLoadError(f"{where}: the SEG's PixelData cannot be decoded: {type(exc).__name__}: {exc}") from exc
    if pixels.ndim == 2:
        pixels = pixels[None]
    if len(per_frame) != pixels.shape[0]:
        raise SeriesLoadError(f"{where}: PerFrameFunctionalGroupsSequence has {len(per_frame)} items for "
                              f"{pixels.shape[0]} frames")
    fractional = str(ds.get("SegmentationType", "")).upper() == "FRACTIONAL"
    threshold = 0.5 * float(ds.get("MaximumFractionalValue", 255) or 255) if fractional else 0.5
    out = np.zeros(series.volume.shape, dtype=bool)
    for k, item in enumerate(per_frame):
        if int(functional(item, "SegmentIdentificationSequence", "ReferencedSegmentNumber") or 1) != seg_number:
            continue
        rc = np.argwhere(pixels[k] >= threshold)
        if not rc.size:
            continue
        try:
            ipp = np.asarray([float(v) for v in functional(item, "PlanePositionSequence", "ImagePositionPatient")])
            iop = np.asarray([float(v) for v in functional(item, "PlaneOrientationSequence",
                                                           "ImageOrientationPatient")])
            dy, dx = (float(v) for v in functional(item, "PixelMeasuresSequence", "PixelSpacing"))
        except (TypeError, ValueError) as exc:
            raise SeriesLoadError(f"{where}: frame {k + 1} has no usable PlanePosition/PlaneOrientation/"
                                  f"PixelMeasures functional group") from exc
        patient = ipp + np.outer(rc[:, 1] * dx, iop[:3]) + np.outer(rc[:, 0] * dy, iop[3:])
        zyx = np.rint(series.volume.patient_to_index(patient)).astype(np.int64)
        inside = np.all((zyx >= 0) & (zyx < np.array(out.shape)), axis=1)
        out[tuple(zyx[inside].T)] = True
    return out


def _sample_nearest(data: np.ndarray, affine: np.ndarray, series: LoadedSeries) -> np.ndarray:
    """Nearest-neighbour samples of a (I, J, K) array with a 4x4 index->patient affine at our voxel centres."""
    volume = series.volume
    shape = volume.shape
    inverse = np.linalg.inv(affine)
    out = np.zeros(shape, dtype=bool)
    nz = np.argwhere(data)
    if nz.size == 0:
        return out
    # Only our voxels inside the bounding box of the source's foreground (plus one voxel) can be in the region.
    lo, hi = nz.min(axis=0) - 1, nz.max(axis=0) + 1
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])], float)
    patient = corners @ affine[:3, :3].T + affine[:3, 3]
    ours = volume.patient_to_index(patient)
    first = np.clip(np.floor(ours.min(axis=0)).astype(int), 0, np.array(shape) - 1)
    last = np.clip(np.ceil(ours.max(axis=0)).astype(int), 0, np.array(shape) - 1)
    grids = np.meshgrid(*[np.arange(f, l + 1) for f, l in zip(first, last)], indexing="ij")
    zyx = np.stack([g.ravel() for g in grids], axis=1)
    src = np.rint(volume.index_to_patient(zyx) @ inverse[:3, :3].T + inverse[:3, 3]).astype(np.int64)
    inside = np.all((src >= 0) & (src < np.array(data.shape)), axis=1)
    hit = np.zeros(len(zyx), dtype=bool)
    hit[inside] = data[tuple(src[inside].T)]
    out[tuple(zyx[hit].T)] = True
    return out
