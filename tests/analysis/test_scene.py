"""analysis/scene.py: descriptors, regions along z, and body-region recognition scored leave-one-patient-out.

A model is never scored on a patient it was trained on. The real series of ../shared/data (and 20 cm crops cut
from the chest and upper-abdomen CT) are collected once by :mod:`dicomnode.scene_training` from the scene truths of
``conf/evaluation/shared.toml``, as the shipped model and ``evaluate --leave-one-patient-out`` are; for each held-out
patient a scene model is trained on the other patients' slabs plus synthetic phantoms, its calibration
temperatures are fitted on the other patients' held-out posteriors, and the held-out series run through
:func:`recognise` exactly as the ``scene`` step runs them (header fields play no part; the step tests below blank
them). The rule checked on every series: a wrong label never carries p >= 0.5; ``unknown`` is not wrong.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from dicomnode.analysis.pipeline import Context, run_steps
from dicomnode.analysis.scene import (BODY_ORDER, MODEL_FEATURES, SceneDescriptors, SceneProfile, _may_follow,
                                      calibrate, fit_temperature, profile_slabs, recognise, scene_descriptors,
                                      scene_profile, to_axial, vertex_z)
from dicomnode import scene_training as st
from dicomnode.commands.train import load_volume
from dicomnode.evaluation.cases import load_cases
from dicomnode.io.load import load_series
from dicomnode.steps import registry
from helpers import REPO, SHARED_DATA

warnings.filterwarnings("ignore", category=UserWarning)

# the module fixtures load every shared series and fit a scene model per held-out patient (each with its own inner
# leave-one-patient-out for the temperatures): minutes of CPU, far more on a busy 2-core machine
pytestmark = pytest.mark.timeout(2400)

BLANK = {"BodyPartExamined": "", "SeriesDescription": "", "StudyDescription": "", "ProtocolName": ""}
NIFTI = "abdomen-ct/abdomen_pelvis_nifti/example_ct.nii.gz"

#: Cases whose dominant label is right when their patient is held out (measured; the others abstain, ``unknown``:
#: the abdomen ADC map and the STS_002 pelvis PET; see docs/models.md). The abdomen T2 is right through the MR liver
#: landmark, the breast MR through the MR breast landmark, the STS_003 thigh CT through the CT paired-limbs landmark
#: and the rule that above the thighs only pelvis or extremity can lie (its upper part, the pelvic outlet, is pelvis).
RIGHT = {
    "chest-ct-b40f", "chest-ct-b70f", "abdomen-ct-j2k", NIFTI, "head-ct", "head-mr-t1", "enhanced-mr-siemens-head",
    "sts-001-ct", "sts-001-mr-t1", "sts-001-pet", "sts-002-ct", "sts-002-mr-t1", "sts-003-ct", "sts-003-mr-t1",
    "sts-003-pet", "wholebody-mr-t2", "abdomen-mr-t2", "breast-mr-dce",
}


@pytest.fixture(scope="module")
def corpus():
    """Scene examples of the shared case file's truths (and crops, and the NIfTI) and the phantom slabs: exactly what
    :mod:`dicomnode.scene_training` fits the shipped model on (40 per region and modality, the shipped seed)."""
    case_file = load_cases(REPO / "conf" / "evaluation" / "shared.toml", data_root=SHARED_DATA)
    return st.case_examples(case_file), st.phantom_rows()


@pytest.fixture(scope="module")
def folds(corpus):
    """patient -> the scene model fitted without them (temperatures included), as evaluate's folds are."""
    examples, phantoms = corpus
    cache: dict[str, st.FittedScene] = {}

    def get(patient: str) -> st.FittedScene:
        if patient not in cache:
            cache[patient] = st.fit_scene(examples, phantoms, exclude=patient)
        return cache[patient]
    return get


@pytest.fixture(scope="module")
def lopo_rows(corpus, folds):
    rows = {}
    for e in corpus[0]:
        f = folds(e.patient)
        P = st._proba(f.estimator, e.all_rows(), f.classes)
        rows[e.key] = st._result_row(e, f.classes, P, f.temperature_ct if e.profile.is_ct else f.temperature_other)
    return rows


def _lopo_model(folds, patient, tmp_path):
    """A scene model without ``patient``, its temperatures fitted on the other patients, saved as the step loads it."""
    return st.save_scene_model(tmp_path / "scene-without-patient.skops", folds(patient),
                               training_data="test model without one patient")


def _scene(volume, model, header=BLANK):
    registry()
    ctx = Context(volume=volume, original=volume, header=header)
    run_steps(ctx, ["scene"], {"scene": {"model": str(model)}})
    return ctx.scene, ctx.notes


def _check_regions(scene, z_lo, z_hi):
    regions = scene["regions"]
    assert regions, scene
    for r in regions:
        assert r["label"] in BODY_ORDER + ("unknown",)
        assert r["z_mm"][0] < r["z_mm"][1] and 0.0 <= r["probability"] <= 1.0
    for upper, lower in zip(regions, regions[1:]):  # head to feet, contiguous
        assert upper["z_mm"][0] == pytest.approx(lower["z_mm"][1])
    assert regions[0]["z_mm"][1] == pytest.approx(z_hi, abs=10)
    assert regions[-1]["z_mm"][0] == pytest.approx(z_lo, abs=10)


def _series_keys():
    return [c.id for c in load_cases(REPO / "conf" / "evaluation" / "shared.toml", data_root=SHARED_DATA).cases
            if c.scene not in (None, "unknown")] + [NIFTI]


def test_no_wrong_label_with_p_at_least_half_on_any_series(lopo_rows):
    shared = {k: r for k, r in lopo_rows.items() if " crop " not in k}
    assert len(shared) == 21
    wrong = {k: r for k, r in shared.items() if r["wrong_confident"]}
    assert not wrong, wrong
    for r in shared.values():
        assert r["label"] in (r["truth"].split("/") + ["unknown"]), r  # right, or an abstention
        labelled = [reg for reg in r["regions"] if reg[0] != "unknown"]
        if r["series"] == "sts-003-ct":  # its upper 60-80 mm show the pelvic outlet (ischial tuberosity, coccyx,
            # rectum: docs/models.md), above the thighs: pelvis may be named there, nowhere lower, nothing else
            top = max(reg[1][1] for reg in r["regions"])
            labelled = [reg for reg in labelled if not (reg[0] == "pelvis" and reg[1][0] >= top - 90)]
        assert all(reg[0] in r["truth"].split("/") or reg[2] < 0.5 for reg in labelled) or r["series"] in (
            "abdomen-mr-t2", NIFTI), r  # the T2 reaches the lung bases; the NIfTI is abdomen and pelvis


@pytest.mark.parametrize("key", _series_keys())
def test_dominant_label_leave_one_patient_out(key, lopo_rows, request):
    r = lopo_rows[key]
    if key not in RIGHT:
        request.applymarker(pytest.mark.xfail(reason="abstains (unknown): no other patient of its kind to learn from "
                                                     "and no landmark rule that fires on it; docs/models.md",
                                              strict=False))
    assert r["right"], r


def test_abdomen_t2_is_abdomen_through_the_liver_landmark(lopo_rows):
    """Held out (no other abdomen MR patient in training), the abdomen T2 is abdomen with p >= 0.5 where the liver
    landmark holds; its ends (lung bases, pelvic inlet) stay unknown, not another region."""
    r = lopo_rows["abdomen-mr-t2"]
    assert r["label"] == "abdomen" and r["p"] >= 0.5, r
    assert {reg[0] for reg in r["regions"]} <= {"abdomen", "unknown"}, r


def test_mr_liver_landmark_fires_only_on_the_abdomen_mr(corpus):
    """The liver landmark (a large homogeneous organ right of the trunk's midline, no mirror partner) is found on
    the abdomen T2 and on no other shared series: not on the head MRs (the brain is on the midline), the thigh MRs,
    the breast MR, PET or CT (MR only), nor on the Philips phantoms (round and symmetric)."""
    from dicomnode.analysis.scene import liver_slices

    fired = {e.key: int(liver_slices(e.profile).sum()) for e in corpus[0] if " crop " not in e.key}
    assert fired.pop("abdomen-mr-t2") >= 8, fired  # the liver over >= 8 sampled slices (8 mm apart)
    assert not any(fired.values()), fired
    for name in ("philips_T1W_FFE_CS4_classic", "philips_T1W_FFE_CS2_enhanced"):
        v = load_volume(SHARED_DATA / "enhanced-mr" / name)
        prof = scene_profile(v.array, v.spacing_mm, direction=v.direction, origin_mm=v.origin_mm, modality="MR")
        assert not liver_slices(prof).any(), name


def test_mr_liver_landmark_reads_right_and_left_from_the_direction_cosines():
    """The same T2 stored with its columns reversed (direction x negated, origin moved) shows the liver on the same
    slices; the image mirrored without telling the header (the organ now on the patient's left: situs inversus to
    the reader) shows none."""
    from dicomnode.analysis.scene import liver_slices
    from dicomnode.analysis.volume import Volume

    v = load_volume(SHARED_DATA / "abdomen-mr/T2_ax")

    def liver(vol):
        prof = scene_profile(vol.array, vol.spacing_mm, direction=vol.direction, origin_mm=vol.origin_mm,
                             modality="MR")
        return liver_slices(prof)

    base = liver(v)
    assert base.sum() >= 8
    d = np.asarray(v.direction, dtype=float).copy()
    right_end = np.asarray(v.origin_mm) + (v.shape[2] - 1) * v.spacing_mm[2] * d[:, 0]
    d[:, 0] *= -1
    stored_reversed = Volume(np.ascontiguousarray(v.array[:, :, ::-1]), v.spacing_mm, tuple(right_end), d,
                             modality="MR", unit=v.unit)
    again = liver(stored_reversed)
    # the same up to the 4 mm blocks (the columns left over from whole blocks now lie at the other side)
    assert np.mean(again == base) >= 0.9 and abs(int(again.sum()) - int(base.sum())) <= 2, (again, base)
    mirrored = Volume(np.ascontiguousarray(v.array[:, :, ::-1]), v.spacing_mm, v.origin_mm, v.direction,
                      modality="MR", unit=v.unit)
    assert not liver(mirrored).any()
    # the same volume stored as coronal slices, head at the top of each image (rows run to the feet): the liver
    # over the same stretch of patient z
    sz = v.spacing_mm[0]
    top = np.asarray(v.origin_mm, dtype=float) + np.array([0.0, 0.0, (v.shape[0] - 1) * sz])
    coronal = Volume(np.ascontiguousarray(np.transpose(v.array, (1, 0, 2))[:, ::-1, :]),
                     (v.spacing_mm[1], sz, v.spacing_mm[2]), tuple(top),
                     np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]), modality="MR", unit=v.unit)
    prof = scene_profile(coronal.array, coronal.spacing_mm, direction=coronal.direction, origin_mm=coronal.origin_mm,
                         modality="MR")
    z_base = scene_profile(v.array, v.spacing_mm, direction=v.direction, origin_mm=v.origin_mm,
                           modality="MR").z_mm[base]
    z_cor = prof.z_mm[liver_slices(prof)]
    assert z_cor.size >= 8
    assert z_cor.min() == pytest.approx(z_base.min(), abs=20) and z_cor.max() == pytest.approx(z_base.max(), abs=20)


def _mr_trunk(organs_x_mm: tuple[float, ...], scale: float = 1.0, seed: int = 3) -> np.ndarray:
    """Synthetic axial MR slices (identity direction: columns run to the patient's left) of an elliptic trunk of
    textured tissue (local SD 0.35 x its mean at 4 mm) holding smooth organs centred ``organs_x_mm`` from the
    midline (negative: the patient's right)."""
    rng = np.random.default_rng(seed)
    yy, xx = (np.mgrid[:100, :100].astype(float) - 50) * 4.0  # 4 mm pixels, a 400 mm field of view
    body = (yy / (110 * scale)) ** 2 + (xx / (150 * scale)) ** 2 <= 1
    vol = np.zeros((10, 100, 100), np.float32)
    for k in range(10):
        sl = np.where(body, 1000.0 * (1 + 0.35 * rng.standard_normal((100, 100))), 0.0)
        for ox in organs_x_mm:
            organ = ((yy + 10 * scale) / (70 * scale)) ** 2 + ((xx - ox * scale) / (60 * scale)) ** 2 <= 1
            sl[organ] = 900.0 + 20.0 * rng.standard_normal(int(organ.sum()))
        vol[k] = np.clip(sl, 0, None)
    return vol


def test_mr_liver_landmark_needs_one_unpaired_organ_right_of_a_trunk_midline():
    """The rule's argument on synthetic sections: a smooth organ right of the midline of a trunk is the liver; the
    same on the left (the heart's side, or a mirrored image), a mirror pair (muscles) or a section the size of a
    thigh is not."""
    from dicomnode.analysis.scene import liver_slices

    def fired(vol):
        return liver_slices(scene_profile(vol, (10.0, 4.0, 4.0), modality="MR"))

    assert fired(_mr_trunk((-70.0,))).all()  # the patient's right: lower x in LPS
    assert not fired(_mr_trunk((70.0,))).any()
    assert not fired(_mr_trunk((-70.0, 70.0))).any()
    assert not fired(_mr_trunk((-70.0,), scale=0.5)).any()  # 260 cm^2: a thigh's size
    assert not fired(_mr_trunk(())).any()


def test_chest_crops_stay_chest(lopo_rows):
    crops = {k: r for k, r in lopo_rows.items() if " crop " in k and k.startswith("chest-ct-b40f")}
    assert len(crops) == 3
    assert all(r["label"] == "chest" and r["p"] >= 0.5 for r in crops.values()), crops  # A0002 held out


def test_abdomen_crops_are_not_confidently_wrong(lopo_rows):
    """20 cm crops inside the upper abdomen (liver, bowel, no lungs, cut by the border; the only extremity CT of
    training are cropped thighs): the vertebra with the arc of ribs around it is no limb."""
    crops = {k: r for k, r in lopo_rows.items() if " crop " in k and k.startswith("abdomen-ct-j2k")}
    assert len(crops) == 2 and not any(r["wrong_confident"] for r in crops.values()), crops
    assert all(r["label"] in ("abdomen", "unknown") for r in crops.values()), crops


def test_bone_pieces_tell_a_trunk_from_a_limb_in_a_crop(corpus):
    """The skeleton's topology survives a crop: one or two long bones in a thigh, a vertebra and ribs in an upper
    abdomen crop; a slab called extremity with many bones per body part is vetoed (unknown)."""
    from dicomnode.analysis.scene import _ct_veto

    examples = {e.key: e for e in corpus[0]}
    crop_bones = [d.values["bone_pieces"] for k, e in examples.items() if k.startswith("abdomen-ct-j2k crop")
                  for _, _, d in e.slabs]
    thigh_bones = [d.values["bone_pieces"] / max(d.values["n_components"], 1.0)
                   for k in ("sts-001-ct", "sts-002-ct", "sts-003-ct") for _, _, d in examples[k].slabs]
    assert min(crop_bones) >= 6 and max(thigh_bones) <= 5, (crop_bones, thigh_bones)
    trunk_crop = SceneDescriptors({"area_cm2": 350.0, "n_components": 1.0, "edge_fraction": 0.6, "dark_blob": 0.0,
                                   "ring_bright": 0.02, "bone_pieces": 12.0})
    assert _ct_veto("extremity", trunk_crop) and not _ct_veto("abdomen", trunk_crop)
    two_knees = SceneDescriptors({**trunk_crop.values, "n_components": 2.0, "bone_pieces": 6.0})
    foot = SceneDescriptors({**trunk_crop.values, "area_cm2": 150.0, "bone_pieces": 8.0})
    assert not _ct_veto("extremity", two_knees) and not _ct_veto("extremity", foot)
    # two separate parts in a section smaller than a trunk's: two thighs, not an abdomen or a pelvis
    thighs = SceneDescriptors({**trunk_crop.values, "area_cm2": 170.0, "n_components": 2.0, "bone_pieces": 0.0})
    assert _ct_veto("abdomen", thighs) and _ct_veto("pelvis", thighs) and not _ct_veto("extremity", thighs)
    trunk_with_arms = SceneDescriptors({**trunk_crop.values, "area_cm2": 700.0, "n_components": 3.0,
                                        "edge_fraction": 0.0})
    assert not _ct_veto("abdomen", trunk_with_arms)


def test_cropped_chest_ct_is_chest_with_lungs_through_the_step(folds, tmp_path):
    """A 20 cm field of view inside the chest (no outline of the body, lungs cut by the border): chest."""
    v = load_volume(SHARED_DATA / "chest-ct/A0002_B40f")
    crop = st.crop_fov(v, 200.0, (0.5, 0.5))
    assert crop.shape[1] * crop.spacing_mm[1] == pytest.approx(200, abs=2)
    assert np.mean(crop.array < -400) > 0.2  # lots of air inside the crop
    model = _lopo_model(folds, "Lung_Dx-A0002", tmp_path)
    scene, notes = _scene(crop, model)
    assert scene["label"] == "chest" and scene["probabilities"]["chest"] >= 0.5, scene
    assert scene["lungs_in_view"] is True
    assert not any("no lungs" in n for n in notes)
    z = v.origin_mm[2] + np.array([0, v.shape[0] - 1]) * v.spacing_mm[0]
    _check_regions(scene, z.min() - 4, z.max() + 4)


def test_chest_ct_through_the_step_and_header_agreement(folds, tmp_path):
    v = load_volume(SHARED_DATA / "chest-ct/A0002_B40f")
    model = _lopo_model(folds, "Lung_Dx-A0002", tmp_path)
    scene, _ = _scene(v, model)
    assert scene["label"] == "chest" and scene["header_body_part"] is None and scene["agrees_with_header"] is None
    assert sum(scene["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    # held out, no CT chest patient is in training: the slabs without lungs at the ends (the thoracic inlet, the
    # upper abdomen) are chest for the slab model alone, a class only phantoms showed on CT: unknown there
    assert [r["label"] for r in scene["regions"] if r["label"] != "unknown"] == ["chest"], scene["regions"]
    scene, notes = _scene(v, model, {"BodyPartExamined": "HEAD"})
    assert scene["agrees_with_header"] is False and any("header says head" in n for n in notes)
    scene, _ = _scene(v, model, {"SeriesDescription": "ThoraxRoutine 8.0.0 B40f"})
    assert scene["header_body_part"] == "chest" and scene["agrees_with_header"] is True


def test_feet_first_volume_gives_the_same_regions(folds, tmp_path):
    """Array order does not matter: the same CT stored feet first (z index growing towards the feet)."""
    from dicomnode.analysis.volume import Volume

    v = load_volume(SHARED_DATA / "abdomen-ct/abdomen_pelvis_nifti/example_ct.nii.gz")
    d = np.asarray(v.direction, dtype=float).copy()
    top = np.asarray(v.origin_mm) + (v.shape[0] - 1) * v.spacing_mm[0] * d[:, 2]
    d[:, 2] *= -1
    flipped = Volume(np.ascontiguousarray(v.array[::-1]), v.spacing_mm, tuple(top), d, modality="CT", unit="HU")
    model = _lopo_model(folds, "TotalSegmentator-nifti", tmp_path)
    a, _ = _scene(v, model)
    b, _ = _scene(flipped, model)
    assert [r["label"] for r in a["regions"]] == [r["label"] for r in b["regions"]]
    for ra, rb in zip(a["regions"], b["regions"]):
        assert ra["z_mm"] == pytest.approx(rb["z_mm"], abs=3.5)
    assert a["label"] in ("abdomen", "pelvis") and a["label"] == b["label"]
    labels = [r["label"] for r in a["regions"] if r["label"] != "unknown"]
    assert labels.index("abdomen") < labels.index("pelvis")  # abdomen above the pelvis


def test_whole_body_pet_regions_head_to_feet(folds, tmp_path):
    """Whole-body PET of STS_001 (head to thighs, read as SUV), STS_001 held out: regions from head to feet, none
    contradicting the README's landmarks (bladder at z = -678.5 mm: pelvis; tumour centroid at -789 mm in the
    left thigh: extremity; top of the field of view -11.5 mm: the head)."""
    v = load_volume(SHARED_DATA / "wholebody-pet-mr/PET")
    model = _lopo_model(folds, "STS_001", tmp_path)
    scene, _ = _scene(v, model)
    _check_regions(scene, -883, -10)
    expect = {-678.5: "pelvis", -789.2: "extremity", -20.0: "head"}
    for z, label in expect.items():
        (r,) = [r for r in scene["regions"] if r["z_mm"][0] <= z <= r["z_mm"][1]]
        assert r["label"] in (label, "unknown") or r["probability"] < 0.5, (z, r)


def test_whole_body_pet_shows_chest_abdomen_pelvis_and_legs_where_the_truth_says(folds, tmp_path):
    """FDG uptake landmarks (the liver's largest section and its dome, the bladder) place the trunk's regions by
    adult anatomy; the truth regions of conf/evaluation/shared.toml were read from the coronal MIP by hand."""
    v = load_volume(SHARED_DATA / "wholebody-pet-mr/PET")
    scene, notes = _scene(v, _lopo_model(folds, "STS_001", tmp_path))
    assert any("PET landmarks" in n for n in notes), notes
    (case,) = [c for c in load_cases(REPO / "conf" / "evaluation" / "shared.toml", data_root=SHARED_DATA).cases
               if c.id == "wholebody-pet"]
    for truth in case.regions:
        covered = sum(max(0.0, min(r["z_mm"][1], truth.z_high_mm) - max(r["z_mm"][0], truth.z_low_mm))
                      for r in scene["regions"] if r["label"] == truth.label and r["probability"] >= 0.5)
        assert covered >= 0.9 * (truth.z_high_mm - truth.z_low_mm), (truth, scene["regions"])
    labels = [r["label"] for r in scene["regions"] if r["label"] != "unknown"]
    assert labels == ["chest", "abdomen", "pelvis", "extremity"]


def test_pet_landmarks_do_not_depend_on_the_unit_and_need_a_trunk():
    """Bq/ml or SUV: the landmarks are relative to the body's median. A PET without liver and bladder (a thigh)
    has none."""
    from dicomnode.analysis.scene import landmark_label, pet_landmarks

    v = load_volume(SHARED_DATA / "wholebody-pet-mr/PET")
    marks = []
    for scale in (1.0, 5000.0):
        prof = scene_profile(v.array * scale, v.spacing_mm, direction=v.direction, origin_mm=v.origin_mm,
                             modality="PT")
        marks.append(pet_landmarks(prof))
    assert marks[0] is not None and marks[0] == pytest.approx(marks[1])
    assert marks[0]["bladder"] == pytest.approx(-678.5, abs=15)  # the README's bladder
    assert marks[0]["liver"] < marks[0]["dome"] < -250  # the liver below the heart
    assert landmark_label(-789.2, marks[0]) == "extremity"  # the tumour in the left thigh
    thigh = load_volume(SHARED_DATA / "sts/STS_002/PET")
    prof = scene_profile(thigh.array, thigh.spacing_mm, direction=thigh.direction, origin_mm=thigh.origin_mm,
                         modality="PT")
    assert pet_landmarks(prof) is None
    mr = scene_profile(v.array, v.spacing_mm, direction=v.direction, origin_mm=v.origin_mm, modality="MR")
    assert pet_landmarks(mr) is None  # uptake landmarks are PET's


def test_phantoms_and_localizer_give_unknown(folds, tmp_path):
    model = _lopo_model(folds, "none", tmp_path)  # every patient in training: none is a phantom
    philips = load_volume(SHARED_DATA / "enhanced-mr/philips_T1W_FFE_CS4_classic")
    scene, notes = _scene(philips, model, {"BodyPartExamined": "BRAIN"})
    assert scene["label"] == "unknown" and [r["label"] for r in scene["regions"]] == ["unknown"]
    assert any("phantom" in n for n in notes) and scene["agrees_with_header"] is None
    assert scene["body_in_view"] is False  # a phantom is no body (its candidates get no top-of-series term)
    files = sorted((SHARED_DATA / "mr-localizer/LOC").iterdir())
    with pytest.raises(Exception, match="ImageOrientationPatient"):
        load_series(files)  # three orientations: refused upstream
    for part in (files[:7], files[7:14], files[14:]):  # each orientation alone: 7 slices of a phantom
        loaded = load_series(part).volume
        scene, notes = _scene(loaded, model)
        assert scene["label"] == "unknown", (scene, notes)


def test_small_field_of_view_gives_unknown(folds, tmp_path):
    v = load_volume(SHARED_DATA / "sts/STS_001/CT")
    from dicomnode.analysis.volume import Volume

    tiny = Volume(np.ascontiguousarray(v.array[:, 80:121, 80:121]), v.spacing_mm, v.origin_mm, v.direction,
                  modality="CT", unit="HU")  # 4 x 4 cm inside the thigh
    scene, notes = _scene(tiny, _lopo_model(folds, "STS_001", tmp_path))
    assert scene["label"] == "unknown" and any("too small" in n for n in notes)
    assert scene["body_in_view"] is True  # a body the scene cannot place: still a body


def _profile(z, **cols):
    n = len(z)
    per = {k: np.full(n, 1.0) for k in ("area_cm2", "n_components", "solidity", "minor_major_ratio",
                                         "edge_fraction")}
    per["area_cm2"][:] = 600.0
    per["minor_major_ratio"][:] = 0.7
    per["solidity"][:] = 0.9
    per["edge_fraction"][:] = 0.0
    per.update(cols)
    return SceneProfile(np.asarray(z, float), per, False, 10.0, n, "MR")


def _slabs(prof, n):
    d = SceneDescriptors({"area_cm2": 600.0, "n_components": 1.0, "edge_fraction": 0.0, "dark_blob": 0.2})
    zs = np.linspace(prof.z_mm.max(), prof.z_mm.min(), n)
    return [(z - 30, z + 30, d) for z in zs]


def test_regions_follow_the_body_order_and_anatomical_distances():
    classes = ("abdomen", "chest", "extremity", "head", "pelvis")
    prof = _profile(np.arange(0, -900, -10.0))
    slabs = _slabs(prof, 29)
    want = ["chest"] * 8 + ["abdomen"] * 6 + ["head"] * 3 + ["pelvis"] * 6 + ["extremity"] * 6
    P = np.full((29, 5), 0.02)
    for i, lab in enumerate(want):
        P[i, classes.index(lab)] = 0.92
    res = recognise(prof, slabs, P, classes)
    labels = [r.label for r in res.regions]
    assert labels == ["chest", "abdomen", "unknown", "pelvis", "extremity"]  # a head below the abdomen: unknown
    z = [r.z_mm for r in res.regions]
    assert all(a[0] == pytest.approx(b[1]) for a, b in zip(z, z[1:])) and z[0][1] > z[-1][0]
    assert res.label == "chest" and res.probabilities["chest"] > 0.5
    assert not _may_follow("head", "pelvis", 0.0)  # no chest and abdomen in between
    assert _may_follow("head", "pelvis", 400.0) and _may_follow("chest", "abdomen", 0.0)
    assert not _may_follow("pelvis", "chest", 500.0)


def test_breast_mr_is_chest_through_the_breast_landmark(lopo_rows):
    """Held out (the only breast patient), the sagittal one-breast DCE MR is chest with p >= 0.5 where the breast
    landmark holds (the slab model alone says head or extremity there: nothing it learnt looks like a breast);
    nothing else is named."""
    r = lopo_rows["breast-mr-dce"]
    assert r["label"] == "chest" and r["p"] >= 0.5, r
    assert {reg[0] for reg in r["regions"]} <= {"chest", "unknown"}, r


def test_mr_breast_landmark_fires_only_on_the_breast_mr(corpus):
    """The breast landmark (the anterior outline a broad mound along z on a flat back) is found on the breast MR and
    on no other shared series: not on the head MRs (a face is convex behind as in front, and runs on into the
    neck), the thigh and buttock MRs, the abdomen MRs, PET or CT (MR only), nor on the Philips phantoms."""
    from dicomnode.analysis.scene import breast_slices

    fired = {e.key: int(breast_slices(e.profile).sum()) for e in corpus[0] if " crop " not in e.key}
    assert fired.pop("breast-mr-dce") >= 8, fired
    assert not any(fired.values()), fired
    for name in ("philips_T1W_FFE_CS4_classic", "philips_T1W_FFE_CS2_enhanced"):
        v = load_volume(SHARED_DATA / "enhanced-mr" / name)
        prof = scene_profile(v.array, v.spacing_mm, direction=v.direction, origin_mm=v.origin_mm, modality="MR")
        assert not breast_slices(prof).any(), name


def _mound(kind: str) -> np.ndarray:
    """Synthetic MR (identity direction: rows run to posterior) of 5 mm slices, 2 mm pixels: a breast-like
    half-ellipsoid (radius 70 mm, projecting 80 mm anteriorly from a base plane), alone (a fat-suppressed series
    where the chest wall is dark) or on a chest wall running on behind and above and below it; or a ball, a
    cylinder along z (a limb) or the mound pointing posteriorly (a buttock)."""
    zz, yy, xx = np.mgrid[:44, :100, :80].astype(float)
    z, y, x = (zz - 22) * 5.0, yy * 2.0, (xx - 40) * 2.0
    base = 120.0
    r2 = (z / 70.0) ** 2 + (x / 70.0) ** 2
    if kind == "ball":
        body = r2 + ((y - base) / 70.0) ** 2 <= 1
    elif kind == "cylinder":
        body = (x / 70.0) ** 2 + ((y - base) / 70.0) ** 2 <= 1
    elif kind == "posterior":
        body = (r2 + ((y - 60.0) / 80.0) ** 2 <= 1) & (y >= 60.0)
    else:
        body = (r2 + ((y - base) / 80.0) ** 2 <= 1) & (y <= base)
        if kind == "on_wall":
            body |= y >= base
    rng = np.random.default_rng(5)
    return np.where(body, 1000.0 + 50.0 * rng.standard_normal(body.shape), 0.0).astype(np.float32)


def test_breast_landmark_is_a_mound_on_a_flat_back():
    """The rule's argument on synthetic volumes: a half-ellipsoid projecting anteriorly from a flat base is a breast,
    alone or on a chest wall that the field of view cuts; a ball (convex behind as in front), a cylinder along z
    (a limb) and a mound pointing posteriorly (a buttock) are not; nor is the mound on CT."""
    from dicomnode.analysis.scene import breast_slices

    def fired(vol, modality="MR"):
        return breast_slices(scene_profile(vol, (5.0, 2.0, 2.0), modality=modality))

    for kind in ("alone", "on_wall"):
        f = fired(_mound(kind))
        assert f.sum() >= 6, kind
    for kind in ("ball", "cylinder", "posterior"):
        assert not fired(_mound(kind)).any(), kind
    assert not fired(_mound("alone"), "CT").any()


def test_head_only_below_a_vertex_and_weak_evidence_abstains():
    """A head-sized round section called head by the model is a head only when the body ends above it as a head
    does (a cap); a thigh or a breast is as round and as large. A lone slab, or labels covering too little of the
    body, name nothing."""
    classes = ("abdomen", "chest", "extremity", "head", "pelvis")
    z = np.arange(0, -250, -10.0)
    capped = _profile(z, area_cm2=np.minimum(30.0 + 25.0 * np.arange(z.size), 240.0),
                      n_components=np.ones(z.size))
    assert vertex_z(capped) == pytest.approx(0.0)
    flat = _profile(z, area_cm2=np.full(z.size, 200.0), n_components=np.ones(z.size))  # a thigh: no cap
    assert vertex_z(flat) is None
    two = _profile(z, area_cm2=capped.per_slice["area_cm2"], n_components=np.full(z.size, 2.0))  # two breasts
    assert vertex_z(two) is None
    d = SceneDescriptors({"area_cm2": 200.0, "n_components": 1.0, "edge_fraction": 0.0, "dark_blob": 0.0})
    slabs = [(zc - 30, zc + 30, d) for zc in np.linspace(-30, -220, 6)]
    P = np.tile([0.1, 0.1, 0.1, 0.6, 0.1], (6, 1))
    assert recognise(capped, slabs, P, classes).label == "head"
    res = recognise(flat, slabs, P, classes)
    assert res.label == "unknown" and [r.label for r in res.regions] == ["unknown"]
    # the model is unsure of a head (p 0.3): the vertex is evidence enough
    weak = np.tile([0.2, 0.2, 0.2, 0.3, 0.1], (6, 1))
    res = recognise(capped, slabs, weak, classes)
    assert res.label == "head" and res.probabilities["head"] > 0.7
    # one slab alone says abdomen, the rest is unsure: nothing is named
    P = np.tile([0.3, 0.25, 0.15, 0.15, 0.15], (6, 1))
    P[3] = [0.9, 0.025, 0.025, 0.025, 0.025]
    trunk = SceneDescriptors({"area_cm2": 600.0, "n_components": 1.0, "edge_fraction": 0.0, "dark_blob": 0.0})
    res = recognise(flat, [(a, b, trunk) for a, b, _ in slabs], P, classes)
    assert res.label == "unknown" and any("one slab alone" in n for n in res.notes)


def test_unsure_slabs_abstain_and_calibration_softens():
    classes = ("abdomen", "chest", "extremity", "head", "pelvis")
    prof = _profile(np.arange(0, -200, -10.0))
    slabs = _slabs(prof, 5)
    P = np.tile([0.3, 0.25, 0.15, 0.15, 0.15], (5, 1))
    res = recognise(prof, slabs, P, classes)
    assert res.label == "unknown" and [r.label for r in res.regions] == ["unknown"]
    assert res.regions[0].probability == pytest.approx(0.7, abs=0.01)
    p = np.array([[0.98, 0.01, 0.01]])
    assert calibrate(p, 1.0) == pytest.approx(p) and calibrate(p, 3.0)[0, 0] < 0.9
    # held-out posteriors that are right 60 % of the time at p = 0.98 want a temperature > 1
    rows = np.array([[0.98, 0.01, 0.01]] * 10)
    truth = np.array([0] * 6 + [1] * 4)
    assert fit_temperature(rows, truth) > 2.0


def test_profile_z_is_patient_z_in_any_plane():
    v = load_volume(SHARED_DATA / "head-mr/T1_sag")  # sagittal: patient z runs along an in-plane axis
    prof = scene_profile(v.array, v.spacing_mm, direction=v.direction, origin_mm=v.origin_mm, modality="MR")
    assert prof.z_mm.max() == pytest.approx(130.0, abs=2) and prof.z_mm.min() == pytest.approx(-129, abs=2)
    slabs = profile_slabs(prof)
    assert [s[0] for s in slabs] == sorted((s[0] for s in slabs), reverse=True)  # head to feet


def test_descriptors_are_fast_and_orientation_free():
    v = load_volume(SHARED_DATA / "head-mr/T1_sag")  # sagittal acquisition
    ax, sp, oblique = to_axial(v.array, v.spacing_mm, v.direction)
    assert not oblique and ax.shape[0] == 256 and sp[0] == pytest.approx(1.015625)
    d = scene_descriptors(v.array, v.spacing_mm, direction=v.direction, modality="MR")
    assert set(MODEL_FEATURES) <= set(d.values)
    assert 150 < d.values["area_cm2"] < 400  # an adult head's cross-section
    big = np.full((300, 512, 512), -1000, np.float32)
    big[:, 100:400, 80:430] = 40
    d = scene_descriptors(big, (1.0, 0.7, 0.7), modality="CT", unit="HU")
    # cost bounded by design (timed by `dicomnode bench analysis`, not here): 24 sampled slices at 4 mm pixels
    assert all(a.shape == (24,) for a in d.per_slice.values())
    assert d.values["area_cm2"] == pytest.approx(300 * 350 * 0.49 / 100, rel=0.03)


def _arms_against_trunk(gap_mm: float) -> np.ndarray:
    """A 1 mm CT slice: an elliptic trunk with two lungs, arms hugging its sides ``gap_mm`` away (air between)."""
    yy, xx = np.mgrid[:512, :512].astype(float)
    trunk = ((yy - 256) / 110) ** 2 + ((xx - 256) / 160) ** 2 <= 1
    sl = np.where(trunk, 40.0, -1000.0)
    for side in (-1, 1):
        sl[((yy - 250) / 70) ** 2 + ((xx - 256 - side * 75) / 55) ** 2 <= 1] = -850.0  # lungs
        cx = 256 + side * (160 + 25)
        arm = ((yy - 256) ** 2 + (xx - cx) ** 2 <= 45 ** 2) & ~_dilated(trunk, gap_mm)
        sl[arm] = 40.0
    return sl


def _dilated(mask: np.ndarray, mm: float) -> np.ndarray:
    from scipy import ndimage as ndi

    return ndi.distance_transform_edt(~mask) <= mm


@pytest.mark.parametrize("gap_mm", [1.0, 3.0])
def test_arms_lying_against_the_trunk_are_parts_of_their_own(gap_mm):
    # In 4 mm block means the thin air gap vanishes and arm and trunk merged into one 42 cm-wide component whose
    # humeri counted as lateral bone: an upper abdomen looked like a pelvis (docs/models.md).
    vol = np.repeat(_arms_against_trunk(gap_mm)[None], 4, axis=0).astype(np.float32)
    d = scene_descriptors(vol, (5.0, 1.0, 1.0), modality="CT", unit="HU")
    assert d.values["n_components"] == 3
    # the largest part is the trunk alone: the major axis of a filled ellipse is 4 sigma = its full length
    assert d.values["major_axis_mm"] == pytest.approx(320, rel=0.04)
    assert d.values["minor_major_ratio"] == pytest.approx(110 / 160, rel=0.05)


def test_touching_thighs_are_two_parts_and_a_chest_with_lungs_is_one():
    yy, xx = np.mgrid[:400, :400].astype(float)
    sl = np.full((400, 400), -1000.0)
    for cx in (200 - 68, 200 + 68):  # r = 70 mm thighs overlapping by 4 mm: a 47 mm-wide contact
        sl[(yy - 200) ** 2 + (xx - cx) ** 2 <= 70 ** 2] = 40.0
    d = scene_descriptors(np.repeat(sl[None], 4, axis=0), (5.0, 1.0, 1.0), modality="CT", unit="HU")
    assert d.values["n_components"] == 2
    chest = _arms_against_trunk(3.0)
    chest[:, :90] = chest[:, 422:] = -1000.0  # no arms in view
    d = scene_descriptors(np.repeat(chest[None], 4, axis=0), (5.0, 1.0, 1.0), modality="CT", unit="HU")
    assert d.values["n_components"] == 1 and d.values["core_dark"] > 0.2


def test_fill_holes_matches_scipy():
    from scipy import ndimage as ndi

    from dicomnode.analysis.scene import _fill_holes

    m = np.random.default_rng(5).random((64, 80)) > 0.35
    assert np.array_equal(_fill_holes(m), ndi.binary_fill_holes(m))
