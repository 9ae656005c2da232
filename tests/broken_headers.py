"""Fixture generators: copies of real series in ../shared/data with the header faults seen on vendors' series.

Each function writes a copy of a real series folder into ``out`` with one kind of fault and returns ``out``; the
pixel data and geometry stay those of the real series. Used by tests/results/test_header_cleaning.py.

* :func:`patient_age_stars`: Patient's Age ``***`` (a United Imaging head MR), plus a Patient's Name with six
  components and a control character in the Study Description;
* :func:`incomplete_references`: Referenced Study Sequence and Referenced Performed Procedure Step Sequence items
  without Referenced SOP Class UID (a Philips chest CT), and a Procedure Code Sequence item without Code Meaning;
* :func:`implicit_vr_philips_like`: Implicit VR Little Endian files with Philips' private group and an over-long
  Study ID and Accession Number;
* :func:`paired_body_part`: Body Part Examined of a paired structure (LUNG) without Laterality, for the Laterality
  condition of the derived series (a cropped chest CT).

Header variants of other sites, used by tests/results/test_header_variants.py (they compose: each takes a folder):

* :func:`character_set`: ISO_IR 100, ISO_IR 192 or ISO 2022 IR 87 (Japanese) with non-ASCII names and descriptions;
* :func:`at_max_length`: descriptions at the LO limit, an Institution Name beyond it;
* :func:`missing_type2`: Type 2 attributes of the Patient and Study modules absent, Patient ID empty;
* :func:`odd_values`: lower-case code strings, odd-length values, six-valued Image Type, retired attributes, private
  groups, UN VR;
* :func:`pet_units`: PET Units and Decay Correction other than the series' own, or absent;
* :func:`no_series_number`: Series Number absent;
* :func:`enhanced_without_optional_groups`: an Enhanced multi-frame image without its optional functional groups;
* :func:`body_part`: Body Part Examined as sites write it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian


def _rewrite(src: Path, out: Path, change: Callable[[Dataset], None], *, implicit: bool = False) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(p for p in src.iterdir() if p.is_file()):
        ds = pydicom.dcmread(path)
        change(ds)
        if implicit:
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
            ds.save_as(out / path.name, implicit_vr=True, little_endian=True, enforce_file_format=True)
        else:
            ds.save_as(out / path.name, enforce_file_format=True)
    return out


def patient_age_stars(src: Path, out: Path) -> Path:
    def change(ds: Dataset) -> None:
        ds.add_new(0x00101010, "AS", "***")  # Patient's Age, Type 3 in the Patient Study module
        ds.PatientName = "A^B^C^D^E^F"  # six components: PN allows five
        ds.StudyDescription = "thigh\x07mass"  # a BEL inside an LO
    return _rewrite(src, out, change)


def incomplete_references(src: Path, out: Path) -> Path:
    def change(ds: Dataset) -> None:
        study = Dataset()
        study.ReferencedSOPInstanceUID = "1.2.3.4.5"  # no ReferencedSOPClassUID (Type 1 in the item)
        ds.ReferencedStudySequence = [study]
        step = Dataset()
        step.ReferencedSOPInstanceUID = "1.2.3.4.6"
        ds.ReferencedPerformedProcedureStepSequence = [step]
        code = Dataset()
        code.CodeValue = "CTCHEST"
        code.CodingSchemeDesignator = "99LOCAL"  # no CodeMeaning (Type 1)
        ds.ProcedureCodeSequence = [code]
    return _rewrite(src, out, change)


def implicit_vr_philips_like(src: Path, out: Path) -> Path:
    def change(ds: Dataset) -> None:
        ds.Manufacturer = "Philips"
        ds.StudyID = "PHILIPS-STUDY-0123456789"  # SH: 24 > 16 characters (Type 2)
        ds.AccessionNumber = "ACC-0123456789-XYZ"  # SH: 18 > 16 characters (Type 2)
        block = ds.private_block(0x2001, "Philips Imaging DD 001", create=True)
        block.add_new(0x10, "CS", "NO")
        block.add_new(0x63, "CS", "NO")
    return _rewrite(src, out, change, implicit=True)


def paired_body_part(src: Path, out: Path, *, laterality: str | None = None) -> Path:
    def change(ds: Dataset) -> None:
        ds.BodyPartExamined = "LUNG"
        ds.pop("Laterality", None)
        if laterality is not None:
            ds.Laterality = laterality
    return _rewrite(src, out, change)


# --- header variants other sites send (character sets, lengths, missing Type 2, odd values, PET units, ...) ---

#: Non-ASCII names and descriptions per Specific Character Set, as such sites write them.
CHARSET_TEXTS: dict[str, dict[str, object]] = {
    "latin1": {"SpecificCharacterSet": "ISO_IR 100", "PatientName": "Müller^Jürgen^^Dr.",
               "StudyDescription": "Oberschenkel rechts - Weichteiltumor (Kontrolle)",
               "SeriesDescription": "Ganzkörper Übersicht ä ö ü ß", "InstitutionName": "Universitätsklinikum Zürich",
               "ReferringPhysicianName": "Schäfer^Brünhilde"},
    "utf8": {"SpecificCharacterSet": "ISO_IR 192", "PatientName": "Wang^XiaoDong=王^小東",
             "StudyDescription": "大腿 MRT – Kontrolle née Ærø", "SeriesDescription": "T1 轴位 Žluťoučký",
             "InstitutionName": "北京协和医院", "ReferringPhysicianName": "Łukasz^Żółć"},
    "iso2022_jp": {"SpecificCharacterSet": ["", "ISO 2022 IR 87"],
                   "PatientName": "Yamada^Tarou=山田^太郎=やまだ^たろう",
                   "StudyDescription": "大腿部 腫瘍", "SeriesDescription": "T1 横断",
                   "InstitutionName": "東京病院", "ReferringPhysicianName": "Suzuki^Hanako=鈴木^花子"},
}


def character_set(src: Path, out: Path, *, which: str) -> Path:
    """The series re-encoded in another Specific Character Set with non-ASCII Patient's Name and descriptions."""
    texts = CHARSET_TEXTS[which]

    def change(ds: Dataset) -> None:
        ds.decode()  # every text value read in the old character set, then written in the new one
        for keyword, value in texts.items():
            setattr(ds, keyword, value)
    return _rewrite(src, out, change)


def at_max_length(src: Path, out: Path) -> Path:
    """Descriptions and names exactly at their VR's limit (LO 64, SH 16), and an InstitutionName beyond it (a
    site's full name of 80 characters), so that what the results derive from them must stay within the VR."""
    def change(ds: Dataset) -> None:
        ds.SeriesDescription = ("T1 TSE AX FS POST GD THIGH RIGHT HIGH RES 512 MATRIX NEX2 SLICE 3MM")[:64]
        ds.ProtocolName = "P" * 64
        ds.StudyDescription = "S" * 64
        ds.StationName = "STATION-0123456"  # SH: 16
        ds.InstitutionName = "Universitaetsklinikum fuer Radiologie und Nuklearmedizin, Standort Nord"  # > 64
        ds.InstitutionalDepartmentName = "D" * 64
        ds.OperatorsName = "O" * 64
    return _rewrite(src, out, change)


#: Type 2 attributes of the Patient and General Study modules that sites leave out.
MISSING_TYPE2 = ("StudyID", "AccessionNumber", "ReferringPhysicianName", "PatientSex", "PatientBirthDate",
                 "StudyDate", "StudyTime")


def missing_type2(src: Path, out: Path) -> Path:
    """Type 2 attributes left out (not empty: absent), and an empty Patient ID."""
    def change(ds: Dataset) -> None:
        for keyword in MISSING_TYPE2:
            ds.pop(keyword, None)
        ds.PatientID = ""
    return _rewrite(src, out, change)


def odd_values(src: Path, out: Path, *, body_part: str = "Abdomen ") -> Path:
    """Values as sites send them: a Body Part Examined in mixed or lower case with a trailing space, lower-case
    Patient's Sex, an odd-length Study Description, a six-valued Image Type, retired attributes, private groups (one
    with a creator, one without), and a standard attribute (Protocol Name) and a private one written as UN."""
    def change(ds: Dataset) -> None:
        ds.BodyPartExamined = body_part
        ds.PatientSex = "m"
        ds.StudyDescription = "odd"  # three characters: written padded to four
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "CT_SOM5 SPI", "HELICAL", "NORM"]
        ds.add_new(0x00080010, "SH", "RECOGNITION")  # Recognition Code (retired)
        ds.add_new(0x00200030, "DS", ["0", "0", "0"])  # Image Position (retired)
        ds.add_new(0x00280040, "CS", "RECT")  # Image Format (retired)
        block = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
        block.add_new(0x08, "CS", "IMAGE NUM 4")
        block.add_new(0x10, "OB", b"SV10\x04\x03\x02\x01" * 4)
        ds.add_new(0x00431001, "UN", b"\x01\x02\x03\x04")  # GE private without its creator
        ds.add_new(0x00181030, "UN", b"T1_SE_AX")  # Protocol Name through a PACS that lost the VR
    return _rewrite(src, out, change)


def pet_units(src: Path, out: Path, *, units: str | None, decay_correction: str | None) -> Path:
    """A PET series with other Units (0054,1001) or Decay Correction (0054,1102); None leaves the attribute out."""
    def change(ds: Dataset) -> None:
        for keyword, value in (("Units", units), ("DecayCorrection", decay_correction)):
            if value is None:
                ds.pop(keyword, None)
            else:
                setattr(ds, keyword, value)
    return _rewrite(src, out, change)


def no_series_number(src: Path, out: Path) -> Path:
    """Series Number (Type 2) left out, as some MR exports do."""
    def change(ds: Dataset) -> None:
        ds.pop("SeriesNumber", None)
    return _rewrite(src, out, change)


#: Optional functional group macros of the Enhanced MR IOD (U or C): sites' exporters leave them out.
OPTIONAL_FUNCTIONAL_GROUPS = ("FrameVOILUTSequence", "RealWorldValueMappingSequence", "DerivationImageSequence",
                              "ReferencedImageSequence", "FrameAnatomySequence", "PixelValueTransformationSequence")


def enhanced_without_optional_groups(src: Path, out: Path) -> Path:
    """An Enhanced multi-frame image whose shared and per-frame functional groups lack the optional macros."""
    def change(ds: Dataset) -> None:
        for keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
            for item in ds.get(keyword, []):
                for name in OPTIONAL_FUNCTIONAL_GROUPS:
                    item.pop(name, None)
    out.mkdir(parents=True, exist_ok=True)
    images = [p for p in sorted(src.iterdir()) if p.is_file() and not p.name.endswith("_Raw.dcm")]
    for path in images:
        ds = pydicom.dcmread(path)
        change(ds)
        ds.save_as(out / path.name, enforce_file_format=True)
    return out


def body_part(src: Path, out: Path, *, value: str) -> Path:
    """Body Part Examined as a site writes it ("thigh", "Abdomen ", "THIGH")."""
    def change(ds: Dataset) -> None:
        ds.BodyPartExamined = value
    return _rewrite(src, out, change)
