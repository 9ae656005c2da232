"""results/_common.py fit_character_set: a result's Specific Character Set holds all its text, unambiguously."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from dicomnode.results._common import fit_character_set, lo


def _ds(charset: object, **values: str) -> Dataset:
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


@pytest.mark.parametrize(("charset", "values", "switched"), [
    (None, {"PatientName": "Muller^Hans"}, False),
    (None, {"PatientName": "Müller^Hans"}, True),  # the default repertoire is ASCII: Latin-1 bytes would be wrong
    ("ISO_IR 100", {"PatientName": "Müller^Hans", "StudyDescription": "Hüfte"}, False),
    ("ISO_IR 100", {"PatientName": "Müller^Hans", "StudyDescription": "病変"}, True),  # a label from another object
    ("ISO_IR 192", {"PatientName": "王^小東", "StudyDescription": "腿"}, False),
    # PS3.5 Annex H's example: "やまだ" holds a 0x5E byte (^) inside a character; readers parse PN by its escapes
    (["", "ISO 2022 IR 87"], {"PatientName": "Yamada^Tarou=山田^太郎=やまだ^たろう", "StudyDescription": "山田"}, False),
    (["ISO 2022 IR 6", "ISO 2022 IR 87"], {"StudyDescription": "大腿部"}, True),  # 腿 = 0x42 0x5C in JIS X 0208
    (["", "ISO 2022 IR 87"], {"StudyDescription": "Müller"}, True),  # no Latin-1 in ISO 2022 IR 87
    ("ISO_IR 144", {"PatientName": "Иванов^Иван"}, False),
    ("NOT A TERM", {"PatientName": "A^B"}, True),
])
def test_the_character_set_is_switched_to_utf8_only_when_needed(charset, values, switched) -> None:
    ds = _ds(charset, **values)
    assert fit_character_set(ds) is switched
    if switched:
        assert ds.SpecificCharacterSet == "ISO_IR 192"
    else:
        assert ds.get("SpecificCharacterSet") == charset
    for keyword, value in values.items():
        assert str(ds.data_element(keyword).value) == value  # the text itself never changes


def test_sequence_items_are_checked_too() -> None:
    item = _ds(None, CodeMeaning="Läsion")
    ds = _ds(None, PatientName="A^B")
    ds.ConceptNameCodeSequence = [item]
    assert fit_character_set(ds) and ds.SpecificCharacterSet == "ISO_IR 192"


def test_lo_keeps_the_characters_and_cuts_to_64() -> None:
    assert lo("“Läsion” – 病変\x07") == '"Läsion" - 病変'
    assert len(lo("x" * 80)) == 64
