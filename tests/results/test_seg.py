"""results/seg.py: SEG objects built with highdicom from real series, validated by dciodvfy and read back."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from dicomnode.analysis.volume import (
    CATEGORY_ANATOMICAL_STRUCTURE,
    CATEGORY_TISSUE,
    Code,
    LabelMap,
    SegmentInfo,
)
from dicomnode.errors import ResultError
from dicomnode.io.load import LoadedSeries, load_series
from dicomnode.results.seg import build_seg, segments_overlap
from dicomnode.results.uids import ResultUids
from helpers import SHARED_DATA, STS_CT, dciodvfy

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom/highdicom warn on the sts headers

BODY = SegmentInfo(1, "body", CATEGORY_ANATOMICAL_STRUCTURE, Code("123037004", "SCT", "Anatomical Structure"),
                   algorithm="segment.ct_body")
BONE = SegmentInfo(2, "bone", CATEGORY_TISSUE, Code("3138006", "SCT", "Bone tissue"), algorithm="segment.bone")
SERIES_DIRS = {
    "sts_ct": STS_CT,
    "sts_mr": SHARED_DATA / "sts" / "STS_001" / "MR_T1",
    "sts_pet": SHARED_DATA / "sts" / "STS_001" / "PET",
    "chest_ct": SHARED_DATA / "chest-ct" / "A0002_B40f",
}


def files_of(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.dcm"))


def body_and_bone(series: LoadedSeries) -> LabelMap:
    """A body-like mask and a second segment inside it (overlapping), by thresholds in the series' own unit."""
    a = series.volume.array
    if series.modality == "CT":
        body, bone = a > -300, a > 300
    else:  # MR, PET: above a low and a high percentile
        body, bone = a > np.percentile(a, 30), a > np.percentile(a, 97)
    return LabelMap().add(BODY, body).add(BONE, bone)


@pytest.fixture(scope="module")
def ct() -> LoadedSeries:
    return load_series(files_of(STS_CT))


@pytest.fixture(scope="module")
def uids(ct: LoadedSeries) -> ResultUids:
    return ResultUids.for_series(None, ct.series_uid, "test-profile", "1")


@pytest.mark.parametrize("case", sorted(SERIES_DIRS))
def test_seg_is_valid_and_round_trips(case: str, tmp_path: Path) -> None:
    series = load_series(files_of(SERIES_DIRS[case]))
    labels = body_and_bone(series)
    uids = ResultUids.for_series(None, series.series_uid, "test-profile", "1")

    seg = build_seg(series, labels, uids)
    path = tmp_path / "seg.dcm"
    seg.save_as(path, enforce_file_format=True)

    n_errors, out = dciodvfy(path)
    assert n_errors == 0, out

    back = hd.seg.segread(path)
    assert back.SOPInstanceUID == uids.seg_instance_uid and back.SeriesInstanceUID == uids.seg_series_uid
    assert back.StudyInstanceUID == series.study_uid
    assert back.FrameOfReferenceUID == series.headers[0].FrameOfReferenceUID
    assert back.ReferencedSeriesSequence[0].SeriesInstanceUID == series.series_uid
    assert back.SegmentsOverlap == "YES" and back.SegmentationType == "BINARY"
    # the pixels: every z index of the volume, both segments, exactly the masks
    source_uids = [uid for uid, _ in series.frames]
    pixels = back.get_pixels_by_source_instance(source_uids, segment_numbers=[1, 2], skip_overlap_checks=True)
    for i, seg_ in enumerate(labels.segments):
        assert np.array_equal(pixels[..., i].astype(bool), seg_.mask)
    # empty frames omitted: one frame per (slice, segment) with any voxel
    expected_frames = sum(int(s.mask.reshape(s.mask.shape[0], -1).any(axis=1).sum()) for s in labels.segments)
    assert int(back.NumberOfFrames) == expected_frames
    # every frame names its source image
    refs = {item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            for item in back.PerFrameFunctionalGroupsSequence}
    assert refs <= set(source_uids)


def test_segment_descriptions(ct: LoadedSeries, uids: ResultUids) -> None:
    seg = build_seg(ct, body_and_bone(ct), uids, software_version="9.8.7")
    first, second = seg.SegmentSequence
    assert first.SegmentNumber == 1 and first.SegmentLabel == "body"
    assert first.SegmentedPropertyCategoryCodeSequence[0].CodeValue == CATEGORY_ANATOMICAL_STRUCTURE.value
    assert first.SegmentedPropertyTypeCodeSequence[0].CodeValue == "123037004"
    assert second.SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Bone tissue"
    assert first.SegmentAlgorithmType == "AUTOMATIC" and first.SegmentAlgorithmName == "segment.ct_body"
    algo = first.SegmentationAlgorithmIdentificationSequence[0]
    assert algo.AlgorithmName == "segment.ct_body" and algo.AlgorithmVersion == "9.8.7"
    assert first.TrackingUID == uids.tracking_uid("body") and first.TrackingID == "body"
    assert seg.ContentCreatorName == "DICOMNODE^"
    assert seg.SeriesNumber == 9001 and seg.Manufacturer == "dicomnode"


def test_same_inputs_same_uids_other_profile_other_uids(ct: LoadedSeries, uids: ResultUids) -> None:
    labels = body_and_bone(ct)
    a, b = build_seg(ct, labels, uids), build_seg(ct, labels, uids)
    assert (a.SOPInstanceUID, a.SeriesInstanceUID) == (b.SOPInstanceUID, b.SeriesInstanceUID)
    other = build_seg(ct, labels, ResultUids.for_series(None, ct.series_uid, "other-profile", "1"))
    assert other.SOPInstanceUID != a.SOPInstanceUID and other.SeriesInstanceUID != a.SeriesInstanceUID


def test_invalid_source_values_are_cleaned_on_a_copy(ct: LoadedSeries, uids: ResultUids) -> None:
    study_id = str(ct.headers[0].StudyID)
    assert len(study_id) > 16  # the real sts header breaks SH
    seg = build_seg(ct, body_and_bone(ct), uids)
    assert seg.StudyID == study_id[:16]
    assert seg.PatientID == ct.headers[0].PatientID
    assert str(ct.headers[0].StudyID) == study_id  # the caller's header is untouched


def test_disjoint_segments_say_no_overlap(ct: LoadedSeries, uids: ResultUids) -> None:
    a = ct.volume.array
    labels = LabelMap().add(BODY, (a > -300) & (a <= 300)).add(BONE, a > 300)
    seg = build_seg(ct, labels, uids)
    assert seg.SegmentsOverlap == "NO"


def test_segments_overlap_agrees_with_brute_force() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        masks = [rng.random((12, 9, 7)) > rng.uniform(0.8, 1.0) for _ in range(int(rng.integers(1, 4)))]
        truth = bool((np.sum(masks, axis=0) > 1).any())
        assert segments_overlap(masks) == truth
    one_voxel = [np.zeros((30, 4, 4), bool) for _ in range(3)]
    one_voxel[0][29, 3, 3] = one_voxel[2][29, 3, 3] = True
    assert segments_overlap(one_voxel)
    one_voxel[2][29, 3, 3] = False
    assert not segments_overlap(one_voxel)


def test_empty_segment_is_allowed(ct: LoadedSeries, uids: ResultUids, tmp_path: Path) -> None:
    labels = LabelMap().add(BODY, ct.volume.array > -300).add(BONE, np.zeros(ct.volume.shape, bool))
    seg = build_seg(ct, labels, uids)
    assert len(seg.SegmentSequence) == 2
    assert {int(i.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
            for i in seg.PerFrameFunctionalGroupsSequence} == {1}
    seg.save_as(tmp_path / "seg.dcm", enforce_file_format=True)
    n_errors, out = dciodvfy(tmp_path / "seg.dcm")
    assert n_errors == 0, out


def test_multiframe_source(tmp_path: Path) -> None:
    datasets = [pydicom.dcmread(f) for f in files_of(STS_CT)]
    random.Random(5).shuffle(datasets)
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(datasets, generate_uid(), 1, generate_uid(), 1)
    src = tmp_path / "enhanced.dcm"
    enhanced.save_as(src, enforce_file_format=True)
    series = load_series([src])
    labels = body_and_bone(series)

    seg = build_seg(series, labels, ResultUids.for_series(None, series.series_uid, "p", "1"))
    path = tmp_path / "seg.dcm"
    seg.save_as(path, enforce_file_format=True)
    n_errors, out = dciodvfy(path)
    assert n_errors == 0, out

    back = hd.seg.segread(path)
    uid = series.frames[0][0]
    frame_numbers = [f for _, f in series.frames]  # in z order
    pixels = back.get_pixels_by_source_frame(uid, frame_numbers, segment_numbers=[1, 2], skip_overlap_checks=True)
    for i, s in enumerate(labels.segments):
        assert np.array_equal(pixels[..., i].astype(bool), s.mask)


def test_bad_label_maps_are_refused(ct: LoadedSeries, uids: ResultUids) -> None:
    mask = ct.volume.array > -300
    with pytest.raises(ResultError, match="no segments"):
        build_seg(ct, LabelMap(), uids)
    with pytest.raises(ResultError, match="1, 2, ..., N"):
        build_seg(ct, LabelMap().add(BODY, mask).add(SegmentInfo(3, "x", BONE.category, BONE.type), mask), uids)
    with pytest.raises(ResultError, match="another grid"):
        build_seg(ct, LabelMap().add(BODY, mask[:-1]), uids)


@pytest.mark.parametrize("thickness", [None, ""], ids=["absent", "empty"])
def test_a_source_without_slice_thickness_gets_the_slice_spacing(thickness, ct: LoadedSeries, uids: ResultUids,
                                                                 tmp_path: Path) -> None:
    """Slice Thickness is Type 2 in the CT and MR Image modules; highdicom reads it for the SEG's Pixel Measures (it
    raised AttributeError without it): the SEG gets the volume's slice spacing, and dciodvfy accepts it."""
    headers = [h.copy() for h in ct.headers]
    for h in headers:
        h.pop("SliceThickness", None)
        if thickness is not None:
            h.SliceThickness = thickness
    series = dataclasses.replace(ct, headers=tuple(headers))
    seg = build_seg(series, body_and_bone(series), uids)
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SliceThickness) == pytest.approx(float(ct.volume.spacing_mm[0]), abs=1e-6)
    assert all("SliceThickness" not in h or h.SliceThickness in ("", None) for h in series.headers)  # untouched
    path = tmp_path / "seg.dcm"
    seg.save_as(path, enforce_file_format=True)
    errors, out = dciodvfy(path)
    assert errors == 0, out
