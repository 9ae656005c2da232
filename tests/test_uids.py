"""The UID grammar gate: every UID that names a file passes it first."""

from __future__ import annotations

import pytest

from dicomnode.errors import InvalidUIDError
from dicomnode.uids import IMPLEMENTATION_CLASS_UID, check_uid, is_valid_uid

VALID = [
    "0",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.1\x00",  # UI padding on the wire
    "1.2.3 ",
    "2.25.329800735698586629295641978511506172918",
    "1." + "2" * 62,  # exactly 64 characters
    "1.0.2",
]
INVALID = [
    "",
    "\x00",
    "..",
    ".",
    "1..2",
    ".1.2",
    "1.2.",
    "1.2.3/../../x",
    "../../etc/passwd",
    "1.2.3\\4",
    "1.02.3",  # leading zero in a multi-digit component
    "01.2",
    "1.2.a",
    "1.2.-3",
    "1." + "2" * 63,  # 65 characters
    " 1.2",
    "1.2\n3",
    "1.2\x003",
    "１.２",  # full-width digits
]


@pytest.mark.parametrize("uid", VALID)
def test_valid_uids_pass_and_lose_their_padding(uid: str) -> None:
    assert is_valid_uid(uid)
    assert check_uid(uid, "SOPInstanceUID") == uid.rstrip("\x00 ")


@pytest.mark.parametrize("uid", INVALID)
def test_invalid_uids_are_refused_with_the_field_named(uid: str) -> None:
    assert not is_valid_uid(uid)
    with pytest.raises(InvalidUIDError, match="SeriesInstanceUID"):
        check_uid(uid, "SeriesInstanceUID")


def test_non_strings_are_not_uids() -> None:
    assert not is_valid_uid(None)  # type: ignore[arg-type]
    assert not is_valid_uid(b"1.2.3")  # type: ignore[arg-type]


def test_long_hostile_values_are_shortened_in_the_message() -> None:
    with pytest.raises(InvalidUIDError) as info:
        check_uid("9/" * 1000, "StudyInstanceUID")
    assert len(str(info.value)) < 400


def test_our_implementation_class_uid_is_valid() -> None:
    assert is_valid_uid(IMPLEMENTATION_CLASS_UID)
