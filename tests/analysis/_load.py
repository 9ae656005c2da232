"""A small private series loader for the analysis tests (real data).

The product's loader is ``dicomnode/io/load.py``; this one only exists so the analysis tests do not depend on it.
It sorts the slices along the slice normal by ImagePositionPatient, applies the rescale and returns a Volume.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from dicomnode.analysis.volume import Volume


def load_dir(folder: Path | str) -> tuple[Volume, list[pydicom.Dataset]]:
    """Load one series folder into a (Z, Y, X) float32 Volume; also return the sorted headers (no pixel data)."""
    paths = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix in (".dcm", ""))
    dss = []
    for p in paths:
        try:
            ds = pydicom.dcmread(p)
        except Exception:  # noqa: BLE001 - README, XML and the like
            continue
        if "PixelData" in ds:
            dss.append(ds)
    if not dss:
        raise ValueError(f"no image instances in {folder}")
    iop = np.asarray(dss[0].ImageOrientationPatient, dtype=float)
    row_dir, col_dir = iop[:3], iop[3:]  # row_dir: along increasing column index (x); col_dir: along rows (y)
    normal = np.cross(row_dir, col_dir)
    dss.sort(key=lambda d: float(np.dot(normal, np.asarray(d.ImagePositionPatient, dtype=float))))
    positions = np.array([np.dot(normal, np.asarray(d.ImagePositionPatient, dtype=float)) for d in dss])
    dz = float(np.median(np.diff(positions))) if len(dss) > 1 else float(getattr(dss[0], "SliceThickness", 1.0))
    dy, dx = (float(v) for v in dss[0].PixelSpacing)  # PixelSpacing = (row spacing, column spacing)
    arr = np.empty((len(dss), int(dss[0].Rows), int(dss[0].Columns)), dtype=np.float32)
    for k, d in enumerate(dss):
        slope = float(getattr(d, "RescaleSlope", 1.0) or 1.0)
        inter = float(getattr(d, "RescaleIntercept", 0.0) or 0.0)
        arr[k] = d.pixel_array.astype(np.float32) * slope + inter
    direction = np.stack([row_dir, col_dir, normal], axis=1)
    modality = str(dss[0].Modality)
    unit = {"CT": "HU", "PT": "SUV"}.get(modality, "")
    vol = Volume(arr, (dz, dy, dx), tuple(float(v) for v in dss[0].ImagePositionPatient), direction, modality, unit)
    for d in dss:
        del d.PixelData
    return vol, dss


def rasterise_rtstruct(rtstruct_path: Path | str, volume: Volume, roi_prefix: str = "GTV_Mass") -> np.ndarray:
    """Rasterise the closed planar contours of the first ROI whose name starts with ``roi_prefix`` onto the grid.

    Each contour is put on the slice whose centre is nearest to its points along the normal (skipped if more
    than half a slice away); its points are mapped to (row, column) and filled with ``skimage.draw.polygon``.
    """
    from skimage.draw import polygon

    rs = pydicom.dcmread(rtstruct_path)
    numbers = {r.ROINumber: r.ROIName for r in rs.StructureSetROISequence}
    mask = np.zeros(volume.shape, dtype=bool)
    for rc in rs.ROIContourSequence:
        if not str(numbers.get(rc.ReferencedROINumber, "")).startswith(roi_prefix):
            continue
        for c in getattr(rc, "ContourSequence", []):
            pts = np.asarray(c.ContourData, dtype=float).reshape(-1, 3)
            idx = volume.patient_to_index(pts)  # (N, 3) fractional (z, y, x)
            k = int(np.round(idx[:, 0].mean()))
            if not 0 <= k < volume.shape[0] or abs(idx[:, 0].mean() - k) > 0.5:
                continue
            rr, cc = polygon(idx[:, 1], idx[:, 2], shape=volume.shape[1:])
            mask[k, rr, cc] ^= True  # XOR: inner contours (holes) cut out
        break
    return mask
