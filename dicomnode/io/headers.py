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


MAX_TAG_VALUE_BYTES = 1024        # a routing value longer than this is not read (it is no routing value)
MAX_HEADER_ELEMENTS = 100_000     # top-level elements walked before giving up


class HeaderReadError(ValueError):
    """A stored file's header cannot be read for routing (it broke a bound); the series is routed without it."""


#: The header values the analysis chain reads (scene, diffusion guard, SUV notes): never logged.
ANALYSIS_KEYWORDS = ("BodyPartExamined", "SeriesDescription", "StudyDescription", "ProtocolName", "Modality",
                     "Units", "ImageType")


def header_strings(ds: pydicom.Dataset) -> dict[str, str]:
    """The :data:`ANALYSIS_KEYWORDS` of a loaded dataset as keyword -> string (ImageType joined with backslashes, as
    DICOM writes it); absent keywords are left out. The chain, ``evaluate`` and the training code pass this to the
    analysis as its ``header``."""
    out = {}
    for kw in ANALYSIS_KEYWORDS:
        v = ds.get(kw, None)
        if v is not None:
            out[kw] = "\\".join(str(x) for x in v) if kw == "ImageType" else str(v)
    return out


def read_tags(path: Path | str) -> dict[str, str]:
    """Top-level, non-sequence, non-binary elements of a stored file's header as keyword -> string.

    Multi-valued elements are joined with a backslash, as DICOM writes them; text is decoded in the file's Specific
    Character Set (a description in UTF-8 or Japanese ISO 2022 reads as the site wrote it). Used for routing rules
    only; the values are never logged. Bounded work whatever the file holds: values are read only for top-level elements of
    text and number VRs up to :data:`MAX_TAG_VALUE_BYTES`; everything else is seeked over, sequences of undefined
    length are walked (not decoded) to the receive side's nesting cap, and the walk stops at Pixel Data.

    Raises
    ------
    HeaderReadError
        The header breaks a bound or does not parse.
    """
    from pydicom.charset import convert_encodings, default_encoding
    from pydicom.datadict import dictionary_has_tag, dictionary_VR, keyword_for_tag
    from pydicom.dataelem import RawDataElement, convert_raw_data_element
    from pydicom.filereader import _read_file_meta_info, read_preamble

    from dicomnode.net._header import MalformedDataset, _FileSource, _header_of, _walk_fragments, _walk_sequence

    out: dict[str, str] = {}
    encodings: str | list[str] = default_encoding  # until Specific Character Set (0008,0005), the first text element
    with open(path, "rb") as f:
        try:
            read_preamble(f, False)
            meta = _read_file_meta_info(f)
        except Exception as e:  # noqa: BLE001
            raise HeaderReadError(f"{path}: no readable file meta: {e}") from e
        ts = str(meta.get("TransferSyntaxUID", "1.2.840.10008.1.2"))
        if ts == "1.2.840.10008.1.2.1.99":  # deflated: inflate the header only, within bounds, via pydicom
            return _read_tags_deflated(path)
        implicit, little = ts == "1.2.840.10008.1.2", ts != "1.2.840.10008.1.2.2"
        import os
        src = _FileSource(f, f.tell(), os.fstat(f.fileno()).st_size)
        try:
            for _ in range(MAX_HEADER_ELEMENTS):
                if src.at_end():
                    break
                tag, vr, length = _header_of(src, implicit, little)
                if tag == 0x7FE00010 or tag >> 16 == 0xFFFE:
                    break
                if length == 0xFFFFFFFF:
                    if vr in (b"OB", b"OW") or tag == 0x7FE00010:
                        _walk_fragments(src, little)
                    else:
                        nested = vr == b"UN"
                        _walk_sequence(src, implicit or nested, little or nested, depth=1)
                    continue
                vr_s = vr.decode("ascii") if vr else "UN"
                if vr_s == "UN" and dictionary_has_tag(tag):  # as pydicom does: a known tag's VR replaces UN
                    vr_s = dictionary_VR(tag)
                if vr_s == "US or SS":  # as pydicom resolves it (Pixel Representation comes first)
                    vr_s = "SS" if out.get("PixelRepresentation") == "1" else "US"
                elif " or " in vr_s:
                    vr_s = "OB"  # binary either way: skipped
                if vr_s in _SKIPPED_VRS or length > MAX_TAG_VALUE_BYTES or not keyword_for_tag(tag):
                    src.skip(length)
                    continue
                raw = RawDataElement(tag, vr_s, length, src.read(length), 0, implicit, little)
                try:
                    elem = convert_raw_data_element(raw, encoding=encodings)
                    if tag == 0x00080005:  # the text after it is in this character set (ISO 2022, UTF-8...)
                        encodings = convert_encodings(elem.value)
                except Exception:  # noqa: BLE001 - a value that does not convert is no routing value
                    continue
                v = elem.value
                if not elem.keyword:
                    continue
                if v is None:
                    out[elem.keyword] = ""
                elif isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
                    out[elem.keyword] = "\\".join(str(x) for x in v)
                else:
                    out[elem.keyword] = str(v)
        except MalformedDataset as e:
            raise HeaderReadError(f"{path}: {e}") from e
    if "SOPClassUID" not in out and meta.get("MediaStorageSOPClassUID"):
        out["SOPClassUID"] = str(meta.MediaStorageSOPClassUID)
    return out


_SKIPPED_VRS = {"SQ", "OB", "OW", "OF", "OD", "OL", "OV", "UN"}


def _read_tags_deflated(path: Path | str) -> dict[str, str]:
    """Deflated files (rare; received ones were checked against the inflation caps): pydicom, header only."""
    ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    out: dict[str, str] = {}
    for elem in ds:
        if not isinstance(elem, DataElement) or not elem.keyword or elem.VR in _SKIPPED_VRS:
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


def referenced_series_uids(path: Path | str) -> list[str]:
    """The image series an RTSTRUCT or SEG refers to (SEG: ReferencedSeriesSequence; RTSTRUCT: the
    RTReferencedSeriesSequence of its frames of reference), in file order, each once."""
    ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    found = [str(item.SeriesInstanceUID) for item in ds.get("ReferencedSeriesSequence", [])
             if item.get("SeriesInstanceUID")]
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
        for study in frame.get("RTReferencedStudySequence", []):
            found += [str(s.SeriesInstanceUID) for s in study.get("RTReferencedSeriesSequence", [])
                      if s.get("SeriesInstanceUID")]
    return list(dict.fromkeys(found))


def referenced_series_uid(path: Path | str) -> str | None:
    """The (first) image series an RTSTRUCT or SEG refers to; None when it names none."""
    return next(iter(referenced_series_uids(path)), None)


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
