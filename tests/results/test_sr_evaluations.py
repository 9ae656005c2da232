"""results/sr_evaluations.py: scene, classification and similarity groups in a TID 1500 SR, dciodvfy-clean."""

import pytest

from dicomnode.analysis.volume import CATEGORY_ANATOMICAL_STRUCTURE, Code, LabelMap, Measurement, SegmentInfo
from dicomnode.io.load import load_series
from dicomnode.results.seg import build_seg
from dicomnode.results.sr import build_sr
from dicomnode.results.sr_evaluations import evaluation_groups
from dicomnode.results.uids import ResultUids
from helpers import STS_CT, dciodvfy

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_sr_with_recognition_groups_is_valid(tmp_path):
    series = load_series(sorted(STS_CT.glob("*.dcm")))
    labels = LabelMap().add(SegmentInfo(1, "body", CATEGORY_ANATOMICAL_STRUCTURE,
                                        Code("123037004", "SCT", "Anatomical Structure")), series.volume.array > -300)
    uids = ResultUids.for_series(None, series.series_uid, "test", "1")
    seg = build_seg(series, labels, uids)
    scene = {"label": "extremity", "probabilities": {"extremity": 0.9, "pelvis": 0.1}, "header_body_part": "chest",
             "agrees_with_header": False, "model": "scene.skops"}
    classifications = [{"task": "density", "label": "tissue-like", "probabilities": {"air-like": 0.2,
                        "tissue-like": 0.8}, "model": "d.skops", "segment": "body"}]
    sims = [{"name": "shape_dice", "a": "lung_left", "b": "lung_right", "value": 0.8, "method": "m"},
            {"name": "histogram_ncc", "a": "lung_left", "b": "lung_right", "value": 0.95, "method": "m"}]
    groups = evaluation_groups(scene, classifications, sims, uids)
    assert len(groups) == 3
    sr = build_sr(series, seg, labels, {1: [Measurement("volume_ml", 1.0, "ml")]}, uids, extra_groups=groups)
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    errors, out = dciodvfy(path)
    assert errors == 0, out
    text = str(sr)
    assert "Limb" in text and "probability.extremity" in text and "shape_dice" in text
    assert evaluation_groups(None, [], [], uids) == []
