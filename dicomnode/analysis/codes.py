"""SNOMED CT codes of the segments the analysis chain produces, in one table.

Each segment label maps to its segmented property category and type (DICOM CID 7150 and CID 7151/7166, as used by
3D Slicer's "General Anatomy" terminology and highdicom). Look codes up with :func:`segment_codes`.
"""

from __future__ import annotations

from dicomnode.analysis.volume import (
    CATEGORY_ANATOMICAL_STRUCTURE,
    CATEGORY_TISSUE,
    Code,
)

__all__ = [
    "ADIPOSE_TISSUE",
    "BONE",
    "ENTIRE_BODY",
    "LUNG_LEFT",
    "LUNG_RIGHT",
    "MUSCLE_TISSUE",
    "SEGMENT_CODES",
    "SOFT_TISSUE",
    "TISSUE",
    "segment_codes",
]

ENTIRE_BODY = Code("38266002", "SCT", "Entire body")
LUNG_LEFT = Code("44029006", "SCT", "Left lung")
LUNG_RIGHT = Code("3341006", "SCT", "Right lung")
BONE = Code("272673000", "SCT", "Bone")
ADIPOSE_TISSUE = Code("55603005", "SCT", "Adipose tissue")
MUSCLE_TISSUE = Code("91727004", "SCT", "Muscle tissue")
SOFT_TISSUE = Code("87784001", "SCT", "Soft tissue")
TISSUE = Code("85756007", "SCT", "Tissue")

#: label -> (category, type). ``tissue_class_<k>`` (the intensity classes of ``segment_generic``) use ``TISSUE``.
SEGMENT_CODES: dict[str, tuple[Code, Code]] = {
    "body": (CATEGORY_ANATOMICAL_STRUCTURE, ENTIRE_BODY),
    "lung_left": (CATEGORY_ANATOMICAL_STRUCTURE, LUNG_LEFT),
    "lung_right": (CATEGORY_ANATOMICAL_STRUCTURE, LUNG_RIGHT),
    "bone": (CATEGORY_TISSUE, BONE),
    "adipose_tissue": (CATEGORY_TISSUE, ADIPOSE_TISSUE),
    "muscle_tissue": (CATEGORY_TISSUE, MUSCLE_TISSUE),
    "soft_tissue": (CATEGORY_TISSUE, SOFT_TISSUE),
}


def segment_codes(label: str) -> tuple[Code, Code]:
    """(category, type) codes of a segment label.

    Parameters
    ----------
    label : str
        A key of :data:`SEGMENT_CODES`, or ``tissue_class_<k>`` for an intensity class.

    Returns
    -------
    (Code, Code)
        Segmented property category and type.

    Raises
    ------
    KeyError
        If the label has no code; add it to :data:`SEGMENT_CODES`.
    """
    if label in SEGMENT_CODES:
        return SEGMENT_CODES[label]
    if label.startswith("tissue_class_"):
        return CATEGORY_TISSUE, TISSUE
    raise KeyError(f"no SNOMED CT code for segment label {label!r}; add it to dicomnode.analysis.codes.SEGMENT_CODES")
