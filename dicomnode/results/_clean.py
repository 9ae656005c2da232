"""Make copied source attributes valid before highdicom copies them into our SEG and SR.

Real series break the VR rules (the sts series: Study ID of 17-20 characters where SH allows 16). highdicom copies the
Patient and Study modules of the first source image into every result object, so the result would inherit the
error. :func:`clean_header` returns a cleaned *deep copy*; the caller's dataset is never changed.

Fixes, by VR (after pydicom's own validation of each value):

* text VRs with a maximum length (AE, CS, DS as text, LO, SH, ST, LT, UI-less strings): cut to the maximum length;
* CS: upper case, characters outside ``A-Z 0-9 _ space`` replaced with ``_``;
* DS and IS: numbers re-formatted to fit (DS with pydicom's ``format_number_as_ds``), non-numbers emptied;
* PN: each component group cut to 64 characters;
* DA, TM, DT that do not parse: emptied (the attributes copied are Type 2 or 3: empty is valid).

Only values are changed, never a tag added or removed, so nothing the PACS matches on (UIDs, IDs) moves unless it
was invalid. Logged: the keywords that were fixed (never the values: they can be PHI).
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Iterable

from pydicom import config as pydicom_config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.valuerep import MAX_VALUE_LEN, format_number_as_ds, validate_value

__all__ = ["clean_header", "fix_element"]

log = logging.getLogger(__name__)

_TEXT_VRS = {"AE", "CS", "LO", "SH", "ST", "LT", "UC", "UT", "AS"}
_DATE_VRS = {"DA", "TM", "DT"}
_MAX_PN_GROUP_CHARS = 64
_CS_BAD = re.compile(r"[^A-Z0-9_ ]")
#: Attributes whose values a fix must never touch: identities the caller checked when loading.
_KEEP = {"SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"}


def clean_header(ds: Dataset) -> Dataset:
    """A deep copy of ``ds`` whose values satisfy their VRs.

    Parameters
    ----------
    ds : pydicom.Dataset
        A source header (without pixel data; any pixel data is copied too).

    Returns
    -------
    pydicom.Dataset
        The copy, with invalid values fixed as the module docstring lists; its ``file_meta`` is copied too.
    """
    out = copy.deepcopy(ds)
    fixed = sorted(set(_clean_dataset(out)))
    if fixed:
        log.debug("fixed invalid source values for result objects", extra={"keywords": fixed})
    return out


def _clean_dataset(ds: Dataset) -> Iterable[str]:
    for elem in ds:  # iterating a Dataset yields its elements, converting raw ones
        if elem.VR == "SQ":
            for item in elem.value or []:
                yield from _clean_dataset(item)
        elif elem.keyword not in _KEEP and fix_element(elem):
            yield elem.keyword or str(elem.tag)


def _valid(vr: str, value: object) -> bool:
    if not isinstance(value, (str, bytes)):
        value = str(value)  # DSfloat, IS, PersonName: pydicom validates their text
    try:
        validate_value(vr, value, pydicom_config.RAISE)
    except (ValueError, TypeError):
        return False
    return True


def _fix_value(vr: str, value: object) -> object:
    if value is None or value == "":
        return value
    if vr == "CS":
        text = _CS_BAD.sub("_", str(value).upper())
        return text[: MAX_VALUE_LEN["CS"]]
    if vr in _TEXT_VRS:
        limit = MAX_VALUE_LEN.get(vr)
        return str(value)[:limit] if limit else value
    if vr == "DS":
        try:
            return format_number_as_ds(float(value))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
    if vr == "IS":
        try:
            number = int(float(value))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
        return number if -(2**31) <= number < 2**31 else None
    if vr == "PN":
        groups = str(value).split("=")
        return "=".join(g[:_MAX_PN_GROUP_CHARS] for g in groups)
    if vr in _DATE_VRS:
        return None
    return value


def fix_element(elem: DataElement) -> bool:
    """Fix the value(s) of one element in place if they break its VR; return True when something changed.

    Parameters
    ----------
    elem : pydicom.DataElement
        A non-sequence element of a copy (never of the caller's dataset).

    Returns
    -------
    bool
        Whether the value was changed.
    """
    vr = elem.VR
    if vr not in _TEXT_VRS | _DATE_VRS | {"DS", "IS", "PN"} or elem.value is None:
        return False
    values = list(elem.value) if elem.VM > 1 else [elem.value]
    if all(_valid(vr, v) for v in values):
        return False
    new = [v if _valid(vr, v) else _fix_value(vr, v) for v in values]
    if vr in {"DS", "IS"} or vr in _DATE_VRS:
        new = [v for v in new if v is not None]
        if not new:
            elem.value = None
            return True
    elem.value = new if len(new) > 1 else new[0]
    return True
