"""DICOM UID grammar: the gate every UID from the network passes before it names a file.

A UID (PS3.5 section 9.1) is 1 to 64 characters of components made of digits, separated by single
dots; a component of more than one digit does not start with ``0``. Values on the wire are padded to
an even length with a trailing NUL (UI) or space, which is stripped first.

Everything that turns a UID into a path (``store/spool.py``) calls :func:`check_uid` first, so a
hostile value such as ``1.2.3/../../x`` never reaches the file system.
"""

from __future__ import annotations

import re

from dicomnode.errors import InvalidUIDError

__all__ = ["IMPLEMENTATION_CLASS_UID", "IMPLEMENTATION_VERSION_NAME", "MAX_UID_CHARS", "check_uid", "is_valid_uid"]

MAX_UID_CHARS = 64
"""Longest valid UID, in characters (PS3.5 section 9.1)."""

# digits, no leading zero in a multi-digit component, single dots between components
_UID_RE = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")

IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.8.498.44639641224740310921523878500969395630"
"""Implementation Class UID written into the file meta of spooled files.

Derived once with ``pydicom.uid.generate_uid(entropy_srcs=["dicomnode implementation"])`` (under
pydicom's UID root), so it is stable across releases and machines.
"""

IMPLEMENTATION_VERSION_NAME = "DICOMNODE_01"
"""Implementation Version Name (SH, at most 16 characters) written into the file meta."""


def _strip_padding(uid: str) -> str:
    return uid.rstrip("\x00 ")


def is_valid_uid(uid: str) -> bool:
    """Return whether `uid` follows the DICOM UID grammar.

    Parameters
    ----------
    uid : str
        The value as received; trailing NUL and space padding is ignored.

    Returns
    -------
    bool
        ``True`` for 1..64 characters of digit components separated by single dots, without a
        leading zero in a multi-digit component; ``False`` otherwise (also for non-``str`` input).

    Examples
    --------
    >>> is_valid_uid("1.2.840.10008.1.2.1\\x00")
    True
    >>> is_valid_uid("1.2.3/../../x")
    False
    """
    if not isinstance(uid, str):
        return False
    value = _strip_padding(uid)
    return 0 < len(value) <= MAX_UID_CHARS and _UID_RE.fullmatch(value) is not None


def check_uid(uid: str, field: str) -> str:
    """Return `uid` without its padding, or raise if it breaks the UID grammar.

    Parameters
    ----------
    uid : str
        The value as received (may carry a trailing NUL or space).
    field : str
        Name of the attribute the value came from, e.g. ``"SeriesInstanceUID"``; used in the message.

    Returns
    -------
    str
        The UID with trailing padding removed.

    Raises
    ------
    InvalidUIDError
        If the value is empty, longer than 64 characters, or holds anything but digit components
        separated by single dots (e.g. ``1.2.3/../../x``, ``..``, ``1.02``).
    """
    if not is_valid_uid(uid):
        shown = uid if isinstance(uid, str) and len(uid) <= 80 else f"{str(uid)[:80]}..."
        raise InvalidUIDError(
            f"{field} = {shown!r} is not a valid DICOM UID (1 to {MAX_UID_CHARS} characters of digit "
            "components separated by single dots, no leading zeros); the sender must fix the object"
        )
    return _strip_padding(uid)
