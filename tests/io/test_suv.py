"""PET in Bq/ml -> SUVbw (io/suv.py through io/load.py), checked against the same patient's PET already in SUV."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicomnode.io.load import load_series
from dicomnode.io.suv import suvbw_conversion
from helpers import SHARED_DATA

WB_PET = SHARED_DATA / "wholebody-pet-mr" / "PET"
STS_PET = SHARED_DATA / "sts" / "STS_001" / "PET"

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.dcm"))


@pytest.fixture(scope="module")
def wholebody():
    return load_series(_files(WB_PET))


def test_wholebody_pet_is_converted_to_suvbw_with_formula_and_inputs_in_the_notes(wholebody) -> None:
    vol = wholebody.volume
    assert vol.unit == "SUV" and wholebody.suv is not None and wholebody.suv.ok
    assert vol.shape == (267, 128, 128)
    # README: weight 71.0 kg, FDG 388.78 MBq at 10:35:00, SeriesTime 11:20:11, DecayCorrection START, T1/2 6588 s
    suv = wholebody.suv
    assert suv.weight_kg == 71.0 and suv.dose_bq == pytest.approx(388.777472e6)
    assert suv.half_life_s == 6588.0 and suv.decay_correction == "START"
    assert suv.uptake_s == pytest.approx(45 * 60 + 11)
    expected = 71000.0 / (388.777472e6 * 2 ** (-(45 * 60 + 11) / 6588.0))
    assert suv.factors == pytest.approx([expected] * 267)
    note = next(n for n in wholebody.notes if "SUVbw" in n)
    for part in ("weight 71 kg", "388.78 MBq", "half-life 6588 s", "45.2 min", "START", "2^(-t / half-life)"):
        assert part in note, part
    assert "2000" not in note and "STS_001" not in note  # no dates, no names
    # README: the bladder is SUVbw about 66 at z = -678.5 mm
    z = int(round(vol.patient_to_index(np.array([[0.0, 0.0, -678.5]]))[0][0]))
    assert 60 < float(vol.array[z].max()) < 72


def test_wholebody_suv_matches_the_same_patients_pet_already_in_suv(wholebody) -> None:
    """sts/STS_001/PET is this scan, cropped and converted to SUV by the IBSI (Units GML): voxel by voxel equal."""
    wb, sts = wholebody.volume, load_series(_files(STS_PET)).volume
    assert sts.unit == "SUV"
    start = wb.patient_to_index(np.array([sts.origin_mm]))[0]
    assert np.allclose(start, np.round(start), atol=1e-3)  # the crop sits on the whole-body grid
    z, y, x = (int(round(v)) for v in start)
    crop = wb.array[z:z + sts.shape[0], y:y + sts.shape[1], x:x + sts.shape[2]]
    hot = sts.array > 0.5
    assert hot.sum() > 1000
    ratio = crop[hot] / sts.array[hot]
    assert np.median(ratio) == pytest.approx(1.0, abs=1e-3)
    assert np.percentile(ratio, 1) > 0.995 and np.percentile(ratio, 99) < 1.005


def test_per_slice_rescale_slopes_are_applied_slice_by_slice(wholebody) -> None:
    files = _files(WB_PET)
    slopes = {float(pydicom.dcmread(f, stop_before_pixels=True).RescaleSlope) for f in files}
    assert len(slopes) > 200  # README: 267 distinct values
    factor = wholebody.suv.factors[0]
    for f in (files[10], files[133], files[250]):
        ds = pydicom.dcmread(f)
        z = [uid for uid, _ in wholebody.frames].index(str(ds.SOPInstanceUID))
        expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) * factor
        assert np.allclose(wholebody.volume.array[z], expected, rtol=1e-5, atol=1e-5)


def test_irregular_pet_slice_steps_are_kept_on_one_grid_with_a_note(wholebody) -> None:
    note = next(n for n in wholebody.notes if "slice spacing varies" in n)
    assert "3.190" in note and "3.290" in note
    normal = wholebody.volume.direction[:, 2]
    for k, h in enumerate(wholebody.headers):
        pos = np.asarray([float(v) for v in h.ImagePositionPatient])
        assert abs((wholebody.volume.index_to_patient([k, 0, 0])[0] - pos) @ normal) < 0.1


# --- the formula's branches, on the real header with one input changed -------------------------------------------


def _rp(ds: pydicom.Dataset) -> pydicom.Dataset:
    return ds.RadiopharmaceuticalInformationSequence[0]


def _header() -> pydicom.Dataset:
    return pydicom.dcmread(_files(WB_PET)[0], stop_before_pixels=True)


def test_admin_decay_correction_uses_the_dose_as_injected() -> None:
    ds = _header()
    ds.DecayCorrection = "ADMIN"
    conv = suvbw_conversion([ds, ds])
    assert conv.ok and conv.factors == pytest.approx([71000.0 / 388.777472e6] * 2)
    assert "administration" in conv.note


def test_no_decay_correction_decays_each_slice_from_its_own_acquisition_time() -> None:
    a, b = _header(), _header()
    for ds in (a, b):
        ds.DecayCorrection = "NONE"
    b.AcquisitionTime = "113011.00"  # ten minutes later
    conv = suvbw_conversion([a, b])
    lam = math.log(2) / 6588.0
    dur = 240.0  # ActualFrameDuration 240000 ms
    mean_decay = (1 - math.exp(-lam * dur)) / (lam * dur)
    t_a = 45 * 60 + 11
    assert conv.factors[0] == pytest.approx(71000.0 / (388.777472e6 * math.exp(-lam * t_a) * mean_decay))
    assert conv.factors[1] / conv.factors[0] == pytest.approx(2 ** (600 / 6588.0))


def test_injection_datetime_wins_over_the_time_of_day() -> None:
    ds = _header()
    ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartDateTime = "20000907102000"
    conv = suvbw_conversion([ds])
    assert conv.uptake_s == pytest.approx(60 * 60 + 11) and "RadiopharmaceuticalStartDateTime" in conv.note


@pytest.mark.parametrize("change, field", [
    (lambda ds: setattr(ds, "PatientWeight", None), "PatientWeight"),
    (lambda ds: setattr(ds, "PatientWeight", 0), "PatientWeight"),
    (lambda ds: delattr(_rp(ds), "RadionuclideTotalDose"), "RadionuclideTotalDose"),
    (lambda ds: setattr(_rp(ds), "RadionuclideTotalDose", 388.78), "MBq"),
    (lambda ds: delattr(_rp(ds), "RadionuclideHalfLife"), "RadionuclideHalfLife"),
    (lambda ds: delattr(_rp(ds), "RadiopharmaceuticalStartTime"), "injection time"),
    (lambda ds: delattr(ds, "RadiopharmaceuticalInformationSequence"), "RadiopharmaceuticalInformationSequence"),
    (lambda ds: setattr(ds, "DecayCorrection", ""), "DecayCorrection"),
])
def test_missing_inputs_give_a_clear_note_and_raw_units(change, field) -> None:
    ds = _header()
    change(ds)
    conv = suvbw_conversion([ds])
    assert not conv.ok and conv.factors is None
    assert field in conv.note and "Bq/ml" in conv.note


def test_a_series_without_weight_loads_in_bq_per_ml(tmp_path: Path) -> None:
    out = []
    for f in _files(WB_PET)[100:110]:
        ds = pydicom.dcmread(f)
        del ds.PatientWeight
        ds.save_as(tmp_path / f.name)
        out.append(tmp_path / f.name)
    series = load_series(out)
    assert series.volume.unit == "Bq/mL" and series.suv is not None and not series.suv.ok
    assert any("PatientWeight" in n and "Bq/ml" in n for n in series.notes)
    ds = pydicom.dcmread(out[0])
    z = [uid for uid, _ in series.frames].index(str(ds.SOPInstanceUID))
    assert np.allclose(series.volume.array[z], ds.pixel_array * float(ds.RescaleSlope), rtol=1e-5)


def _philips_counts(tmp_path: Path, *, bqml: float | None, suv: float | None, keep_weight: bool = True) -> list[Path]:
    """Ten real whole-body PET slices as a Philips system stores counts: Units CNTS, the rescale slope divided by 4
    (counts = Bq/ml / 4) and the private scale factors per slice (7053,1009) Bq/ml, (7053,1000) SUVbw."""
    from dicomnode.io.suv import PHILIPS_PET_CREATOR
    out = []
    for f in _files(WB_PET)[100:110]:
        ds = pydicom.dcmread(f)
        ds.Units, ds.Manufacturer = "CNTS", "Philips Medical Systems"
        ds.RescaleSlope = f"{float(ds.RescaleSlope) / 4:.10g}"
        block = ds.private_block(0x7053, PHILIPS_PET_CREATOR, create=True)
        if bqml is not None:
            block.add_new(0x09, "DS", f"{bqml:.10g}")
        if suv is not None:
            block.add_new(0x00, "DS", f"{suv:.10g}")
        if not keep_weight:
            del ds.PatientWeight
        ds.save_as(tmp_path / f.name)
        out.append(tmp_path / f.name)
    return out


def test_philips_counts_become_the_same_suv_as_the_series_in_bqml(tmp_path: Path) -> None:
    reference = load_series(_files(WB_PET)[100:110])
    assert reference.volume.unit == "SUV"
    counts = load_series(_philips_counts(tmp_path, bqml=4.0, suv=None))
    assert counts.volume.unit == "SUV" and counts.suv is not None and counts.suv.ok
    np.testing.assert_allclose(counts.volume.array, reference.volume.array, rtol=1e-5, atol=1e-6)
    note = next(n for n in counts.notes if "CNTS" in n)
    assert "(7053,1009)" in note and "weight" in note and "factor" in note
    assert counts.suv.weight_kg == reference.suv.weight_kg and counts.suv.dose_bq == reference.suv.dose_bq


def test_philips_suv_factor_is_used_when_the_header_cannot_give_suv(tmp_path: Path) -> None:
    reference = load_series(_files(WB_PET)[100:110])
    vendor = 4.0 * reference.suv.factors[0]                     # what the scanner would write: counts -> SUVbw
    counts = load_series(_philips_counts(tmp_path, bqml=4.0, suv=vendor, keep_weight=False))
    assert counts.volume.unit == "SUV"
    np.testing.assert_allclose(counts.volume.array, reference.volume.array, rtol=1e-5, atol=1e-6)
    note = next(n for n in counts.notes if "CNTS" in n)
    assert "(7053,1000)" in note and "PatientWeight" in note  # the vendor's factor, and why not our own


def test_counts_without_scale_factors_stay_counts_with_a_note_naming_the_fix(tmp_path: Path) -> None:
    counts = load_series(_philips_counts(tmp_path, bqml=None, suv=None))
    assert counts.volume.unit == "{counts}" and counts.suv is not None and not counts.suv.ok
    note = next(n for n in counts.notes if "counts" in n)
    assert "(7053,1009)" in note and "BQML" in note
