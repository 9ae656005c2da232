"""Derived series (thick-slab projections, the working image): dciodvfy-clean, right geometry, deterministic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicomnode.analysis.synthesize import thick_slab
from dicomnode.errors import ResultError
from dicomnode.io.headers import is_dicom_file
from dicomnode.io.load import LoadedSeries, load_series
from dicomnode.results.derived import build_derived_series
from dicomnode.results.uids import ResultUids
from helpers import SHARED_DATA, dciodvfy

STS = SHARED_DATA / "sts" / "STS_001"
PHILIPS_ENHANCED = SHARED_DATA / "enhanced-mr" / "philips_T1W_FFE_CS2_enhanced"
SIEMENS_ENHANCED = SHARED_DATA / "enhanced-mr" / "siemens_xa30_T1_sag"


def _load(folder: Path) -> LoadedSeries:
    return load_series(sorted(folder.glob("*.dcm")))


def _uids(series: LoadedSeries) -> ResultUids:
    return ResultUids.for_series(None, series.series_uid, "test", "1")


@pytest.mark.parametrize("folder", [
    STS / "CT", STS / "MR_T1", STS / "PET", SHARED_DATA / "head-mr" / "T1_sag",
    SHARED_DATA / "wholebody-pet-mr" / "PET", SHARED_DATA / "enhanced-mr" / "siemens_xa30_T1_sag",
    SHARED_DATA / "abdomen-mr" / "ADC", SHARED_DATA / "head-ct" / "CT", SHARED_DATA / "breast-mr" / "DCE_3DFGRE",
    PHILIPS_ENHANCED,
], ids=["CT", "MR", "PET", "MR-sagittal", "PET-Bq-ml", "MR-enhanced-Siemens", "MR-ADC-Toshiba", "CT-tilted",
        "MR-phases-GE", "MR-enhanced-Philips"])
def test_derived_series_pass_dciodvfy(folder, tmp_path):
    series = load_series(sorted(p for p in folder.iterdir() if p.is_file() and is_dicom_file(p)))
    uids = _uids(series)
    outputs = [("mip", thick_slab(series.volume, projection="mip", slab_mm=10.0), 10.0),
               ("avg", thick_slab(series.volume, projection="avg", slab_mm=6.0, spacing_mm=3.0), 6.0),
               ("working", series.volume, None)]
    for kind, vol, thickness in outputs:
        dss = build_derived_series(series, vol, uids, kind=kind, description=f"{kind} test", series_number=9100,
                                   slice_thickness_mm=thickness)
        assert len(dss) == vol.shape[0]
        for ds in (dss[0], dss[len(dss) // 2]):
            path = tmp_path / f"{kind}_{ds.InstanceNumber}.dcm"
            ds.save_as(path, enforce_file_format=True)
            errors, out = dciodvfy(path)
            assert errors == 0, out
            back = pydicom.dcmread(path)
            # the source's own storage class; a single-frame one for an Enhanced multi-frame source
            assert back.SOPClassUID == {"1.2.840.10008.5.1.4.1.1.4.1": "1.2.840.10008.5.1.4.1.1.4",
                                        "1.2.840.10008.5.1.4.1.1.2.1": "1.2.840.10008.5.1.4.1.1.2",
                                        }.get(series.sop_class_uid, series.sop_class_uid)
            assert back.Modality == series.modality
            assert back.Manufacturer == "dicomnode"
            assert list(back.ImageType)[:2] in (["DERIVED", "SECONDARY"], ["DERIVED", "PRIMARY"])
            assert back.DerivationCodeSequence[0].CodingSchemeDesignator == "DCM"
            assert back.StudyInstanceUID == series.study_uid
            assert back.FrameOfReferenceUID == series.headers[0].FrameOfReferenceUID
            refs = {r.ReferencedSOPInstanceUID for r in back.SourceImageSequence}
            assert refs <= {uid for uid, _ in series.frames} and refs
            assert back.SourceImageSequence[0].PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
            if back.Modality == "PT":  # the unit of the pixels written, not the source's: Bq/ml loaded as SUV
                assert back.Units == {"SUV": "GML", "Bq/mL": "BQML"}[vol.unit], (back.Units, vol.unit)


def test_mip_of_a_planted_point_lands_at_its_patient_position(tmp_path):
    series = _load(STS / "CT")
    vol = series.volume
    arr = np.full(vol.shape, -100.0, np.float32)
    point = (23, 61, 87)
    arr[point] = 2500.0
    planted = LoadedSeries(vol.with_array(arr), series.headers, series.frames, series.study_uid, series.series_uid,
                           series.modality, series.sop_class_uid)
    mip = thick_slab(planted.volume, projection="mip", slab_mm=9.81)  # 3 source slices of 3.27 mm a slab
    dss = build_derived_series(planted, mip, _uids(series), kind="mip", description="MIP 9.81 mm",
                               series_number=9100, slice_thickness_mm=9.81)
    hits = []
    for ds in dss:
        ds.save_as(tmp_path / "x.dcm", enforce_file_format=True)
        back = pydicom.dcmread(tmp_path / "x.dcm")
        px = back.pixel_array * float(back.RescaleSlope) + float(back.RescaleIntercept)
        if px.max() > 2000:
            r, c = np.unravel_index(np.argmax(px), px.shape)
            ipp = np.array([float(v) for v in back.ImagePositionPatient])
            iop = np.array([float(v) for v in back.ImageOrientationPatient])
            dr, dc = (float(v) for v in back.PixelSpacing)
            hits.append((back, ipp + iop[:3] * c * dc + iop[3:] * r * dr))
    assert len(hits) == 1
    back, xyz = hits[0]
    truth = vol.index_to_patient(np.array(point))[0]
    normal = np.asarray(vol.direction)[:, 2]
    in_plane = (xyz - truth) - ((xyz - truth) @ normal) * normal
    assert np.linalg.norm(in_plane) < 1e-3
    assert abs((xyz - truth) @ normal) <= 9.81 / 2 + 1e-3
    assert float(back.SliceThickness) == pytest.approx(9.81)
    assert float(back.SpacingBetweenSlices) == pytest.approx(9.81)
    # the slab holding the point references the 3 source slices it was made of, the point's among them
    refs = [r.ReferencedSOPInstanceUID for r in back.SourceImageSequence]
    assert len(refs) == 3 and series.frames[point[0]][0] in refs
    assert int(back.pixel_array.max()) == 2500 and float(back.RescaleSlope) == 1.0  # CT in HU: stored as is


def test_uids_are_deterministic_and_kind_specific():
    series = _load(STS / "PET")
    uids = _uids(series)
    mip = thick_slab(series.volume, projection="mip", slab_mm=10.0)
    a = build_derived_series(series, mip, uids, kind="mip", description="MIP", series_number=9100)
    b = build_derived_series(series, mip, uids, kind="mip", description="MIP", series_number=9100)
    assert [d.SOPInstanceUID for d in a] == [d.SOPInstanceUID for d in b]
    assert a[0].SeriesInstanceUID == uids.series_uid("mip") and a[2].SOPInstanceUID == uids.instance_uid("mip", 3)
    assert a[0].PixelData == b[0].PixelData
    # PET: intercept 0 and the SUV values back within one quantisation step
    assert float(a[0].RescaleIntercept) == 0.0
    back = np.stack([d.pixel_array * float(d.RescaleSlope) for d in a])
    assert np.allclose(back, mip.array, atol=float(a[0].RescaleSlope))
    w = build_derived_series(series, series.volume, uids, kind="working", description="w", series_number=9101)
    assert w[0].SeriesInstanceUID != a[0].SeriesInstanceUID


def test_bad_inputs_are_refused():
    series = _load(STS / "PET")
    with pytest.raises(ResultError, match="derivation_code"):
        build_derived_series(series, series.volume, _uids(series), kind="sharpened", description="x",
                             series_number=1)
    small = series.volume.with_array(series.volume.array)  # same shape: fine
    build_derived_series(series, small, _uids(series), kind="working", description="x", series_number=1)
    cropped = thick_slab(series.volume, projection="mip", slab_mm=10.0)
    from dicomnode.analysis.volume import Volume
    bad = Volume(cropped.array[:, :10], cropped.spacing_mm, cropped.origin_mm, cropped.direction, "PT", "SUV")
    with pytest.raises(ResultError, match="in-plane shape"):
        build_derived_series(series, bad, _uids(series), kind="mip", description="x", series_number=1)


def test_build_all_derived_numbers_and_describes_each_series():
    from dicomnode.results.derived import build_all_derived
    series = _load(STS / "PET")
    d = {"mip": thick_slab(series.volume, projection="mip", slab_mm=12.0, spacing_mm=6.0), "working": series.volume}
    out = build_all_derived(series, d, _uids(series), slab_mm=12.0)
    assert sorted(out) == ["mip", "working"]
    assert out["mip"][0].SeriesNumber == 9101 and out["working"][0].SeriesNumber == 9102
    assert out["mip"][0].SeriesDescription == "dicomnode MIP 12 mm slabs every 6 mm"
    assert float(out["mip"][0].SliceThickness) == 12.0 and float(out["mip"][0].SpacingBetweenSlices) == 6.0
    assert len(out["working"]) == series.volume.shape[0]


def test_a_source_without_patient_position_gives_it_empty(tmp_path):
    """Patient Position is Type 2C for CT and MR images (no Patient Orientation Code Sequence): present, empty, when
    the source lacks it (dciodvfy: "Missing attribute Type 2C ... PatientPosition")."""
    import dataclasses

    series = _load(STS / "CT")
    headers = [h.copy() for h in series.headers]
    for h in headers:
        h.pop("PatientPosition", None)
    series = dataclasses.replace(series, headers=tuple(headers))
    ds = build_derived_series(series, series.volume, _uids(series), kind="working", description="working test",
                              series_number=9100)[0]
    assert "PatientPosition" in ds and ds.PatientPosition in ("", None)
    path = tmp_path / "working.dcm"
    ds.save_as(path, enforce_file_format=True)
    errors, out = dciodvfy(path)
    assert errors == 0, out


def _images(folder: Path) -> LoadedSeries:
    return load_series(sorted(p for p in folder.iterdir() if p.is_file() and is_dicom_file(p)))


def _with_headers(series: LoadedSeries, headers, modality: str | None = None,
                  sop_class_uid: str | None = None) -> LoadedSeries:
    """``series`` with other headers (a site's variant), optionally relabelled to another modality and SOP class."""
    return LoadedSeries(series.volume, tuple(headers), series.frames, series.study_uid, series.series_uid,
                        modality or series.modality, sop_class_uid or series.sop_class_uid)


def _first_image_validated(series: LoadedSeries, tmp_path) -> pydicom.Dataset:
    """The first image of the derived working series of ``series``, written, passed by dciodvfy and read back."""
    ds = build_derived_series(series, series.volume, _uids(series), kind="working", description="working",
                              series_number=9100)[0]
    path = tmp_path / "0001.dcm"
    ds.save_as(path, enforce_file_format=True)
    errors, out = dciodvfy(path)
    assert errors == 0, out
    return pydicom.dcmread(path)


@pytest.mark.parametrize("case", ["enhanced-gradient", "enhanced-inversion", "classic-gradient-with-TI",
                                  "classic-inversion-without-TI"])
def test_inversion_time_only_with_an_inversion_recovery_scanning_sequence(case, tmp_path):
    """Inversion Time is Type 2C in the MR Image module (present if and only if Scanning Sequence holds IR); dciodvfy
    refuses it otherwise. The Philips Enhanced MR (gradient echo, no inversion) has an Inversion Time of 0 at its top
    level, as many classic gradient-echo series have too; an Enhanced MR gives its Scanning Sequence in other words
    (Echo Pulse Sequence, Inversion Recovery) and its times in functional groups."""
    if case.startswith("enhanced"):
        series = _images(SIEMENS_ENHANCED if case == "enhanced-inversion" else PHILIPS_ENHANCED)
    else:
        series = _load(STS / "MR_T1")
        headers = [h.copy() for h in series.headers]
        for h in headers:
            if case == "classic-gradient-with-TI":
                h.ScanningSequence, h.InversionTime = "GR", "0"
            else:
                h.ScanningSequence = ["SE", "IR"]
                h.pop("InversionTime", None)
        series = _with_headers(series, headers)
    back = _first_image_validated(series, tmp_path)
    scanning = list(back.ScanningSequence) if back["ScanningSequence"].VM > 1 else [back.ScanningSequence]
    if case == "enhanced-gradient":
        assert scanning == ["GR"] and "InversionTime" not in back
        assert float(back.RepetitionTime) > 0 and float(back.EchoTime) > 0  # from the functional groups
    elif case == "enhanced-inversion":
        assert scanning == ["GR", "IR"] and float(back.InversionTime) > 0, (scanning, back.get("InversionTime"))
    elif case == "classic-gradient-with-TI":
        assert scanning == ["GR"] and "InversionTime" not in back
    else:
        assert scanning == ["SE", "IR"] and "InversionTime" in back and back.InversionTime in ("", None)


@pytest.mark.parametrize("series_type", [["GATED", "IMAGE"], ["DYNAMIC", "IMAGE"], ["WHOLE BODY", "IMAGE"],
                                         ["STATIC", "REPROJECTION"]])
def test_a_derived_pet_series_is_one_volume_whatever_the_source_series_type(series_type, tmp_path):
    """A gated (or dynamic) PET source: the derived series holds one volume, so its Series Type is STATIC (WHOLE BODY
    kept) and IMAGE; copying GATED made dciodvfy ask for R-R intervals, time slots, trigger and frame times."""
    series = _load(STS / "PET")
    headers = [h.copy() for h in series.headers]
    for h in headers:
        h.SeriesType = series_type
        if series_type[0] == "GATED":
            h.NumberOfRRIntervals, h.NumberOfTimeSlots, h.TriggerTime = 1, 8, "0"
        if series_type[0] == "DYNAMIC":
            h.NumberOfTimeSlices = 20
    series = _with_headers(series, headers)
    back = _first_image_validated(series, tmp_path)
    assert list(back.SeriesType) == ["WHOLE BODY" if series_type[0] == "WHOLE BODY" else "STATIC", "IMAGE"]
    assert "NumberOfTimeSlices" not in back


@pytest.mark.parametrize("folder", [STS / "CT", SHARED_DATA / "head-ct" / "CT"], ids=["axial", "tilted"])
def test_a_secondary_capture_derived_series_has_its_patient_orientation(folder, tmp_path):
    """A source of another modality (here the images re-labelled OT / Secondary Capture, as a site's reformatting
    workstation sends them) gives Secondary Capture images; their IOD has no Image Plane module, so Patient
    Orientation (General Image, Type 2C) is required: dciodvfy refused the images without it."""
    series = _images(folder)
    series = _with_headers(series, series.headers, "OT", pydicom.uid.SecondaryCaptureImageStorage)
    back = _first_image_validated(series, tmp_path)
    assert back.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage and back.Modality == "OT"
    rows, columns = list(back.PatientOrientation)
    d = np.asarray(series.volume.direction, dtype=float)
    # the letter of each axis' largest component comes first: L/R for +-x, P/A for +-y, H/F for +-z
    for letters, axis in ((rows, d[:, 0]), (columns, d[:, 1])):
        i = int(np.argmax(np.abs(axis)))
        assert letters[0] == ("LR", "PA", "HF")[i][0 if axis[i] > 0 else 1], (letters, axis)
    if folder.name == "CT" and folder.parent.name == "head-ct":
        assert len(columns) == 2, columns  # the tilted column direction: two letters


@pytest.mark.parametrize("folder, expected", [
    (STS / "MR_T1", ["SE"]),  # Siemens via MIM: SE
    (SHARED_DATA / "head-mr" / "T1_sag", ["GR"]),  # Siemens: GR
    (SHARED_DATA / "abdomen-mr" / "T2_ax", ["SE"]),  # Toshiba: SE
], ids=["SE-Siemens", "GR-Siemens", "SE-Toshiba"])
def test_a_classic_mr_keeps_its_valid_scanning_sequence(folder, expected, tmp_path):
    """The real shared MRs write valid terms (grep: SE, GR, RM): they are copied as they are, never replaced by RM."""
    back = _first_image_validated(_images(folder), tmp_path)
    scanning = list(back.ScanningSequence) if back["ScanningSequence"].VM > 1 else [back.ScanningSequence]
    assert scanning == expected


@pytest.mark.parametrize("written, expected", [
    ("GRE", ["GR"]),  # issue 13: a vendor's "GRE" came out as RM
    (["SE", "GRE"], ["SE", "GR"]),
    (["GRE", "IR"], ["GR", "IR"]),
    (["TSE"], ["SE"]),
    (["EPI", "SE"], ["EP", "SE"]),
    (["GRE", "XYZ"], ["GR"]),  # an unknown term is dropped, with a note
    (["XYZ"], ["RM"]),  # nothing known left: research mode, the term that claims no physics
], ids=["GRE", "SE-GRE", "GRE-IR", "TSE", "EPI-SE", "GRE-unknown", "unknown"])
def test_vendor_spellings_of_the_scanning_sequence_become_its_defined_terms(written, expected, tmp_path):
    """A copy of the real sts MR with Scanning Sequence written as other writers spell it: the derived MR carries the
    defined terms (SE, IR, GR, EP, RM), passes dciodvfy, and results.json's notes name the attribute, not the value."""
    from dicomnode.results._common import source_notes

    series = _load(STS / "MR_T1")
    headers = [h.copy() for h in series.headers]
    for h in headers:
        h.ScanningSequence = written
        if "IR" in expected:
            h.InversionTime = "400"
    series = _with_headers(series, headers)
    back = _first_image_validated(series, tmp_path)
    scanning = list(back.ScanningSequence) if back["ScanningSequence"].VM > 1 else [back.ScanningSequence]
    assert scanning == expected
    notes = [n for n in source_notes(series) if "ScanningSequence" in n]
    assert len(notes) == 1 and "enumerated values of ScanningSequence" in notes[0], notes
    assert ("unknown values dropped" in notes[0]) == ("XYZ" in written), notes
    assert "GRE" not in notes[0] and "XYZ" not in notes[0]  # the rule, never the value


@pytest.fixture(scope="module")
def legacy_ct(tmp_path_factory) -> Path:
    from enhanced_ct import legacy_enhanced_ct

    return legacy_enhanced_ct(STS / "CT", tmp_path_factory.mktemp("legacy-ct") / "ct.dcm")


@pytest.mark.parametrize("where", ["legacy", "shared", "per-frame", "none"])
def test_a_derived_ct_of_an_enhanced_ct_has_its_kvp_and_kernel(where, legacy_ct, tmp_path):
    """Issue 13, 1: a derived CT made from an Enhanced CT had KVP and Convolution Kernel empty. They come from the
    CT X-Ray Details / CT Reconstruction / CT Acquisition Details macros (shared or per frame) or a Legacy Converted
    image's Unassigned Converted Attributes (highdicom.legacy's conversion of the real sts CT: KVP 140, kernel SOFT),
    and stay empty (KVP, Type 2) or absent (the kernel, Type 3) only when the source has none anywhere."""
    from enhanced_ct import enhanced_ct

    classic = pydicom.dcmread(next(iter(sorted((STS / "CT").glob("*.dcm")))), stop_before_pixels=True)
    path = legacy_ct if where == "legacy" else enhanced_ct(legacy_ct, tmp_path / "src" / "ct.dcm", where=where)
    series = load_series([path])
    assert series.is_multiframe and series.modality == "CT"
    back = _first_image_validated(series, tmp_path)
    assert back.SOPClassUID == pydicom.uid.CTImageStorage
    if where == "none":
        assert "KVP" in back and back.KVP in ("", None)
        assert "ConvolutionKernel" not in back and "ReconstructionDiameter" not in back
    else:
        assert float(back.KVP) == float(classic.KVP) == 140.0
        assert back.ConvolutionKernel == classic.ConvolutionKernel == "SOFT"
        assert float(back.ReconstructionDiameter) == float(classic.ReconstructionDiameter)
        assert float(back.DataCollectionDiameter) == float(classic.DataCollectionDiameter)
