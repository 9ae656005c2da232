"""results/radiomics_sr.py: the radiomics TID 1500 SR, valid for dciodvfy, read back by highdicom with the numbers
of the CLI table."""

from __future__ import annotations

import csv
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes
from pydicom.uid import RTStructureSetStorage, SegmentationStorage

from dicomnode.analysis.volume import CATEGORY_MORPHOLOGICALLY_ABNORMAL, Code, LabelMap, SegmentInfo
from dicomnode.errors import ResultError
from dicomnode.io.load import load_series
from dicomnode.io.roi import read_region
from dicomnode.commands.radiomics import run
from dicomnode.config.radiomics import resolve_settings
from dicomnode.results.radiomics_sr import REGION_IN_SPACE, build_radiomics_sr, feature_code, feature_name
from dicomnode.results.seg import build_seg
from dicomnode.results.sr import PRIVATE_SCHEME, private_code_value
from dicomnode.results.uids import ResultUids
from helpers import SHARED_DATA, dciodvfy

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
CASE = SHARED_DATA / "sts" / "STS_002"


def groups_by_label(sr) -> dict:
    return {g.tracking_identifier: g for g in sr.content.get_volumetric_roi_measurement_groups()}


def test_cli_sr_has_the_cli_numbers_and_is_valid(tmp_path: Path) -> None:
    table, sr_path = tmp_path / "f.csv", tmp_path / "sr.dcm"
    assert run([str(CASE / "CT"), "--roi", str(CASE / "CT_rtstruct" / "RS.dcm"), "--roi-name", "GTV_Mass",
                "--settings", "ibsi-config-C", "--out", str(table), "--sr", str(sr_path)]) == 0
    n_errors, out = dciodvfy(sr_path)
    assert n_errors == 0, out

    with table.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    back = hd.sr.srread(sr_path)
    groups = groups_by_label(back)
    assert list(groups) == ["GTV_Mass_CT"]
    group = groups["GTV_Mass_CT"]
    # the ROI's contours as a Volume Surface (TID 1411 row 10): what Pixelmed's SR validator knows, unlike
    # "Region In Space" (tests/results/test_validators.py runs it)
    rs = pydicom.dcmread(CASE / "CT_rtstruct" / "RS.dcm")
    roi_number = next(int(r.ROINumber) for r in rs.StructureSetROISequence if r.ROIName.startswith("GTV_Mass"))
    contours = [c for item in rs.ROIContourSequence if int(item.ReferencedROINumber) == roi_number
                for c in item.ContourSequence if c.ContourGeometricType == "CLOSED_PLANAR"]
    assert group.reference_type == codes.DCM.VolumeSurface
    surfaces = [i for i in group[0].ContentSequence if i.name == codes.DCM.VolumeSurface]
    assert len(surfaces) == len(contours) >= 2
    first = np.asarray(surfaces[0].GraphicData, dtype=float).reshape(-1, 3)
    assert np.allclose(first[:-1], np.asarray(contours[0].ContourData, dtype=float).reshape(-1, 3), atol=1e-3)
    assert np.array_equal(first[0], first[-1])  # closed
    assert not [i for i in group[0].ContentSequence if i.name == REGION_IN_SPACE]  # the rows are exclusive
    by_code = {m.name.value: m for m in group.get_measurements()}
    assert all(m.name.scheme_designator == PRIVATE_SCHEME for m in by_code.values())
    assert len(by_code) == len(rows)  # all finite: every row is a measurement
    for r in rows:
        name = f"{r['family']}: {r['feature']}" + (f" ({r['aggregation']})" if r["aggregation"] else "")
        m = by_code[private_code_value(name)]
        assert m.value == pytest.approx(float(r["value"]), rel=1e-9, abs=1e-12), name
    unit = {m.name.meaning: m.unit.value for m in by_code.values()}
    assert unit["morphology: volume (mesh)"] == "mm3"
    assert unit["morphology: surface area (mesh)"] == "mm2"
    assert unit["morphology: maximum 3D diameter"] == "mm"
    assert unit["intensity statistics: mean"] == "[hnsf'U]"
    assert unit["GLCM: joint maximum (3D, merged)"] == "1"
    assert "morphology: Moran's I index" in unit  # typographic apostrophe made Latin-1
    # the images and the structure set are the evidence
    evidence = {s.SeriesInstanceUID for item in back.CurrentRequestedProcedureEvidenceSequence
                for s in item.ReferencedSeriesSequence}
    assert back.StudyInstanceUID == load_series(sorted((CASE / "CT").glob("*.dcm"))).study_uid
    assert len(evidence) == 2


def test_two_regions_seg_and_rtstruct(tmp_path: Path) -> None:
    from dicomnode.analysis.radiomics import extract_features

    series = load_series(sorted((CASE / "CT").glob("*.dcm")))
    rt = read_region(CASE / "CT_rtstruct" / "RS.dcm", series, name="GTV_Mass")
    core = rt.mask.copy()
    core[: core.shape[0] // 2] = False
    tumour = Code("108369006", "SCT", "Tumor")
    labels = (LabelMap().add(SegmentInfo(1, "rim", CATEGORY_MORPHOLOGICALLY_ABNORMAL, tumour), rt.mask & ~core)
              .add(SegmentInfo(2, "core", CATEGORY_MORPHOLOGICALLY_ABNORMAL, tumour), core))
    uids = ResultUids.for_series(None, series.series_uid, "radiomics-test", "1")
    seg_path = tmp_path / "seg.dcm"
    build_seg(series, labels, uids).save_as(seg_path)
    seg = read_region(seg_path, series, number=2)
    settings = resolve_settings("ibsi-config-C")
    feats = [extract_features(series.volume.array, r.mask, series.volume.spacing_mm, settings) for r in (rt, seg)]
    feats[1] = feats[1] + [type(feats[1][0])("GLCM", "correlation", "3D, merged", float("nan"))]
    sr = build_radiomics_sr(series, [rt, seg], feats, uids, settings=settings)
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    n_errors, out = dciodvfy(path)
    assert n_errors == 0, out
    groups = groups_by_label(hd.sr.srread(path))
    assert set(groups) == {"GTV_Mass_CT", "core"}
    ref = groups["core"].referenced_segment
    assert ref.referenced_sop_class_uid == SegmentationStorage
    assert ref.referenced_sop_instance_uid == seg.sop_instance_uid and ref.referenced_segment_numbers == [2]
    values = {m.name.value: m.value for m in groups["core"].get_measurements()}
    assert len(values) == len(feats[1]) - 1  # the NaN is left out
    vol = feature_code(next(f for f in feats[1] if f.feature == "volume (voxel counting)"))
    assert values[vol.value] == pytest.approx(core.sum() * series.volume.voxel_volume_mm3, rel=0.1)  # mm3
    assert values[vol.value] % 8.0 == 0  # counted in 2 mm voxels
    assert groups["core"].tracking_uid != groups["GTV_Mass_CT"].tracking_uid
    assert feature_name(feats[0][-1]).startswith("NGLDM: ")
    # deterministic: the same inputs make the same SR UIDs
    again = build_radiomics_sr(series, [rt, seg], feats, uids, settings=settings)
    assert again.SOPInstanceUID == sr.SOPInstanceUID
    with pytest.raises(ResultError, match="2 regions but 1 feature lists"):
        build_radiomics_sr(series, [rt, seg], feats[:1], uids)
    assert np.isfinite(list(values.values())).all()


def test_filtered_features_carry_the_filter_as_a_modifier(tmp_path: Path) -> None:
    """Two filtered values of one feature (LoG and mean, IBSI-2 configs 3A and 2A) differ by their method modifier;
    the unfiltered SR has none. Every SR passes dciodvfy."""
    methods, means = {}, {}
    for config in ("ibsi2-config-3A", "ibsi2-config-2A", "ibsi2-config-1A"):
        table, sr_path = tmp_path / f"{config}.csv", tmp_path / f"{config}.dcm"
        assert run([str(CASE / "CT"), "--roi", str(CASE / "CT_rtstruct" / "RS.dcm"), "--roi-name", "GTV_Mass",
                    "--settings", config, "--out", str(table), "--sr", str(sr_path), "--quiet"]) == 0
        n_errors, out = dciodvfy(sr_path)
        assert n_errors == 0, out
        group = groups_by_label(hd.sr.srread(sr_path))["GTV_Mass_CT"]
        measurements = group.get_measurements()
        assert len(measurements) == 18  # the intensity statistics of the response map
        found = {m.method for m in measurements}
        assert len(found) == 1
        methods[config] = found.pop()
        means[config] = next(m.value for m in measurements if m.name.meaning == "intensity statistics: mean")
        params = [str(item.TextValue) for item in _walk(group[0])
                  if "ConceptNameCodeSequence" in item and item.ConceptNameCodeSequence[0].CodeMeaning
                  == "Algorithm Parameters"]
        if config != "ibsi2-config-1A":
            assert any(p.startswith("filter.kind=") for p in params), params
    assert methods["ibsi2-config-1A"] is None
    log, mean = methods["ibsi2-config-3A"], methods["ibsi2-config-2A"]
    assert log.scheme_designator == mean.scheme_designator == PRIVATE_SCHEME
    assert log.value != mean.value
    assert log.meaning.startswith("laplacian_of_gaussian(2D, mirror, sigma_mm=1.5")
    assert mean.meaning == "mean(2D, mirror, support_voxels=5)"
    assert len({means[c] for c in means}) == 3  # three different numbers for one feature code


def _walk(item):
    for child in getattr(item, "ContentSequence", []):
        yield child
        yield from _walk(child)


def test_an_roi_of_one_contour_is_referenced_as_region_in_space(tmp_path: Path) -> None:
    """A Volume Surface needs two or more polygons: an ROI drawn on one slice keeps the "Region In Space" reference
    to the RTSTRUCT with its ROI Number as "Referenced Region of Interest Identifier" (TID 1411 rows 12b, 12c)."""
    from dicomnode.analysis.radiomics import extract_features
    from dicomnode.results.radiomics_sr import REFERENCED_ROI_IDENTIFIER

    series = load_series(sorted((CASE / "CT").glob("*.dcm")))
    rs = pydicom.dcmread(CASE / "CT_rtstruct" / "RS.dcm")
    roi_number = next(int(r.ROINumber) for r in rs.StructureSetROISequence if r.ROIName.startswith("GTV_Mass"))
    item = next(i for i in rs.ROIContourSequence if int(i.ReferencedROINumber) == roi_number)
    middle = len(item.ContourSequence) // 2
    item.ContourSequence = [item.ContourSequence[middle]]
    one = tmp_path / "rs_one_slice.dcm"
    rs.save_as(one)
    region = read_region(one, series, name="GTV_Mass")
    settings = resolve_settings("ibsi-config-C")
    feats = [f for f in extract_features(series.volume.array, region.mask, series.volume.spacing_mm, settings)
             if f.family == "intensity statistics"]
    sr = build_radiomics_sr(series, [region], [feats], ResultUids.for_series(None, series.series_uid, "r", "1"),
                            settings=settings)
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    n_errors, out = dciodvfy(path)
    assert n_errors == 0, out
    group = groups_by_label(hd.sr.srread(path))["GTV_Mass_CT"]
    assert group.reference_type == REGION_IN_SPACE
    composite = next(i for i in group[0].ContentSequence if i.name == REGION_IN_SPACE)
    assert composite.referenced_sop_class_uid == RTStructureSetStorage
    assert composite.referenced_sop_instance_uid == str(rs.SOPInstanceUID)
    identifier = composite.ContentSequence[0]
    assert identifier.ConceptNameCodeSequence[0].CodeValue == REFERENCED_ROI_IDENTIFIER.value
    assert identifier.TextValue == str(roi_number)
