"""PET activity concentration (Bq/ml) -> standardized uptake value, body weight (SUVbw, g/ml).

SUVbw = C(t) [Bq/ml] x body weight [g] / injected dose decayed to the decay-correction reference time [Bq], as in the
QIBA / Vendor-Neutral SUV pseudo-code and DICOM PS3.3 C.8.9.1.1.3 (Units, DecayCorrection):

* ``DecayCorrection = START``: the image is decay corrected to the start of the acquisition (SeriesDate/SeriesTime, or
  the earliest AcquisitionDate/AcquisitionTime when that is earlier: a series re-reconstructed later keeps a later
  SeriesTime); the dose is decayed from the injection to that time.
* ``ADMIN``: the image is decay corrected to the administration time; the dose is used as injected.
* ``NONE``: no decay correction; each slice is corrected from its own AcquisitionTime, averaging the decay over its
  ActualFrameDuration.

The injection time is ``RadiopharmaceuticalStartDateTime`` when present, else ``RadiopharmaceuticalStartTime`` on the
SeriesDate (AcquisitionDate, StudyDate); an injection "later" in the day than the scan is taken as the day before.
The result says which inputs were used (weight, dose, half-life, minutes from injection to the reference time), never
names or dates. Inputs that are missing or implausible give no factor and a reason: the caller keeps raw Bq/ml.

References
----------
QIBA FDG-PET/CT Technical Committee, "Vendor-neutral pseudo-code for SUV calculation",
https://qibawiki.rsna.org/index.php/Standardized_Uptake_Value_(SUV). Kinahan P.E., Fletcher J.W., PET/CT standardized
uptake values (SUVs) in clinical practice and assessing response to therapy. Semin Ultrasound CT MR 2010;31:496-505.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydicom.dataset import Dataset

__all__ = ["PHILIPS_PET_CREATOR", "SuvConversion", "counts_conversion", "suvbw_conversion"]

#: Injection to decay-reference time must lie in (0, this] hours; outside it the dates/times are not believable.
_MAX_UPTAKE_HOURS = 24.0
#: Plausible adult/child body weight in kg (a 0 or a weight in grams is a header error).
_WEIGHT_KG = (1.0, 400.0)


@dataclass(frozen=True, slots=True)
class SuvConversion:
    """How Bq/ml become SUVbw for one series, or why they cannot.

    Parameters
    ----------
    factors : tuple of float, or None
        Per z index (the slices in volume order), the factor that turns Bq/ml into SUVbw (g/ml). None when the
        conversion is not possible; then ``reason`` says why.
    note : str
        One line for the results' notes: the formula and its inputs, or what is missing and what to do.
    weight_kg, dose_bq, half_life_s, uptake_s : float or None
        The inputs used (uptake: injection to the decay-correction reference, seconds; for NONE the first slice's).
    decay_correction : str
        The series' DecayCorrection (0054,1102).
    reason : str
        Empty when converted, else the missing or implausible input.
    """

    factors: tuple[float, ...] | None
    note: str
    weight_kg: float | None = None
    dose_bq: float | None = None
    half_life_s: float | None = None
    uptake_s: float | None = None
    decay_correction: str = ""
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.factors is not None


def _float(ds: Dataset, keyword: str) -> float | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _date(value: object) -> datetime | None:
    text = str(value or "").strip()
    if len(text) < 8:
        return None
    try:
        return datetime.strptime(text[:8], "%Y%m%d")
    except ValueError:
        return None


def _time_of_day(value: object) -> timedelta | None:
    text = str(value or "").strip().replace(":", "")
    if len(text) < 2:
        return None
    try:
        hours = int(text[0:2])
        minutes = int(text[2:4]) if len(text) >= 4 else 0
        seconds = float(text[4:]) if len(text) > 4 else 0.0
    except ValueError:
        return None
    if not (0 <= hours < 24 and 0 <= minutes < 60 and 0 <= seconds < 61):
        return None
    return timedelta(hours=hours, minutes=minutes, seconds=seconds)


def _datetime(date: object, time: object) -> datetime | None:
    d, t = _date(date), _time_of_day(time)
    return d + t if d is not None and t is not None else None


def _dt(value: object) -> datetime | None:
    """A DICOM DT value (YYYYMMDDHHMMSS.FFFFFF&ZZXX), without its offset."""
    text = str(value or "").strip()
    for sign in ("+", "-"):
        if sign in text[8:]:
            text = text[: 8 + text[8:].index(sign)]
    return _datetime(text[:8], text[8:] or "00")


def _radiopharmaceutical(ds: Dataset) -> Dataset | None:
    seq = ds.get("RadiopharmaceuticalInformationSequence")
    return seq[0] if seq else None


def _refuse(reason: str, decay: str = "") -> SuvConversion:
    return SuvConversion(
        None,
        f"PET values left in Bq/ml (not SUV): {reason}; SUV thresholds do not apply to this series",
        decay_correction=decay,
        reason=reason,
    )


def suvbw_conversion(slices: Sequence[Dataset], *, in_bqml: bool = False) -> SuvConversion:
    """Work out the Bq/ml -> SUVbw factor of every slice of a PET series in BQML.

    Parameters
    ----------
    slices : sequence of pydicom.Dataset
        One header per z index, in volume order (a multi-frame image: the same dataset for every frame). The first
        gives weight, dose, half-life, injection time and DecayCorrection; each gives its own AcquisitionDate/Time
        when DecayCorrection is NONE.
    in_bqml : bool
        The caller has made the values Bq/ml whatever Units says (:func:`counts_conversion`); default: Units must be
        BQML.

    Returns
    -------
    SuvConversion
        ``factors`` (one per slice) with a note giving the formula and the inputs, or ``factors=None`` and a note
        naming the missing or implausible attribute and the fix.
    """
    if not slices:
        return _refuse("no slices")
    first = slices[0]
    units = str(first.get("Units", "") or "").strip().upper()
    if units != "BQML" and not in_bqml:
        return _refuse(f"Units (0054,1001) is {units or 'missing'!r}, not BQML")
    decay = str(first.get("DecayCorrection", "") or "").strip().upper()
    if decay not in ("START", "ADMIN", "NONE"):
        return _refuse(f"DecayCorrection (0054,1102) is {decay or 'missing'!r}; expected START, ADMIN or NONE", decay)

    weight_kg = _float(first, "PatientWeight")
    if weight_kg is None or not (_WEIGHT_KG[0] <= weight_kg <= _WEIGHT_KG[1]):
        return _refuse(f"PatientWeight (0010,1030) is {first.get('PatientWeight')!r}, not a body weight in kg "
                       f"({_WEIGHT_KG[0]:g}...{_WEIGHT_KG[1]:g}); enter the weight at the scanner", decay)
    rp = _radiopharmaceutical(first)
    if rp is None:
        return _refuse("RadiopharmaceuticalInformationSequence (0054,0016) is missing: no injected dose or time", decay)
    dose_bq = _float(rp, "RadionuclideTotalDose")
    if dose_bq is None or dose_bq <= 0:
        return _refuse(f"RadionuclideTotalDose (0018,1074) is {rp.get('RadionuclideTotalDose')!r}, not a dose in Bq",
                       decay)
    if dose_bq < 1e5:  # a dose in MBq (e.g. 370) written where Bq are required: an error a factor 1e6 away
        return _refuse(f"RadionuclideTotalDose (0018,1074) is {dose_bq:g}, too small for Bq (MBq written?)", decay)
    half_life_s = _float(rp, "RadionuclideHalfLife")
    if half_life_s is None or half_life_s <= 0:
        return _refuse(f"RadionuclideHalfLife (0018,1075) is {rp.get('RadionuclideHalfLife')!r}, not seconds",
                       decay)
    lam = math.log(2.0) / half_life_s
    weight_g = weight_kg * 1000.0
    inputs = (f"weight {weight_kg:g} kg, injected dose {dose_bq / 1e6:.2f} MBq, half-life {half_life_s:g} s, "
              f"DecayCorrection {decay}")

    if decay == "ADMIN":
        factor = weight_g / dose_bq
        note = (f"PET converted from Bq/ml to SUVbw (g/ml) = value x weight / dose (image decay corrected to the "
                f"administration time); {inputs}; factor {factor:.6g}")
        return SuvConversion(tuple([factor] * len(slices)), note, weight_kg, dose_bq, half_life_s, 0.0, decay)

    series_day = next((v for v in (first.get("SeriesDate"), first.get("AcquisitionDate"), first.get("StudyDate"))
                       if _date(v) is not None), None)
    injection = _dt(rp.get("RadiopharmaceuticalStartDateTime"))
    injection_from = "RadiopharmaceuticalStartDateTime"
    if injection is None:
        injection = _datetime(series_day, rp.get("RadiopharmaceuticalStartTime"))
        injection_from = "RadiopharmaceuticalStartTime on the series date"
    if injection is None:
        return _refuse("no injection time: RadiopharmaceuticalStartDateTime (0018,1078) and "
                       "RadiopharmaceuticalStartTime (0018,1072) with SeriesDate are missing or invalid", decay)

    def acquisition(ds: Dataset) -> datetime | None:
        day = ds.get("AcquisitionDate") or ds.get("SeriesDate") or series_day
        return _datetime(day, ds.get("AcquisitionTime"))

    def uptake_of(t: datetime) -> float:
        seconds = (t - injection).total_seconds()
        if seconds < 0 and injection_from != "RadiopharmaceuticalStartDateTime" and seconds > -86400:
            seconds += 86400.0  # injected before midnight, scanned after it
        return seconds

    if decay == "START":
        start = _datetime(first.get("SeriesDate") or series_day, first.get("SeriesTime"))
        acquisitions = [t for t in (acquisition(ds) for ds in slices) if t is not None]
        start_from = "SeriesDate/SeriesTime"
        if acquisitions and (start is None or min(acquisitions) < start):
            start, start_from = min(acquisitions), "the earliest AcquisitionDate/AcquisitionTime"
        if start is None:
            return _refuse("no acquisition start: SeriesTime (0008,0031) and AcquisitionTime (0008,0032) are missing",
                           decay)
        uptake_s = uptake_of(start)
        if not (0 < uptake_s <= _MAX_UPTAKE_HOURS * 3600):
            return _refuse(f"the injection ({injection_from}) is {uptake_s / 60:.1f} min before the acquisition start "
                           f"({start_from}): not between 0 and {_MAX_UPTAKE_HOURS:g} h", decay)
        decayed_bq = dose_bq * math.exp(-lam * uptake_s)
        factor = weight_g / decayed_bq
        note = (f"PET converted from Bq/ml to SUVbw (g/ml) = value x weight / (dose x 2^(-t / half-life)), t = "
                f"{uptake_s / 60:.1f} min from injection ({injection_from}) to the acquisition start ({start_from}); "
                f"{inputs}; factor {factor:.6g}")
        return SuvConversion(tuple([factor] * len(slices)), note, weight_kg, dose_bq, half_life_s, uptake_s, decay)

    # NONE: each slice holds the mean activity over its own frame, not decay corrected
    factors = []
    first_uptake = None
    for k, ds in enumerate(slices):
        t = acquisition(ds)
        if t is None:
            return _refuse(f"DecayCorrection NONE and slice {k} has no AcquisitionTime (0008,0032)", decay)
        uptake_s = uptake_of(t)
        if not (0 <= uptake_s <= _MAX_UPTAKE_HOURS * 3600):
            return _refuse(f"slice {k} was acquired {uptake_s / 60:.1f} min after the injection: not between 0 and "
                           f"{_MAX_UPTAKE_HOURS:g} h", decay)
        first_uptake = uptake_s if first_uptake is None else first_uptake
        duration_s = (_float(ds, "ActualFrameDuration") or 0.0) / 1000.0
        mean_decay = (1 - math.exp(-lam * duration_s)) / (lam * duration_s) if duration_s > 0 else 1.0
        factors.append(weight_g / (dose_bq * math.exp(-lam * uptake_s) * mean_decay))
    note = (f"PET converted from Bq/ml to SUVbw (g/ml) = value x weight / (dose x 2^(-t / half-life) x mean decay over "
            f"the frame), t per slice from injection ({injection_from}) to its AcquisitionTime (first "
            f"{(first_uptake or 0) / 60:.1f} min); {inputs}; factors {min(factors):.6g}...{max(factors):.6g}")
    return SuvConversion(tuple(factors), note, weight_kg, dose_bq, half_life_s, first_uptake, decay)


#: The private creator of Philips PET's scale factors: (7053,xx00) SUV Scale Factor (counts -> SUVbw) and (7053,xx09)
#: Activity Concentration Scale Factor (counts -> Bq/ml), per slice (pydicom's private dictionary; QIBA's
#: vendor-neutral SUV pseudo-code reads the same two).
PHILIPS_PET_CREATOR = "Philips PET Private Group"
_PHILIPS_SUV, _PHILIPS_BQML = 0x00, 0x09


def _private_factor(ds: Dataset, offset: int) -> float | None:
    """A positive DS of the Philips PET private block at ``offset``, or None (no block, no element, not a number)."""
    try:
        elem = ds.private_block(0x7053, PHILIPS_PET_CREATOR)[offset]
    except (KeyError, ValueError):
        return None
    value = elem.value
    if isinstance(value, bytes):  # stored as UN: the DS text
        value = value.decode("ascii", "replace").strip(" \x00")
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) and out > 0 else None


def _philips_factors(slices: Sequence[Dataset], offset: int) -> tuple[float, ...] | None:
    """The private factor of every slice, or None when any slice lacks it (a partial set is not a calibration)."""
    out = [_private_factor(ds, offset) for ds in slices]
    return None if any(v is None for v in out) else tuple(float(v) for v in out)  # type: ignore[arg-type]


def counts_conversion(slices: Sequence[Dataset]) -> SuvConversion:
    """Work out the counts -> SUVbw factor of every slice of a PET series in CNTS (Philips), or why not.

    Philips PET systems may store counts (Units CNTS) with two private factors per slice (:data:`PHILIPS_PET_CREATOR`):
    the Activity Concentration Scale Factor (7053,1009) turns the rescaled values into Bq/ml, the SUV Scale Factor
    (7053,1000) into SUVbw. The first is preferred: the Bq/ml are then turned into SUVbw by
    :func:`suvbw_conversion` from the same header inputs as a series in BQML, so both vendors' SUVs follow one
    formula. When that is not possible (an input is missing) and the vendor's SUV factor is there, it is used, and
    the note says so. Other series in CNTS give no factor and a note naming the missing attributes.

    Parameters
    ----------
    slices : sequence of pydicom.Dataset
        One header per z index, in volume order.

    Returns
    -------
    SuvConversion
        As :func:`suvbw_conversion`: ``factors`` multiply the rescaled stored values.
    """
    if not slices:
        return _refuse("no slices")
    decay = str(slices[0].get("DecayCorrection", "") or "").strip().upper()
    bqml = _philips_factors(slices, _PHILIPS_BQML)
    via = None
    if bqml is not None:
        via = suvbw_conversion(slices, in_bqml=True)
        if via.factors is not None:
            factors = tuple(a * f for a, f in zip(bqml, via.factors))
            return dataclasses.replace(via, factors=factors, note=(
                f"PET in counts (Units CNTS) made Bq/ml by Philips' Activity Concentration Scale Factor (7053,1009), "
                f"{min(bqml):.6g}...{max(bqml):.6g}; then {via.note.removeprefix('PET ')}"))
    suv = _philips_factors(slices, _PHILIPS_SUV)
    if suv is not None:
        why = f" ({via.reason}, so not from the header's weight and dose)" if via is not None else ""
        return SuvConversion(suv, f"PET in counts (Units CNTS) converted to SUVbw (g/ml) by Philips' SUV Scale Factor "
                                  f"(7053,1000), {min(suv):.6g}...{max(suv):.6g}{why}", decay_correction=decay)
    if via is not None:  # Bq/ml possible, SUV not: the reason is the header's
        return SuvConversion(None, f"PET values left in counts (Units CNTS; Bq/ml by Philips' (7053,1009) not applied "
                                   f"alone): {via.reason}; SUV thresholds do not apply to this series",
                             decay_correction=decay, reason=via.reason)
    reason = ("Units (0054,1001) is CNTS and no slice-wise Philips scale factor (7053,1009) or (7053,1000) under "
              f"private creator {PHILIPS_PET_CREATOR!r}: counts have no SUV; export the series in BQML at the scanner")
    return SuvConversion(None, f"PET values left in counts: {reason}; SUV thresholds do not apply to this series",
                         decay_correction=decay, reason=reason)
