"""Headers as other sites send them: `dicomnode process` on copies of real series (tests/broken_headers.py) with other
character sets, values at and beyond their VR's length, absent Type 2 attributes, an empty Patient ID, lower-case
code strings, private and retired attributes, UN VR, PET in other units, no Series Number, an Enhanced MR without
its optional functional groups. Every result passes dciodvfy (0 errors) and Pixelmed's DicomInstanceValidator (SEG
and the first derived image), and keeps the source's identities exactly: Patient ID, Patient's Name (as text),
Study Instance UID.

One test per copy, so that pytest-xdist spreads them; each copy combines several faults of the same series.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from broken_headers import (
    CHARSET_TEXTS,
    MISSING_TYPE2,
    at_max_length,
    body_part,
    character_set,
    enhanced_without_optional_groups,
    missing_type2,
    no_series_number,
    odd_values,
    pet_units,
)
from dicom_validators import assert_outputs_valid, instance_validator, process
from helpers import SHARED_DATA, STS_CT

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning")]

STS_MR = SHARED_DATA / "sts" / "STS_001" / "MR_T1"
STS_PET = SHARED_DATA / "sts" / "STS_001" / "PET"
PHILIPS_ENHANCED = SHARED_DATA / "enhanced-mr" / "philips_T1W_FFE_CS2_enhanced"

#: name -> (source, the copy's faults one after the other)
VARIANTS: dict[str, tuple[Path, list[Callable[[Path, Path], Path]]]] = {
    "ct_latin1_no_type2": (STS_CT, [lambda s, o: character_set(s, o, which="latin1"), missing_type2]),
    "mr_utf8_max_length_no_series_number": (STS_MR, [lambda s, o: character_set(s, o, which="utf8"), at_max_length,
                                                     no_series_number]),
    "ct_iso2022_jp_odd_values": (STS_CT, [odd_values, lambda s, o: character_set(s, o, which="iso2022_jp")]),
    "pet_counts_thigh": (STS_PET, [lambda s, o: pet_units(s, o, units="CNTS", decay_correction="NONE"),
                                   lambda s, o: body_part(s, o, value="thigh")]),
    "pet_bqml_without_decay_correction": (STS_PET, [lambda s, o: pet_units(s, o, units="BQML",
                                                                            decay_correction=None)]),
    "mr_enhanced_without_optional_groups": (PHILIPS_ENHANCED, [enhanced_without_optional_groups]),
}


def _make(name: str, root: Path) -> Path:
    src, faults = VARIANTS[name]
    for i, fault in enumerate(faults):
        src = fault(src, root / f"{name}.{i}")
    return src


def _read(path: Path) -> pydicom.Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True)


@pytest.fixture
def made(request, tmp_path: Path) -> tuple[Path, Path, dict, list[Path]]:
    """(copy, output folder, results.json, output files) of the variant named by the test's parameter."""
    name = request.param
    folder = _make(name, tmp_path)
    out = tmp_path / "out"
    res = process(folder, out)
    return folder, out, res, assert_outputs_valid(folder, out, res)


def _one(name: str):
    return pytest.mark.parametrize("made", [name], indirect=True)


@_one("ct_latin1_no_type2")
def test_latin1_names_and_absent_type2_attributes(made) -> None:
    folder, out, res, files = made
    texts = CHARSET_TEXTS["latin1"]
    for f in files:
        ds = _read(f)
        assert ds.SpecificCharacterSet == "ISO_IR 100", f
        assert str(ds.PatientName) == texts["PatientName"], f
        assert "PatientID" in ds and ds.PatientID in ("", None), f  # empty in the source: empty, never made up
        for keyword in MISSING_TYPE2:
            assert keyword in ds and ds[keyword].value in ("", None), (f, keyword)  # Type 2: present, empty
    mip = _read(out / "derived" / "mip" / "0001.dcm")
    assert mip.StudyDescription == texts["StudyDescription"]
    # Pixelmed's "Illegal character(s)" for text in the declared character set is no error (dicom_validators); the
    # same bytes in a file that declares no character set (ASCII) are one
    seg = pydicom.dcmread(out / "seg.dcm")
    del seg.SpecificCharacterSet
    undeclared = out / "seg_undeclared.dcm"
    seg.save_as(undeclared, enforce_file_format=True)
    report = instance_validator(undeclared)
    assert any("Illegal character" in e and "PatientName" in e for e in report.errors), report.output[-2000:]


@_one("mr_utf8_max_length_no_series_number")
def test_utf8_names_values_at_their_limit_and_no_series_number(made) -> None:
    folder, out, res, files = made
    source = _read(next(folder.iterdir()))
    assert "SeriesNumber" not in source and len(source.InstitutionName) > 64
    for f in files:
        ds = _read(f)
        assert ds.SpecificCharacterSet == "ISO_IR 192", f
        assert str(ds.PatientName) == CHARSET_TEXTS["utf8"]["PatientName"], f
        assert 0 < len(ds.SeriesDescription) <= 64 and ds.SeriesNumber, f
        assert len(ds.get("InstitutionName", "") or "") <= 64, f
        assert ds.get("StudyDescription") in (None, "", source.StudyDescription), f  # at its limit: kept whole
    notes = " | ".join(res["notes"])
    assert "InstitutionName left out" in notes and "LO" in notes, notes
    assert "Universitaets" not in notes  # the rule, never the value


@_one("ct_iso2022_jp_odd_values")
def test_japanese_iso2022_names_and_odd_values(made) -> None:
    folder, out, res, files = made
    texts = CHARSET_TEXTS["iso2022_jp"]
    for f in files:
        ds = _read(f)
        # the Study Description's "腿" is 0x42 0x5C in JIS X 0208: a backslash byte that readers take for a value
        # delimiter (dciodvfy: "VM 2"), so the results are written in UTF-8, text unchanged
        assert ds.SpecificCharacterSet == "ISO_IR 192", f
        assert str(ds.PatientName) == texts["PatientName"], f
        assert not any(e.tag.is_private for e in ds), f
        for retired in (0x00080010, 0x00200030, 0x00280040):
            assert retired not in ds, (f, hex(retired))
        assert ds.get("PatientSex") == "M", f  # "m": the same term in upper case
    mip = _read(out / "derived" / "mip" / "0001.dcm")
    assert mip.BodyPartExamined == "ABDOMEN"
    for f in files:
        assert _read(f).StudyDescription == texts["StudyDescription"], f
    seg = _read(out / "seg.dcm")
    anatomy = seg.SharedFunctionalGroupsSequence[0].FrameAnatomySequence[0]
    assert anatomy.AnatomicRegionSequence[0].CodeMeaning == "Abdomen" and anatomy.FrameLaterality == "U"
    notes = " | ".join(res["notes"])
    assert "BodyPartExamined fixed" in notes and "PatientSex fixed" in notes, notes


@_one("pet_counts_thigh")
def test_pet_in_counts_is_kept_in_counts_and_said(made) -> None:
    folder, out, res, files = made
    notes = " | ".join(res["notes"])
    assert "PET values left in counts: Units (0054,1001) is CNTS" in notes, res["notes"]
    assert "SUV thresholds do not apply" in notes, res["notes"]
    assert "BodyPartExamined fixed" in notes, res["notes"]  # "thigh": THIGH
    seg = _read(out / "seg.dcm")
    anatomy = seg.SharedFunctionalGroupsSequence[0].FrameAnatomySequence[0]
    assert anatomy.AnatomicRegionSequence[0].CodeMeaning == "Thigh"
    assert anatomy.FrameLaterality == "B"  # a paired body part whose side the header does not give


@_one("pet_bqml_without_decay_correction")
def test_pet_in_bqml_without_decay_correction_stays_in_bqml_and_says_why(made) -> None:
    folder, out, res, files = made
    notes = " | ".join(res["notes"])
    assert "PET values left in Bq/ml (not SUV): DecayCorrection (0054,1102) is 'missing'" in notes, res["notes"]


@_one("mr_enhanced_without_optional_groups")
def test_enhanced_mr_without_optional_functional_groups(made) -> None:
    folder, out, res, files = made
    seg = _read(out / "seg.dcm")
    source = _read(next(folder.iterdir()))
    assert seg.NumberOfFrames >= 1 and seg.FrameOfReferenceUID == source.FrameOfReferenceUID
