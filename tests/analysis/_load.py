"""Real-data helpers for the analysis tests: load a series folder (with the product's loader) and rasterise an
RTSTRUCT contour onto its grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from dicomnode.analysis.volume import Volume
from dicomnode.io.load import load_series


def load_dir(folder: Path | str) -> tuple[Volume, tuple[str, ...]]:
    """Load one series folder with the product's loader; return the volume and the SOP Instance UID of each z."""
    loaded = load_series(sorted(p for p in Path(folder).iterdir() if p.suffix == ".dcm"))
    return loaded.volume, tuple(uid for uid, _ in loaded.frames)


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
