"""Series of vendors and sites we have not met: copies of real series of ../shared/data whose headers (and stored
pixels) are changed the ways other writers do it (tests/broken_headers.py), each run once through the node's chain
(`dicomnode process`, which calls dicomnode.jobs.chain.run_chain as a job does), every object made checked by
dciodvfy (every file) and Pixelmed's DicomInstanceValidator (the SEG and the first image of each derived series),
with the source's identities kept; Pixelmed's DicomSRValidator (heavy) on the main SR of one variant only.

One table, one parametrised test: a variant combines faults that do not hide one another; ``check`` adds what the
variant must show beyond validity (the fault was met, and handled the documented way: docs/conformance.md 3.1, 4).
Derived series of MR and PET (the default MR and PET profiles make none) come from the shipped MR and PET profiles
with the synthesize step and the derived output added (:data:`DERIVED_PROFILES`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
from pydicom.multival import MultiValue

from broken_headers import (
    ABSENT,
    LATIN1_NAME,
    MORE_CHARSET_TEXTS,
    absent_or_empty,
    geometry_writing,
    invalid_values,
    misspelt_character_set,
    more_character_sets,
    partial_clinical_trial,
    reoriented,
    stored_pixels,
    vendor_values,
)
from dicom_validators import assert_outputs_valid, assert_valid, process, sr_validator
from helpers import SHARED_DATA, STS_CT

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning")]

STS_MR = SHARED_DATA / "sts" / "STS_001" / "MR_T1"
STS_PET = SHARED_DATA / "sts" / "STS_001" / "PET"

#: The shipped MR and PET profiles with thick-slab projections as a derived series (a node configuration's own
#: profiles, conf/dicomnode.toml: ``extends``).
_STEPS = {"mr": ["denoise", "segment", "correct", "scene", "detect", "features"],
          "pet": ["denoise", "segment", "correct", "detect", "features", "scene"]}  # as conf/profiles/<m>.toml
DERIVED_PROFILES = "".join(f"""
[profiles.{m}-derived]
extends = "{m}"
version = "{m}-derived-1"
steps = {steps + ["synthesize"]!r}
outputs = ["seg", "sr", "derived"]
[profiles.{m}-derived.synthesize]
projections = ["mip"]
slab_mm = 10
""".replace("'", '"') for m, steps in _STEPS.items())

Fault = Callable[[Path, Path], Path]
Check = Callable[[Path, Path, dict, list[Path]], None]


def _read(path: Path) -> pydicom.Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True)


def _notes(res: dict) -> str:
    return " | ".join(res["notes"])


def _highdicom_made(files: list[Path]) -> list[Path]:
    return [f for f in files if f.name == "seg.dcm" or f.match("sr*.dcm") or f.match("sr_features/*.dcm")]


def _check_absent(folder: Path, out: Path, res: dict, files: list[Path]) -> None:
    seg = _read(out / "seg.dcm")
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SliceThickness) > 0  # from the volume's slice spacing: the source has none
    for f in files:
        ds = _read(f)
        for keyword in ("AccessionNumber", "ReferringPhysicianName", "StudyID", "PatientBirthDate", "PatientSex",
                        "StudyDate", "StudyTime"):
            assert keyword in ds and ds[keyword].value in ("", None), (f, keyword)  # Type 2: present, empty
    assert (out / "derived").is_dir(), res["outputs"]


def _check_invalid(folder: Path, out: Path, res: dict, files: list[Path]) -> None:
    notes = _notes(res)
    for said in ("AccessionNumber fixed", "InstitutionName left out", "PatientBirthDate emptied",
                 "SliceThickness fixed", "PatientWeight fixed", "SeriesTime fixed", "StudyDate fixed"):
        assert said in notes, (said, notes)
    assert "ACCESSION" not in notes and "Hospital" not in notes  # the rule, never the value
    mip = _read(out / "derived" / "mip" / "0001.dcm")
    assert float(mip.PatientWeight) == 75.0  # a DS of 18 characters is the same number re-written, not dropped
    assert mip.StudyDate == "20000907" and mip.Laterality == "R"
    for f in files:
        ds = _read(f)
        assert len(ds.AccessionNumber) <= 16 and "InstitutionName" not in ds, f
    report = sr_validator(out / "sr.dcm")  # the one DicomSRValidator run of this table: the main SR
    assert report.recognized, report.output[-2000:]
    assert_valid(report)


def _check_vendor_korean(folder: Path, out: Path, res: dict, files: list[Path]) -> None:
    texts = MORE_CHARSET_TEXTS["korean"]
    for f in files:
        ds = _read(f)
        assert not any(e.tag.is_private for e in ds), f  # private groups never copied, with or without creator
        assert str(ds.PatientName) == texts["PatientName"], f
    for f in _highdicom_made(files):  # highdicom 0.28 refuses ISO 2022 IR 149: the same text in UTF-8
        assert _read(f).SpecificCharacterSet == "ISO_IR 192", f
    assert "SpecificCharacterSet fixed" in _notes(res), res["notes"]
    seg = _read(out / "seg.dcm")
    assert seg.SharedFunctionalGroupsSequence[0].FrameAnatomySequence[0].FrameLaterality == "L"


def _check_gb18030(folder: Path, out: Path, res: dict, files: list[Path]) -> None:
    for f in files:
        ds = _read(f)
        assert str(ds.PatientName) == MORE_CHARSET_TEXTS["gb18030"]["PatientName"], f
        assert ds.StudyDescription == MORE_CHARSET_TEXTS["gb18030"]["StudyDescription"], f
    source = pydicom.dcmread(next(folder.iterdir()))
    assert source.BitsStored == 12 and source.PixelRepresentation == 0


def _check_misspelt(folder: Path, out: Path, res: dict, files: list[Path]) -> None:
    for f in files:
        ds = _read(f)
        assert ds.SpecificCharacterSet == "ISO_IR 192" and str(ds.PatientName) == LATIN1_NAME, f
    assert "SpecificCharacterSet fixed" in _notes(res), res["notes"]
    mip = pydicom.dcmread(out / "derived" / "mip" / "0001.dcm")
    assert mip.PhotometricInterpretation == "MONOCHROME2"


def _check_clinical_trial(folder: Path, out: Path, res: dict, files: list[Path]) -> None:
    for f in _highdicom_made(files):
        ds = _read(f)
        assert "ClinicalTrialSiteName" not in ds and "LongitudinalTemporalOffsetFromEvent" not in ds, f
        assert ds.ClinicalTrialTimePointID == "BASELINE", f  # the Clinical Trial Study module is complete
    assert "ClinicalTrialSubject left out" in _notes(res), res["notes"]
    for f in files:
        ds = _read(f)
        for keyword in ("ImagePositionPatient", "PixelSpacing", "ImageOrientationPatient", "SliceLocation"):
            if keyword in ds:
                values = ds[keyword].value
                values = values if isinstance(values, (list, MultiValue)) else [values]
                assert all(len(str(v)) <= 16 for v in values), (f, keyword)


def _check_plane(plane: str) -> Check:
    def check(folder: Path, out: Path, res: dict, files: list[Path]) -> None:
        seg = _read(out / "seg.dcm")
        iop = [float(v) for v in seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
               .ImageOrientationPatient]
        assert iop == ([1, 0, 0, 0, 0, -1] if plane == "coronal" else [0, 1, 0, 0, 0, -1]), iop
        mip = _read(out / "derived" / "mip" / "0001.dcm")
        assert [round(float(v), 6) for v in mip.ImageOrientationPatient] == iop
    return check


def _check_derived_of(sop_class: str) -> Check:
    def check(folder: Path, out: Path, res: dict, files: list[Path]) -> None:
        firsts = sorted(out.glob("derived/*/0001.dcm"))
        assert firsts, res["outputs"]
        for f in firsts:
            assert _read(f).SOPClassUID == sop_class, f
    return check


@dataclass(frozen=True)
class Variant:
    source: Path
    faults: list[Fault]
    check: Check
    profile: str | None = None
    why: str = field(default="")


VARIANTS: dict[str, Variant] = {
    "ct_absent_or_empty": Variant(STS_CT, [absent_or_empty], _check_absent,
                                  why="Type 2/3 attributes absent or empty, Slice Thickness among them"),
    "ct_invalid_values": Variant(STS_CT, [invalid_values], _check_invalid,
                                 why="values beyond their VR and VM; the main SR through DicomSRValidator"),
    "ct_vendor_values_korean": Variant(STS_CT, [vendor_values,
                                                lambda s, o: more_character_sets(s, o, which="korean")],
                                       _check_vendor_korean, why="vendor Image Type, private groups, ISO 2022 IR 149"),
    "ct_gb18030_unsigned_12_bits": Variant(STS_CT, [lambda s, o: stored_pixels(s, o, bits_stored=12, signed=False),
                                                    lambda s, o: more_character_sets(s, o, which="gb18030")],
                                           _check_gb18030, why="GB18030 text, unsigned 12 bits stored in 16"),
    "ct_misspelt_charset_monochrome1_slope": Variant(
        STS_CT, [lambda s, o: stored_pixels(s, o, photometric="MONOCHROME1", slope=0.5, intercept=-1024.0),
                 misspelt_character_set], _check_misspelt,
        why="Specific Character Set ISO-8859-1, MONOCHROME1, Rescale Slope 0.5"),
    "ct_partial_clinical_trial_geometry": Variant(STS_CT, [partial_clinical_trial, geometry_writing],
                                                  _check_clinical_trial,
                                                  why="half a Clinical Trial module; DS of 17+ characters in the "
                                                      "geometry, descending Instance Numbers"),
    "ct_coronal": Variant(STS_CT, [lambda s, o: reoriented(s, o, plane="coronal")], _check_plane("coronal"),
                          why="a coronal stack, Instance Numbers unsorted"),
    "mr_absent_or_empty_derived": Variant(STS_MR, [absent_or_empty], _check_derived_of(pydicom.uid.MRImageStorage),
                                          profile="mr-derived",
                                          why="MR without rescale or Slice Thickness; derived MR images"),
    "pet_invalid_values_derived": Variant(STS_PET, [invalid_values],
                                          _check_derived_of(pydicom.uid.PositronEmissionTomographyImageStorage),
                                          profile="pet-derived",
                                          why="PET with values beyond their VR; derived PET images"),
}


def _make(name: str, root: Path) -> Path:
    src = VARIANTS[name].source
    for i, fault in enumerate(VARIANTS[name].faults):
        src = fault(src, root / f"{name}.{i}")
    return src


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_output_of_a_site_variant_validates(name: str, tmp_path: Path) -> None:
    variant = VARIANTS[name]
    folder = _make(name, tmp_path)
    out = tmp_path / "out"
    config = None
    if variant.profile is not None:
        config = tmp_path / "dicomnode.toml"
        config.write_text(DERIVED_PROFILES)
    res = process(folder, out, profile=variant.profile, config=config)
    files = assert_outputs_valid(folder, out, res)  # dciodvfy, DicomInstanceValidator, identities
    assert out / "seg.dcm" in files and out / "sr.dcm" in files, res["outputs"]
    variant.check(folder, out, res, files)
