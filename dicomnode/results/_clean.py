"""Copy only what is valid: check every source attribute against its VR, VM and character set before our SEG, SR and
derived series copy it.

Real series break the rules (the sts series: Study ID of 17-20 characters where SH allows 16; a United Imaging MR:
Patient's Age ``***``; a Philips CT: Referenced Study Sequence items without Referenced SOP Class UID). highdicom
copies the Patient and Study modules of the first source image into every result object, and the derived series copy
them too, so the result would inherit the error. :func:`clean_header` returns a cleaned *deep copy* (the caller's
dataset is never changed) and the notes that say what was done; the notes name the attribute and the rule, never its
value (values can be PHI).

What is checked, for each attribute of the header (private ones are left alone: no result copies them):

* the value against its VR: AE, AS, CS, DA, DS, DT, IS, LO, LT, PN, SH, ST, TM, UC, UI, UR, UT (pydicom's checks,
  plus PN's at most 3 component groups of at most 5 components, and no control characters in text);
* the number of values against the attribute's VM in the data dictionary;
* the enumerated values of the attributes the results copy (:data:`_ENUMERATED`: Patient's Sex, the MR and PET
  acquisition codes), a site's synonym mapped ("MALE" -> "M");
* (not the characters against the Specific Character Set: a result whose text does not fit the set it copied is
  written in UTF-8 instead, :func:`dicomnode.results._common.fit_character_set`, so no name is ever mangled);
* sequences item by item: an item missing a Type 1 attribute of its macro (from highdicom's tables of the standard),
  or holding an invalid value there, is incomplete.

What is done, by the attribute's Type in the source IOD's modules (an attribute not in them counts as Type 3):

* Type 3 (and a sequence with no complete item left): **left out**, except a code string that is right but for its
  case or surrounding spaces (Body Part Examined "Abdomen "): upper case, as for Type 1 and 2;
* Type 1 and 2: **fixed** where a value can be derived (text cut to the VR's length, CS in upper case with ``_``
  for other characters, numbers re-formatted to fit DS/IS, extra values beyond the VM dropped, PN groups and
  components cut), otherwise **emptied** (a Type 2 sequence keeps its complete items, or none).

The identities the loader checked (SOP Instance, SOP Class, Study, Series and Frame of Reference UIDs) and the
Patient ID are never touched: a result filed under another patient or study than its source is worse than a
validator's complaint about a value the PACS already holds.

The Types come from highdicom's tables of the standard, reached through its private module
``highdicom._standard_utils`` (the one private highdicom name we use), as found in highdicom
:data:`HIGHDICOM_VERSION`. With another highdicom release, or if those tables are missing, the cleaning falls back
(one warning per process, ``result headers: IOD tables unavailable``): every attribute counts as Type 2, so an
invalid value is fixed or emptied and never left out, and sequence items are not checked for Type 1 attributes.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from pydicom import config as pydicom_config
from pydicom.datadict import dictionary_VM
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import MAX_VALUE_LEN, format_number_as_ds, validate_value

__all__ = ["HeaderNote", "clean_header", "clean_header_with_notes", "fix_element"]

log = logging.getLogger(__name__)

#: the highdicom release whose private tables (``highdicom._standard_utils``) :func:`_types` reads
HIGHDICOM_VERSION = "0.28.2"
_FALLBACK_TYPE = "2"  # without the tables: fix or empty an invalid value, never leave it out

_TEXT_VRS = {"AE", "CS", "LO", "SH", "ST", "LT", "UC", "UT", "AS", "UR"}
_DATE_VRS = {"DA", "TM", "DT"}
_CHECKED_VRS = _TEXT_VRS | _DATE_VRS | {"DS", "IS", "PN", "UI"}
_MULTILINE_VRS = {"ST", "LT", "UT"}
_MAX_PN_GROUP_CHARS = 64
_CS_BAD = re.compile(r"[^A-Z0-9_ ]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")  # ESC (ISO 2022) allowed; LF/CR/FF/TAB below
_CONTROL_SINGLE_LINE = re.compile(r"[\x00-\x1a\x1c-\x1f\x7f]")
_DT = re.compile(r"^\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?$")
#: Attributes whose values a fix must never touch: identities the caller checked when loading.
_KEEP = {"SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "PatientID"}


@dataclass(frozen=True, slots=True)
class HeaderNote:
    """One change made to the copied source header: which attribute (keyword, or a path for an item's attribute),
    what was done and why. Never the value."""

    keyword: str
    action: str  # "left out" | "emptied" | "fixed" | "items left out"
    reason: str

    def text(self) -> str:
        return f"result headers: {self.keyword} {self.action}: {self.reason}"


#: Sequences left as they are: the functional groups (geometry highdicom reads from the source; their macros are
#: optional, so their "Type 1" rows apply only to a macro that is present) and pixel-level sequences.
_SKIP_SEQUENCES = {"PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence", "SourceImageSequence",
                   "ReferencedImageSequence", "DimensionIndexSequence", "ContentSequence"}


@lru_cache(maxsize=64)
def _required_children(sop_class_uid: str) -> dict[tuple[str, ...], tuple[str, ...]]:
    """Sequence path -> the non-sequence attributes of Type 1 in its items (nested macros' sequences are left
    out: whether they apply depends on conditions the tables do not carry)."""
    out: dict[tuple[str, ...], list[str]] = {}
    for key, kind in _types(sop_class_uid).items():
        if len(key) > 1 and kind == "1" and not key[-1].endswith("Sequence"):
            out.setdefault(key[:-1], []).append(key[-1])
    return {k: tuple(v) for k, v in out.items()}


def iod_tables_refusal(version: str | None = None) -> str | None:
    """Why highdicom's private IOD tables are not used (``None``: they are), for highdicom ``version`` (default:
    the installed one)."""
    import highdicom

    found = highdicom.__version__ if version is None else version
    if found != HIGHDICOM_VERSION:
        return (f"highdicom {found} is installed and its private tables of the standard (highdicom._standard_utils) "
                f"were checked with {HIGHDICOM_VERSION} only; install highdicom=={HIGHDICOM_VERSION} to clean by IOD "
                "Type again")
    try:
        from highdicom._standard_utils import (  # noqa: F401
            get_iod_module_map, get_module_attribute_map, get_sop_class_iod_map)
    except ImportError as e:
        return f"highdicom {found} has no tables of the standard ({e}); reinstall highdicom=={HIGHDICOM_VERSION}"
    return None


@lru_cache(maxsize=1)
def _tables_refusal() -> str | None:
    """:func:`iod_tables_refusal` once per process, with its one warning."""
    why = iod_tables_refusal()
    if why is not None:
        log.warning("result headers: IOD tables unavailable, every attribute counts as Type 2 (invalid values fixed "
                    "or emptied, never left out): %s", why, extra={"reason": why})
    return why


@lru_cache(maxsize=64)
def _types(sop_class_uid: str) -> dict[tuple[str, ...], str]:
    """(sequence path..., keyword) -> Type ("1", "1C", "2", "2C", "3") in the IOD of ``sop_class_uid``; when an
    attribute is in several modules the strictest Type wins. Unknown SOP classes: the CT Image IOD's table.
    Without highdicom's tables (:func:`iod_tables_refusal`): empty (every attribute then counts as Type 2)."""
    if _tables_refusal() is not None:
        return {}
    from highdicom._standard_utils import get_iod_module_map, get_module_attribute_map, get_sop_class_iod_map

    iods = get_sop_class_iod_map()
    iod = iods.get(sop_class_uid) or iods["1.2.840.10008.5.1.4.1.1.2"]
    attributes = get_module_attribute_map()
    out: dict[tuple[str, ...], str] = {}
    for module in get_iod_module_map()[iod]:
        for item in attributes.get(module["key"], []):
            key = (*item["path"], item["keyword"])
            kind = str(item["type"])
            if key not in out or kind < out[key]:
                out[key] = kind
    return out


def clean_header(ds: Dataset) -> Dataset:
    """A deep copy of ``ds`` whose values satisfy their VRs (see :func:`clean_header_with_notes`)."""
    return clean_header_with_notes(ds)[0]


def clean_header_with_notes(ds: Dataset) -> tuple[Dataset, list[HeaderNote]]:
    """A deep copy of ``ds`` with every invalid value fixed, emptied or left out, and what was done.

    Parameters
    ----------
    ds : pydicom.Dataset
        A source header (any pixel data is copied too).

    Returns
    -------
    (pydicom.Dataset, list of HeaderNote)
        The copy (its ``file_meta`` copied too) and one note per attribute changed, in tag order.
    """
    out = copy.deepcopy(ds)
    charset_notes = _character_set(out)
    sop_class = str(ds.get("SOPClassUID", ""))
    tables = _Tables(_types(sop_class), _required_children(sop_class),
                     "3" if _tables_refusal() is None else _FALLBACK_TYPE)
    notes = charset_notes + [n for n in _clean_dataset(out, (), tables) if n.keyword != "SpecificCharacterSet"]
    fixed = _deidentification(out)
    if fixed:
        notes = [n for n in notes if n.keyword != "DeidentificationMethod"] + fixed
    notes += _complete_modules(out)
    if notes:
        log.debug("fixed invalid source values for result objects", extra={"keywords": [n.keyword for n in notes]})
    return out, notes


@dataclass(frozen=True, slots=True)
class _Tables:
    types: dict[tuple[str, ...], str]
    required: dict[tuple[str, ...], tuple[str, ...]]
    default_type: str = "3"  # the Type of an attribute not in the tables


def _clean_dataset(ds: Dataset, path: tuple[str, ...], tables: _Tables) -> Iterable[HeaderNote]:
    for elem in list(ds):  # iterating a Dataset yields its elements, converting raw ones
        if elem.tag.is_private or elem.tag.group in (0x0002, 0xFFFE):
            continue
        keyword = elem.keyword or str(elem.tag)
        if keyword in _KEEP and not path:
            continue
        kind = tables.types.get((*path, keyword), tables.default_type)
        name = ".".join((*path, keyword))
        if elem.VR == "SQ":
            if keyword not in _SKIP_SEQUENCES:
                yield from _clean_sequence(ds, elem, path, keyword, kind, tables)
            continue
        problem = _problem(elem)
        if problem is None and kind == "1C" and elem.value in (None, ""):
            del ds[elem.tag]  # a Type 1C attribute present must have a value; absent is right when its condition fails
            yield HeaderNote(name, "left out", "empty, but Type 1C (a value or nothing)")
            continue
        if problem is None:
            continue
        if kind.startswith("3") and not (_case_only(elem) or _same_value(elem)):
            del ds[elem.tag]
            yield HeaderNote(name, "left out", problem)
        elif fix_element(elem):
            yield HeaderNote(name, "emptied" if elem.value in (None, "") else "fixed", problem)


@dataclass(frozen=True, slots=True)
class _Module:
    """A module the results copy whole when the source has it (user-optional in the IODs): the attributes it needs
    once any of its attributes is present."""

    name: str
    type1: tuple[str, ...]
    one_of: tuple[str, ...]  # Type 1C pair: at least one of them
    type2: tuple[str, ...]
    others: tuple[str, ...]  # its Type 3 (and 1C) attributes
    needs: tuple[tuple[str, str], ...] = ()  # (attribute, the 1C attribute it makes required)

    def keywords(self) -> tuple[str, ...]:
        return self.type1 + self.one_of + self.type2 + self.others


#: The Clinical Trial Subject and Study modules (PS3.3 C.7.1.3, C.7.2.3), which highdicom copies into SEG and SR.
_MODULES = (
    _Module("ClinicalTrialSubject", ("ClinicalTrialSponsorName", "ClinicalTrialProtocolID"),
            ("ClinicalTrialSubjectID", "ClinicalTrialSubjectReadingID"),
            ("ClinicalTrialProtocolName", "ClinicalTrialSiteID", "ClinicalTrialSiteName"),
            ("IssuerOfClinicalTrialProtocolID", "OtherClinicalTrialProtocolIDsSequence", "IssuerOfClinicalTrialSiteID",
             "IssuerOfClinicalTrialSubjectID", "IssuerOfClinicalTrialSubjectReadingID",
             "ClinicalTrialProtocolEthicsCommitteeName", "ClinicalTrialProtocolEthicsCommitteeApprovalNumber"),
            (("ClinicalTrialProtocolEthicsCommitteeApprovalNumber", "ClinicalTrialProtocolEthicsCommitteeName"),)),
    _Module("ClinicalTrialStudy", (), (), ("ClinicalTrialTimePointID",),
            ("ClinicalTrialTimePointDescription", "LongitudinalTemporalOffsetFromEvent",
             "LongitudinalTemporalEventType", "ClinicalTrialTimePointTypeCodeSequence",
             "IssuerOfClinicalTrialTimePointID", "ConsentForClinicalTrialUseSequence"),
            (("LongitudinalTemporalOffsetFromEvent", "LongitudinalTemporalEventType"),)),
)


def _complete_modules(ds: Dataset) -> list[HeaderNote]:
    """A Clinical Trial module the source has only in part (a site that writes Clinical Trial Site Name and nothing
    else): left out whole when a Type 1 attribute is missing or empty (there is no value to derive: a sponsor or
    protocol made up would be worse than none; the modules are user-optional), else its missing Type 2 attributes
    added empty and a Type 3 attribute whose 1C companion is missing left out."""
    notes: list[HeaderNote] = []
    for module in _MODULES:
        present = [k for k in module.keywords() if k in ds]
        if not present:
            continue
        missing = [k for k in module.type1 if ds.get(k) in (None, "")]
        if module.one_of and all(ds.get(k) in (None, "") for k in module.one_of):
            missing.append(" or ".join(module.one_of))
        if missing:
            for k in present:
                del ds[k]
            notes.append(HeaderNote(module.name, "left out",
                                    f"module incomplete: no {', '.join(missing)} (Type 1) to copy"))
            continue
        for k in module.type2:
            if k not in ds:
                setattr(ds, k, None)
                notes.append(HeaderNote(k, "fixed", f"Type 2 of the {module.name} module: added empty"))
        for dependent, required in module.needs:
            if dependent in ds and ds.get(required) in (None, ""):
                del ds[dependent]
                notes.append(HeaderNote(dependent, "left out", f"needs {required} (Type 1C), which the source lacks"))
    return notes


#: Specific Character Set terms (PS3.3 C.12.1.1.2) that pydicom encodes and highdicom accepts ("" is the default
#: repertoire as value 1 of an ISO 2022 set; results/_common.py names it "ISO 2022 IR 6" for highdicom).
_CHARACTER_SETS = frozenset({
    "ISO_IR 100", "ISO_IR 101", "ISO_IR 109", "ISO_IR 110", "ISO_IR 144", "ISO_IR 127", "ISO_IR 126", "ISO_IR 138",
    "ISO_IR 148", "ISO_IR 13", "ISO_IR 166", "ISO_IR 192", "GB18030", "GBK", "ISO 2022 IR 6", "ISO 2022 IR 100",
    "ISO 2022 IR 101", "ISO 2022 IR 109", "ISO 2022 IR 110", "ISO 2022 IR 144", "ISO 2022 IR 127", "ISO 2022 IR 126",
    "ISO 2022 IR 138", "ISO 2022 IR 148", "ISO 2022 IR 13", "ISO 2022 IR 166", "ISO 2022 IR 87", "ISO 2022 IR 159",
    "ISO 2022 IR 58",
})
_UTF8 = "ISO_IR 192"


def _character_set(ds: Dataset) -> list[HeaderNote]:
    """Specific Character Set as the results can carry it: every text value of ``ds`` decoded in the source's own
    set, then, when a term is not one pydicom encodes and highdicom accepts (a misspelt ``ISO-8859-1``, ``ISO_IR 6``,
    which is no defined term, Korean ``ISO 2022 IR 149``, which highdicom 0.28 refuses), the set switched to UTF-8
    (``ISO_IR 192``): the same text, in a set every reader and highdicom know. Changes ``ds`` in place."""
    value = ds.get("SpecificCharacterSet", None)
    if value in (None, ""):
        return []
    terms = [str(t or "").strip() for t in (value if isinstance(value, (MultiValue, list, tuple)) else [value])]
    ok = all(t in _CHARACTER_SETS or (t == "" and i == 0 and len(terms) > 1) for i, t in enumerate(terms))
    if ok:
        return []
    ds.decode()  # every text read in the source's set (pydicom's fallback, Latin-1, for a term it does not know)
    ds.SpecificCharacterSet = _UTF8
    return [HeaderNote("SpecificCharacterSet", "fixed", "a term that is not a defined term pydicom and highdicom "
                       "both know; the text is written in UTF-8 (ISO_IR 192)")]


def _deidentification(ds: Dataset) -> list[HeaderNote]:
    """Patient Identity Removed YES needs De-identification Method or its code sequence (Type 1C): when the source
    gives neither, say that it did not record one (leaving the flag out would hide that the data are de-identified)."""
    if str(ds.get("PatientIdentityRemoved", "")).strip().upper() != "YES":
        return []
    if ds.get("DeidentificationMethod") or ds.get("DeidentificationMethodCodeSequence"):
        return []
    ds.DeidentificationMethod = "not recorded by the source"
    return [HeaderNote("DeidentificationMethod", "fixed",
                       "Type 1C when Patient Identity Removed is YES; the source gave no method")]


def _clean_sequence(ds: Dataset, elem: DataElement, path: tuple[str, ...], keyword: str, kind: str,
                    tables: _Tables) -> Iterable[HeaderNote]:
    inner = (*path, keyword)
    name = ".".join(inner)
    items = list(elem.value or [])
    kept = []
    reasons: list[str] = []
    required = tables.required.get(inner, ())
    for item in items:
        missing = [k for k in required if k not in item]
        empty = [k for k in required if k in item and item[k].value in (None, "")]
        sub = list(_clean_dataset(item, inner, tables))
        broken = [n for n in sub if n.action in ("emptied", "fixed")
                  and tables.types.get(tuple(n.keyword.split(".")), tables.default_type) in ("1", "1C")]
        unmet = None if missing or empty or broken else _macro_problem(keyword, item)
        if missing or empty or broken or unmet:
            reasons.append(f"item without {', '.join(missing + empty)} (Type 1)" if missing or empty
                           else f"item with an invalid Type 1 value ({broken[0].keyword.split('.')[-1]})" if broken
                           else f"item {unmet}")
            continue
        kept.append(item)
        yield from sub
    if len(kept) == len(items):
        return
    if kept:
        elem.value = kept
        yield HeaderNote(name, "items left out", f"{len(items) - len(kept)} incomplete item(s): {reasons[0]}")
    elif kind.startswith("3") or kind.startswith("1"):
        del ds[elem.tag]
        yield HeaderNote(name, "left out", f"no complete item: {reasons[0]}")
    else:
        elem.value = []
        yield HeaderNote(name, "emptied", f"no complete item: {reasons[0]}")


#: Sequences whose items are an HL7v2 Hierarchic Designator macro (PS3.3 10.14): Local Namespace Entity ID or
#: Universal Entity ID (Type 1C, at least one).
_HIERARCHIC_DESIGNATORS = frozenset({
    "IssuerOfAccessionNumberSequence", "IssuerOfAdmissionIDSequence", "IssuerOfServiceEpisodeIDSequence",
    "OrderPlacerIdentifierSequence", "OrderFillerIdentifierSequence", "AssigningFacilitySequence",
    "IssuerOfTheContainerIdentifierSequence", "IssuerOfTheSpecimenIdentifierSequence",
})
#: Sequences whose items are a Person Identification macro (PS3.3 10.1): Person Identification Code Sequence (Type
#: 1) and Institution Name or Institution Code Sequence (Type 1C, one of them).
_PERSON_IDENTIFICATIONS = frozenset({
    "ReferringPhysicianIdentificationSequence", "ConsultingPhysicianIdentificationSequence",
    "PhysiciansOfRecordIdentificationSequence", "PhysiciansReadingStudyIdentificationSequence",
    "PerformingPhysicianIdentificationSequence", "OperatorIdentificationSequence",
    "RequestingPhysicianIdentificationSequence", "HumanPerformerIdentificationSequence",
})


def _has(item: Dataset, keyword: str) -> bool:
    return keyword in item and item[keyword].value not in (None, "", [])


def _macro_problem(sequence: str, item: Dataset) -> str | None:
    """What makes an item of ``sequence`` incomplete beyond its unconditional Type 1 attributes (those the IOD
    tables give): an item with no (public) attribute at all, and the conditions of the macros sites fill in part (an
    empty Issuer of Accession Number item; an Issuer with a Universal Entity ID and no type; a physician's
    identification without code or institution). dciodvfy and Pixelmed refuse each; the item is left out."""
    if not any(not e.tag.is_private for e in item):
        return "empty (no attribute)"
    if _has(item, "UniversalEntityID") and not _has(item, "UniversalEntityIDType"):
        return "without UniversalEntityIDType (Type 1C: a Universal Entity ID needs its type)"
    if sequence in _HIERARCHIC_DESIGNATORS and not (_has(item, "LocalNamespaceEntityID")
                                                    or _has(item, "UniversalEntityID")):
        return "without LocalNamespaceEntityID or UniversalEntityID (Type 1C: one of them)"
    if sequence in _PERSON_IDENTIFICATIONS:
        if not _has(item, "PersonIdentificationCodeSequence"):
            return "without PersonIdentificationCodeSequence (Type 1)"
        if not (_has(item, "InstitutionName") or _has(item, "InstitutionCodeSequence")):
            return "without InstitutionName or InstitutionCodeSequence (Type 1C: one of them)"
    return None


def _case_only(elem: DataElement) -> bool:
    """A code string whose only fault is lower case or surrounding spaces ("Abdomen ", "thigh"): upper case is the
    same term, so even a Type 3 one is fixed rather than left out."""
    if elem.VR != "CS":
        return False
    values = _values(elem)
    limit = _max_vm(elem.tag)
    return (limit is None or len(values) <= limit) and all(
        _value_problem("CS", str(v).strip().upper()) is None for v in values)


def _same_value(elem: DataElement) -> bool:
    """A number or date whose only fault is its writing: a DS of 17+ characters ("75.000000000000001"), an IS
    written "1.0", an ACR-NEMA date "2020.01.02" or time "10:10:10": re-written, it is the same value, so even a Type
    3 one is fixed rather than left out (a PET's Patient's Weight is what its SUV stands on)."""
    if elem.VR not in ("DS", "IS", "DA", "TM"):
        return False
    values = _values(elem)
    limit = _max_vm(elem.tag)
    if limit is not None and len(values) > limit:
        return False
    for v in values:
        if _value_problem(elem.VR, v) is None:
            continue
        new = _fix_value(elem.VR, v)
        if new in (None, "") or _value_problem(elem.VR, new) is not None:
            return False
        if elem.VR == "IS" and float(str(v)) != float(new):
            return False  # "1.5" is no integer: not the same value
    return True


def _values(elem: DataElement) -> list[object]:
    if elem.value is None or elem.value == "":
        return []
    return list(elem.value) if isinstance(elem.value, (MultiValue, list, tuple)) else [elem.value]


def _max_vm(tag: int) -> int | None:
    try:
        vm = dictionary_VM(tag)
    except KeyError:
        return None
    if "n" in vm:
        return None
    return int(vm.split("-")[-1])


def _problem(elem: DataElement) -> str | None:
    """Why the element's value breaks its VR or VM, without quoting it; None when valid."""
    vr = elem.VR
    if vr not in _CHECKED_VRS:
        return None
    values = _values(elem)
    if not values:
        return None
    limit = _max_vm(elem.tag)
    if limit is not None and len(values) > limit:
        return f"{len(values)} values where its VM allows {limit}"
    for v in values:
        why = _value_problem(vr, v)
        if why:
            return why
    return _enumerated_problem(elem.keyword, values)


#: Enumerated Values (PS3.3) of the attributes the results copy from their source, by keyword: one set for every
#: value, or one set per value position. A value outside them is an error to dciodvfy (defined terms only warn).
_ENUMERATED: dict[str, tuple[frozenset[str], ...]] = {
    "PatientSex": (frozenset({"M", "F", "O"}),),
    "PatientIdentityRemoved": (frozenset({"YES", "NO"}),),
    "ScanningSequence": (frozenset({"SE", "IR", "GR", "EP", "RM"}),),
    "SequenceVariant": (frozenset({"SK", "MTC", "SS", "TRSS", "SP", "MP", "OSP", "NONE"}),),
    "MRAcquisitionType": (frozenset({"2D", "3D"}),),
    "DecayCorrection": (frozenset({"NONE", "START", "ADMIN"}),),
    "CountsSource": (frozenset({"EMISSION", "TRANSMISSION"}),),
    "SeriesType": (frozenset({"STATIC", "DYNAMIC", "GATED", "WHOLE BODY"}), frozenset({"IMAGE", "REPROJECTION"})),
}
#: MR Scanning Sequence (0018,0020) as some writers spell it (vendor sequence names, words for the terms), and the
#: term it means (PS3.3 C.8.3.1: SE, IR, GR, EP, RM). A name that says nothing about the echo type (e.g. FLAIR, which
#: may be a spin or a gradient echo) is not listed: it is dropped with the unknown ones.
_SCANNING_SEQUENCE_SPELLINGS: dict[str, str] = {
    **dict.fromkeys(("GRE", "GRADIENT", "GRADIENT ECHO", "GRADIENT_ECHO", "FFE", "TFE", "FGRE", "SPGR", "FLASH",
                     "FISP", "GRASS"), "GR"),
    **dict.fromkeys(("SPIN", "SPIN ECHO", "SPIN_ECHO", "SPINECHO", "TSE", "FSE"), "SE"),
    **dict.fromkeys(("INVERSION", "INVERSION RECOVERY", "INVERSION_RECOVERY"), "IR"),
    **dict.fromkeys(("EPI", "ECHO PLANAR", "ECHO_PLANAR", "ECHOPLANAR"), "EP"),
    **dict.fromkeys(("RESEARCH", "RESEARCH MODE", "RESEARCH_MODE"), "RM"),
}
#: What some sites write for an enumerated value, and the value it means.
_SYNONYMS: dict[str, dict[str, str]] = {"PatientSex": {"MALE": "M", "FEMALE": "F", "OTHER": "O"},
                                        "ScanningSequence": _SCANNING_SEQUENCE_SPELLINGS}


def _allowed(keyword: str, position: int) -> frozenset[str]:
    sets = _ENUMERATED[keyword]
    return sets[position] if len(sets) > 1 and position < len(sets) else sets[-1]


def _enumerated_problem(keyword: str, values: list[object]) -> str | None:
    if keyword not in _ENUMERATED:
        return None
    wrong = [str(v).strip() for i, v in enumerate(values) if str(v).strip() not in _allowed(keyword, i)]
    if not wrong:
        return None
    synonyms = _SYNONYMS.get(keyword, {})
    if all(w.upper() in synonyms or w.upper() in _allowed(keyword, 0) for w in wrong):
        return f"not one of the enumerated values of {keyword} (another spelling of one: mapped to it)"
    if synonyms:
        return f"not one of the enumerated values of {keyword} (other spellings mapped; unknown values dropped)"
    return f"not one of the enumerated values of {keyword}"


def _fix_enumerated(keyword: str, values: list[object]) -> list[object]:
    """Synonyms and case mapped to the enumerated value; values that are none dropped (a value of a positional
    attribute such as Series Type cannot be dropped alone: then none is kept)."""
    synonyms = _SYNONYMS.get(keyword, {})
    mapped = [synonyms.get(str(v).strip().upper(), str(v).strip().upper()) for v in values]
    if len(_ENUMERATED[keyword]) > 1:
        return mapped if all(v in _allowed(keyword, i) for i, v in enumerate(mapped)) else []
    return list(dict.fromkeys(v for v in mapped if v in _allowed(keyword, 0)))


def _value_problem(vr: str, value: object) -> str | None:
    text = value if isinstance(value, str) else str(value)
    if not _valid(vr, value):
        return _RULES.get(vr, f"not a valid {vr} value")
    if vr == "DT" and not _DT.match(text.strip()):
        return _RULES["DT"]
    if vr == "PN":
        groups = text.split("=")
        if len(groups) > 3 or any(len(g.split("^")) > 5 for g in groups):
            return "more than 3 component groups or 5 components (PN)"
        if any(len(g) > _MAX_PN_GROUP_CHARS for g in groups):
            return "a component group longer than 64 characters (PN)"
    if vr in _TEXT_VRS | {"PN"}:
        pattern = _CONTROL if vr in _MULTILINE_VRS else _CONTROL_SINGLE_LINE
        if pattern.search(text):
            return f"control characters in a {vr} value"
    return None


_RULES = {
    "AS": "not a valid Age String (AS: nnnD, nnnW, nnnM or nnnY)",
    "DA": "not a valid date (DA: YYYYMMDD)",
    "TM": "not a valid time (TM: HH[MM[SS[.F]]])",
    "DT": "not a valid date-time (DT: YYYY[MM[DD[HH[MM[SS[.F]]]]]][&ZZXX])",
    "DS": "not a valid decimal string (DS: at most 16 characters)",
    "IS": "not a valid integer string (IS)",
    "UI": "not a valid UID (UI: digits and dots, at most 64 characters)",
    "CS": "not a valid code string (CS: A-Z, 0-9, space, _; at most 16 characters)",
    "SH": "longer than 16 characters (SH)",
    "LO": "longer than 64 characters (LO)",
    "AE": "not a valid AE title (AE)",
}


def _valid(vr: str, value: object) -> bool:
    if not isinstance(value, (str, bytes)):
        value = str(value)  # DSfloat, IS, PersonName: pydicom validates their text
    try:
        validate_value(vr, value, pydicom_config.RAISE)
    except (ValueError, TypeError):
        return False
    return True


def _fix_value(vr: str, value: object) -> object:
    """A valid value derived from an invalid one, or None when none can be derived."""
    if value is None or value == "":
        return value
    text = str(value)
    if vr in _TEXT_VRS | {"PN"}:
        text = (_CONTROL if vr in _MULTILINE_VRS else _CONTROL_SINGLE_LINE).sub("", text)
    if vr == "CS":
        text = _CS_BAD.sub("_", text.strip().upper())
        return text[: MAX_VALUE_LEN["CS"]]
    if vr in ("AS", "AE", "UR"):
        return None  # nothing to derive an age or an address from
    if vr in _TEXT_VRS:
        limit = MAX_VALUE_LEN.get(vr)
        return text[:limit] if limit else text
    if vr == "DS":
        try:
            return format_number_as_ds(float(text))
        except (TypeError, ValueError, OverflowError):
            return None
    if vr == "IS":
        try:
            number = int(float(text))
        except (TypeError, ValueError, OverflowError):
            return None
        return number if -(2**31) <= number < 2**31 else None
    if vr == "PN":
        groups = text.split("=")[:3]
        return "=".join("^".join(g.split("^")[:5])[:_MAX_PN_GROUP_CHARS] for g in groups)
    if vr == "DA" and re.fullmatch(r"\d{4}[.-]\d{2}[.-]\d{2}", text.strip()):
        return re.sub(r"[.-]", "", text.strip())  # ACR-NEMA's YYYY.MM.DD (and ISO's YYYY-MM-DD)
    if vr == "TM" and re.fullmatch(r"\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?", text.strip()):
        return text.strip().replace(":", "")  # ACR-NEMA's HH:MM:SS
    return None  # other DA, TM, DT and UI values: none can be derived


def fix_element(elem: DataElement) -> bool:
    """Fix the value(s) of one element in place if they break its VR or VM; True when it changed.

    Invalid values are replaced by derived ones (:func:`_fix_value`); values that cannot be fixed are dropped;
    values beyond the VM are dropped; with none left the element is emptied.

    Parameters
    ----------
    elem : pydicom.DataElement
        A non-sequence element of a copy (never of the caller's dataset).

    Returns
    -------
    bool
        Whether the value was changed.
    """
    if elem.VR not in _CHECKED_VRS or _problem(elem) is None:
        return False
    vr = elem.VR
    values = _values(elem)
    limit = _max_vm(elem.tag)
    if limit is not None:
        values = values[:limit]
    new = [v if _value_problem(vr, v) is None else _fix_value(vr, v) for v in values]
    new = [v for v in new if v not in (None, "") and _value_problem(vr, v) is None]
    if elem.keyword in _ENUMERATED:
        new = _fix_enumerated(elem.keyword, new)
    if not new:
        elem.value = None
    else:
        elem.value = new if len(new) > 1 else new[0]
    return True
