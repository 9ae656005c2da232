"""analysis/scene.py: descriptors, and body-region recognition scored leave-one-patient-out on real series.

A model is never scored on a patient it was trained on: for each held-out patient the test trains a scene model on
the other real patients' slabs plus synthetic phantoms, then runs the ``scene`` step on the held-out series with
its header fields blanked (the image alone must say it).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from dicomnode.analysis.pipeline import Context, run_steps
from dicomnode.analysis.scene import MODEL_FEATURES, descriptor_vector, scene_descriptors, slab_descriptors, to_axial
from dicomnode.commands.train import load_volume, make_scene_estimator, phantom_samples
from dicomnode.modelio import ModelCard, save_model
from dicomnode.steps import registry
from helpers import SHARED_DATA

warnings.filterwarnings("ignore", category=UserWarning)

SERIES = {  # path -> (label, patient)
    "chest-ct/A0002_B40f": ("chest", "A0002"),
    "head-mr/T1_sag": ("head", "HFS"),
    "abdomen-ct/upper_abdomen_j2k": ("abdomen", "j2k"),
    "abdomen-ct/abdomen_pelvis_nifti/example_ct.nii.gz": ("abdomen", "nifti"),
    **{f"sts/STS_00{i}/{m}": ("extremity", f"STS_00{i}") for i in (1, 2, 3) for m in ("CT", "MR_T1", "PET")},
}
BLANK = {"BodyPartExamined": "", "SeriesDescription": "", "StudyDescription": "", "ProtocolName": ""}


@pytest.fixture(scope="module")
def volumes():
    return {k: load_volume(SHARED_DATA / k) for k in SERIES}


@pytest.fixture(scope="module")
def samples(volumes):
    X, y, g = [], [], []
    for k, v in volumes.items():
        label, patient = SERIES[k]
        keep = (0.6, 1.0) if k.endswith(".nii.gz") else (0.2, 1.0) if k.startswith("head") else (0.0, 1.0)
        for d in slab_descriptors(v.array, v.spacing_mm, direction=v.direction, modality=v.modality, unit=v.unit,
                                  keep=keep):
            X.append(descriptor_vector(d))
            y.append(label)
            g.append(patient)
        if k.endswith(".nii.gz"):  # below the iliac crest (about half-way up this volume): pelvis
            for d in slab_descriptors(v.array, v.spacing_mm, direction=v.direction, modality=v.modality,
                                      unit=v.unit, keep=(0.0, 0.45)):
                X.append(descriptor_vector(d))
                y.append("pelvis")
                g.append(patient)
    # 15 phantom slabs per region and modality: with 6 the held-out abdomen flipped with the draw (4 of 8 seeds)
    Xp, yp = phantom_samples(15, ["head", "chest", "abdomen", "pelvis", "extremity"], seed=7)
    return np.array(X), np.array(y), np.array(g), Xp, yp


def _lopo_model(samples, patient, tmp_path):
    X, y, g, Xp, yp = samples
    keep = g != patient
    Xt = np.concatenate([X[keep]] * 3 + [Xp])
    yt = np.concatenate([y[keep]] * 3 + [yp])
    est = make_scene_estimator().fit(Xt, yt)
    card = ModelCard("scene", tuple(est.classes_), MODEL_FEATURES, f"test model without patient {patient}")
    return save_model(tmp_path / f"scene-without-{patient}.skops", est, card)


def _scene(volume, model, header):
    registry()
    ctx = Context(volume=volume, original=volume, header=header)
    run_steps(ctx, ["scene"], {"scene": {"model": str(model)}})
    return ctx.scene


@pytest.mark.parametrize("key", [
    "chest-ct/A0002_B40f",
    "head-mr/T1_sag",
    "abdomen-ct/upper_abdomen_j2k",
    "sts/STS_001/CT", "sts/STS_001/MR_T1", "sts/STS_001/PET",
    "sts/STS_003/CT", "sts/STS_003/MR_T1", "sts/STS_003/PET",
])
def test_scene_recognised_leave_one_patient_out_without_header(key, volumes, samples, tmp_path):
    label, patient = SERIES[key]
    model = _lopo_model(samples, patient, tmp_path)
    scene = _scene(volumes[key], model, BLANK)
    assert scene["label"] == label, scene
    assert scene["header_body_part"] is None and scene["agrees_with_header"] is None
    assert sum(scene["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_header_disagreement_flagged(volumes, samples, tmp_path):
    model = _lopo_model(samples, "A0002", tmp_path)
    scene = _scene(volumes["chest-ct/A0002_B40f"], model, {"BodyPartExamined": "HEAD"})
    assert scene["label"] == "chest"
    assert scene["header_body_part"] == "head" and scene["agrees_with_header"] is False
    scene = _scene(volumes["chest-ct/A0002_B40f"], model, {"SeriesDescription": "ThoraxRoutine 8.0.0 B40f"})
    assert scene["header_body_part"] == "chest" and scene["agrees_with_header"] is True


def test_descriptors_are_fast_and_orientation_free(volumes):
    v = volumes["head-mr/T1_sag"]  # sagittal acquisition
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
