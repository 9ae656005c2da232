"""Truth of a case on the series' grid: lesions from RTSTRUCT ROIs, SEG segments and Pascal VOC boxes.

RTSTRUCT and SEG regions are read by :func:`dicomnode.io.roi.read_region` (the one way regions come in). Pascal VOC
files hold one slice's boxes each and are named by that slice's SOP Instance UID; boxes are filled (inclusive pixel
bounds, ``xmin`` = column) and boxes connected from slice to slice are one lesion.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from dicomnode.errors import SeriesLoadError
from dicomnode.evaluation.cases import LesionSource, TruthKind
from dicomnode.io.load import LoadedSeries
from dicomnode.io.roi import read_region

__all__ = ["Lesion", "TruthError", "load_lesions", "read_voc_boxes"]


class TruthError(SeriesLoadError):
    """A truth file could not be put on the series' grid; names the file and what to change."""


@dataclass(frozen=True, eq=False)
class Lesion:
    """One truth lesion: its name, its mask on the series' grid and whether it is a drawn contour (not a box)."""

    name: str
    mask: np.ndarray = field(repr=False)
    contour: bool

    @property
    def voxels(self) -> int:
        return int(self.mask.sum())


def load_lesions(sources: tuple[LesionSource, ...], series: LoadedSeries) -> list[Lesion]:
    """Every lesion of a case, on the grid of ``series``. Raises :class:`TruthError` naming the file."""
    out: list[Lesion] = []
    for src in sources:
        if src.kind is TruthKind.RTSTRUCT:
            for roi in src.rois:
                out.append(Lesion(roi, _read(src.path, series, name=roi).mask, contour=True))
        elif src.kind is TruthKind.SEG:
            for number in src.segments:
                region = _read(src.path, series, number=number)
                out.append(Lesion(f"{region.label or 'segment'} #{number}", region.mask, contour=True))
        else:
            boxes = read_voc_boxes(src.path, series)
            labels, n = ndi.label(boxes, structure=np.ones((3, 3, 3), dtype=bool))
            for k in range(1, n + 1):
                out.append(Lesion(f"box lesion {k}", labels == k, contour=False))
    return out


def _read(path: Path, series: LoadedSeries, **which: object):  # noqa: ANN202 - io.roi.Region
    try:
        return read_region(path, series, **which)
    except SeriesLoadError as e:
        raise TruthError(f"truth {path}: {e}") from None


def read_voc_boxes(folder: Path, series: LoadedSeries) -> np.ndarray:
    """The union of the VOC boxes in ``folder`` as a (Z, Y, X) bool mask on the grid of ``series``.

    Raises
    ------
    TruthError
        When a file is not VOC XML, names no slice of the series, or a box lies outside the image.
    """
    shape = series.volume.shape
    index = {sop: z for z, (sop, frame) in enumerate(series.frames) if frame is None}
    mask = np.zeros(shape, dtype=bool)
    files = sorted(folder.glob("*.xml"))
    if not files:
        raise TruthError(f"truth {folder}: no *.xml files; give the folder of the Pascal VOC annotations")
    for f in files:
        z = index.get(f.stem)
        if z is None:
            raise TruthError(f"truth {f}: {f.stem} is not the SOP Instance UID of a slice of this series; name each "
                             "file <SOPInstanceUID>.xml of the annotated slice")
        try:
            root = ET.parse(f).getroot()
        except ET.ParseError as e:
            raise TruthError(f"truth {f}: not XML ({e})") from None
        for obj in root.iter("object"):
            box = obj.find("bndbox")
            try:
                x0, y0, x1, y1 = (int(float(box.findtext(k))) for k in ("xmin", "ymin", "xmax", "ymax"))
            except (AttributeError, TypeError, ValueError):
                raise TruthError(f"truth {f}: an <object> without a numeric <bndbox> xmin/ymin/xmax/ymax") from None
            if not (0 <= x0 <= x1 < shape[2] and 0 <= y0 <= y1 < shape[1]):
                raise TruthError(f"truth {f}: box ({x0}, {y0}, {x1}, {y1}) lies outside the {shape[2]} x {shape[1]} "
                                 "image; xmin/xmax are columns, ymin/ymax rows, inclusive")
            mask[z, y0:y1 + 1, x0:x1 + 1] = True
    return mask
