"""io/roi.py: RTSTRUCT contours rasterised onto an image grid, SEG segments matched onto it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as Seq
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, RTStructureSetStorage, generate_uid

from dicomnode.analysis.volume import CATEGORY_MORPHOLOGICALLY_ABNORMAL, Code, LabelMap, SegmentInfo
from dicomnode.errors import SeriesLoadError
from dicomnode.io.load import LoadedSeries, load_series
from dicomnode.io.roi import fill_polygons, rasterise_rtstruct, read_region, region_names
from helpers import SHARED_DATA

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom/highdicom warn on the sts headers
STS = SHARED_DATA / "sts"


# ----------------------------------------------------------------------------------------------- polygon fill
def test_square_fill_counts_pixel_centres() -> None:
    square = np.array([[2.5, 3.5], [2.5, 9.5], [7.5, 9.5], [7.5, 3.5]])  # rows 3..7, columns 4..9
    mask = fill_polygons([square], (12, 12))
    assert mask.sum() == 5 * 6
    assert mask[3:8, 4:10].all()


def test_even_odd_holes_and_overlaps() -> None:
    outer = np.array([[0.5, 0.5], [0.5, 10.5], [10.5, 10.5], [10.5, 0.5]])  # 10 x 10 pixels
    hole = np.array([[3.5, 3.5], [3.5, 6.5], [6.5, 6.5], [6.5, 3.5]])  # 3 x 3 inside
    island = np.array([[4.5, 4.5], [4.5, 5.5], [5.5, 5.5], [5.5, 4.5]])  # 1 pixel inside the hole
    assert fill_polygons([outer, hole], (12, 12)).sum() == 100 - 9
    assert fill_polygons([outer, hole, island], (12, 12)).sum() == 100 - 9 + 1
    a = np.array([[0.5, 0.5], [0.5, 4.5], [4.5, 4.5], [4.5, 0.5]])  # 4 x 4
    b = a + 2.0  # overlaps a in 2 x 2
    assert fill_polygons([a, b], (12, 12)).sum() == 16 + 16 - 2 * 4  # XOR


def test_polygon_area_matches_within_the_boundary_pixels() -> None:
    theta = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    r, cy, cx = 40.3, 60.2, 70.7
    circle = np.column_stack([cy + r * np.sin(theta), cx + r * np.cos(theta)])
    mask = fill_polygons([circle], (128, 160))
    area = 0.5 * abs(np.dot(circle[:, 0], np.roll(circle[:, 1], 1)) - np.dot(circle[:, 1], np.roll(circle[:, 0], 1)))
    perimeter = 2 * np.pi * r
    assert abs(mask.sum() - area) < 0.5 * perimeter  # error confined to the boundary pixels
    assert abs(mask.sum() - area) / area < 0.01


# ----------------------------------------------------------------------------------------------- synthetic series
def _write_series(folder: Path, *, shape=(5, 24, 20), spacing=(2.5, 0.8, 0.7), origin=(-10.0, -20.0, 30.0),
                  study_uid=None, for_uid=None) -> LoadedSeries:
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid, for_uid = generate_uid(), for_uid or generate_uid()
    for k in range(shape[0]):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, for_uid
        ds.Modality = "CT"
        ds.PatientID, ds.PatientName = "ROI-TEST", "Test^Roi"
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * spacing[0]]
        ds.PixelSpacing = [spacing[1], spacing[2]]
        ds.Rows, ds.Columns = shape[1], shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        ds.PixelData = (np.full(shape[1:], 40, np.int16) + k).tobytes()
        ds.save_as(folder / f"{k:03d}.dcm", enforce_file_format=True)
    return load_series(sorted(folder.glob("*.dcm")))


def _rtstruct(series: LoadedSeries, rois: dict[str, list[np.ndarray]], *, series_uid: str | None = None,
              for_uid: str | None = None) -> Dataset:
    """An RT Structure Set with one ROI per name; contours given as (N, 3) patient points."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = RTStructureSetStorage, generate_uid()
    ds.Modality, ds.StudyInstanceUID, ds.SeriesInstanceUID = "RTSTRUCT", series.study_uid, generate_uid()
    for_uid = for_uid or str(series.headers[0].FrameOfReferenceUID)
    se = Dataset()
    se.SeriesInstanceUID = series_uid or series.series_uid
    st = Dataset()
    st.RTReferencedSeriesSequence = Seq([se])
    rf = Dataset()
    rf.FrameOfReferenceUID = for_uid
    rf.RTReferencedStudySequence = Seq([st])
    ds.ReferencedFrameOfReferenceSequence = Seq([rf])
    ds.StructureSetROISequence, ds.ROIContourSequence = Seq(), Seq()
    for number, (name, contours) in enumerate(rois.items(), start=1):
        r = Dataset()
        r.ROINumber, r.ROIName, r.ReferencedFrameOfReferenceUID = number, name, for_uid
        ds.StructureSetROISequence.append(r)
        rc = Dataset()
        rc.ReferencedROINumber = number
        rc.ContourSequence = Seq()
        for pts in contours:
            c = Dataset()
            c.ContourGeometricType, c.NumberOfContourPoints = "CLOSED_PLANAR", len(pts)
            c.ContourData = [float(v) for v in np.asarray(pts).ravel()]
            rc.ContourSequence.append(c)
        ds.ROIContourSequence.append(rc)
    return ds


def _square(series: LoadedSeries, k: int, rows: tuple[float, float], cols: tuple[float, float]) -> np.ndarray:
    """A square contour on slice k from fractional (row, column) corners, as patient points."""
    (r0, r1), (c0, c1) = rows, cols
    zyx = np.array([[k, r0, c0], [k, r0, c1], [k, r1, c1], [k, r1, c0]], dtype=float)
    return series.volume.index_to_patient(zyx)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> LoadedSeries:
    return _write_series(tmp_path_factory.mktemp("series"))


def test_rtstruct_square_with_hole_and_second_contour(synthetic: LoadedSeries, tmp_path: Path) -> None:
    s = synthetic
    contours = [
        _square(s, 1, (3.5, 13.5), (2.5, 12.5)),  # 10 x 10 pixels
        _square(s, 1, (6.5, 9.5), (5.5, 8.5)),  # a 3 x 3 hole
        _square(s, 1, (15.5, 17.5), (14.5, 16.5)),  # a second, separate contour on the slice: 2 x 2
        _square(s, 3, (0.5, 2.5), (0.5, 3.5)),  # 2 x 3 on another slice
    ]
    ds = _rtstruct(s, {"Other": [_square(s, 2, (1.5, 2.5), (1.5, 2.5))], "GTV square": contours})
    path = tmp_path / "rs.dcm"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    assert region_names(path) == [(1, "Other"), (2, "GTV square")]
    region = read_region(path, s, name="gtv")  # case-insensitive unique prefix
    assert (region.label, region.number, region.kind) == ("GTV square", 2, "RTSTRUCT")
    mask = region.mask
    assert mask.shape == s.volume.shape
    assert mask[1].sum() == 100 - 9 + 4 and mask[3].sum() == 6 and mask.sum() == 101
    assert not mask[1, 7:10, 6:9].any()  # the hole
    assert mask[1, 4:14, 3:13].sum() == 91
    area_mm2 = 100 * s.volume.spacing_mm[1] * s.volume.spacing_mm[2]
    assert mask[1, 4:14, 3:13].sum() + 9 == pytest.approx(area_mm2 / (s.volume.spacing_mm[1] * s.volume.spacing_mm[2]))
    assert read_region(path, s, number=1).mask.sum() == 1
    with pytest.raises(SeriesLoadError, match=r"no ROI named 'Liver'.*'Other'.*'GTV square'") as info:
        read_region(path, s, name="Liver")
    assert str(path) in str(info.value)
    with pytest.raises(SeriesLoadError, match="choose one by name or number"):
        read_region(path, s)
    with pytest.raises(SeriesLoadError, match="no ROI number 7"):
        read_region(path, s, number=7)


def test_rtstruct_of_another_series_or_frame_is_refused(synthetic: LoadedSeries) -> None:
    contour = [_square(synthetic, 1, (3.5, 6.5), (3.5, 6.5))]
    with pytest.raises(SeriesLoadError, match="RTReferencedSeriesSequence names series .* drawn on another series"):
        rasterise_rtstruct(_rtstruct(synthetic, {"a": contour}, series_uid=generate_uid()), synthetic)
    with pytest.raises(SeriesLoadError, match="ReferencedFrameOfReferenceUID"):
        rasterise_rtstruct(_rtstruct(synthetic, {"a": contour}, for_uid=generate_uid()), synthetic)


def test_contours_are_matched_along_the_normal(synthetic: LoadedSeries) -> None:
    s = synthetic
    off = _square(s, 2, (3.5, 6.5), (3.5, 6.5))
    off[:, 2] += 0.3 * s.volume.spacing_mm[0]  # 0.3 slice above slice 2: still slice 2
    outside = _square(s, 2, (3.5, 6.5), (3.5, 6.5))
    outside[:, 2] += 10 * s.volume.spacing_mm[0]  # beyond the last slice: skipped
    mask = rasterise_rtstruct(_rtstruct(s, {"a": [off, outside]}), s).mask
    assert mask[2].sum() == 9 and mask.sum() == 9


# ----------------------------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def sts1() -> LoadedSeries:
    return load_series(sorted((STS / "STS_001" / "CT").glob("*.dcm")))


@pytest.mark.parametrize("case", ["STS_001", "STS_002", "STS_003"])
def test_sts_gtv_volume_matches_the_contour_areas(case: str) -> None:
    series = load_series(sorted((STS / case / "CT").glob("*.dcm")))
    path = STS / case / "CT_rtstruct" / "RS.dcm"
    region = read_region(path, series, name="GTV_Mass")
    assert region.label == "GTV_Mass_CT"
    ds = pydicom.dcmread(path)
    area_mm2 = 0.0  # even-odd: contours inside others subtract; shoelace in the slice plane (axial here)
    normal = series.volume.direction[:, 2]
    for c in ds.ROIContourSequence[0].ContourSequence:
        p = np.asarray(c.ContourData, float).reshape(-1, 3)
        area_mm2 += 0.5 * abs(np.dot(np.cross(p, np.roll(p, -1, axis=0)).sum(axis=0), normal))
    contour_ml = area_mm2 * series.volume.spacing_mm[0] / 1000
    mask_ml = region.mask.sum() * series.volume.voxel_volume_mm3 / 1000
    assert mask_ml == pytest.approx(contour_ml, rel=0.03)


def test_square_contour_on_the_sts_grid(sts1: LoadedSeries) -> None:
    s = sts1
    dy, dx = s.volume.spacing_mm[1:]
    centre = s.volume.index_to_patient([[20, 100.3, 90.6]])[0]
    side_mm = 30.0
    pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float) * side_mm / 2
    contour = np.column_stack([centre[0] + pts[:, 0], centre[1] + pts[:, 1], np.full(4, centre[2])])
    mask = rasterise_rtstruct(_rtstruct(s, {"square": [contour]}), s).mask
    assert mask.sum() == mask[20].sum()
    perimeter_pixels = 4 * side_mm / min(dy, dx)
    assert abs(mask.sum() - side_mm**2 / (dy * dx)) <= perimeter_pixels / 2


def test_seg_segment_read_back_equals_its_mask(sts1: LoadedSeries, tmp_path: Path) -> None:
    from dicomnode.results.seg import build_seg
    from dicomnode.results.uids import ResultUids

    gtv = read_region(STS / "STS_001" / "CT_rtstruct" / "RS.dcm", sts1, name="GTV_Mass").mask
    other = np.zeros_like(gtv)
    other[10:12, 50:60, 40:45] = True
    tumour = Code("108369006", "SCT", "Tumor")
    labels = (LabelMap().add(SegmentInfo(1, "gtv", CATEGORY_MORPHOLOGICALLY_ABNORMAL, tumour), gtv)
              .add(SegmentInfo(2, "box", CATEGORY_MORPHOLOGICALLY_ABNORMAL, tumour), other))
    seg = build_seg(sts1, labels, ResultUids.for_series(None, sts1.series_uid, "roi-test", "1"))
    path = tmp_path / "seg.dcm"
    seg.save_as(path)
    assert region_names(path) == [(1, "gtv"), (2, "box")]
    by_label = read_region(path, sts1, name="gtv")
    assert by_label.kind == "SEG" and by_label.number == 1
    assert np.array_equal(by_label.mask, gtv)
    by_number = read_region(path, sts1, number=2)
    assert by_number.label == "box" and np.array_equal(by_number.mask, other)
    with pytest.raises(SeriesLoadError, match=r"no segment named 'liver'.*'gtv'"):
        read_region(path, sts1, name="liver")


def test_seg_on_another_grid_is_resampled(sts1: LoadedSeries, tmp_path: Path) -> None:
    """A SEG made on a coarser copy of the grid (every second row and column): nearest-neighbour matched."""
    import highdicom as hd

    coarse = np.zeros((sts1.volume.shape[0], sts1.volume.shape[1] // 2, sts1.volume.shape[2] // 2), bool)
    coarse[20:30, 30:50, 20:40] = True
    dz, dy, dx = sts1.volume.spacing_mm
    origin = np.asarray(sts1.volume.origin_mm) + sts1.volume.direction @ np.array([dx / 2, dy / 2, 0.0])
    volume = hd.Volume.from_components(
        array=coarse.astype(np.uint8), spacing=(dz, 2 * dy, 2 * dx), position=origin.tolist(),
        direction=sts1.volume.direction[:, [2, 1, 0]], coordinate_system="PATIENT",
        frame_of_reference_uid=str(sts1.headers[0].FrameOfReferenceUID))
    seg = hd.seg.Segmentation(
        source_images=list(sts1.headers)[:1], pixel_array=volume, segmentation_type="BINARY",
        segment_descriptions=[hd.seg.SegmentDescription(
            segment_number=1, segment_label="coarse",
            segmented_property_category=hd.sr.CodedConcept("49755003", "SCT", "Morphologically Altered Structure"),
            segmented_property_type=hd.sr.CodedConcept("108369006", "SCT", "Tumor"),
            algorithm_type="MANUAL")],
        series_instance_uid=generate_uid(), series_number=99, sop_instance_uid=generate_uid(), instance_number=1,
        manufacturer="test", manufacturer_model_name="test", software_versions="0", device_serial_number="0")
    path = tmp_path / "coarse.dcm"
    seg.save_as(path)
    mask = read_region(path, sts1).mask
    expected = np.zeros(sts1.volume.shape, bool)
    expected[20:30, 60:100, 40:80] = True
    assert np.array_equal(mask, expected)
