"""io/headers.py: the routing tags of a stored file are read in its own Specific Character Set."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from broken_headers import CHARSET_TEXTS, character_set
from dicomnode.io.headers import read_tags
from helpers import STS_CT


@pytest.mark.parametrize("which", sorted(CHARSET_TEXTS))
def test_routing_tags_are_decoded_in_the_files_character_set(which: str, tmp_path: Path) -> None:
    one = tmp_path / "one"
    one.mkdir()
    first = sorted(STS_CT.iterdir())[0]
    (one / first.name).write_bytes(first.read_bytes())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the sts headers' over-long Study ID
        copy = character_set(one, tmp_path / which, which=which)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "unknown escape sequence": ISO 2022 is decoded, not guessed
        tags = read_tags(next(copy.iterdir()))
    texts = CHARSET_TEXTS[which]
    for keyword in ("PatientName", "StudyDescription", "SeriesDescription", "InstitutionName"):
        assert tags[keyword] == texts[keyword], keyword
    assert tags["Modality"] == "CT"


def test_header_strings_keeps_analysis_keywords_only_and_joins_image_type():
    from pydicom.dataset import Dataset

    from dicomnode.io.headers import ANALYSIS_KEYWORDS, header_strings

    ds = Dataset()
    ds.Modality = "MR"
    ds.ImageType = ["DERIVED", "SECONDARY", "ADC"]
    ds.SeriesDescription = "ADC map"
    ds.PatientName = "Doe^Jane"  # never passed on
    out = header_strings(ds)
    assert out == {"Modality": "MR", "ImageType": "DERIVED\\SECONDARY\\ADC", "SeriesDescription": "ADC map"}
    assert set(out) <= set(ANALYSIS_KEYWORDS)
