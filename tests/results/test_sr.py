"""results/sr.py: TID 1500 SR objects built with highdicom, validated by dciodvfy and read back."""

from __future__ import annotations

import warnings
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest

from dicomnode.analysis.volume import (
    CATEGORY_ANATOMICAL_STRUCTURE,
    CATEGORY_TISSUE,
    Code,
    LabelMap,
    Measurement,
    SegmentInfo,
)
from dicomnode.errors import ResultError
from dicomnode.io.load import LoadedSeries, load_series
from dicomnode.results.seg import build_seg
from dicomnode.results.sr import PRIVATE_SCHEME, build_sr, evaluation_group, private_code_value
from dicomnode.results.uids import ResultUids
from helpers import SHARED_DATA, STS_CT, dciodvfy

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom/highdicom warn on the sts headers

BODY = SegmentInfo(1, "body", CATEGORY_ANATOMICAL_STRUCTURE, Code("123037004", "SCT", "Anatomical Structure"),
                   algorithm="segment.ct_body")
DENSE = SegmentInfo(2, "dense", CATEGORY_TISSUE, Code("3138006", "SCT", "Bone tissue"), algorithm="segment.bone")
SUV = SHARED_DATA / "sts" / "STS_001" / "PET"


def labels_of(series: LoadedSeries) -> LabelMap:
    a = series.volume.array
    if series.modality == "CT":
        body, dense = a > -300, a > 300
    else:
        body, dense = a > np.percentile(a, 30), a > np.percentile(a, 99.5)
    return LabelMap().add(BODY, body).add(DENSE, dense)


def stats(series: LoadedSeries, labels: LabelMap) -> dict[int, list[Measurement]]:
    out = {}
    for s in labels.segments:
        values = series.volume.array[s.mask]
        out[s.info.number] = [
            Measurement("volume_ml", int(s.mask.sum()) * series.volume.voxel_volume_mm3 / 1000.0, "ml"),
            Measurement("mean", float(values.mean()), series.volume.unit),
            Measurement("sd", float(values.std()), series.volume.unit),
            Measurement("voxel_count", float(s.mask.sum()), "{voxels}"),
            Measurement("ibsi.morphology.sphericity", 0.5, "1"),
            Measurement("morphology/Moran\u2019s I index", 0.25, "1"),  # IBSI's typographic apostrophe
        ]
    return out


@pytest.fixture(scope="module")
def ct() -> LoadedSeries:
    return load_series(sorted(STS_CT.glob("*.dcm")))


@pytest.fixture(scope="module")
def ct_results(ct: LoadedSeries) -> tuple[LabelMap, ResultUids, hd.seg.Segmentation]:
    labels = labels_of(ct)
    uids = ResultUids.for_series(None, ct.series_uid, "test-profile", "1")
    return labels, uids, build_seg(ct, labels, uids)


def group_by_label(sr: hd.sr.Comprehensive3DSR) -> dict[str, hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations]:
    return {g.tracking_identifier: g for g in sr.content.get_volumetric_roi_measurement_groups()}


def test_sr_is_valid_and_holds_the_measurements(ct: LoadedSeries, ct_results, tmp_path: Path) -> None:
    labels, uids, seg = ct_results
    measurements = stats(ct, labels)
    sr = build_sr(ct, seg, labels, measurements, uids)
    path = tmp_path / "sr.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every text fits the SR's character set: nothing is replaced on writing
        sr.save_as(path, enforce_file_format=True)

    n_errors, out = dciodvfy(path)
    assert n_errors == 0, out

    back = hd.sr.srread(path)
    assert back.SOPInstanceUID == uids.sr_instance_uid and back.SeriesInstanceUID == uids.sr_series_uid
    assert back.StudyInstanceUID == ct.study_uid and back.SeriesNumber == 9002
    assert back.StudyID == str(ct.headers[0].StudyID)[:16]
    groups = group_by_label(back)
    assert set(groups) == {"body", "dense"}
    for s in labels.segments:
        g = groups[s.info.label]
        assert g.tracking_uid == uids.tracking_uid(s.info.label) == seg.SegmentSequence[s.info.number - 1].TrackingUID
        assert g.finding_type.value == s.info.type.value
        ref = g.referenced_segment
        assert ref.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert ref.referenced_segment_numbers == [s.info.number]
        if int(s.mask.reshape(s.mask.shape[0], -1).any(axis=1).sum()) > 32:  # many images: the series is named
            assert ref.source_series_for_segmentation.value == ct.series_uid
        by_name = {m.name.meaning: m for m in g.get_measurements()}
        volume = by_name["Volume"]
        assert volume.name.value == "118565006" and volume.name.scheme_designator == "SCT"
        assert volume.unit.value == "ml"
        expected_ml = int(s.mask.sum()) * ct.volume.voxel_volume_mm3 / 1000.0
        assert volume.value == pytest.approx(expected_ml, rel=1e-9)
        assert by_name["Mean"].name.value == "373098007" and by_name["Mean"].unit.value == "[hnsf'U]"
        assert by_name["Mean"].value == pytest.approx(float(ct.volume.array[s.mask].mean()), rel=1e-6)
        assert by_name["Standard Deviation"].name.value == "386136009"
        private = by_name["ibsi.morphology.sphericity"]
        assert private.name.scheme_designator == PRIVATE_SCHEME
        assert private.name.value == private_code_value("ibsi.morphology.sphericity")
        assert by_name["voxel_count"].name.value == "voxel_count" and by_name["voxel_count"].value == s.mask.sum()
        moran = by_name["morphology/Moran's I index"]  # written in Latin-1 ...
        assert moran.name.value == private_code_value("morphology/Moran\u2019s I index")  # ... same code value
    # our private scheme is declared
    assert [i.CodingSchemeDesignator for i in back.CodingSchemeIdentificationSequence].count(PRIVATE_SCHEME) == 1
    # the evidence lists the SEG and the source series
    evidence_series = {s.SeriesInstanceUID for s in back.CurrentRequestedProcedureEvidenceSequence[0]
                       .ReferencedSeriesSequence}
    assert evidence_series == {ct.series_uid, seg.SeriesInstanceUID}


def test_small_segment_references_its_source_images(ct: LoadedSeries, tmp_path: Path) -> None:
    mask = np.zeros(ct.volume.shape, bool)
    mask[10:14, 50:60, 50:60] = True
    labels = LabelMap().add(BODY, mask)
    uids = ResultUids.for_series(None, ct.series_uid, "p", "1")
    seg = build_seg(ct, labels, uids)
    sr = build_sr(ct, seg, labels, {1: [Measurement("volume_ml", 0.4, "ml")]}, uids)
    sr.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    assert dciodvfy(tmp_path / "sr.dcm")[0] == 0
    ref = group_by_label(hd.sr.srread(tmp_path / "sr.dcm"))["body"].referenced_segment
    assert [i.referenced_sop_instance_uid for i in ref.source_images_for_segmentation] == [
        uid for uid, _ in ct.frames[10:14]]


def test_pet_sr_in_suv(tmp_path: Path) -> None:
    pet = load_series(sorted(SUV.glob("*.dcm")))
    labels = labels_of(pet)
    uids = ResultUids.for_series(None, pet.series_uid, "pet", "1")
    seg = build_seg(pet, labels, uids)
    sr = build_sr(pet, seg, labels, stats(pet, labels), uids)
    sr.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    n_errors, out = dciodvfy(tmp_path / "sr.dcm")
    assert n_errors == 0, out
    mean = {m.name.meaning: m for m in group_by_label(hd.sr.srread(tmp_path / "sr.dcm"))["dense"].get_measurements()}
    assert mean["Mean"].unit.value == "{SUVbw}g/ml" and mean["Mean"].value > 1.0


def test_extra_groups_and_deterministic_uids(ct: LoadedSeries, ct_results, tmp_path: Path) -> None:
    labels, uids, seg = ct_results
    scene = evaluation_group(
        uids, "scene", Code("363679005", "SCT", "Imaging"),
        evaluations=[(Code("scene", PRIVATE_SCHEME, "scene"), Code("51185008", "SCT", "Thorax"))],
        measurements=[Measurement("probability", 0.93, "1")],
        algorithm="scene.classify",
    )
    sr = build_sr(ct, seg, labels, {}, uids, extra_groups=[scene])
    again = build_sr(ct, seg, labels, {}, uids)
    assert (sr.SOPInstanceUID, sr.SeriesInstanceUID) == (again.SOPInstanceUID, again.SeriesInstanceUID)
    other = ResultUids.for_series(None, ct.series_uid, "test-profile", "2")
    assert build_sr(ct, seg, labels, {}, other).SOPInstanceUID != sr.SOPInstanceUID
    sr.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    n_errors, out = dciodvfy(tmp_path / "sr.dcm")
    assert n_errors == 0, out
    back = hd.sr.srread(tmp_path / "sr.dcm")
    assert len(back.content.get_volumetric_roi_measurement_groups()) == 2  # the segments; the scene is TID 1501
    scene_items = [g for g in back.content.get_image_measurement_groups() if g.tracking_identifier == "scene"]
    assert len(scene_items) == 1
    assert scene_items[0].get_measurements()[0].value == pytest.approx(0.93)
    # by name: the group's device observer context (Observer Type, a CODE) is listed by highdicom too
    scene_eval = scene_items[0].get_qualitative_evaluations(name=hd.sr.CodedConcept("scene", PRIVATE_SCHEME, "scene"))
    assert scene_eval[0].value.value == "51185008"


def test_bad_input_is_refused(ct: LoadedSeries, ct_results) -> None:
    labels, uids, seg = ct_results
    with pytest.raises(ResultError, match=r"segments \[7\]"):
        build_sr(ct, seg, labels, {7: [Measurement("mean", 1.0, "HU")]}, uids)
    with pytest.raises(ResultError, match="finite"):
        build_sr(ct, seg, labels, {1: [Measurement("mean", float("nan"), "HU")]}, uids)
    with pytest.raises(ResultError, match="SEG dataset"):
        build_sr(ct, ct.headers[0], labels, {}, uids)
    more = labels.add(SegmentInfo(3, "extra", DENSE.category, DENSE.type), labels.segments[0].mask)
    with pytest.raises(ResultError, match=r"segments \[3\]"):
        build_sr(ct, seg, more, {}, uids)


def test_private_code_values() -> None:
    assert private_code_value("voxel_count") == "voxel_count"
    long = private_code_value("ibsi.morphology.sphericity")
    assert len(long) == 16 and long.startswith("H") and long == private_code_value("ibsi.morphology.sphericity")
    assert private_code_value("ibsi.morphology.compactness_1") != long
