"""Measurements -> a DICOM Comprehensive 3D SR holding a TID 1500 Measurement Report, built with highdicom.

:func:`build_sr` makes one TID 1411 volumetric measurement group per segment of the label map: tracking identifier
and UID (the same tracking UID as the SEG segment), finding type and category (the segment's codes), algorithm,
a ``ReferencedSegment`` to the SEG segment with the source images it lies on (or the source series, for a
segment on many images), and one numeric measurement per
:class:`~dicomnode.analysis.volume.Measurement`.

Codes come from one table, :data:`MEASUREMENT_CODES` (name -> concept) and :data:`UNIT_CODES` (unit -> UCUM
concept). A measurement with ``code=None`` whose name is not in the table gets a concept of our private coding
scheme :data:`PRIVATE_SCHEME` ("99DCMNODE"), its code value derived from the name (
short names as they are, longer ones as a hash, :func:`private_code_value`); the code meaning is the name. The SR
then declares the scheme in its Coding Scheme Identification Sequence.

Groups not tied to a segment (a scene classification, body regions, classifications, similarity measures) are TID
1501 groups (:func:`evaluation_group`); :func:`build_evaluation_sr` puts them into a report of their own (Pixelmed's
SR validator checks all groups of a report against one template: see there). ``extra_groups`` of :func:`build_sr`
still appends them to a segment report for callers that do not need Pixelmed's approval.

What the node sends (``dicomnode.jobs.chain``): the main report (:func:`build_sr` with the key measurements,
:func:`is_key_measurement`), the evaluations report (:func:`build_evaluation_sr`) and the feature reports, one per
segment (:func:`build_feature_srs`), so that each stays small: Pixelmed's DicomSRValidator, the validator of the IHE AIR
Connectathon, needs memory and time that grow faster than the number of content items. Each NUM carries its concept,
value and UCUM unit; the algorithm (TID 4019) and the device observer context are given once per group.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Mapping, Sequence

import highdicom as hd
import numpy as np
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import SegmentationStorage

from dicomnode.analysis.volume import Code, LabelMap, Measurement
from dicomnode.errors import ResultError
from dicomnode.io.load import LoadedSeries
from dicomnode.results._common import (MANUFACTURER, MODEL_NAME, SOFTWARE_VERSION, coded, fit_character_set, lo,
                                       source_datasets, warnings_without_phi)
from dicomnode.results.uids import ResultUids

__all__ = [
    "MEASUREMENT_CODES",
    "PRIVATE_SCHEME",
    "UNIT_CODES",
    "FEATURES_KIND",
    "KEY_MEASUREMENTS",
    "GroupItem",
    "add_observer_context",
    "build_evaluation_sr",
    "build_feature_srs",
    "build_sr",
    "device_observer_context",
    "evaluation_group",
    "is_key_measurement",
    "measurement_code",
    "private_code_value",
    "unit_code",
]

#: Our private coding scheme (PS3.16 8.2: designators starting "99" are private).
PRIVATE_SCHEME = "99DCMNODE"
_PRIVATE_SCHEME_ITEM = dict(
    designator=PRIVATE_SCHEME,
    name="dicomnode measurement names",
    responsible_organization="dicomnode project",
)

_MAX_CODE_VALUE_CHARS = 16
_CODE_VALUE_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")

#: Measurement name (``Measurement.name``) -> concept name. One place: add codes here.
MEASUREMENT_CODES: dict[str, Code] = {
    "volume_ml": Code("118565006", "SCT", "Volume"),
    "volume": Code("118565006", "SCT", "Volume"),
    "mean": Code("373098007", "SCT", "Mean"),
    "sd": Code("386136009", "SCT", "Standard Deviation"),
    "std": Code("386136009", "SCT", "Standard Deviation"),
    "standard_deviation": Code("386136009", "SCT", "Standard Deviation"),
    "median": Code("373099004", "SCT", "Median"),
    "min": Code("255605001", "SCT", "Minimum"),
    "max": Code("56851009", "SCT", "Maximum"),
    "diameter_mm": Code("81827009", "SCT", "Diameter"),
    "intensity statistics/minimum": Code("255605001", "SCT", "Minimum"),
    "intensity statistics/median": Code("373099004", "SCT", "Median"),
    "intensity statistics/maximum": Code("56851009", "SCT", "Maximum"),
}

#: Unit (``Measurement.unit``, UCUM or our short names) -> UCUM concept.
UNIT_CODES: dict[str, Code] = {
    "ml": Code("ml", "UCUM", "milliliter"),
    "mL": Code("ml", "UCUM", "milliliter"),
    "mm3": Code("mm3", "UCUM", "cubic millimeter"),
    "mm": Code("mm", "UCUM", "millimeter"),
    "mm2": Code("mm2", "UCUM", "square millimeter"),
    "HU": Code("[hnsf'U]", "UCUM", "Hounsfield unit"),
    "[hnsf'U]": Code("[hnsf'U]", "UCUM", "Hounsfield unit"),
    "SUV": Code("{SUVbw}g/ml", "UCUM", "Standardized Uptake Value body weight"),
    "{SUVbw}g/ml": Code("{SUVbw}g/ml", "UCUM", "Standardized Uptake Value body weight"),
    "Bq/mL": Code("Bq/ml", "UCUM", "becquerels/milliliter"),
    "1": Code("1", "UCUM", "no units"),
    "": Code("1", "UCUM", "no units"),
    "%": Code("%", "UCUM", "percent"),
    "{voxels}": Code("{voxels}", "UCUM", "voxels"),
}

#: Measurements of the main report besides the plain ones (names without "/": volume_ml, mean, sd, probability,
#: diameter_mm...): the intensity range. The full feature set goes into the feature reports (:func:`build_feature_srs`).
KEY_MEASUREMENTS = frozenset({"intensity statistics/minimum", "intensity statistics/median",
                              "intensity statistics/maximum"})
#: Result kind (UIDs) of the feature reports.
FEATURES_KIND = "sr_features"

#: Procedure reported, by source modality.
_PROCEDURES: dict[str, Code] = {
    "CT": Code("25045-6", "LN", "CT unspecified body region"),
    "MR": Code("25056-3", "LN", "MRI unspecified body region"),
    "PT": Code("44136-0", "LN", "PET unspecified body region"),
    "NM": Code("49118-3", "LN", "NM unspecified body region"),
}
_PROCEDURE_OTHER = Code("363679005", "SCT", "Imaging")

GroupItem = (
    hd.sr.MeasurementsAndQualitativeEvaluations
    | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
)


def measurement_code(m: Measurement) -> hd.sr.CodedConcept:
    """The concept name of a measurement: its own code, the table's, or a private one made from its name."""
    if m.code is not None:
        return coded(m.code)
    if m.name in MEASUREMENT_CODES:
        return coded(MEASUREMENT_CODES[m.name])
    if not m.name:
        raise ResultError("a measurement without a name cannot be coded; give it a name or a code")
    return hd.sr.CodedConcept(value=private_code_value(m.name), scheme_designator=PRIVATE_SCHEME, meaning=lo(m.name))


def private_code_value(name: str) -> str:
    """The code value of ``name`` in :data:`PRIVATE_SCHEME`: the name itself when it fits a Code Value (at most 16
    characters of letters, digits, ``_ . -``), else ``"H"`` and 15 hex digits of its SHA-256 (stable, and short:
    highdicom cannot read Long Code Values back inside a TID 1411 group)."""
    if len(name) <= _MAX_CODE_VALUE_CHARS and _CODE_VALUE_RE.match(name):
        return name
    return "H" + hashlib.sha256(name.encode("utf-8")).hexdigest()[: _MAX_CODE_VALUE_CHARS - 1].upper()


def unit_code(unit: str) -> hd.sr.CodedConcept:
    """The UCUM concept of a unit; a unit outside the table is taken as UCUM as written."""
    code = UNIT_CODES.get(unit)
    return coded(code) if code is not None else hd.sr.CodedConcept(value=unit, scheme_designator="UCUM",
                                                                     meaning=lo(unit))


def _measurements(items: Sequence[Measurement]) -> list[hd.sr.Measurement]:
    """NUM items; their algorithm is the group's (TID 4019 once per group: repeating it in each NUM tripled the
    content items, and the SR validators' memory grows faster than the number of items)."""
    out = []
    for m in items:
        if not np.isfinite(m.value):
            raise ResultError(f"measurement {m.name!r} is {m.value}: an SR holds finite numbers only; leave it out")
        out.append(hd.sr.Measurement(name=measurement_code(m), value=float(m.value), unit=unit_code(m.unit)))
    return out


def evaluation_group(
    uids: ResultUids,
    label: str,
    finding_type: Code,
    *,
    evaluations: Sequence[tuple[Code, Code]] = (),
    measurements: Sequence[Measurement] = (),
    algorithm: str = "dicomnode",
    software_version: str = SOFTWARE_VERSION,
    finding_category: Code | None = None,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """A TID 1501 group not tied to a segment, for ``build_sr(extra_groups=...)``.

    For a finding with a probability, a scene classification ("scene" = "chest", probability 0.93), or a
    similarity measure.

    Parameters
    ----------
    uids : ResultUids
        Gives the tracking UID, ``uids.tracking_uid(label)``.
    label : str
        Tracking identifier, e.g. "scene".
    finding_type : Code
        What the group is about.
    evaluations : sequence of (Code, Code)
        Qualitative evaluations, (concept name, coded value) pairs.
    measurements : sequence of Measurement
        Numeric measurements (e.g. ``Measurement("probability", 0.93, "1")``).
    algorithm : str
        Name of the step that made it.
    software_version : str
        Version of the algorithm.
    finding_category : Code, optional
        Category of the finding.

    Returns
    -------
    highdicom.sr.MeasurementsAndQualitativeEvaluations
    """
    algo = hd.sr.AlgorithmIdentification(name=lo(algorithm), version=lo(software_version))
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=uids.tracking_uid(label), identifier=label),
        finding_type=coded(finding_type),
        finding_category=coded(finding_category) if finding_category is not None else None,
        algorithm_id=algo,
        measurements=_measurements(measurements) or None,
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(coded(n), coded(v)) for n, v in evaluations] or None,
    )


def _source_images(series: LoadedSeries, mask: np.ndarray) -> list[hd.sr.SourceImageForSegmentation]:
    """The source images (and frames) on which a mask has voxels, in z order."""
    zs = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    by_instance: dict[str, list[int]] = {}
    for z in zs:
        uid, frame = series.frames[int(z)]
        frames = by_instance.setdefault(uid, [])
        if frame is not None:
            frames.append(frame)
    return [
        hd.sr.SourceImageForSegmentation(
            referenced_sop_class_uid=series.sop_class_uid,
            referenced_sop_instance_uid=uid,
            referenced_frame_numbers=sorted(frames) or None,
        )
        for uid, frames in by_instance.items()
    ]


def build_sr(
    series: LoadedSeries,
    seg: Dataset,
    labels: LabelMap,
    measurements: Mapping[int, Sequence[Measurement]],
    uids: ResultUids,
    *,
    series_number: int = 9002,
    instance_number: int = 1,
    software_version: str = SOFTWARE_VERSION,
    series_description: str | None = None,
    extra_groups: Sequence[GroupItem] = (),
    max_source_images: int = 32,
    kind: str = "sr",
) -> hd.sr.Comprehensive3DSR:
    """A TID 1500 measurement report of the segments of ``seg``, as a Comprehensive 3D SR.

    Parameters
    ----------
    series : LoadedSeries
        The source series (referenced as evidence; never modified).
    seg : pydicom.Dataset
        The SEG made by :func:`dicomnode.results.seg.build_seg` from ``labels``; each group references its segment.
    labels : LabelMap
        The segments (numbers, labels and codes as in the SEG).
    measurements : mapping of int to sequence of Measurement
        Segment number -> its measurements. Segments without an entry get a group without measurements.
    uids : ResultUids
        Gives the SR's Series and SOP Instance UIDs and the tracking UIDs (shared with the SEG).
    series_number : int, optional
        Series Number of the SR. Default 9002.
    instance_number : int, optional
        Instance Number. Default 1.
    software_version : str, optional
        Version of the algorithms. Default: the installed dicomnode version.
    series_description : str, optional
        Default "dicomnode SR <profile> <version>".
    extra_groups : sequence of highdicom measurement groups, optional
        Further TID 1501/1410/1411 groups (see :func:`evaluation_group`), appended after the segment groups.
    max_source_images : int, optional
        A segment on at most this many source images references each of them ("Source image for segmentation");
        a larger (or empty) one references the source series ("Source series for segmentation"): the SEG's frames
        name their source images already, and 300 image references per segment cost ~0.1 s each to build.
        Default 32.
    kind : str, optional
        Result kind of the UIDs: Series ``uids.series_uid(kind)``, SOP Instance ``uids.instance_uid(kind,
        instance_number)``. Default "sr" (the main report); :data:`FEATURES_KIND` for the feature reports.

    Returns
    -------
    highdicom.sr.Comprehensive3DSR
        A pydicom Dataset, ready for ``save_as``. Every measurement group carries its algorithm (TID 4019) and the
        device observer context (TID 1001/1004) of the document.

    Raises
    ------
    ResultError
        When ``seg`` is not a Segmentation, lacks a segment of ``labels``, ``measurements`` names a segment that does
        not exist, a value is not finite, or highdicom refuses the content.
    """
    if str(seg.get("SOPClassUID", "")) != SegmentationStorage:
        raise ResultError(f"series {series.series_uid}: build_sr needs the SEG dataset, got SOP class "
                          f"{seg.get('SOPClassUID', '?')}")
    seg_numbers = {int(item.SegmentNumber) for item in seg.SegmentSequence}
    label_numbers = {s.info.number for s in labels.segments}
    missing = sorted(label_numbers - seg_numbers)
    if missing:
        raise ResultError(f"series {series.series_uid}: segments {missing} of the label map are not in the SEG "
                          f"{seg.SOPInstanceUID}: build the SR from the label map that built the SEG")
    unknown = sorted(set(measurements) - label_numbers)
    if unknown:
        raise ResultError(f"series {series.series_uid}: measurements for segments {unknown} that the label map "
                          "does not have")

    source_series = hd.sr.SourceSeriesForSegmentation(series.series_uid)
    private_used = False
    groups: list[GroupItem] = []
    for s in sorted(labels.segments, key=lambda s: s.info.number):
        algo = hd.sr.AlgorithmIdentification(name=lo(s.info.algorithm), version=lo(software_version))
        images = _source_images(series, s.mask)
        if len(images) > max_source_images:
            images = []  # reference the series: the SEG's frames name each source image already
        referenced = hd.sr.ReferencedSegment(
            sop_class_uid=seg.SOPClassUID,
            sop_instance_uid=seg.SOPInstanceUID,
            segment_number=s.info.number,
            source_images=images or None,
            source_series=None if images else source_series,
        )
        items = list(measurements.get(s.info.number, ()))
        private_used |= any(measurement_code(m).scheme_designator == PRIVATE_SCHEME for m in items)
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=uids.tracking_uid(s.info.label),
                                                         identifier=s.info.label),
            referenced_segment=referenced,
            finding_type=coded(s.info.type),
            finding_category=coded(s.info.category),
            algorithm_id=algo,
            measurements=_measurements(items) or None,
        ))
    groups.extend(extra_groups)
    private_used |= any(_uses_scheme(g, PRIVATE_SCHEME) for g in extra_groups)

    return _report_sr(series, [*source_datasets(series), seg], groups, uids, kind=kind,
                      series_number=series_number, instance_number=instance_number,
                      software_version=software_version, series_description=series_description,
                      private_used=private_used)


def build_evaluation_sr(
    series: LoadedSeries,
    groups: Sequence[GroupItem],
    uids: ResultUids,
    *,
    series_number: int = 9002,
    instance_number: int = 2,
    software_version: str = SOFTWARE_VERSION,
    series_description: str | None = None,
) -> hd.sr.Comprehensive3DSR:
    """A TID 1500 report of the results that have no region (scene, body regions, classifications, similarities):
    TID 1501 groups only (see :func:`evaluation_group`, :func:`dicomnode.results.sr_evaluations.evaluation_groups`).

    Why apart from the main report: Pixelmed's DicomSRValidator (2022, the IHE AIR Connectathon's) picks the
    template of *all* groups of the Imaging Measurements container at once: as soon as one group references a
    segment, every group is checked as TID 1411, and a TID 1501 group fails for want of a region. A report of TID
    1501 groups only is checked as TID 1501. It is instance 2 of the main report's series ("dicomnode SR").

    Parameters
    ----------
    series : LoadedSeries
        The source series (its images are the evidence).
    groups : sequence of highdicom.sr.MeasurementsAndQualitativeEvaluations
        The TID 1501 groups; each gets the device observer context.
    uids : ResultUids
        Series ``uids.series_uid("sr")``, instance ``uids.instance_uid("sr", instance_number)``.
    series_number, instance_number : int, optional
        Default 9002 (the main report's series) and 2.
    software_version : str, optional
        Version of the algorithms.
    series_description : str, optional
        Default "dicomnode SR <profile> <version>".

    Returns
    -------
    highdicom.sr.Comprehensive3DSR

    Raises
    ------
    ResultError
        When ``groups`` is empty or holds a group tied to a region, or highdicom refuses the content.
    """
    if not groups:
        raise ResultError(f"series {series.series_uid}: no evaluation group: there is nothing to report")
    if any(not isinstance(g, hd.sr.MeasurementsAndQualitativeEvaluations) for g in groups):
        raise ResultError(f"series {series.series_uid}: the evaluation report holds TID 1501 groups only; put "
                          "groups with a region into build_sr")
    private_used = any(_uses_scheme(g, PRIVATE_SCHEME) for g in groups)
    return _report_sr(series, source_datasets(series), list(groups), uids, kind="sr",
                      series_number=series_number, instance_number=instance_number,
                      software_version=software_version, series_description=series_description,
                      private_used=private_used)


def _report_sr(series: LoadedSeries, evidence: Sequence[Dataset], groups: Sequence[GroupItem], uids: ResultUids, *,
               kind: str, series_number: int, instance_number: int, software_version: str,
               series_description: str | None, private_used: bool) -> hd.sr.Comprehensive3DSR:
    """The TID 1500 document around ``groups``: device observer context (document and every group), procedure,
    private coding scheme declared when used."""
    context = device_observer_context(uids)
    for g in groups:
        add_observer_context(g, context)
    try:
        report = hd.sr.MeasurementReport(
            observation_context=context,
            procedure_reported=coded(_PROCEDURES.get(series.modality, _PROCEDURE_OTHER)),
            imaging_measurements=groups,
            title=codes.cid7021.ImagingMeasurementReport,
        )
        with warnings_without_phi(series.headers[0], series_uid=series.series_uid, what="SR"):
            sr = hd.sr.Comprehensive3DSR(
                evidence=list(evidence),
                content=report,
                series_instance_uid=uids.series_uid(kind),
                series_number=series_number,
                sop_instance_uid=uids.instance_uid(kind, instance_number),
                instance_number=instance_number,
                manufacturer=MANUFACTURER,
                is_complete=True,
                coding_schemes=[CodingSchemeIdentificationItem(**_PRIVATE_SCHEME_ITEM)] if private_used else None,
            )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise ResultError(
            f"series {series.series_uid}: highdicom refused to build the SR: {type(exc).__name__}: {exc}"
        ) from exc
    sr.SeriesDescription = lo(series_description or f"dicomnode SR {uids.profile} {uids.profile_version}")
    sr.SoftwareVersions = lo(software_version)
    fit_character_set(sr)
    return sr


def device_observer_context(uids: ResultUids) -> hd.sr.ObservationContext:
    """The device observer context (TID 1001 with TID 1004) of our reports: the node as the observing device."""
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=uids.uid("observer.device"),
            name=MODEL_NAME,
            manufacturer_name=MANUFACTURER,
            model_name=MODEL_NAME,
        ),
    )
    return hd.sr.ObservationContext(observer_device_context=observer)


def add_observer_context(group: GroupItem, context: hd.sr.ObservationContext) -> None:
    """Put the device observer context at the head of a measurement group (IHE AIR: every group says which device
    observed it). highdicom's group classes have no argument for it; the items are HAS OBS CONTEXT children."""
    items = list(group[0].ContentSequence)
    if any(item.name == codes.DCM.ObserverType for item in items):
        return
    group[0].ContentSequence = [*copy.deepcopy(list(context)), *items]


def is_key_measurement(m: Measurement) -> bool:
    """Whether a measurement goes into the main report (the others go into the feature reports only)."""
    return m.name in KEY_MEASUREMENTS or "/" not in m.name


def build_feature_srs(
    series: LoadedSeries,
    seg: Dataset,
    labels: LabelMap,
    measurements: Mapping[int, Sequence[Measurement]],
    uids: ResultUids,
    *,
    series_number: int = 9004,
    software_version: str = SOFTWARE_VERSION,
    series_description: str | None = None,
) -> list[hd.sr.Comprehensive3DSR]:
    """The full feature set as a series of small TID 1500 reports, one instance per segment that has measurements.

    Why one report per segment: Pixelmed's DicomSRValidator (the IHE AIR Connectathon's) needs about 1.2 GB of heap
    and a minute of CPU for one segment's ~80 IBSI features, and its needs grow faster than the number of content
    items (a 5-segment report of 375 features ran out of 6 GB after 11 minutes); viewers slow down the same way. A
    report per segment keeps each one small, and they share one series ("dicomnode IBSI features") beside the main
    report, which holds the findings, the scene and the key measurements of every segment.

    Parameters
    ----------
    series, seg, labels, measurements, uids
        As for :func:`build_sr`.
    series_number : int, optional
        Series Number of the feature reports. Default 9004 (the main SR is 9002, a radiomics job's SR 9003).
    software_version : str, optional
        Version of the algorithms.
    series_description : str, optional
        Default "dicomnode features <profile> <version>".

    Returns
    -------
    list of highdicom.sr.Comprehensive3DSR
        Instance ``n`` (1-based, segment order) has UIDs ``uids.series_uid(FEATURES_KIND)`` and
        ``uids.instance_uid(FEATURES_KIND, n)``.
    """
    description = series_description or f"dicomnode features {uids.profile} {uids.profile_version}"
    out = []
    for s in sorted(labels.segments, key=lambda s: s.info.number):
        items = list(measurements.get(s.info.number, ()))
        if not items:
            continue
        out.append(build_sr(series, seg, LabelMap(segments=(s,)), {s.info.number: items}, uids,
                            series_number=series_number, instance_number=len(out) + 1,
                            software_version=software_version, series_description=description,
                            kind=FEATURES_KIND, max_source_images=0))
    return out


def _uses_scheme(content: Dataset | Sequence[Dataset], scheme: str) -> bool:
    """Whether a content tree uses a coding scheme anywhere (for the Coding Scheme Identification Sequence)."""
    if not isinstance(content, Dataset):  # a content sequence: a list of items
        return any(_uses_scheme(item, scheme) for item in content)
    for elem in content:
        if elem.keyword == "CodingSchemeDesignator" and elem.value == scheme:
            return True
        if elem.VR == "SQ" and any(_uses_scheme(item, scheme) for item in elem.value):
            return True
    return False
