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
