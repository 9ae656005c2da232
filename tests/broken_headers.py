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
from pydicom.valuerep import format_number_as_ds


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


# --- variants of vendors and sites not met before (tests/results/test_site_variants.py) ---

def _raw(ds: Dataset, tag: int, vr: str, text: str) -> None:
    """Put ``text`` in the file as it is, bypassing pydicom's checks (a site's writer does not run them)."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    value = text.encode("latin-1")
    if len(value) % 2:
        value += b" "
    ds[tag] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)


def _per_file(src: Path, out: Path, change: Callable[[Dataset, int, int], None]) -> Path:
    """Like :func:`_rewrite`, with the file's index (sorted by name) and the number of files."""
    out.mkdir(parents=True, exist_ok=True)
    paths = sorted(p for p in src.iterdir() if p.is_file())
    for i, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        change(ds, i, len(paths))
        ds.save_as(out / path.name, enforce_file_format=True)
    return out


#: Attributes sites leave out that the results copy or read (Type 2 and 3 of the Patient, Study, Series, Equipment,
#: Image Plane and CT/MR Image modules).
ABSENT = ("AccessionNumber", "ReferringPhysicianName", "StudyID", "SeriesNumber", "InstanceNumber",
          "PatientBirthDate", "PatientSex", "Manufacturer", "BodyPartExamined", "StudyTime", "StudyDate", "SeriesDate",
          "SeriesTime", "ContentDate", "ContentTime", "AcquisitionDate", "AcquisitionTime", "SliceThickness",
          "SliceLocation", "PatientPosition", "KVP", "AcquisitionNumber", "ConvolutionKernel")
#: ... and those they send present but empty.
EMPTY = ("PatientName", "StudyDescription", "SeriesDescription", "Laterality", "PatientOrientation",
         "PositionReferenceIndicator", "InstitutionName")


def absent_or_empty(src: Path, out: Path) -> Path:
    """:data:`ABSENT` left out, :data:`EMPTY` empty (Slice Thickness among them: highdicom reads it for the SEG)."""
    def change(ds: Dataset, i: int, n: int) -> None:
        for keyword in ABSENT:
            ds.pop(keyword, None)
        for keyword in EMPTY:
            setattr(ds, keyword, None)
    return _per_file(src, out, change)


def invalid_values(src: Path, out: Path) -> Path:
    """Values beyond their VR as other sites write them: SH over 16 characters, a backslash in an LO (two values
    where VM is 1), dates not YYYYMMDD, an ACR-NEMA time, a time with
    fractions, DS of 17+ characters (Slice Thickness, Patient's Weight), trailing spaces, Patient Orientation with
    three values, a lower-case Laterality, descriptions at the LO limit. (Patient's Name is left alone: the tests check
    that it is copied exactly; :func:`patient_age_stars` breaks it.)"""
    def change(ds: Dataset, i: int, n: int) -> None:
        _raw(ds, 0x00080050, "SH", "ACCESSION-NUMBER-0123456789")  # Accession Number: 27 > 16
        _raw(ds, 0x00081010, "SH", "STATION-NAME-TOO-LONG")  # Station Name: 21 > 16
        _raw(ds, 0x00200010, "SH", "STUDY-ID-TOO-LONG-0123")  # Study ID
        _raw(ds, 0x00080080, "LO", "Hospital A\\Department B")  # Institution Name: VM 1
        _raw(ds, 0x00081090, "LO", "Model\\X")  # Manufacturer's Model Name: VM 1
        _raw(ds, 0x00100030, "DA", "1970-13-45")  # no date
        _raw(ds, 0x00080020, "DA", "2000.09.07")  # ACR-NEMA date
        _raw(ds, 0x00080030, "TM", "101010.123456")  # fractions: valid
        _raw(ds, 0x00080031, "TM", "10:10:10.5")  # ACR-NEMA time
        _raw(ds, 0x00080021, "DA", "20201")
        _raw(ds, 0x00180050, "DS", "1.00000000000000001")  # 19 characters
        _raw(ds, 0x00101030, "DS", "75.000000000000001")  # Patient's Weight: 18 characters (Type 3)
        _raw(ds, 0x00081030, "LO", "study description with trailing spaces     ")
        _raw(ds, 0x00200020, "CS", "L\\P\\F")  # Patient Orientation: VM 2
        _raw(ds, 0x00200060, "CS", "r")  # Laterality in lower case
        _raw(ds, 0x0008103E, "LO", "T1 TSE AX FS POST GD THIGH RIGHT HIGH RES 512 MATRIX NEX2 SLICE 3M")  # 64
        _raw(ds, 0x00181030, "LO", "P" * 64)  # Protocol Name at its limit
    return _per_file(src, out, change)


def vendor_values(src: Path, out: Path) -> Path:
    """A vendor's Image Type (5 values, vendor terms in 3 and 4), Laterality, private groups with a creator, with an
    empty creator, and without one as UN."""
    def change(ds: Dataset, i: int, n: int) -> None:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE", "CT_SOM5 SPI"]
        ds.Laterality = "L"
        block = ds.private_block(0x0019, "GEMS_ACQU_01", create=True)
        block.add_new(0x23, "DS", "1.5")
        ds.add_new(0x00090010, "LO", "")  # an empty private creator
        ds.add_new(0x00091001, "LO", "x")
        ds.add_new(0x00271001, "UN", b"\x00\x01")  # no creator at all
    return _per_file(src, out, change)


#: Specific Character Sets beyond CHARSET_TEXTS: GB18030, Korean ISO 2022 IR 149 (a term highdicom 0.28 refuses),
#: and a misspelt term (``ISO-8859-1``, which is no DICOM term) over Latin-1 text.
MORE_CHARSET_TEXTS: dict[str, dict[str, object]] = {
    "gb18030": {"SpecificCharacterSet": "GB18030", "PatientName": "Wang^XiaoDong=王^小东",
                "StudyDescription": "大腿 肿瘤 复查", "InstitutionName": "北京协和医院"},
    "korean": {"SpecificCharacterSet": ["", "ISO 2022 IR 149"], "PatientName": "Hong^Gildong=洪^吉洞=홍^길동",
               "StudyDescription": "허벅지 종양"},
}


def more_character_sets(src: Path, out: Path, *, which: str) -> Path:
    """Like :func:`character_set`, with :data:`MORE_CHARSET_TEXTS`."""
    texts = MORE_CHARSET_TEXTS[which]

    def change(ds: Dataset, i: int, n: int) -> None:
        ds.decode()
        for keyword, value in texts.items():
            setattr(ds, keyword, value)
    return _per_file(src, out, change)


#: Patient's Name of :func:`misspelt_character_set`.
LATIN1_NAME = "Sørensen^Åse"


def misspelt_character_set(src: Path, out: Path) -> Path:
    """Specific Character Set ``ISO-8859-1`` (a writer's spelling, no DICOM term) over Latin-1 bytes."""
    def change(ds: Dataset, i: int, n: int) -> None:
        ds.decode()
        ds.PatientName = LATIN1_NAME
        ds.SpecificCharacterSet = "ISO_IR 100"
        _raw(ds, 0x00080005, "CS", "ISO-8859-1")
    return _per_file(src, out, change)


def partial_clinical_trial(src: Path, out: Path) -> Path:
    """Clinical Trial Site Name and Time Point only (no sponsor, protocol or subject: the module's Type 1), and a
    Longitudinal Temporal Offset without its Event Type (Type 1C)."""
    def change(ds: Dataset, i: int, n: int) -> None:
        for keyword in ("ClinicalTrialSponsorName", "ClinicalTrialProtocolID", "ClinicalTrialSubjectID",
                        "ClinicalTrialSubjectReadingID"):
            ds.pop(keyword, None)
        ds.ClinicalTrialSiteName = "Site 7"
        ds.ClinicalTrialTimePointID = "BASELINE"
        ds.LongitudinalTemporalOffsetFromEvent = 3.0
    return _per_file(src, out, change)


def stored_pixels(src: Path, out: Path, *, photometric: str = "MONOCHROME2", bits_stored: int = 16,
                  signed: bool = True, slope: float = 1.0, intercept: float | None = None) -> Path:
    """The same values (RescaleSlope x stored + RescaleIntercept, e.g. HU) stored otherwise: unsigned 12 bits in 16,
    a non-unit slope, MONOCHROME1 (the display inverted; the rescaled values stay those of the source)."""
    import numpy as np

    def change(ds: Dataset, i: int, n: int) -> None:
        values = (ds.pixel_array.astype(np.float64) * float(ds.get("RescaleSlope", 1) or 1)
                  + float(ds.get("RescaleIntercept", 0) or 0))
        icpt = intercept if intercept is not None else (0.0 if signed else float(np.floor(values.min())))
        lo, hi = (-(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1) if signed else (0, 2 ** bits_stored - 1)
        stored = np.clip(np.rint((values - icpt) / slope), lo, hi).astype(np.int16 if signed else np.uint16)
        ds.PixelData = stored.tobytes()
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
        ds.PixelRepresentation = 1 if signed else 0
        ds.RescaleSlope, ds.RescaleIntercept = format_number_as_ds(float(slope)), format_number_as_ds(float(icpt))
        ds.PhotometricInterpretation = photometric
        for keyword in ("SmallestImagePixelValue", "LargestImagePixelValue", "PixelPaddingValue",
                        "WindowCenter", "WindowWidth"):
            ds.pop(keyword, None)
    return _per_file(src, out, change)


def geometry_writing(src: Path, out: Path) -> Path:
    """Geometry as other writers put it: Image Position with 17+ characters per value (Python's repr), Pixel
    Spacing with 14 decimals, an Image Orientation a few 1e-6 off orthonormal, Slice Location of 17+ characters,
    and Instance Numbers descending along the stack."""
    def change(ds: Dataset, i: int, n: int) -> None:
        ipp = [float(v) + 1e-9 for v in ds.ImagePositionPatient]
        _raw(ds, 0x00200032, "DS", "\\".join(repr(v) for v in ipp))
        _raw(ds, 0x00201041, "DS", repr(ipp[2]))
        ps = [float(v) * 1.0000001 for v in ds.PixelSpacing]
        _raw(ds, 0x00280030, "DS", "\\".join(f"{v:.14f}" for v in ps))
        iop = [float(v) + 1e-6 * (k + 1) for k, v in enumerate(ds.ImageOrientationPatient)]
        _raw(ds, 0x00200037, "DS", "\\".join(f"{v:.10g}" for v in iop))
        ds.InstanceNumber = n - i
    return _per_file(src, out, change)


def reoriented(src: Path, out: Path, *, plane: str) -> Path:
    """The stack's header made coronal or sagittal (pixels unchanged): the stack axis becomes anterior-posterior
    (coronal) or left-right (sagittal), the rows run head to feet. Instance Numbers unsorted."""
    if plane not in ("coronal", "sagittal"):
        raise ValueError(f"plane must be coronal or sagittal, got {plane!r}")

    def change(ds: Dataset, i: int, n: int) -> None:
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        if plane == "coronal":
            ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
            ds.ImagePositionPatient = [x, z, 0.0]
        else:
            ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
            ds.ImagePositionPatient = [z, y, 0.0]
        ds.pop("SliceLocation", None)
        ds.InstanceNumber = (i * 7) % n + 1
    return _per_file(src, out, change)
