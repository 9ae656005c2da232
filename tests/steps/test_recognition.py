"""steps/recognition.py: the match, classify and scene steps on a Context."""

import warnings

import numpy as np
import pytest

from dicomnode.analysis.pipeline import Context, run_steps
from dicomnode.analysis.volume import CATEGORY_ANATOMICAL_STRUCTURE, Code, LabelMap, Measurement, SegmentInfo, Volume
from dicomnode.modelio import ModelCard, save_model
from dicomnode.steps import registry
from dicomnode.steps.recognition import header_body_part, header_regions

warnings.filterwarnings("ignore", category=UserWarning)
LUNG = Code("39607008", "SCT", "Lung")


def _ctx():
    registry()
    a = np.full((8, 40, 60), -1000.0, np.float32)
    a[:, 5:35, 5:55] = 40
    left = np.zeros(a.shape, bool)
    left[2:6, 10:30, 35:50] = True
    right = np.flip(left, axis=2)
    a[left | right] = -850
    v = Volume(a, (5.0, 2.0, 2.0), modality="CT", unit="HU")
    labels = LabelMap().add(SegmentInfo(1, "lung_left", CATEGORY_ANATOMICAL_STRUCTURE, LUNG), left) \
        .add(SegmentInfo(2, "lung_right", CATEGORY_ANATOMICAL_STRUCTURE, LUNG), right)
    return Context(volume=v, original=v, labels=labels)


def test_match_step_reports_similarities_and_measurements():
    ctx = _ctx()
    run_steps(ctx, ["match"], {})
    names = {s["name"]: s for s in ctx.similarities}
    assert {"volume_ratio", "shape_dice", "histogram_ncc", "intensity_ncc"} <= set(names)
    assert names["shape_dice"]["a"] == "lung_left" and names["shape_dice"]["b"] == "lung_right"
    assert names["shape_dice"]["value"] == pytest.approx(1.0)
    assert any(m.name == "match.lung_right.shape_dice" for m in ctx.measurements[1])


def test_classify_step_on_segment_measurements(tmp_path):
    from sklearn.naive_bayes import GaussianNB
    X = np.array([[-900.0], [-850.0], [-800.0], [0.0], [40.0], [80.0]])
    est = GaussianNB().fit(X, ["air-like"] * 3 + ["tissue-like"] * 3)
    p = save_model(tmp_path / "dens.skops", est, ModelCard("density", tuple(est.classes_), ("mean",), "toy"))
    ctx = _ctx()
    ctx.measurements[1] = [Measurement("mean", -850.0, "HU")]
    run_steps(ctx, ["classify"], {"classify": {"model": str(p)}})
    (c,) = ctx.classifications
    assert c["task"] == "density" and c["label"] == "air-like" and c["segment"] == "lung_left"
    assert sum(c["probabilities"].values()) == pytest.approx(1.0)


def test_scene_step_with_shipped_model_and_header_terms():
    ctx = _ctx()
    ctx.header = {"BodyPartExamined": "NECK"}
    run_steps(ctx, ["scene"], {})
    # 8 slices of a 6 x 10 cm block: too small and too few to tell
    assert ctx.scene["label"] == "unknown" and [r["label"] for r in ctx.scene["regions"]] == ["unknown"]
    assert set(ctx.scene["probabilities"]) == {"abdomen", "chest", "extremity", "head", "pelvis"}
    assert ctx.scene["header_body_part"] == "neck" and ctx.scene["agrees_with_header"] is None  # no neck class
    assert header_body_part({"BodyPartExamined": "PARTIALBODY", "ProtocolName": "FDG_TK_KM"}) is None
    assert header_regions({"BodyPartExamined": "ABDOMENPELVIS"}) == ("abdomen", "pelvis")
    assert header_body_part({"SeriesDescription": "t1_fl2d_sag brain"}) == "head"


def test_unknown_parameter_refused():
    from dicomnode.errors import AnalysisError
    with pytest.raises(AnalysisError, match="unknown parameter"):
        run_steps(_ctx(), ["scene"], {"scene": {"modle": "x"}})


def test_scene_step_regions_on_a_real_chest_ct_with_the_shipped_model():
    """The contract of ``ctx.scene`` (the shipped model saw this series in training: no accuracy claim here; the
    leave-one-patient-out figures are in tests/analysis/test_scene.py)."""
    from dicomnode.commands.train import load_volume
    from helpers import SHARED_DATA

    registry()
    v = load_volume(SHARED_DATA / "chest-ct/A0002_B40f")
    ctx = Context(volume=v, original=v, header={"BodyPartExamined": "CHEST"})
    run_steps(ctx, ["scene"], {})
    s = ctx.scene
    assert set(s) == {"label", "probabilities", "regions", "lungs_in_view", "body_in_view", "header_body_part",
                      "agrees_with_header", "model"}
    assert s["label"] == "chest" and s["agrees_with_header"] is True and s["lungs_in_view"] is True
    assert s["body_in_view"] is True
    z_top = v.origin_mm[2] + (v.shape[0] - 1) * v.spacing_mm[0]
    assert s["regions"][0]["z_mm"][1] == pytest.approx(z_top + v.spacing_mm[0] / 2)
    assert all(set(r) == {"label", "z_mm", "probability"} for r in s["regions"])
    assert [r["z_mm"][0] for r in s["regions"]] == sorted((r["z_mm"][0] for r in s["regions"]), reverse=True)
