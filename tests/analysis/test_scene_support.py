"""The scene's guard against classes too few training patients showed on a modality group (issue 13: a series
unlike anything the model was trained on is ``unknown``, never confidently wrong)."""

from __future__ import annotations

import numpy as np

from dicomnode.analysis.scene import (MIN_CLASS_PATIENTS, MODEL_FEATURES, SceneDescriptors, SceneProfile,
                                      recognise)
from dicomnode.scene_training import class_patients


def _trunk(modality: str, n: int = 20) -> tuple[SceneProfile, list]:
    z = np.linspace(0.0, -190.0, n)
    per = {"area_cm2": np.full(n, 600.0), "n_components": np.ones(n), "solidity": np.full(n, 0.95),
           "minor_major_ratio": np.full(n, 0.7), "edge_fraction": np.zeros(n)}
    prof = SceneProfile(z, per, modality == "CT", 10.0, n, modality)
    d = SceneDescriptors({"area_cm2": 600.0, "n_components": 1.0, "edge_fraction": 0.0, "dark_blob": 0.0,
                          "bone_pieces": 5.0, "ring_bright": 0.0})
    return prof, [(zc - 30, zc + 30, d) for zc in np.linspace(-30.0, -160.0, 4)]


def test_class_shown_by_one_patient_is_not_named_by_the_slab_model_alone_on_mr_or_pet():
    prof, slabs = _trunk("PT")
    classes = ("abdomen", "chest", "pelvis")
    P = np.tile([0.1, 0.1, 0.8], (4, 1))  # the model says pelvis, confidently
    assert recognise(prof, slabs, P, classes).label == "pelvis"  # no figures on the card: no guard
    assert recognise(prof, slabs, P, classes, class_patients={"pelvis": 2, "chest": 1}).label == "pelvis"
    res = recognise(prof, slabs, P, classes, class_patients={"pelvis": 1, "chest": 3})
    assert res.label == "unknown", res
    assert any("fewer than 2 training patients showed on MR/PET" in n for n in res.notes), res.notes
    assert recognise(prof, slabs, P, classes, class_patients={}).label == "unknown"  # phantoms only


def test_on_ct_one_patient_suffices_but_phantoms_alone_do_not():
    prof, slabs = _trunk("CT")
    classes = ("abdomen", "chest", "pelvis")
    P = np.tile([0.8, 0.1, 0.1], (4, 1))
    assert MIN_CLASS_PATIENTS == {"ct": 1, "other": 2}
    assert recognise(prof, slabs, P, classes, class_patients={"abdomen": 1}).label == "abdomen"
    res = recognise(prof, slabs, P, classes, class_patients={"pelvis": 2})
    assert res.label == "unknown" and any("on CT" in n for n in res.notes), res
    assert recognise(prof, slabs, P, classes, class_patients={"abdomen": 1}, min_patients=2).label == "unknown"


def test_lungs_on_ct_support_a_chest_the_model_learnt_from_phantoms_only():
    prof, slabs = _trunk("CT")
    lungs = SceneDescriptors({**slabs[0][2].values, "dark_blob": 0.3})
    slabs = [(a, b, lungs) for a, b, _ in slabs]
    P = np.tile([0.05, 0.9, 0.05], (4, 1))
    res = recognise(prof, slabs, P, ("abdomen", "chest", "pelvis"), class_patients={"abdomen": 2})
    assert res.label == "chest", res


def test_landmarks_name_a_slab_whatever_the_model_saw(monkeypatch):
    """The PET uptake landmarks (liver dome, bladder) set the labels of a whole-body PET: the guard concerns the
    slab model alone, so they stand even with no training patient behind the classes."""
    from dicomnode.analysis import scene

    prof, slabs = _trunk("PT")
    P = np.tile([0.1, 0.8, 0.1], (4, 1))
    marks = {"dome": -20.0, "bladder": -600.0}
    monkeypatch.setattr(scene, "pet_landmarks", lambda _profile: marks)  # as found on a whole-body FDG PET
    res = recognise(prof, slabs, P, ("abdomen", "chest", "pelvis"), class_patients={})
    assert res.label != "unknown", res
    assert not any("slab model alone" in n for n in res.notes)


def test_class_patients_counts_patients_per_group_from_real_slabs():
    n = len(MODEL_FEATURES)
    ct = np.zeros(n)
    ct[MODEL_FEATURES.index("is_ct")] = 1.0
    other = np.zeros(n)
    X = np.stack([ct, ct, ct, other, other, other])
    y = ["chest", "chest", "pelvis", "pelvis", "pelvis", "head"]
    g = ["A", "B", "A", "C", "C", "D"]
    assert class_patients(X, y, g) == {"ct": {"chest": 2, "pelvis": 1}, "other": {"head": 1, "pelvis": 1}}
    assert class_patients(np.zeros((0, n)), [], []) == {"ct": {}, "other": {}}
