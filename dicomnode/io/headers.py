"""Header-only reads of stored instances: routing tags and the kind of object."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.dataelem import DataElement
from pydicom.uid import UID

# Non-image storage classes whose names still contain "Image" and which we never analyse.
_NEVER_ANALYSE = {
    "1.2.840.10008.5.1.4.1.1.481.1",  # RT Image Storage
}


def read_tags(path: Path | str) -> dict[str, str]:
    """Top-level, non-sequence, non-binary elements of a stored file's header as keyword -> string.

    Multi-valued elements are joined with a backslash, as DICOM writes them. Used for routing rules only; the
    values are never logged.
    """
    ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    out: dict[str, str] = {}
    for elem in ds:
        if not isinstance(elem, DataElement) or not elem.keyword or elem.VR in ("SQ", "OB", "OW", "OF", "OD", "OL",
                                                                                  "OV", "UN"):
            continue
        v = elem.value
        if v is None:
            out[elem.keyword] = ""
        elif isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
            out[elem.keyword] = "\\".join(str(x) for x in v)
        else:
            out[elem.keyword] = str(v)
    if "SOPClassUID" not in out and "MediaStorageSOPClassUID" in ds.file_meta:
        out["SOPClassUID"] = str(ds.file_meta.MediaStorageSOPClassUID)
    return out


REGION_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT Structure Set Storage
    "1.2.840.10008.5.1.4.1.1.66.4",   # Segmentation Storage
}


def is_region_storage(sop_class_uid: str) -> bool:
    """True for objects that define regions on images (RT Structure Set, Segmentation)."""
    return sop_class_uid in REGION_SOP_CLASSES


def referenced_series_uid(path: Path | str) -> str | None:
    """The image series an RTSTRUCT or SEG refers to, from its references; None when it names none."""
    ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    for item in ds.get("ReferencedSeriesSequence", []):  # SEG (and many others)
        if item.get("SeriesInstanceUID"):
            return str(item.SeriesInstanceUID)
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):  # RTSTRUCT
        for study in frame.get("RTReferencedStudySequence", []):
            for series in study.get("RTReferencedSeriesSequence", []):
                if series.get("SeriesInstanceUID"):
                    return str(series.SeriesInstanceUID)
    return None


def is_dicom_file(path: Path | str) -> bool:
    """True when the file has the DICOM Part 10 preamble ("DICM" at byte 128)."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def is_image_storage(sop_class_uid: str) -> bool:
    """True for storage SOP classes that hold images the chain can analyse (CT, MR, PET, SC, enhanced...).

    SEG, SR, RT objects, presentation states, key object selections, raw data, waveforms and encapsulated
    documents are not images.
    """
    if sop_class_uid in _NEVER_ANALYSE:
        return False
    name = UID(sop_class_uid).name
    return "Image Storage" in name and "Segmentation" not in name and "Presentation" not in name
