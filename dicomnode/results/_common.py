"""Small helpers shared by the result builders (SEG, SR): identity of our device, codes, source datasets."""

from __future__ import annotations

from importlib import metadata

import highdicom as hd
from pydicom.dataset import Dataset

from dicomnode.analysis.volume import Code
from dicomnode.io.load import LoadedSeries
from dicomnode.results._clean import clean_header

MANUFACTURER = "dicomnode"
MODEL_NAME = "dicomnode"
DEVICE_SERIAL_NUMBER = "0"
_MAX_LO_CHARS = 64


def software_version() -> str:
    """The installed dicomnode version (the SoftwareVersions of our objects)."""
    try:
        return metadata.version("dicomnode")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


SOFTWARE_VERSION = software_version()


def coded(code: Code | hd.sr.CodedConcept) -> hd.sr.CodedConcept:
    """Our :class:`~dicomnode.analysis.volume.Code` as a highdicom CodedConcept (code meanings cut to 64 chars)."""
    if isinstance(code, hd.sr.CodedConcept):
        return code
    return hd.sr.CodedConcept(value=code.value, scheme_designator=code.scheme, meaning=lo(code.meaning))


_TO_LATIN1 = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-",
                            "\u2014": "-", "\u2212": "-", "\u2264": "<=", "\u2265": ">="})


def lo(text: str) -> str:
    """``text`` in Latin-1 (the results' character set: typographic quotes and dashes become ASCII, anything else
    outside it "?"), cut to fit a LO value (64 characters)."""
    latin1 = text.translate(_TO_LATIN1).encode("latin-1", "replace").decode("latin-1")
    return latin1[:_MAX_LO_CHARS]


def source_datasets(series: LoadedSeries) -> list[Dataset]:
    """The source headers to hand to highdicom: the first one cleaned (highdicom copies its Patient and Study
    modules into the result), the others as they are. The caller's datasets are never changed."""
    headers = list(series.headers)
    return [clean_header(headers[0]), *headers[1:]]
