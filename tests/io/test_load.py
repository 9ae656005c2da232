"""io/load.py on real series: geometry, units, multi-frame, JPEG 2000, and a clear error for each bad input."""

from __future__ import annotations

import random
import shutil
import warnings
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from dicomnode.errors import SeriesLoadError
from dicomnode.io.load import LoadedSeries, group_series, load_series, read_header
from helpers import SHARED_DATA, STS_CT

STS = SHARED_DATA / "sts" / "STS_001"
CHEST_B40 = SHARED_DATA / "chest-ct" / "A0002_B40f"
CHEST_B70 = SHARED_DATA / "chest-ct" / "A0002_B70f"
ABDOMEN_J2K = SHARED_DATA / "abdomen-ct" / "upper_abdomen_j2k"

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom's VR warnings on the real sts headers


def dcm_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and (p.suffix == ".dcm" or p.name.startswith("CT.")))


def ipp(ds: pydicom.Dataset) -> np.ndarray:
    return np.asarray([float(v) for v in ds.ImagePositionPatient])


# --- real series --------------------------------------------------------------------------------------------------

CASES = {
    # folder: (modality, unit, (n slices, rows, cols), in-plane spacing mm, slice distance mm, value range)
    "sts_ct": (STS_CT, "CT", "HU", (59, 202, 198), 0.976562, 3.27, (-1100.0, 4000.0)),
    "sts_mr": (STS / "MR_T1", "MR", "", (59, 158, 174), 0.976562, 3.27, (0.0, 10000.0)),
    "sts_pet": (STS / "PET", "PT", "SUV", (59, 43, 41), 4.6875, 3.27, (0.0, 100.0)),
    "chest_ct": (CHEST_B40, "CT", "HU", (30, 512, 512), 0.646484375, 8.0, (-1100.0, 4000.0)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_real_series_geometry_and_units(case: str) -> None:
    folder, modality, unit, shape, pixel_mm, dz_mm, (lo, hi) = CASES[case]
    files = dcm_files(folder)
    shuffled = files[:]
    random.Random(7).shuffle(shuffled)  # file order must not matter

    series = load_series(shuffled)
    vol = series.volume

    assert isinstance(series, LoadedSeries)
    assert vol.array.dtype == np.float32 and vol.shape == shape
    assert series.modality == vol.modality == modality and vol.unit == unit
    assert vol.spacing_mm[1] == pytest.approx(pixel_mm) and vol.spacing_mm[2] == pytest.approx(pixel_mm)
    assert vol.spacing_mm[0] == pytest.approx(dz_mm, abs=0.01)
    assert lo <= float(vol.array.min()) < float(vol.array.max()) <= hi

    # one header per file, sorted along the slice normal, matching the frame references
    assert len(series.headers) == len(files) == len(series.frames)
    assert [str(h.SOPInstanceUID) for h in series.headers] == [uid for uid, _ in series.frames]
    assert all(frame is None for _, frame in series.frames)
    normal = vol.direction[:, 2]
    along = np.array([ipp(h) @ normal for h in series.headers])
    assert np.all(np.diff(along) > 0)
    assert np.allclose(np.diff(along), vol.spacing_mm[0], atol=0.01)
    # direction: rows along IOP[0:3], columns along IOP[3:6], right-handed
    iop = np.asarray([float(v) for v in series.headers[0].ImageOrientationPatient])
    assert np.allclose(vol.direction[:, 0], iop[:3], atol=1e-6) and np.allclose(vol.direction[:, 1], iop[3:], atol=1e-6)
    assert np.linalg.det(vol.direction) == pytest.approx(1.0)
    # voxel 0 is the first slice's ImagePositionPatient, the last voxel row/column/slice lands where DICOM says
    assert np.allclose(vol.index_to_patient([0, 0, 0])[0], ipp(series.headers[0]), atol=1e-4)
    last = series.headers[-1]
    assert np.allclose(vol.index_to_patient([shape[0] - 1, 0, 0])[0], ipp(last), atol=1e-3)
    col_step = vol.index_to_patient([0, 0, 1])[0] - vol.index_to_patient([0, 0, 0])[0]
    assert np.allclose(col_step, iop[:3] * float(series.headers[0].PixelSpacing[1]), atol=1e-6)
    # values: rescale applied per slice; compare one slice with pydicom's own modality LUT
    ds = pydicom.dcmread(files[len(files) // 2])
    z = [uid for uid, _ in series.frames].index(str(ds.SOPInstanceUID))
    expected = pydicom.pixels.apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    assert np.allclose(vol.array[z], expected, rtol=1e-6, atol=1e-4)
    assert series.series_uid == str(ds.SeriesInstanceUID) and series.study_uid == str(ds.StudyInstanceUID)
    assert series.sop_class_uid == str(ds.SOPClassUID)
    assert all("PixelData" not in h for h in series.headers)


def test_ct_hounsfield_values_are_sane() -> None:
    vol = load_series(dcm_files(CHEST_B40)).volume
    assert float(vol.array.min()) == pytest.approx(-1024.0)
    inside = vol.array[:, 200:300, 200:300]
    assert -1000 < float(np.median(vol.array)) < 100  # air and tissue, not raw stored values (0..4095)
    assert float(np.percentile(inside, 99)) < 2000


def test_read_header_and_group_series() -> None:
    files = dcm_files(CHEST_B40) + dcm_files(CHEST_B70)
    groups = group_series(files)
    assert len(groups) == 2 and sorted(len(v) for v in groups.values()) == [30, 30]
    for uid, paths in groups.items():
        assert all(str(read_header(p).SeriesInstanceUID) == uid for p in paths)
    assert "PixelData" not in read_header(files[0])


# --- multi-frame and compressed sources ---------------------------------------------------------------------------


def test_multiframe_legacy_converted_ct_loads_like_its_slices(tmp_path: Path) -> None:
    files = dcm_files(STS_CT)
    datasets = [pydicom.dcmread(f) for f in files]
    random.Random(3).shuffle(datasets)
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(datasets, generate_uid(), 1, generate_uid(), 1)
    path = tmp_path / "enhanced_ct.dcm"
    enhanced.save_as(path, enforce_file_format=True)

    single = load_series(files)
    multi = load_series([path])

    assert multi.is_multiframe and not single.is_multiframe
    assert multi.volume.shape == single.volume.shape
    assert np.array_equal(multi.volume.array, single.volume.array)
    assert multi.volume.spacing_mm == pytest.approx(single.volume.spacing_mm)
    assert multi.volume.origin_mm == pytest.approx(single.volume.origin_mm)
    assert np.allclose(multi.volume.direction, single.volume.direction)
    assert multi.volume.unit == "HU" and multi.modality == "CT"
    assert len(multi.headers) == 1 and "PixelData" not in multi.headers[0]
    frame_numbers = [f for _, f in multi.frames]
    assert sorted(frame_numbers) == list(range(1, len(files) + 1))
    # each z index's frame sits at that slice's position in the per-frame functional groups
    pffg = multi.headers[0].PerFrameFunctionalGroupsSequence
    for z, f in enumerate(frame_numbers):
        pos = [float(v) for v in pffg[f - 1].PlanePositionSequence[0].ImagePositionPatient]
        assert np.allclose(multi.volume.index_to_patient([z, 0, 0])[0], pos, atol=1e-3)


def _repair_uids(src: Path, dst: Path) -> list[Path]:
    """Copy the abdomen series, taking SOP UIDs from the file meta and giving it one study and series UID."""
    dst.mkdir()
    study, series = generate_uid(entropy_srcs=["abdomen study"]), generate_uid(entropy_srcs=["abdomen series"])
    out = []
    for f in dcm_files(src):
        ds = pydicom.dcmread(f)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        path = dst / f.name
        ds.save_as(path)
        out.append(path)
    return out


def test_jpeg2000_series_loads_after_uid_repair(tmp_path: Path) -> None:
    files = _repair_uids(ABDOMEN_J2K, tmp_path / "abdomen")
    assert pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
    series = load_series(files)
    vol = series.volume
    assert vol.shape == (20, 512, 512) and vol.unit == "HU"
    assert vol.spacing_mm[0] == pytest.approx(2.0, abs=0.01)
    assert vol.spacing_mm[1] == pytest.approx(0.9765625, abs=1e-4)
    assert float(vol.array.min()) == pytest.approx(-1024.0)
    assert 1000 < float(vol.array.max()) < 2000
    assert vol.origin_mm[2] == pytest.approx(-804.5, abs=0.01)  # sorted upward along the normal


# --- bad input: each a SeriesLoadError naming the file and the field ----------------------------------------------


def copy_files(files: list[Path], dst: Path) -> list[Path]:
    dst.mkdir(exist_ok=True)
    out = []
    for f in files:
        shutil.copy(f, dst / f.name)
        out.append(dst / f.name)
    return out


def test_abdomen_empty_uids_are_named() -> None:
    files = dcm_files(ABDOMEN_J2K)
    with pytest.raises(SeriesLoadError) as err:
        load_series(files)
    msg = str(err.value)
    assert files[0].name in msg
    for field in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        assert field in msg
    assert "empty" in msg


def test_one_slice_is_refused() -> None:
    one = dcm_files(STS_CT)[:1]
    with pytest.raises(SeriesLoadError, match="only one slice") as err:
        load_series(one)
    assert one[0].name in str(err.value)


def test_no_files_is_refused() -> None:
    with pytest.raises(SeriesLoadError, match="no files"):
        load_series([])


def test_mixed_sizes_are_refused(tmp_path: Path) -> None:
    files = copy_files(dcm_files(STS_CT)[:4], tmp_path / "s")
    ds = pydicom.dcmread(files[2])
    ds.PixelData = ds.pixel_array[:100, :100].copy().tobytes()
    ds.Rows, ds.Columns = 100, 100
    ds.save_as(files[2])
    with pytest.raises(SeriesLoadError) as err:
        load_series(files)
    assert files[2].name in str(err.value) and "Rows" in str(err.value)


def test_gap_is_refused_and_located(tmp_path: Path) -> None:
    files = copy_files(dcm_files(STS_CT)[:6], tmp_path / "s")
    files[3].unlink()
    del files[3]
    series_paths = files
    by_z = sorted(series_paths, key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    with pytest.raises(SeriesLoadError) as err:
        load_series(series_paths)
    msg = str(err.value)
    assert "gap" in msg and "ImagePositionPatient" in msg and "1 slice(s) missing" in msg
    assert by_z[3].name in msg  # the slice after the gap
    assert "z index 2" in msg


def test_colour_image_is_refused(tmp_path: Path) -> None:
    files = copy_files(dcm_files(STS_CT)[:3], tmp_path / "s")
    ds = pydicom.dcmread(files[1])
    grey = (ds.pixel_array.astype(np.int32) - ds.pixel_array.min()) // 16
    rgb = np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.PlanarConfiguration = "RGB", 3, 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = rgb.tobytes()
    ds.save_as(files[1])
    with pytest.raises(SeriesLoadError) as err:
        load_series(files)
    msg = str(err.value)
    assert files[1].name in msg and "PhotometricInterpretation" in msg and "'RGB'" in msg and "colour" in msg


def test_unknown_photometric_interpretation_is_named(tmp_path: Path) -> None:
    files = copy_files(dcm_files(STS_CT)[:3], tmp_path / "s")
    ds = pydicom.dcmread(files[0])
    ds.PhotometricInterpretation = "FANCY"
    ds.save_as(files[0])
    with pytest.raises(SeriesLoadError, match="'FANCY', an unknown") as err:
        load_series(files)
    assert files[0].name in str(err.value)


def test_missing_pixel_data_is_refused(tmp_path: Path) -> None:
    files = copy_files(dcm_files(STS_CT)[:3], tmp_path / "s")
    ds = pydicom.dcmread(files[1])
    del ds.PixelData
    ds.save_as(files[1])
    with pytest.raises(SeriesLoadError) as err:
        load_series(files)
    assert files[1].name in str(err.value) and "PixelData" in str(err.value)


def test_mixed_orientation_is_refused(tmp_path: Path) -> None:
    files = copy_files(dcm_files(STS_CT)[:3], tmp_path / "s")
    ds = pydicom.dcmread(files[2])
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]  # coronal
    ds.save_as(files[2])
    with pytest.raises(SeriesLoadError) as err:
        load_series(files)
    assert files[2].name in str(err.value) and "ImageOrientationPatient" in str(err.value)


def test_duplicate_position_is_refused(tmp_path: Path) -> None:
    files = copy_files(dcm_files(STS_CT)[:3], tmp_path / "s")
    ds = pydicom.dcmread(files[2])
    ds.ImagePositionPatient = pydicom.dcmread(files[0]).ImagePositionPatient
    ds.SOPInstanceUID = generate_uid()
    ds.save_as(files[2])
    with pytest.raises(SeriesLoadError, match="repeats the slice position") as err:
        load_series(files)
    assert files[2].name in str(err.value) or files[0].name in str(err.value)


def test_two_series_are_refused_and_named() -> None:
    ct, mr = dcm_files(STS_CT)[:2], dcm_files(STS / "MR_T1")[:2]
    with pytest.raises(SeriesLoadError) as err:
        load_series(ct + mr)
    msg = str(err.value)
    assert "2 series" in msg
    assert str(read_header(ct[0]).SeriesInstanceUID) in msg and str(read_header(mr[0]).SeriesInstanceUID) in msg


def test_not_dicom_is_named(tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("not an image")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(SeriesLoadError, match="notes.txt"):
            load_series([junk, *dcm_files(STS_CT)[:2]])


@pytest.mark.parametrize(("units", "decay", "expected"), [
    ("CNTS", "NONE", "Units (0054,1001) is CNTS and no slice-wise Philips scale factor (7053,1009)"),
    (None, "START", "PET values left in unknown units (Units (0054,1001) missing), not SUV"),
    ("BQML", None, "DecayCorrection (0054,1102) is 'missing'"),
])
def test_pet_that_cannot_be_suv_is_kept_and_said(units, decay, expected, tmp_path: Path) -> None:
    from broken_headers import pet_units

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        copy = pet_units(SHARED_DATA / "sts" / "STS_001" / "PET", tmp_path / "pet", units=units,
                         decay_correction=decay)
        series = load_series(sorted(copy.iterdir()))
    assert series.volume.unit != "SUV"
    assert any(expected in note for note in series.notes), series.notes
    assert any("SUV thresholds do not apply" in note for note in series.notes), series.notes
