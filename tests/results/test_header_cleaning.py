"""Copy only what is valid: `dicomnode process` on copies of a real series with vendors' header faults writes SEG, SR
and derived series that dciodvfy and Pixelmed accept, and results.json says what was left out or fixed (never the
value)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from broken_headers import implicit_vr_philips_like, incomplete_references, paired_body_part, patient_age_stars
from dicom_validators import assert_valid, dciodvfy, instance_validator
from dicomnode.results._clean import clean_header_with_notes
from helpers import STS_CT

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _process(folder: Path, out: Path) -> dict:
    p = subprocess.run([sys.executable, "-m", "dicomnode", "process", str(folder), "--out", str(out), "-q"],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads((out / "results.json").read_text())


def _outputs(out: Path, res: dict) -> list[Path]:
    return [out / name for name in res["outputs"]]


def _check_dciodvfy(paths: list[Path]) -> None:
    assert_valid([dciodvfy(p) for p in paths])


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def incomplete_macro_items(src: Path, out: Path) -> Path:
    """Sequence items that sites fill in part, in the Patient and General Study modules highdicom copies into SEG and
    SR: an empty Issuer of Accession Number item (an HL7v2 Hierarchic Designator needs a Local Namespace or Universal
    Entity ID), an Issuer of Patient ID Qualifiers item with a Universal Entity ID and no type, an empty Other
    Patient IDs item beside a complete one, a physician's identification without institution (Person Identification
    macro) beside a complete referring physician's."""
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(p for p in src.iterdir() if p.is_file()):
        ds = pydicom.dcmread(path)
        ds.IssuerOfAccessionNumberSequence = [Dataset()]
        qualifiers = Dataset()
        qualifiers.UniversalEntityID = "1.2.826.0.1.3680043.10.1"
        ds.IssuerOfPatientIDQualifiersSequence = [qualifiers]
        other = Dataset()
        other.PatientID, other.TypeOfPatientID = "OTHER-7", "TEXT"
        ds.OtherPatientIDsSequence = [Dataset(), other]
        partial = Dataset()
        partial.PersonIdentificationCodeSequence = [_code("1234", "99LOCAL", "Physician 1234")]
        ds.PhysiciansOfRecordIdentificationSequence = [partial]
        complete = Dataset()
        complete.PersonIdentificationCodeSequence = [_code("5678", "99LOCAL", "Physician 5678")]
        complete.InstitutionName = "Hospital"
        ds.ReferringPhysicianIdentificationSequence = [complete]
        ds.save_as(out / path.name, enforce_file_format=True)
    return out


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """Each broken copy of the sts CT, processed with the CT profile (SEG, SR, feature SRs, MIP series)."""
    root = tmp_path_factory.mktemp("broken")
    made = {
        "age_refs": incomplete_references(patient_age_stars(STS_CT, root / "age"), root / "age_refs"),
        "implicit": implicit_vr_philips_like(STS_CT, root / "implicit"),
        "lung": paired_body_part(STS_CT, root / "lung"),
        "lung_r": paired_body_part(STS_CT, root / "lung_r", laterality="R"),
        "macros": incomplete_macro_items(STS_CT, root / "macros"),
    }
    return {k: (root / f"{k}.out", _process(src, root / f"{k}.out")) for k, src in made.items()}


def test_patient_age_stars_is_left_out_and_named_without_its_value(broken) -> None:
    out, res = broken["age_refs"]
    _check_dciodvfy(_outputs(out, res))
    for name in ("seg.dcm", "sr.dcm", "derived/mip/0001.dcm"):
        ds = pydicom.dcmread(out / name)
        assert "PatientAge" not in ds, name
        assert len(str(ds.PatientName).split("^")) <= 5, name
        assert "\x07" not in str(ds.get("StudyDescription", "")), name
    notes = [n for n in res["notes"] if n.startswith("result headers:")]
    assert any("PatientAge left out" in n and "Age String" in n for n in notes), notes
    assert any("PatientName fixed" in n for n in notes), notes
    assert not any("***" in n or "A^B" in n for n in res["notes"])  # keywords and rules, never values


def test_incomplete_reference_items_are_left_out(broken) -> None:
    out, res = broken["age_refs"]
    _check_dciodvfy(_outputs(out, res))
    for name in ("seg.dcm", "sr.dcm", "derived/mip/0001.dcm"):
        ds = pydicom.dcmread(out / name)
        for keyword in ("ReferencedStudySequence", "ReferencedPerformedProcedureStepSequence"):
            for item in ds.get(keyword, []):
                assert "ReferencedSOPClassUID" in item, (name, keyword)
        for item in ds.get("ProcedureCodeSequence", []):
            assert "CodeMeaning" in item, name
    notes = " | ".join(res["notes"])
    assert "ReferencedStudySequence left out" in notes and "ReferencedSOPClassUID" in notes, notes
    assert "ProcedureCodeSequence left out" in notes, notes


def test_implicit_vr_philips_like_copy_gives_valid_results(broken) -> None:
    out, res = broken["implicit"]
    _check_dciodvfy(_outputs(out, res))
    seg = pydicom.dcmread(out / "seg.dcm")
    assert seg.StudyID == "PHILIPS-STUDY-01" and len(seg.AccessionNumber) <= 16
    assert not any(elem.tag.is_private for elem in seg)
    notes = " | ".join(res["notes"])
    assert "StudyID fixed" in notes and "AccessionNumber fixed" in notes, notes


def test_laterality_of_a_paired_body_part(broken) -> None:
    for key, expected in (("lung", ""), ("lung_r", "R")):
        out, res = broken[key]
        _check_dciodvfy(_outputs(out, res))
        mip = pydicom.dcmread(out / "derived" / "mip" / "0001.dcm")
        assert "Laterality" in mip and str(mip.Laterality or "") == expected, key
        seg = pydicom.dcmread(out / "seg.dcm")
        anatomy = seg.SharedFunctionalGroupsSequence[0].FrameAnatomySequence[0]
        assert anatomy.FrameLaterality == (expected or "B"), key
        assert anatomy.AnatomicRegionSequence[0].CodeValue == "39607008"  # Lung
    # an unpaired body part (the real sts header says EXTREMITY, paired; CHEST is not): no Laterality at all
    ds = pydicom.dcmread(next(STS_CT.iterdir()))
    ds.BodyPartExamined = "CHEST"
    from dicomnode.results._common import series_laterality
    assert series_laterality(ds) is None


def test_items_that_miss_a_macro_condition_are_left_out_and_complete_ones_kept(broken) -> None:
    """dciodvfy and Pixelmed refused SEG and SR made from such a source ("Missing attribute Type 1C
    LocalNamespaceEntityID / UniversalEntityID / UniversalEntityIDType", "Missing required sequence attribute
    PersonIdentificationCodeSequence", "InstitutionName"); the tables of Type 1 attributes do not carry these
    conditions."""
    out, res = broken["macros"]
    _check_dciodvfy(_outputs(out, res))
    for name in ("seg.dcm", "sr.dcm"):
        ds = pydicom.dcmread(out / name)
        for keyword in ("IssuerOfAccessionNumberSequence", "IssuerOfPatientIDQualifiersSequence",
                        "PhysiciansOfRecordIdentificationSequence"):
            assert keyword not in ds, (name, keyword)
        assert [i.PatientID for i in ds.OtherPatientIDsSequence] == ["OTHER-7"], name  # the empty item only
        kept = ds.ReferringPhysicianIdentificationSequence[0]
        assert kept.InstitutionName == "Hospital" and kept.PersonIdentificationCodeSequence[0].CodeValue == "5678"
    notes = " | ".join(res["notes"])
    for said in ("IssuerOfAccessionNumberSequence left out", "IssuerOfPatientIDQualifiersSequence left out",
                 "OtherPatientIDsSequence items left out", "PhysiciansOfRecordIdentificationSequence left out"):
        assert said in notes, (said, notes)
    assert "OTHER-7" not in notes and "Hospital" not in notes


def test_pixelmed_accepts_the_segs_of_the_broken_copies(broken) -> None:
    reports = [instance_validator(out / "seg.dcm") for out, _ in broken.values()]
    assert all(r.recognized for r in reports)
    assert_valid(reports)


def test_cleaning_leaves_the_callers_header_alone_and_keeps_identities() -> None:
    ds = pydicom.dcmread(next(STS_CT.iterdir()))
    ds.add_new(0x00101010, "AS", "***")
    ds.SOPInstanceUID = ds.SOPInstanceUID  # identities are never touched, even when odd
    cleaned, notes = clean_header_with_notes(ds)
    assert ds.PatientAge == "***" and "PatientAge" not in cleaned
    assert cleaned.SOPInstanceUID == ds.SOPInstanceUID
    assert [n.keyword for n in notes if n.action == "left out"] == ["PatientAge"]
    # a Type 2 date that does not parse is emptied, not left out
    ds.StudyDate = "2020"
    cleaned, notes = clean_header_with_notes(ds)
    assert "StudyDate" in cleaned and not cleaned.StudyDate
    assert any(n.keyword == "StudyDate" and n.action == "emptied" for n in notes)


def test_another_highdicom_falls_back_to_type_2_with_one_clear_warning(monkeypatch, caplog) -> None:
    """highdicom._standard_utils is private: on a release it was not checked with, nothing is left out (every
    attribute counts as Type 2) and one warning says why and what to do."""
    import logging

    import highdicom

    from dicomnode.results import _clean

    def clear() -> None:
        for f in (_clean._tables_refusal, _clean._types, _clean._required_children):
            f.cache_clear()

    assert highdicom.__version__ == _clean.HIGHDICOM_VERSION  # the pin in pyproject.toml
    assert _clean.iod_tables_refusal() is None
    ds = pydicom.dcmread(next(STS_CT.iterdir()))
    ds.add_new(0x00101010, "AS", "***")
    monkeypatch.setattr(highdicom, "__version__", "0.99.0")  # as if another release were installed
    clear()
    try:
        with caplog.at_level(logging.WARNING, logger="dicomnode.results._clean"):
            cleaned, notes = clean_header_with_notes(ds)
            clean_header_with_notes(ds)
        warned = [r.getMessage() for r in caplog.records if "IOD tables unavailable" in r.getMessage()]
        assert len(warned) == 1 and "highdicom 0.99.0" in warned[0] and "highdicom==0.28.2" in warned[0]
        assert "PatientAge" in cleaned and not cleaned.PatientAge  # emptied (Type 2 fallback), not left out
        assert [n.action for n in notes if n.keyword == "PatientAge"] == ["emptied"]
        assert cleaned.SOPInstanceUID == ds.SOPInstanceUID
    finally:
        monkeypatch.undo()
        clear()
    cleaned, _ = clean_header_with_notes(ds)
    assert "PatientAge" not in cleaned  # the tables again


def test_values_other_sites_write_are_fixed_not_dropped() -> None:
    """Lower-case code strings (even Type 3 ones), enumerated values by another name, ACR-NEMA dates and times,
    MR codes outside their enumerated values; a Patient ID is never changed, however odd."""
    ds = pydicom.dcmread(next(STS_CT.iterdir()))
    ds.BodyPartExamined = "Abdomen "  # Type 3: upper case is the same term
    ds.PatientSex = "male"
    ds.StudyDate = "2020.01.02"
    ds.StudyTime = "12:00:01"
    ds.PatientBirthDate = "00000000"  # no date to derive: emptied (Type 2)
    ds.ScanningSequence = ["SE", "XX"]
    ds.SequenceVariant = "FOO"
    ds.PatientID = "ID\x07 with a bell and " + "x" * 70  # never touched: it files the result under its patient
    cleaned, notes = clean_header_with_notes(ds)
    assert cleaned.BodyPartExamined == "ABDOMEN" and cleaned.PatientSex == "M"
    assert cleaned.StudyDate == "20200102" and cleaned.StudyTime == "120001"
    assert "PatientBirthDate" in cleaned and not cleaned.PatientBirthDate
    assert cleaned.ScanningSequence == "SE" and not cleaned.get("SequenceVariant")
    assert cleaned.PatientID == ds.PatientID
    by_keyword = {n.keyword: n for n in notes}
    assert by_keyword["BodyPartExamined"].action == "fixed"
    assert "enumerated" in by_keyword["ScanningSequence"].reason
    assert not any("Abdomen" in n.text() or "male" in n.text() for n in notes)  # rules, never values


def test_type_3_numbers_and_times_written_otherwise_are_rewritten_not_dropped() -> None:
    """A DS of 17+ characters, an IS written with a decimal point, an ACR-NEMA time: the same value re-written, even
    when Type 3; an IS that is no integer stays an invalid Type 3 value (left out)."""
    ds = pydicom.dcmread(next(STS_CT.iterdir()))
    ds["PatientWeight"] = pydicom.DataElement(0x00101030, "DS", "75.000000000000001", validation_mode=0)
    ds.SeriesTime = "10:10:10.5"  # Type 3 in the CT Image IOD
    ds["ExposureTime"] = pydicom.DataElement(0x00181150, "IS", "870.0", validation_mode=0)
    ds["XRayTubeCurrent"] = pydicom.DataElement(0x00181151, "IS", "90.5", validation_mode=0)
    cleaned, notes = clean_header_with_notes(ds)
    assert float(cleaned.PatientWeight) == 75.0 and len(str(cleaned.PatientWeight)) <= 16
    assert cleaned.SeriesTime == "101010.5" and int(cleaned.ExposureTime) == 870
    assert "XRayTubeCurrent" not in cleaned
    actions = {n.keyword: n.action for n in notes}
    assert actions["PatientWeight"] == "fixed" and actions["XRayTubeCurrent"] == "left out", actions


@pytest.mark.parametrize("term", ["ISO-8859-1", "ISO_IR 6", ["", "ISO 2022 IR 149"]])
def test_a_character_set_term_highdicom_refuses_becomes_utf8_with_the_same_text(term, tmp_path: Path) -> None:
    """Misspelt (ISO-8859-1), no defined term (ISO_IR 6), or Korean ISO 2022 IR 149 that highdicom 0.28 refuses: the
    copy's text is decoded in the source's set and the set becomes ISO_IR 192; valid terms stay as they are."""
    ds = pydicom.dcmread(next(STS_CT.iterdir()))
    ds.decode()
    name = "Hong^Gildong=洪^吉洞=홍^길동" if isinstance(term, list) else "Sorensen^Ase"
    ds.SpecificCharacterSet = term if isinstance(term, list) else "ISO_IR 192"
    ds.PatientName = name
    path = tmp_path / "x.dcm"
    if isinstance(term, str):
        ds["SpecificCharacterSet"] = pydicom.DataElement(0x00080005, "CS", term, validation_mode=0)
    ds.save_as(path, enforce_file_format=True)
    cleaned, notes = clean_header_with_notes(pydicom.dcmread(path))
    assert cleaned.SpecificCharacterSet == "ISO_IR 192" and str(cleaned.PatientName) == name
    assert any(n.keyword == "SpecificCharacterSet" and n.action == "fixed" for n in notes)
    kept, kept_notes = clean_header_with_notes(pydicom.dcmread(next(STS_CT.iterdir())))  # ISO_IR 100: left alone
    assert kept.SpecificCharacterSet == "ISO_IR 100" and not any(n.keyword == "SpecificCharacterSet"
                                                                    for n in kept_notes)


def test_an_incomplete_clinical_trial_module_is_left_out_and_a_complete_one_gets_its_type_2() -> None:
    ds = pydicom.dcmread(next(STS_CT.iterdir()))
    ds.ClinicalTrialSiteName = "Site 7"  # no sponsor, protocol or subject: Type 1 of the module
    ds.ClinicalTrialTimePointID = "BASELINE"
    ds.LongitudinalTemporalOffsetFromEvent = 3.0  # without Longitudinal Temporal Event Type (Type 1C)
    cleaned, notes = clean_header_with_notes(ds)
    assert "ClinicalTrialSiteName" not in cleaned and cleaned.ClinicalTrialTimePointID == "BASELINE"
    assert "LongitudinalTemporalOffsetFromEvent" not in cleaned
    assert any(n.keyword == "ClinicalTrialSubject" and n.action == "left out" for n in notes), notes
    ds.ClinicalTrialSponsorName, ds.ClinicalTrialProtocolID, ds.ClinicalTrialSubjectID = "Sponsor", "P-1", "7"
    cleaned, notes = clean_header_with_notes(ds)
    assert cleaned.ClinicalTrialSponsorName == "Sponsor" and cleaned.ClinicalTrialSiteName == "Site 7"
    assert "ClinicalTrialProtocolName" in cleaned and cleaned.ClinicalTrialProtocolName in ("", None)
    assert "ClinicalTrialSiteID" in cleaned
