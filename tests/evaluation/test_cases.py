"""The case file: typed cases from TOML, every problem reported with the file, the key and the fix."""

from __future__ import annotations

import pytest

from dicomnode.evaluation.cases import CaseFileError, TruthKind, load_cases

from helpers import REPO, SHARED_DATA


def test_shared_case_file_loads_with_paths_under_the_data_root():
    cf = load_cases(REPO / "conf" / "evaluation" / "shared.toml")
    assert cf.data_root == SHARED_DATA
    ids = [c.id for c in cf.cases]
    assert len(ids) == len(set(ids)) >= 20
    chest = next(c for c in cf.cases if c.id == "chest-ct-b40f")
    assert chest.scene == "chest" and chest.expects_chest and chest.lesions[0].kind is TruthKind.VOC
    pet = next(c for c in cf.cases if c.id == "wholebody-pet")
    assert [r.label for r in pet.regions] == ["chest", "abdomen", "pelvis", "extremity"]
    assert pet.lesions[0].rois == ("GTV_Mass",)


def test_data_root_option_and_environment_override_the_file(tmp_path, monkeypatch):
    f = tmp_path / "c.toml"
    f.write_text('data_root = "nowhere"\n[[cases]]\nid = "a"\nseries = "sts/STS_001/CT"\n')
    assert load_cases(f, data_root=SHARED_DATA).cases[0].series == SHARED_DATA / "sts" / "STS_001" / "CT"
    monkeypatch.setenv("DICOMNODE_EVAL_DATA", str(SHARED_DATA))
    assert load_cases(f).data_root == SHARED_DATA


def test_every_problem_is_named_with_file_key_and_fix(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text(f'''data_root = "{SHARED_DATA}"
colour = 1
[[cases]]
id = "a"
series = "sts/STS_001/CT"
scene = "thorax"
lesions = [{{ rtstruct = "sts/STS_001/CT_rtstruct/RS.dcm" }}]
[[cases]]
id = "a"
series = "no/such/folder"
regions = [{{ label = "chest", z_mm = [5] }}]
lesions = [{{ voc = "x", seg = "y" }}]
''')
    with pytest.raises(CaseFileError) as e:
        load_cases(f)
    msg = str(e.value)
    assert str(f) in msg
    for key in ("colour", "cases[0].scene", "cases[0].lesions[0].rois", "cases[1].series", "cases[1].regions[0]",
                "cases[1].lesions[0]"):
        assert key in msg, (key, msg)
    assert "use one of head, neck, chest" in msg
    assert "list the ROI names" in msg


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(CaseFileError, match="no such case file"):
        load_cases(tmp_path / "none.toml")
    (tmp_path / "b.toml").write_text("[[cases]\n")
    with pytest.raises(CaseFileError, match="not valid TOML"):
        load_cases(tmp_path / "b.toml")
    (tmp_path / "e.toml").write_text("data_root = '.'\n")
    with pytest.raises(CaseFileError, match="add at least one"):
        load_cases(tmp_path / "e.toml")


def test_a_case_names_its_study_context_or_none(tmp_path):
    f = tmp_path / "ctx.toml"
    f.write_text(f'''data_root = "{SHARED_DATA}"
[[cases]]
id = "pet"
series = "sts/STS_002/PET"
context = ["sts/STS_002/CT"]
[[cases]]
id = "none"
series = "sts/STS_002/PET"
context = []
[[cases]]
id = "found"
series = "sts/STS_002/PET"
''')
    pet, none, found = load_cases(f).cases
    assert pet.context == (SHARED_DATA / "sts" / "STS_002" / "CT",)
    assert none.context == () and found.context is None        # None: the folders next to the series
    f.write_text(f'data_root = "{SHARED_DATA}"\n[[cases]]\nid = "a"\nseries = "sts/STS_002/PET"\n'
                 'context = "sts/STS_002/CT"\n[[cases]]\nid = "b"\nseries = "sts/STS_002/PET"\ncontext = ["no/such"]\n')
    with pytest.raises(CaseFileError) as e:
        load_cases(f)
    assert "cases[0].context" in str(e.value) and "cases[1].context" in str(e.value)
    assert "or [] for none" in str(e.value)
