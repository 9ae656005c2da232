"""A case's study context in folders (evaluation/context.py): the other series folders next to it that hold an
image series of the same study and frame of reference, CT first; headers only."""

from __future__ import annotations

from pathlib import Path

from helpers import SHARED_DATA
from dicomnode.evaluation.context import context_series


def _first(folder: Path) -> Path:
    return next(p for p in sorted(folder.iterdir()) if p.is_file())


def _folders(context) -> list[str]:
    return [Path(c.files[0]).parent.name for c in context]


def test_the_pet_finds_its_ct_first_and_never_a_contour_or_another_study():
    pet = SHARED_DATA / "sts" / "STS_002" / "PET"
    ctx = context_series(pet, _first(pet))
    assert _folders(ctx) == ["CT", "MR_T1"]                  # RTSTRUCT folders are not images; CT before MR
    assert [c.modality for c in ctx] == ["CT", "MR"]
    assert len(ctx[0].files) == len([p for p in (pet.parent / "CT").iterdir() if p.is_file()])


def test_the_adc_finds_its_t2_and_a_series_alone_finds_nothing():
    adc = SHARED_DATA / "abdomen-mr" / "ADC"
    assert _folders(context_series(adc, _first(adc))) == ["T2_ax"]
    head = SHARED_DATA / "head-ct" / "CT"                      # no other series next to it
    assert context_series(head, _first(head)) == ()
    # named folders of another study (STS_003's CT next to STS_002's PET): not the study, not used
    pet = SHARED_DATA / "sts" / "STS_002" / "PET"
    assert context_series(pet, _first(pet), [SHARED_DATA / "sts" / "STS_003" / "CT"]) == ()
    assert context_series(pet, _first(pet), []) == ()
