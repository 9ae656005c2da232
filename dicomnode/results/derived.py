"""A derived image volume (a thick-slab projection, the denoised working image) -> a DICOM series of the source's kind.

:func:`build_derived_series` writes one single-frame image per slice, of the source's own storage class, so that
every viewer and PACS shows it beside the source:

* CT -> CT Image Storage, MR -> MR Image Storage, PT -> PET Image Storage (the modality module's attributes that
  describe the acquisition are copied from the source's first image; what describes the pixels is made anew);
* anything else -> Secondary Capture Image Storage (with the image plane attributes, which SC allows as type 3).

What is made anew: ImageType ``DERIVED\\SECONDARY\\<AXIAL or OTHER>\\<KIND>``, DerivationDescription and
DerivationCodeSequence (DICOM CID 7203 "Image Derivation"), a SourceImageSequence per image naming the source
images that contributed to it (purpose: 121322 "Source image for image processing operation"), ReferencedSeriesSequence,
the geometry from the volume (ImagePositionPatient of each slice centre, ImageOrientationPatient, PixelSpacing,
SliceThickness, SpacingBetweenSlices, SliceLocation), signed 16-bit pixels with one RescaleSlope/RescaleIntercept
for the whole series (CT in HU: 1 / 0 whenever the values fit; PET: intercept 0 as the PET Image module requires),
and deterministic UIDs (``uids.series_uid(kind)``, ``uids.instance_uid(kind, n)``). Dates and times are copied from
the source (never "now"), so a re-run makes byte-identical files. Manufacturer is :data:`MANUFACTURER`, which the node
uses to never process its own objects again.

Why the source's own classes (and not an Enhanced or Secondary Capture object): they carry the patient geometry
that lets a viewer link and overlay the derived series with the source, they are what every PACS accepts, and with
the attributes above they pass ``dciodvfy`` without errors (tests/results/test_derived.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
import numpy as np
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    PositronEmissionTomographyImageStorage,
    SecondaryCaptureImageStorage,
)
from pydicom.valuerep import format_number_as_ds

from dicomnode.analysis.volume import Code, Volume
from dicomnode.errors import ResultError
from dicomnode.io.load import LoadedSeries
from dicomnode.results._clean import clean_header, fix_element
from dicomnode.results._common import (
    DEVICE_SERIAL_NUMBER,
    MANUFACTURER,
    MODEL_NAME,
    SOFTWARE_VERSION,
    fit_character_set,
    lo,
    series_laterality,
)
from dicomnode.results.uids import ResultUids

__all__ = ["DERIVATION_CODES", "SOURCE_IMAGE_PURPOSE", "build_all_derived", "build_derived_series"]

#: Derivation (DICOM CID 7203) by kind; other kinds need ``derivation_code``.
DERIVATION_CODES: dict[str, Code] = {
    "mip": Code("113078", "DCM", "Maximum intensity projection"),
    "minip": Code("113079", "DCM", "Minimum intensity projection"),
    "avg": Code("113049", "DCM", "Pixel by pixel mean"),
    "working": Code("113087", "DCM", "Smoothing"),
    "denoised": Code("113087", "DCM", "Smoothing"),
    "enhanced": Code("113085", "DCM", "Spatial filtering"),
}
#: Purpose of reference of each source image (DICOM CID 7202).
SOURCE_IMAGE_PURPOSE = Code("121322", "DCM", "Source image for image processing operation")

_SOP_CLASSES = {"CT": CTImageStorage, "MR": MRImageStorage, "PT": PositronEmissionTomographyImageStorage}

_PATIENT_STUDY = (
    "SpecificCharacterSet", "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "PatientAge", "PatientSize", "PatientWeight", "PatientIdentityRemoved", "DeidentificationMethod",
    "DeidentificationMethodCodeSequence", "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName",
    "StudyID", "AccessionNumber", "StudyDescription", "FrameOfReferenceUID", "PositionReferenceIndicator",
    "BodyPartExamined", "PatientPosition",
)
#: Acquisition attributes of each modality's image module, copied when the source has them.
_MODALITY_COPY = {
    "CT": ("KVP", "AcquisitionNumber", "ConvolutionKernel", "ScanOptions", "GantryDetectorTilt",
           "ReconstructionDiameter", "DataCollectionDiameter"),
    "MR": ("ScanningSequence", "SequenceVariant", "ScanOptions", "MRAcquisitionType", "RepetitionTime",
           "EchoTime", "EchoTrainLength", "InversionTime", "MagneticFieldStrength", "ImagedNucleus",
           "AcquisitionNumber"),
    "PT": ("SeriesDate", "SeriesTime", "Units", "CountsSource", "SeriesType", "CorrectedImage", "DecayCorrection",
           "RandomsCorrectionMethod", "AttenuationCorrectionMethod", "ReconstructionMethod", "CollimatorType",
           "NumberOfTimeSlices", "RadiopharmaceuticalInformationSequence", "PatientOrientationCodeSequence",
           "PatientGantryRelationshipCodeSequence", "AcquisitionDate", "AcquisitionTime", "ActualFrameDuration",
           "FrameReferenceTime", "DecayFactor", "DoseCalibrationFactor", "EnergyWindowRangeSequence"),
}
#: Type 2 attributes of the modality modules: present, empty when the source lacks them.
_MODALITY_TYPE2 = {
    "CT": ("KVP", "AcquisitionNumber"),
    "MR": ("ScanOptions", "MRAcquisitionType", "EchoTime", "EchoTrainLength", "RepetitionTime"),
    "PT": ("CorrectedImage", "CollimatorType", "RadiopharmaceuticalInformationSequence",
           "PatientOrientationCodeSequence", "PatientGantryRelationshipCodeSequence", "AcquisitionDate",
           "AcquisitionTime", "ActualFrameDuration"),
}


#: PET Units (0054,1001) of the volume's unit (dicomnode.io.load: SUV for GML and for BQML converted to SUVbw).
_PET_UNITS = {"SUV": "GML", "Bq/mL": "BQML", "{counts}": "CNTS", "%": "PCNT"}


def _ds(value: float) -> str:
    return format_number_as_ds(float(value)) if value != 0 else "0"


def _code_item(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme
    item.CodeMeaning = lo(code.meaning)
    return item


def _ref(source_item: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source_item.ReferencedSOPClassUID
    item.ReferencedSOPInstanceUID = source_item.ReferencedSOPInstanceUID
    return item


def _rescale(values: np.ndarray, modality: str, unit: str) -> tuple[float, float]:
    """(slope, intercept) that map the whole series to signed 16 bits."""
    lo_v, hi_v = float(np.min(values)), float(np.max(values))
    if modality == "PT":
        peak = max(abs(lo_v), abs(hi_v))
        return (peak / 32767.0 if peak > 0 else 1.0), 0.0
    fits = -32768 <= math.floor(lo_v) and math.ceil(hi_v) <= 32767
    if fits and (unit == "HU" or (modality == "MR" and hi_v - lo_v >= 256)):
        return 1.0, 0.0  # whole numbers are precise enough: HU; MR with a few hundred grey levels or more
    if hi_v == lo_v:
        return 1.0, lo_v
    slope = (hi_v - lo_v) / 65535.0
    return slope, lo_v + 32768.0 * slope


def _functional_group_value(header: Dataset, sequence: str, keyword: str) -> object:
    """``keyword`` of the first item of ``sequence`` in the shared functional groups of an enhanced multi-frame
    header, else in its first frame's; None when neither has a value."""
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        items = header.get(groups) or []
        inner = (items[0].get(sequence) or []) if items else []
        if inner and keyword in inner[0] and inner[0][keyword].value not in (None, "", []):
            return inner[0][keyword].value
    return None


#: Classic CT Image attribute -> (functional group macro, attribute) of an Enhanced CT source (PS3.3 C.8.15.3:
#: CT X-Ray Details, CT Reconstruction, CT Acquisition Details macros).
_ENHANCED_CT_ACQUISITION = {
    "KVP": ("CTXRayDetailsSequence", "KVP"),
    "ConvolutionKernel": ("CTReconstructionSequence", "ConvolutionKernel"),
    "ReconstructionDiameter": ("CTReconstructionSequence", "ReconstructionDiameter"),
    "DataCollectionDiameter": ("CTAcquisitionDetailsSequence", "DataCollectionDiameter"),
    "GantryDetectorTilt": ("CTAcquisitionDetailsSequence", "GantryDetectorTilt"),
}
#: Where a Legacy Converted Enhanced image (PS3.3 C.7.6.16.2.30) keeps the classic attributes no macro takes.
_UNASSIGNED = ("UnassignedSharedConvertedAttributesSequence", "UnassignedPerFrameConvertedAttributesSequence")


def _valid_copy(keyword: str, value: object) -> DataElement | None:
    """``value`` as an element of ``keyword``, checked and fixed as the top-level header is
    (:func:`dicomnode.results._clean.fix_element`: the functional groups are not cleaned); None when nothing valid is
    left."""
    try:
        elem = DataElement(tag_for_keyword(keyword), dictionary_VR(tag_for_keyword(keyword)), value)
        fix_element(elem)
    except (TypeError, ValueError, KeyError):
        return None
    return None if elem.value in (None, "", []) else elem


def _multiframe_acquisition(ds: Dataset, source: Dataset, modality: str) -> None:
    """The modality's acquisition attributes an Enhanced multi-frame source keeps in its functional groups.

    A classic source gives KVP, Convolution Kernel... at the top level (copied before). An Enhanced CT gives them in
    the CT X-Ray Details, CT Reconstruction and CT Acquisition Details macros of the shared functional groups or of
    each frame (the first frame's then: a derived image stands for a slab of frames); a Legacy Converted Enhanced
    CT, MR or PET (highdicom.legacy, a PACS's conversion) in its Unassigned Shared / Per-Frame Converted
    Attributes. Each value is checked against its VR and VM; KVP and Acquisition Number stay empty (Type 2) only
    when the source has none anywhere."""
    if "SharedFunctionalGroupsSequence" not in source and "PerFrameFunctionalGroupsSequence" not in source:
        return
    wanted = [kw for kw in _MODALITY_COPY.get(modality, ()) if ds.get(kw) in (None, "", [])]
    for keyword in wanted:
        value = None
        if modality == "CT" and keyword in _ENHANCED_CT_ACQUISITION:
            value = _functional_group_value(source, *_ENHANCED_CT_ACQUISITION[keyword])
        for sequence in _UNASSIGNED:
            if value is None:
                value = _functional_group_value(source, sequence, keyword)
        elem = _valid_copy(keyword, value) if value is not None and not keyword.endswith("Sequence") else None
        if elem is not None:
            ds[keyword] = elem


#: Enhanced MR Echo Pulse Sequence (0018,9008) -> classic Scanning Sequence (0018,0020) terms.
_ECHO_PULSE_SCANNING = {"SPIN": ["SE"], "GRADIENT": ["GR"], "BOTH": ["SE", "GR"]}
#: Classic MR Image attribute -> (functional group sequence, attribute) of an Enhanced MR source.
_ENHANCED_MR_TIMING = {
    "RepetitionTime": ("MRTimingAndRelatedParametersSequence", "RepetitionTime"),
    "EchoTrainLength": ("MRTimingAndRelatedParametersSequence", "EchoTrainLength"),
    "EchoTime": ("MREchoSequence", "EffectiveEchoTime"),
    "InversionTime": ("MRModifierSequence", "InversionTimes"),
}


def _mr_acquisition(ds: Dataset, source: Dataset) -> None:
    """Scanning Sequence and the timing of the MR Image module, with Inversion Time under its condition.

    A classic source gives them at the top level (copied before). An Enhanced MR source has none there: Scanning
    Sequence comes from its MR Pulse Sequence module (Echo Pulse Sequence, Echo Planar Pulse Sequence) and MR
    Modifier functional group (Inversion Recovery), the times from its functional groups; "RM" (research mode) when nothing says. Inversion Time is Type
    2C, present (empty when unknown) if and only if Scanning Sequence holds IR: dciodvfy refuses it otherwise."""
    if "ScanningSequence" not in ds:
        scanning = list(_ECHO_PULSE_SCANNING.get(str(source.get("EchoPulseSequence", "") or "").upper(), []))
        inversion = (source.get("InversionRecovery", "")
                     or _functional_group_value(source, "MRModifierSequence", "InversionRecovery"))
        if scanning and str(inversion or "").upper() == "YES":
            scanning.append("IR")
        if scanning and str(source.get("EchoPlanarPulseSequence", "") or "").upper() == "YES":
            scanning.append("EP")
        ds.ScanningSequence = scanning or "RM"
    for keyword, (sequence, inner) in _ENHANCED_MR_TIMING.items():
        if keyword in ds and ds[keyword].value not in (None, ""):
            continue
        value = _functional_group_value(source, sequence, inner)
        if isinstance(value, (list, tuple, MultiValue)):
            value = value[0] if len(value) else None
        if value is None:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if not math.isfinite(number) or number < 0:
            continue
        setattr(ds, keyword, int(number) if keyword == "EchoTrainLength" else _ds(number))
    value = ds.ScanningSequence
    terms = {str(v).upper() for v in (value if isinstance(value, (list, MultiValue)) else [value])}
    if "IR" in terms:
        if "InversionTime" not in ds:
            ds.InversionTime = None
    else:
        ds.pop("InversionTime", None)


def _orientation_letters(direction: np.ndarray) -> str:
    """Patient Orientation (0020,0020) of one image axis (PS3.3 C.7.6.1.1.1): the letters of its patient
    directions (L, P, H for +x, +y, +z in the patient coordinate system; R, A, F for minus), the largest
    component first, components under 0.001 left out (an oblique axis has two or three letters)."""
    letters = (("L", "R"), ("P", "A"), ("H", "F"))
    order = sorted(range(3), key=lambda i: -abs(float(direction[i])))
    out = "".join(letters[i][0 if direction[i] > 0 else 1] for i in order if abs(float(direction[i])) >= 1e-3)
    return out or "L"


def _single_volume_series_type(ds: Dataset) -> None:
    """A derived PET series is one volume (the loader keeps one time slice or gate of a dynamic or gated source):
    its Series Type is the source's STATIC or WHOLE BODY, otherwise STATIC, with value 2 IMAGE. A DYNAMIC or GATED
    type would require the time slices, R-R intervals, time slots, trigger and frame times of a multi-volume series
    (PET Series and PET Image modules, Type 1C: dciodvfy refuses the object without them)."""
    value = ds.get("SeriesType")
    values = [str(v).strip().upper() for v in (value if isinstance(value, (list, MultiValue)) else [value or ""])]
    ds.SeriesType = [values[0] if values[0] in ("STATIC", "WHOLE BODY") else "STATIC", "IMAGE"]
    ds.pop("NumberOfTimeSlices", None)


def _contributors(series: LoadedSeries, volume: Volume, thickness_mm: float) -> list[list[int]]:
    """Per output slice, the source z indices whose slice overlaps the output slice's slab."""
    src = series.volume
    normal = np.asarray(src.direction, dtype=float)[:, 2]
    src_pos = (src.index_to_patient(np.c_[np.arange(src.shape[0]), np.zeros(src.shape[0]), np.zeros(src.shape[0])])
               @ normal)
    out_pos = (volume.index_to_patient(np.c_[np.arange(volume.shape[0]), np.zeros(volume.shape[0]),
                                             np.zeros(volume.shape[0])]) @ normal)
    half = 0.5 * thickness_mm + 0.5 * float(src.spacing_mm[0]) - 1e-3
    out = []
    for p in out_pos:
        idx = np.flatnonzero(np.abs(src_pos - p) < half)
        out.append([int(i) for i in idx] or [int(np.argmin(np.abs(src_pos - p)))])
    return out


def build_derived_series(
    series: LoadedSeries,
    volume: Volume,
    uids: ResultUids,
    *,
    kind: str,
    description: str,
    series_number: int,
    slice_thickness_mm: float | None = None,
    derivation_code: Code | None = None,
    software_version: str = SOFTWARE_VERSION,
) -> list[Dataset]:
    """A derived image series of the source's storage class, one dataset per slice of ``volume``.

    Parameters
    ----------
    series : LoadedSeries
        The source (its first header gives patient, study and acquisition attributes; never modified).
    volume : Volume
        The derived volume in the source's unit and patient space (``thick_slab`` output, the working volume...).
    uids : ResultUids
        Series UID ``uids.series_uid(kind)``; instance ``n`` (1-based) ``uids.instance_uid(kind, n)``.
    kind : str
        Short name: "mip", "minip", "avg", "working" (or any other with ``derivation_code``); also the 4th value of
        ImageType, upper case.
    description : str
        SeriesDescription and DerivationDescription, e.g. "MIP 10 mm slabs every 10 mm".
    series_number : int
        Series Number.
    slice_thickness_mm : float, optional
        SliceThickness: the slab thickness for projections. Default: the volume's spacing along z.
    derivation_code : Code, optional
        DerivationCodeSequence item. Default :data:`DERIVATION_CODES` [kind].
    software_version : str, optional
        SoftwareVersions.

    Returns
    -------
    list of pydicom.Dataset
        With ``file_meta``, ready for ``save_as(..., enforce_file_format=True)``, in slice order.

    Raises
    ------
    ResultError
        When the volume is not in the source's frame of reference shape (in-plane), the kind has no code, or a
        value is not finite.
    """
    code = derivation_code or DERIVATION_CODES.get(kind)
    if code is None:
        raise ResultError(f"derived series {kind!r}: no derivation code; pass derivation_code (DICOM CID 7203)")
    if not kind or not kind.replace("_", "").isalnum():
        raise ResultError(f"derived series kind {kind!r} must be letters, digits and '_'")
    arr = np.asarray(volume.array)
    if not np.all(np.isfinite(arr)):
        raise ResultError(f"derived series {kind!r}: the volume holds non-finite values")
    if arr.shape[1:] != series.volume.shape[1:]:
        raise ResultError(f"derived series {kind!r}: in-plane shape {arr.shape[1:]} differs from the source's "
                          f"{series.volume.shape[1:]}; resampled outputs are not supported")
    modality = series.modality if series.modality in _SOP_CLASSES else "OT"
    sop_class = _SOP_CLASSES.get(modality, SecondaryCaptureImageStorage)
    thickness = float(slice_thickness_mm if slice_thickness_mm is not None else volume.spacing_mm[0])
    source = clean_header(series.headers[0])
    laterality = series_laterality(source)
    slope, intercept = _rescale(arr, modality, volume.unit)
    pixels = np.clip(np.rint((arr - intercept) / slope), -32768, 32767).astype("<i2")
    contributors = _contributors(series, volume, thickness)
    d = np.asarray(volume.direction, dtype=float)
    iop = [_ds(round(v, 8)) for v in (*d[:, 0], *d[:, 1])]
    normal = d[:, 2]
    series_uid = uids.series_uid(kind)
    axial = abs(float(normal[2])) > 0.9
    date = str(source.get("ContentDate", "") or source.get("SeriesDate", "") or source.get("StudyDate", "") or "")
    time_ = str(source.get("ContentTime", "") or source.get("SeriesTime", "") or source.get("StudyTime", "") or "")

    out: list[Dataset] = []
    for k in range(arr.shape[0]):
        ds = Dataset()
        for kw in _PATIENT_STUDY + _MODALITY_COPY.get(modality, ()):
            if kw in source and source[kw].value not in (None, ""):
                ds[kw] = source[kw]
        _multiframe_acquisition(ds, source, modality)
        for kw in _MODALITY_TYPE2.get(modality, ()):
            if kw not in ds:
                setattr(ds, kw, [] if kw.endswith("Sequence") else None)
        for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                   "ReferringPhysicianName", "StudyID", "AccessionNumber", "PositionReferenceIndicator"):
            if kw not in ds:
                setattr(ds, kw, None)  # type 2 of the Patient, General Study and Frame of Reference modules
        if laterality is not None:
            ds.Laterality = laterality or None  # type 2C: R/L when known, empty (unknown) for a paired body part
        if modality in ("CT", "MR") and "PatientPosition" not in ds:
            ds.PatientPosition = None  # Type 2C for CT and MR images (no Patient Orientation Code Sequence): empty
        if modality == "PT":
            ds.pop("PatientPosition", None)  # PET: PatientOrientationCodeSequence instead
            _single_volume_series_type(ds)
        sop_uid = uids.instance_uid(kind, k + 1)
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = sop_uid
        ds.Modality = modality
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = int(series_number)
        ds.InstanceNumber = k + 1
        ds.SeriesDescription = lo(description)
        ds.Manufacturer = MANUFACTURER
        ds.ManufacturerModelName = MODEL_NAME
        ds.DeviceSerialNumber = DEVICE_SERIAL_NUMBER
        ds.SoftwareVersions = lo(software_version)
        if date:
            ds.ContentDate = date
        if time_:
            ds.ContentTime = time_
        value3 = "AXIAL" if (modality == "CT" or axial) else "OTHER"
        # the PET Image module allows PRIMARY only as value 2
        ds.ImageType = ["DERIVED", "PRIMARY" if modality == "PT" else "SECONDARY", value3, kind.upper()[:16]]
        ds.DerivationDescription = description[:1024]
        ds.DerivationCodeSequence = DicomSequence([_code_item(code)])
        refs = []
        for z in contributors[k]:
            uid, frame = series.frames[z]
            item = Dataset()
            item.ReferencedSOPClassUID = series.sop_class_uid
            item.ReferencedSOPInstanceUID = uid
            if frame is not None:
                item.ReferencedFrameNumber = int(frame)
            item.PurposeOfReferenceCodeSequence = DicomSequence([_code_item(SOURCE_IMAGE_PURPOSE)])
            refs.append(item)
        ds.SourceImageSequence = DicomSequence(refs)
        ref_series = Dataset()
        ref_series.SeriesInstanceUID = series.series_uid
        ref_series.ReferencedInstanceSequence = DicomSequence([_ref(r) for r in refs])
        ds.ReferencedSeriesSequence = DicomSequence([ref_series])  # Common Instance Reference module
        if modality == "OT":
            ds.ConversionType = "WSD"  # SC Equipment: workstation
            # General Image, Type 2C: required when the IOD has no Image Plane module (SC has none: ours is extra)
            ds.PatientOrientation = [_orientation_letters(d[:, 0]), _orientation_letters(d[:, 1])]
        # geometry
        pos = volume.index_to_patient(np.array([[k, 0.0, 0.0]]))[0]
        ds.ImagePositionPatient = [_ds(round(v, 6)) for v in pos]
        ds.ImageOrientationPatient = iop
        ds.PixelSpacing = [_ds(volume.spacing_mm[1]), _ds(volume.spacing_mm[2])]
        ds.SliceThickness = _ds(thickness)
        ds.SpacingBetweenSlices = _ds(volume.spacing_mm[0])
        ds.SliceLocation = _ds(round(float(pos @ normal), 6))
        if modality == "PT":
            ds.ImageIndex = k + 1
            ds.NumberOfSlices = int(arr.shape[0])
            if volume.unit in _PET_UNITS:  # the unit of these pixels: a BQML source loaded as SUV is GML here
                ds.Units = _PET_UNITS[volume.unit]
            for kw, default in (("Units", "CNTS"), ("CountsSource", "EMISSION"),
                                ("SeriesType", ["STATIC", "IMAGE"]), ("DecayCorrection", "NONE"),
                                ("FrameReferenceTime", "0")):
                if kw not in ds:
                    setattr(ds, kw, default)
            if "SeriesDate" not in ds and date:
                ds.SeriesDate = date
            if "SeriesTime" not in ds and time_:
                ds.SeriesTime = time_
        if modality == "MR":
            _mr_acquisition(ds, source)
            if "SequenceVariant" not in ds:
                ds.SequenceVariant = "NONE"
        # pixels
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = int(arr.shape[1]), int(arr.shape[2])
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        if not (modality == "MR" and (slope, intercept) == (1.0, 0.0)):
            ds.RescaleSlope = _ds(slope)
            ds.RescaleIntercept = _ds(intercept)
            if modality in ("MR", "OT"):
                ds.RescaleType = "US"  # unspecified: MR and SC have no defined rescaled unit
        if modality == "PT":
            ds.LossyImageCompression = "00"
        ds.PixelData = pixels[k].tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        ds.set_original_encoding(False, True)
        fit_character_set(ds)
        out.append(ds)
    return out


def build_all_derived(
    series: LoadedSeries,
    derived: Mapping[str, Volume],
    uids: ResultUids,
    *,
    slab_mm: float | None = None,
    first_series_number: int = 9101,
) -> dict[str, list[Dataset]]:
    """Every volume of ``ctx.derived`` as a derived series: what ``chain.py`` calls when a profile asks for them.

    Parameters
    ----------
    series : LoadedSeries
        The source.
    derived : mapping of str to Volume
        ``Context.derived``: "mip", "minip", "avg" (thick slabs of ``slab_mm``) and "working".
    uids : ResultUids
        The run's result UIDs.
    slab_mm : float, optional
        Slab thickness of the projections (the ``synthesize`` step's ``slab_mm``), for SliceThickness. Default:
        each volume's slice spacing.
    first_series_number : int, optional
        Series numbers are given in sorted kind order from this one. Default 9101 (SEG 9001, SR 9002).

    Returns
    -------
    dict of str to list of Dataset
        Kind -> the datasets of its series.
    """
    names = {"mip": "MIP", "minip": "MinIP", "avg": "AvgIP"}
    out: dict[str, list[Dataset]] = {}
    for i, kind in enumerate(sorted(derived)):
        vol = derived[kind]
        if kind in names:
            thick = float(slab_mm) if slab_mm is not None else float(vol.spacing_mm[0])
            desc = f"dicomnode {names[kind]} {thick:g} mm slabs every {vol.spacing_mm[0]:g} mm"
        else:
            thick = None
            desc = f"dicomnode {kind} image ({uids.profile})"
        out[kind] = build_derived_series(series, vol, uids, kind=kind, description=desc,
                                         series_number=first_series_number + i, slice_thickness_mm=thick)
    return out
