"""The scene from the study's anatomy, through the chain and the node's index (jobs/chain.py, jobs/spec.py,
store/db.py study_context): a PET whose own image cannot name its region takes it from its study's CT on the same
frame of reference; the CT alone is unchanged; a series of another frame of reference lends nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pydicom
import pytest

from helpers import SHARED_DATA, stored_instance
from dicomnode.config import parse_config
from dicomnode.jobs.chain import run_chain
from dicomnode.jobs.kinds import queued
from dicomnode.jobs.spec import ChainSpec, ContextSeries, JobSource
from dicomnode.node import Node
from dicomnode.store.db import SeriesState

STS2 = SHARED_DATA / "sts" / "STS_002"
SCENE_ONLY = parse_config({"profiles": {"scene-only": {"steps": ["scene"], "outputs": []}}}).profiles["scene-only"]


def _files(folder: Path) -> tuple[str, ...]:
    return tuple(str(p) for p in sorted(folder.iterdir()) if p.is_file())


def _scene(tmp_path: Path, name: str, files, context=()) -> dict:
    out = run_chain(ChainSpec(files=tuple(files), profile=SCENE_ONLY, out_dir=str(tmp_path / name), uid_root="2.25.",
                              context=tuple(context)))
    return json.loads(Path(out.results_json).read_text())


def _other_frame(src: Path, dst: Path) -> Path:
    """The CT's files with another FrameOfReferenceUID (a study whose series were not acquired in one frame)."""
    dst.mkdir(parents=True)
    for p in sorted(src.iterdir()):
        ds = pydicom.dcmread(p)
        ds.FrameOfReferenceUID = "2.25.1234567890"
        ds.save_as(dst / p.name, enforce_file_format=True)
    return dst


def test_the_pet_crop_takes_pelvis_from_its_ct_and_the_ct_alone_is_unchanged(tmp_path):
    pet, ct = _files(STS2 / "PET"), _files(STS2 / "CT")
    alone = _scene(tmp_path, "pet-alone", pet)
    assert alone["scene"]["label"] == "unknown"                  # a 15 x 16 cm buttock crop: no landmark
    with_ct = _scene(tmp_path, "pet-ct", pet, [ContextSeries("CT", ct)])
    scene = with_ct["scene"]
    assert scene["label"] == "pelvis"
    borrowed = [r for r in scene["regions"] if r.get("source")]
    assert borrowed and all(r["source"].startswith("CT series 3") for r in borrowed)
    ct_scene = _scene(tmp_path, "ct", ct)["scene"]
    assert ct_scene["label"] == "pelvis" and not any(r.get("source") for r in ct_scene["regions"])
    assert scene["probabilities"]["pelvis"] <= ct_scene["probabilities"]["pelvis"] + 1e-9
    notes = " ".join(with_ct["notes"])
    assert "borrowed from CT series 3" in notes and "loaded and recognised with the same model" in notes
    # no UID in what the notes say of the sibling
    assert pydicom.dcmread(ct[0], stop_before_pixels=True).SeriesInstanceUID not in notes
    # the CT with the PET as its context: nothing unknown to fill, the PET is never read
    assert _scene(tmp_path, "ct-pet", ct, [ContextSeries("PT", pet)])["scene"] == ct_scene


def test_a_series_of_another_frame_of_reference_or_a_derived_one_lends_nothing(tmp_path):
    pet = _files(STS2 / "PET")
    other = _files(_other_frame(STS2 / "CT", tmp_path / "ct-other-frame"))
    derived_mr = _files(STS2 / "MR_T1")                            # ImageType DERIVED\PRIMARY (IBSI re-export)
    res = _scene(tmp_path, "pet", pet, [ContextSeries("CT", other), ContextSeries("MR", derived_mr)])
    assert res["scene"]["label"] == "unknown"
    assert not any(r.get("source") for r in res["scene"]["regions"])
    notes = " ".join(res["notes"])
    assert "another frame of reference" in notes and "derived image" in notes


def _receive(node: Node, folder: Path, spool: Path) -> str:
    stored = [stored_instance(p, spool) for p in sorted(folder.iterdir()) if p.is_file()]
    node._index(stored)
    node.route_series(*node._route_queue.get_nowait())
    return stored[0].series_uid


@pytest.mark.parametrize("same_frame", [True, False])
def test_the_pet_job_spec_carries_its_studys_ct_on_the_same_frame(tmp_path, same_frame):
    cfg = parse_config({"node": {"data_dir": str(tmp_path / "data")}, "series": {"quiet_seconds": 1},
                        "rules": [{"name": "pet", "match": {"Modality": "PT"}, "profile": "pet"}]})
    node = Node(cfg)
    ct_folder = STS2 / "CT" if same_frame else _other_frame(STS2 / "CT", tmp_path / "ct-other-frame")
    ct_uid = _receive(node, ct_folder, tmp_path / "spool" / "ct")
    mr_uid = _receive(node, STS2 / "MR_T1", tmp_path / "spool" / "mr")
    assert node.complete_due(time.time() + 60) == []             # no rule for CT or MR: unrouted, no job
    assert node.db.get_series(ct_uid).state is SeriesState.UNROUTED
    pet_uid = _receive(node, STS2 / "PET", tmp_path / "spool" / "pet")
    assert node.db.get_series(pet_uid).frame_of_reference_uid == str(
        pydicom.dcmread(next(iter(sorted((STS2 / "PET").iterdir()))), stop_before_pixels=True).FrameOfReferenceUID)
    (job_id,) = node.complete_due(time.time() + 120)
    job = node.db.get_job(job_id)
    spec = queued(job.kind, job.params).spec(series_uid=pet_uid, depends_on=None, rule=job.rule,
                                             source=JobSource(cfg, node.db.instance_paths, node.db.study_context),
                                             out_dir=str(tmp_path / "out"), job_id=job_id)
    if same_frame:
        # CT first (anatomy), then the MR; each with the paths the index keeps for it
        assert [c.modality for c in spec.context] == ["CT", "MR"]
        assert set(spec.context[0].files) == set(node.db.instance_paths(ct_uid))
    else:
        assert [c.modality for c in spec.context] == ["MR"]
    # from the CT: the MR, then the PET (complete now); on another frame: nothing
    assert node.db.study_context(ct_uid) == ([("MR", mr_uid), ("PT", pet_uid)] if same_frame else [])
    node.db.close()


def test_results_that_borrow_from_a_sibling_get_uids_of_their_own(tmp_path):
    """Result UIDs are derived from the inputs: the PET's evaluations SR made with its CT's regions is another
    object than the one made from the PET alone (a PACS never holds two contents under one UID), and the same
    inputs make the same UIDs again."""
    from dicomnode.config import load_config

    profile = load_config(None).profiles["pet"]
    pet, ct = _files(STS2 / "PET"), _files(STS2 / "CT")

    def sops(name, context=()):
        out = run_chain(ChainSpec(files=pet, profile=profile, out_dir=str(tmp_path / name), uid_root="2.25.",
                                  context=tuple(context)))
        res = json.loads(Path(out.results_json).read_text())
        return res["scene"]["label"], set(out.sop_instance_uids)

    label_alone, alone = sops("alone")
    label_ct, with_ct = sops("with-ct", [ContextSeries("CT", ct)])
    label_again, again = sops("again", [ContextSeries("CT", ct)])
    assert (label_alone, label_ct, label_again) == ("unknown", "pelvis", "pelvis")
    assert alone and with_ct and not alone & with_ct
    assert again == with_ct
