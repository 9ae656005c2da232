"""evaluation/loo.py and scene_training.fit_scene: a fold's model never holds its patient; profiles of a fold."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from dicomnode import scene_training as st
from dicomnode.analysis.scene_phantoms import scene_phantom
from dicomnode.analysis.volume import Volume
from dicomnode.config import Profile
from dicomnode.evaluation.cases import Case
from dicomnode.evaluation.loo import FoldModels, fold_profile, patient_of


def _example(patient: str, region: str, rng) -> st.SceneExample:
    img, sp = scene_phantom(region, "CT", rng=rng, n_slices=40)  # 200 mm along z: several slabs
    v = Volume(img.astype(np.float32), sp, (0.0, 0.0, 0.0), np.eye(3), modality="CT", unit="HU")
    return st.example_from_volume(v, f"{patient}-{region}", patient, scene=region)


def test_a_fold_never_holds_its_patient_and_labels_follow_the_truth():
    rng = np.random.default_rng(3)
    examples = [_example(p, r, rng) for p in ("p1", "p2", "p3") for r in ("chest", "extremity")]
    for e in examples:  # a series labelled as a whole: its middle slabs carry its label, nothing else
        assert {lab for lab in e.slab_labels if lab is not None} == {e.key.split("-")[1]}
    from dicomnode.commands.train import phantom_samples
    phantoms = phantom_samples(3, ["chest", "extremity"], seed=1)
    fold = st.fit_scene(examples, phantoms, exclude="p2")
    assert fold.patients == ("p1", "p3")
    n_p2 = sum(len(e.rows()[1]) for e in examples if e.patient == "p2")
    assert fold.n_slabs == sum(len(e.rows()[1]) for e in examples) - n_p2 > 0
    assert fold.temperature_ct >= 1.0 and fold.held_out == []  # figures only for the shipped (all-patient) fit
    everyone = st.fit_scene(examples, phantoms)
    assert everyone.patients == ("p1", "p2", "p3") and len(everyone.held_out) == len(examples)


def test_regions_label_only_the_slabs_inside_them():
    rng = np.random.default_rng(4)
    img, sp = scene_phantom("chest", "CT", rng=rng, n_slices=60)  # 300 mm along z, z = 0 ... 295 mm
    v = Volume(img.astype(np.float32), sp, (0.0, 0.0, 0.0), np.eye(3), modality="CT", unit="HU")
    e = st.example_from_volume(v, "x", "p", regions=(("chest", 150.0, 400.0),))
    centres = [(a + b) / 2 for a, b, _ in e.slabs]
    assert all((lab == "chest") == (c >= 150.0) for c, lab in zip(centres, e.slab_labels))
    assert e.truth == frozenset({"chest"})


def test_fold_profile_swaps_the_shipped_scene_model_and_names_what_stays_in_sample(tmp_path):
    case = Case("c", Path("/data/s"), patient="P")
    folds = FoldModels(scene={"P": tmp_path / "fold.skops"})
    prof = Profile("ct", ("segment", "detect", "scene"), {"scene": {"model": "scene"}, "detect": {}})
    p, refitted, in_sample = fold_profile(prof, case, folds)
    assert p.params["scene"]["model"] == str(tmp_path / "fold.skops") and refitted == ["scene"] and not in_sample
    assert prof.params["scene"]["model"] == "scene"  # the configured profile is not changed
    prof = Profile("mr", ("detect", "scene"), {"scene": {"model": "/site/scene.skops"},
                                               "detect": {"model": "findings"}})
    p, refitted, in_sample = fold_profile(prof, case, folds)
    assert refitted == [] and in_sample == ["scene (/site/scene.skops)", "findings (findings)"]
    assert patient_of(Case("d", Path("/data/t"))) == "/data/t"  # no patient: the series is its own


def test_findings_folds_leave_out_the_held_out_patients_inserted_candidates(tmp_path, monkeypatch):
    """Each fold's findings calibration is fitted with the shipped table of inserted-lesion PET candidates minus
    those of the held-out patient (the table tags every candidate with the patient whose PET it came from)."""
    from dicomnode import findings_training as ft
    from dicomnode.evaluation import inserted as ins
    from dicomnode.evaluation.cases import CaseFile
    from dicomnode.evaluation.loo import _prepare_findings

    table = ins.read_table()
    real = [ft.Candidate(f"{p}-pet", p, "tissue_model/PT", s, top, t, f"lesion_{k}")
            for p in ("STS_001", "STS_002", "STS_003")
            for k, (s, top, t) in enumerate([(1 - 1e-9, True, True), (0.98, False, False), (0.2, False, False)])]
    monkeypatch.setattr(ft, "collect_candidates", lambda *a, **k: real)
    cases = [Case(f"{p}-pet", Path(f"/data/{p}"), patient=p) for p in ("STS_001", "STS_002", "STS_003")]
    folds = FoldModels()
    _prepare_findings(CaseFile(Path("x.toml"), Path("/data"), tuple(cases)), cases, tmp_path, folds, None, None)
    for p in ("STS_001", "STS_002", "STS_003"):
        fig = folds.figures[hashlib.sha256(p.encode()).hexdigest()[:12]]["findings"]
        assert fig["inserted_candidates"] == sum(c.patient != p for c in table.candidates) > 0
        assert fig["inserted_hits"] == sum(c.true and c.patient != p for c in table.candidates)
        assert ft.read_calibration(folds.findings[p]).for_modality("PT").slope > 0
