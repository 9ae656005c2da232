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


def test_scene_regions_are_reported_one_group_each_and_validate(tmp_path):
    """scene["regions"] (the scene step's body regions along z) -> one TID 1501 group per region in the evaluations
    report, with the region code, the z range and the probability; dciodvfy and Pixelmed's SR validator accept it."""
    import highdicom as hd

    from dicom_validators import assert_valid, dciodvfy as dciodvfy_report, sr_validator
    from dicomnode.results.sr import build_evaluation_sr

    series = load_series(sorted(STS_CT.glob("*.dcm")))
    uids = ResultUids.for_series(None, series.series_uid, "test", "1")
    scene = {"label": "chest", "probabilities": {"chest": 0.7, "abdomen": 0.3}, "model": "scene.skops",
             "regions": [{"label": "chest", "z_mm": [-150.0, 20.5], "probability": 0.91},
                         {"label": "abdomen", "z_mm": [-400.0, -150.0], "probability": 0.83},
                         {"label": "unknown-part", "z_mm": [-450.0, -400.0], "probability": None}]}
    groups = evaluation_groups(scene, [], [], uids)
    assert [g.tracking_identifier for g in groups] == [
        "scene", "scene.region.1.chest", "scene.region.2.abdomen", "scene.region.3.unknown-part"]
    sr = build_evaluation_sr(series, groups, uids)
    assert sr.SeriesInstanceUID == uids.sr_series_uid and sr.InstanceNumber == 2
    path = tmp_path / "sr_evaluations.dcm"
    sr.save_as(path, enforce_file_format=True)
    back = {g.tracking_identifier: g for g in hd.sr.srread(path).content.get_image_measurement_groups()}
    abdomen = back["scene.region.2.abdomen"]
    values = {m.name.meaning: (m.value, m.unit.value) for m in abdomen.get_measurements()}
    assert values == {"region z from": (-400.0, "mm"), "region z to": (-150.0, "mm"), "probability": (0.83, "1")}
    region = abdomen.get_qualitative_evaluations(name=hd.sr.CodedConcept("123014", "DCM", "Target Region"))
    assert region[0].value.value == "818981001"  # SNOMED CT Abdomen
    assert abdomen.finding_type.value == "818981001"
    assert "probability" not in {m.name.meaning for m in back["scene.region.3.unknown-part"].get_measurements()}
    assert_valid([dciodvfy_report(path), sr_validator(path)])


def test_evaluation_report_refuses_region_groups():
    from dicomnode.errors import ResultError
    from dicomnode.results.sr import build_evaluation_sr

    series = load_series(sorted(STS_CT.glob("*.dcm")))
    uids = ResultUids.for_series(None, series.series_uid, "test", "1")
    with pytest.raises(ResultError, match="nothing to report"):
        build_evaluation_sr(series, [], uids)


def test_undefined_numbers_are_left_out_not_fatal(tmp_path):
    """A NaN probability, a region without a finite extent or a NaN similarity leaves that number out of the SR
    (results.json keeps it as null); the report is still made and valid."""
    from dicomnode.results.sr import build_evaluation_sr

    series = load_series(sorted(STS_CT.glob("*.dcm")))
    uids = ResultUids.for_series(None, series.series_uid, "test", "1")
    nan, inf = float("nan"), float("inf")
    scene = {"label": "unknown", "probabilities": {"chest": nan, "abdomen": 0.4}, "model": "scene.skops",
             "regions": [{"label": "chest", "z_mm": [-inf, 20.0], "probability": nan},
                         {"label": "abdomen", "z_mm": [-400.0, -150.0], "probability": 0.8}]}
    sims = [{"name": "shape_dice", "a": "a", "b": "b", "value": nan, "method": "m"}]
    groups = evaluation_groups(scene, [], sims, uids)
    assert [g.tracking_identifier for g in groups] == ["scene", "scene.region.1.chest", "scene.region.2.abdomen"]
    sr = build_evaluation_sr(series, groups, uids)
    path = tmp_path / "sr_evaluations.dcm"
    sr.save_as(path, enforce_file_format=True)
    errors, out = dciodvfy(path)
    assert errors == 0, out
    assert "region z from" not in str(groups[1]) and "probability.abdomen" in str(groups[0])
