"""Volumes for training and evaluation: a series folder or a NIfTI file, pixels only (no identities kept).

:func:`load_volume` loads a DICOM series folder with :func:`dicomnode.io.load.load_series` (a folder whose instances
have empty UIDs, de-identification damage, from a repaired temporary copy) or a NIfTI-1 file (:func:`read_nifti`).
"""

from __future__ import annotations

import gzip
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np

from dicomnode.analysis.volume import Volume
from dicomnode.errors import SeriesLoadError

__all__ = ["load_volume", "read_nifti"]


def read_nifti(path: Path | str) -> Volume:
    """A NIfTI-1 file (``.nii`` or ``.nii.gz``, single-volume) as a Volume in DICOM patient coordinates (LPS).

    Uses the sform when set, else the qform's pixdim with an axis-aligned RAS orientation. Values are scaled by
    scl_slope/scl_inter. Values whose minimum is below -500 are taken as CT in HU.
    """
    path = Path(path)
    raw = gzip.open(path, "rb").read() if path.name.endswith(".gz") else path.read_bytes()
    if len(raw) < 352:
        raise SeriesLoadError(f"{path}: too short for a NIfTI-1 header")
    endian = "<" if struct.unpack("<i", raw[:4])[0] == 348 else ">"
    if struct.unpack(endian + "i", raw[:4])[0] != 348:
        raise SeriesLoadError(f"{path}: not a NIfTI-1 file (sizeof_hdr is not 348)")
    dim = struct.unpack(endian + "8h", raw[40:56])
    datatype = struct.unpack(endian + "h", raw[70:72])[0]
    pixdim = struct.unpack(endian + "8f", raw[76:108])
    vox_offset = int(struct.unpack(endian + "f", raw[108:112])[0])
    slope, inter = struct.unpack(endian + "ff", raw[112:120])
    sform = struct.unpack(endian + "h", raw[254:256])[0]
    srow = np.array(struct.unpack(endian + "12f", raw[280:328]), dtype=float).reshape(3, 4)
    dtypes = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4"}
    if datatype not in dtypes:
        raise SeriesLoadError(f"{path}: NIfTI datatype {datatype} is not supported")
    nd = dim[0]
    if nd < 3 or any(d > 1 for d in dim[4:1 + nd]):
        raise SeriesLoadError(f"{path}: a 3-D volume is needed, got dim {dim[1:1 + nd]}")
    shape = dim[1:4]
    a = np.frombuffer(raw, dtype=endian + dtypes[datatype], count=int(np.prod(shape)), offset=vox_offset)
    a = a.reshape(shape, order="F").astype(np.float32)
    if slope not in (0.0, 1.0) or inter != 0.0:
        a = a * (slope or 1.0) + inter
    if sform > 0:
        aff = srow
    else:
        aff = np.concatenate([np.diag(pixdim[1:4]), np.zeros((3, 1))], axis=1)
    spacing_xyz = np.linalg.norm(aff[:, :3], axis=0)
    ras_dirs = aff[:, :3] / spacing_xyz
    lps = np.diag([-1.0, -1.0, 1.0])
    direction = lps @ ras_dirs
    origin = lps @ aff[:, 3]
    arr = np.ascontiguousarray(np.transpose(a, (2, 1, 0)))  # (i, j, k) -> (z, y, x)
    is_ct = float(arr.min()) < -500
    return Volume(arr, (float(spacing_xyz[2]), float(spacing_xyz[1]), float(spacing_xyz[0])),
                  tuple(float(v) for v in origin), direction, "CT" if is_ct else "", "HU" if is_ct else "")


def _dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() not in (".md", ".txt", ".xml", ".json", ".csv")
                  and not p.name.startswith("."))


def _repaired_copy(files: list[Path], tmp: Path) -> list[Path]:
    """Copies of ``files`` whose empty SOP/Study/Series UIDs are filled (from the file meta and the folder name):
    training needs pixels, not identities, and never sends these copies anywhere."""
    import pydicom
    from pydicom.uid import generate_uid

    key = str(files[0].parent.resolve())
    study = generate_uid(entropy_srcs=[key, "study"])
    series = generate_uid(entropy_srcs=[key, "series"])
    out = []
    for i, f in enumerate(files):
        ds = pydicom.dcmread(f)
        meta = ds.file_meta
        if not str(ds.get("SOPInstanceUID", "") or "").strip():
            ds.SOPInstanceUID = meta.get("MediaStorageSOPInstanceUID") or generate_uid(entropy_srcs=[key, str(i)])
        if not str(ds.get("SOPClassUID", "") or "").strip():
            ds.SOPClassUID = meta.get("MediaStorageSOPClassUID")
        if not str(ds.get("StudyInstanceUID", "") or "").strip():
            ds.StudyInstanceUID = study
        if not str(ds.get("SeriesInstanceUID", "") or "").strip():
            ds.SeriesInstanceUID = series
        p = tmp / f"{i:05d}.dcm"
        ds.save_as(p)
        out.append(p)
    return out


def load_volume(path: Path | str) -> Volume:
    """A series folder (via :func:`dicomnode.io.load.load_series`) or a NIfTI file, as a Volume.

    A folder whose instances have empty UIDs (de-identification damage) is loaded from a repaired temporary copy:
    training uses the pixels only.
    """
    from dicomnode.io.load import load_series

    path = Path(path)
    if path.is_file() and (path.name.endswith(".nii") or path.name.endswith(".nii.gz")):
        return read_nifti(path)
    files = _dicom_files(path) if path.is_dir() else [path]
    try:
        return load_series(files).volume
    except SeriesLoadError as exc:
        if "empty or missing" not in str(exc):
            raise
    tmp = Path(tempfile.mkdtemp(prefix="dicomnode-train-"))
    try:
        return load_series(_repaired_copy(files, tmp)).volume
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
