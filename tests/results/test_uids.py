"""results/uids.py: deterministic, valid, distinct result UIDs."""

from __future__ import annotations

import pytest
from pydicom.uid import PYDICOM_ROOT_UID, UID

from dicomnode.results.uids import DEFAULT_ROOT, ResultUids, result_uid

SERIES = "1.3.6.1.4.1.14519.5.2.1.5168.1900.449841255123215696894565592289"


@pytest.mark.parametrize("root", [DEFAULT_ROOT, PYDICOM_ROOT_UID, "1.2.826.0.1.3680043.10.1234."])
def test_same_inputs_same_uid_and_valid(root: str) -> None:
    a = result_uid(root, SERIES, "ct-body", "1", "seg.series")
    b = result_uid(root, SERIES, "ct-body", "1", "seg.series")
    assert a == b
    assert isinstance(a, UID) and a.is_valid and len(a) <= 64 and a.startswith(root)


@pytest.mark.parametrize("root", [DEFAULT_ROOT, PYDICOM_ROOT_UID])
def test_each_input_changes_the_uid(root: str) -> None:
    base = ("1.2.3", "ct-body", "1", "seg.series")
    variants = [
        ("1.2.4", "ct-body", "1", "seg.series"),
        ("1.2.3", "ct-lung", "1", "seg.series"),
        ("1.2.3", "ct-body", "2", "seg.series"),
        ("1.2.3", "ct-body", "1", "sr.series"),
    ]
    uids = {result_uid(root, *base)} | {result_uid(root, *v) for v in variants}
    assert len(uids) == 5


def test_parts_do_not_run_together() -> None:
    # pydicom joins entropy sources with "": ("ab", "c") and ("a", "bc") must still differ
    assert result_uid(DEFAULT_ROOT, "1.2", "ab", "c", "k") != result_uid(DEFAULT_ROOT, "1.2", "a", "bc", "k")


def test_default_root_is_uuid_derived() -> None:
    uid = result_uid(DEFAULT_ROOT, SERIES, "p", "1", "seg.series")
    number = int(uid.removeprefix("2.25."))
    assert 0 < number < 2**128 and not uid.removeprefix("2.25.").startswith("0")


@pytest.mark.parametrize("root", ["", "1.2.3", "1.02.3.", "abc.", "1." * 30])
def test_bad_root_is_refused(root: str) -> None:
    with pytest.raises(ValueError, match="root"):
        result_uid(root, SERIES, "p", "1", "seg")


@pytest.mark.parametrize("part", ["", "a|b"])
def test_bad_part_is_refused(part: str) -> None:
    with pytest.raises(ValueError):
        result_uid(DEFAULT_ROOT, SERIES, part, "1", "seg")
    with pytest.raises(ValueError):
        result_uid(DEFAULT_ROOT, SERIES, "p", "1", part)


def test_result_uids_for_series() -> None:
    uids = ResultUids.for_series(None, SERIES, "ct-body", "1")
    again = ResultUids.for_series(DEFAULT_ROOT, SERIES, "ct-body", "1")
    other_profile = ResultUids.for_series(None, SERIES, "ct-lung", "1")
    assert uids == again
    assert uids.seg_series_uid == again.seg_series_uid and uids.sr_instance_uid == again.sr_instance_uid
    made = [uids.seg_series_uid, uids.seg_instance_uid, uids.sr_series_uid, uids.sr_instance_uid,
            uids.series_uid("derived.denoised"), uids.instance_uid("derived.denoised", 2), uids.tracking_uid("body")]
    assert len(set(made)) == len(made)
    assert all(u.is_valid for u in made)
    assert uids.seg_series_uid != other_profile.seg_series_uid
    assert uids.uid("seg.series") == uids.seg_series_uid
    with pytest.raises(ValueError):
        uids.instance_uid("seg", 0)
    with pytest.raises(ValueError):
        ResultUids("1.2", SERIES, "p", "1")
