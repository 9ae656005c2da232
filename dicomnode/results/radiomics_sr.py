"""Radiomics features of regions -> a TID 1500 Measurement Report (Comprehensive 3D SR), built with highdicom.

One TID 1411 volumetric measurement group per region: tracking identifier (the ROI name / segment label) and a
deterministic tracking UID, the algorithm ("dicomnode radiomics", with the settings' name as its parameter), a
reference to the region and one numeric measurement per finite feature value.

* A region from a **SEG** is referenced as "Referenced Segment" (SEG SOP instance + segment number) with the source
  series ("Source series for segmentation").
* A region from an **RTSTRUCT** is given by its contours as a "Volume Surface" (TID 1411 row 10: SCOORD3D
  POLYGONs in the structure set's frame of reference, with the source series), the RT Structure Set listed as
  evidence; the group's tracking identifier is the ROI name and its ROI number is in the tracking UID's key. Why not
  the newer "Region In Space" (DCM 130488, a COMPOSITE reference to the RTSTRUCT): Pixelmed's DicomSRValidator
  (2022) does not know that row and finds no region reference at all (three "Missing conditional content item"
  errors); the rows are exclusive, so one of them only. An ROI without two closed planar contours (points, open
  contours, one slice), which a Volume Surface cannot hold, keeps "Region In Space" with its "Referenced Region of
  Interest Identifier" (the ROI Number); highdicom cannot build that row, so such a group is built with a segment
  reference that is then swapped for the COMPOSITE item.

Every feature is a measurement named in our private scheme ``99DCMNODE`` (:func:`feature_code`): the code value is a
stable hash of ``"<family>: <feature> (<aggregation>)"`` (:func:`~dicomnode.results.sr.private_code_value`), the
code meaning that text (cut to 64 characters). Units are UCUM: mm3, mm2, mm, /mm, [hnsf'U] (HU) and its square,
{SUVbw}g/ml, 1. Non-finite values (a texture feature undefined for the region) are left out: an SR holds numbers.
The source images and the RTSTRUCT / SEG are listed as evidence.

Features of a filtered image (settings with an IBSI-2 ``[filter]``) carry the filter as the measurement's "Measurement
Method" modifier (:func:`filter_method`): a ``99DCMNODE`` code whose value hashes the filter's kind and every
parameter and whose meaning spells them (cut to 64 characters); the algorithm's parameters list each one in full
(``filter.kind=gabor``, ``filter.gabor_sigma_mm=5.0``, ...). Two filtered values of one feature differ by it.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sr import CodedConcept, CompositeContentItem, RelationshipTypeValues, TextContentItem
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import RTStructureSetStorage, SegmentationStorage

from dicomnode.analysis.features.base import FeatureValue
from dicomnode.analysis.radiomics import RadiomicsSettings, feature_unit, image_unit_ucum
from dicomnode.errors import ResultError
from dicomnode.io.load import LoadedSeries
from dicomnode.io.roi import Region, RegionKind
from dicomnode.results._common import (MANUFACTURER, SOFTWARE_VERSION, fit_character_set, lo, source_datasets,
                                       warnings_without_phi)
from dicomnode.results.sr import (
    PRIVATE_SCHEME,
    add_observer_context,
    device_observer_context,
    private_code_value,
    unit_code,
)
from dicomnode.results.uids import ResultUids

__all__ = ["REFERENCED_ROI_IDENTIFIER", "REGION_IN_SPACE", "build_radiomics_sr", "feature_code", "feature_name", "filter_method",
           "image_unit_ucum"]

#: TID 1411 row "Region In Space": a COMPOSITE reference to an object that defines the region (an RT Structure Set).
REGION_IN_SPACE = CodedConcept("130488", "DCM", "Region in Space")
#: TID 1411 row 12c, under "Region In Space": which region of the referenced object (the RTSTRUCT's ROI Number).
REFERENCED_ROI_IDENTIFIER = CodedConcept("130489", "DCM", "Referenced Region of Interest Identifier")
_PROCEDURES = {
    "CT": CodedConcept("25045-6", "LN", "CT unspecified body region"),
    "MR": CodedConcept("25056-3", "LN", "MRI unspecified body region"),
    "PT": CodedConcept("44136-0", "LN", "PET unspecified body region"),
}
_PROCEDURE_OTHER = CodedConcept("363679005", "SCT", "Imaging")


def feature_name(f: FeatureValue) -> str:
    """``"<family>: <feature>"`` plus ``" (<aggregation>)"`` for texture, e.g. ``"GLCM: contrast (3D, merged)"``."""
    return f"{f.family}: {f.feature}" + (f" ({f.aggregation})" if f.aggregation else "")


def feature_code(f: FeatureValue) -> hd.sr.CodedConcept:
    """The concept name of a feature in our private scheme.

    The code value is :func:`~dicomnode.results.sr.private_code_value` of :func:`feature_name` (stable); the meaning
    is that name in Latin-1 (the typographic apostrophe of "Moran\u2019s I" becomes "'"; :func:`lo`), cut to 64
    characters."""
    name = feature_name(f)
    return hd.sr.CodedConcept(value=private_code_value(name), scheme_designator=PRIVATE_SCHEME,
                              meaning=lo(name))


def filter_method(settings: RadiomicsSettings | None) -> hd.sr.CodedConcept | None:
    """The "Measurement Method" of features of a filtered image: the filter, kind and parameters; None unfiltered."""
    spec = settings.filter if settings is not None else None
    if spec is None:
        return None
    return hd.sr.CodedConcept(value=private_code_value(f"filter: {spec.label}"), scheme_designator=PRIVATE_SCHEME,
                              meaning=lo(spec.label))


def build_radiomics_sr(
    series: LoadedSeries,
    regions: Sequence[Region],
    features: Sequence[Sequence[FeatureValue]],
    uids: ResultUids,
    *,
    settings: RadiomicsSettings | None = None,
    series_number: int = 9003,
    instance_number: int = 1,
    software_version: str = SOFTWARE_VERSION,
    series_description: str | None = None,
) -> hd.sr.Comprehensive3DSR:
    """A TID 1500 measurement report of the radiomics features of one or more regions of a series.

    Parameters
    ----------
    series : LoadedSeries
        The image series the features were computed on (referenced as evidence).
    regions : sequence of Region
        The regions (from :func:`dicomnode.io.roi.read_region`, or a Region made for a SEG the node built itself):
        label, number, kind and the RTSTRUCT / SEG dataset that defines it.
    features : sequence of sequence of FeatureValue
        Per region, its feature values (from :func:`dicomnode.analysis.radiomics.extract_features`).
    uids : ResultUids
        Gives the SR's Series and SOP Instance UIDs and the tracking UIDs.
    settings : RadiomicsSettings, optional
        The settings used: named in the algorithm identification, and they decide the unit of the IVH intensities.
    series_number, instance_number : int, optional
        Default 9003 and 1.
    software_version : str, optional
        Default: the installed dicomnode version.
    series_description : str, optional
        Default "dicomnode radiomics <settings name>".

    Returns
    -------
    highdicom.sr.Comprehensive3DSR

    Raises
    ------
    ResultError
        When regions and features differ in length, a region's dataset is neither an RTSTRUCT nor a SEG, or
        highdicom refuses the content.
    """
    if len(regions) != len(features):
        raise ResultError(f"series {series.series_uid}: {len(regions)} regions but {len(features)} feature lists; "
                          "give one feature list per region")
    settings_name = settings.name if settings is not None else "unspecified"
    filter_params = [] if settings is None or settings.filter is None else [
        f"filter.{k}={v}" for k, v in {"kind": settings.filter.kind.value, **settings.filter.parameters()}.items()]
    algo = hd.sr.AlgorithmIdentification(name="dicomnode radiomics", version=lo(software_version),
                                          parameters=[lo(f"settings={settings_name}"), *filter_params])
    method = filter_method(settings)
    image_unit = image_unit_ucum(series.volume.unit)
    source_series = hd.sr.SourceSeriesForSegmentation(series.series_uid)
    groups = []
    evidence: dict[str, Dataset] = {}
    try:
        for region, values in zip(regions, features):
            ds = region.dataset
            sop_class = str(ds.SOPClassUID)
            if sop_class not in (RTStructureSetStorage, SegmentationStorage):
                raise ResultError(f"region {region.label!r}: its dataset is SOP class {sop_class}, neither an "
                                  "RTSTRUCT nor a SEG: the SR cannot reference it")
            evidence.setdefault(str(ds.SOPInstanceUID), _evidence(ds))
            measurements = [
                hd.sr.Measurement(name=feature_code(f), value=float(f.value),  # algorithm: the group's (TID 4019)
                                  unit=unit_code(feature_unit(f, image_unit, settings)), method=method)
                for f in values if np.isfinite(f.value)
            ]
            key = f"radiomics.{region.kind}.{ds.SOPInstanceUID}.{region.number}"
            is_rtstruct = region.kind == RegionKind.RTSTRUCT or sop_class == RTStructureSetStorage
            surface = _volume_surface(ds, int(region.number), series, source_series) if is_rtstruct else None
            reference = ({"referenced_volume_surface": surface} if surface is not None else
                         {"referenced_segment": hd.sr.ReferencedSegment(
                             sop_class_uid=SegmentationStorage, sop_instance_uid=str(ds.SOPInstanceUID),
                             segment_number=int(region.number), source_series=source_series)})
            group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=uids.tracking_uid(key), identifier=lo(region.label)),
                algorithm_id=algo,
                measurements=measurements or None,
                **reference,
            )
            if is_rtstruct and surface is None:
                _reference_rtstruct(group, ds, int(region.number))
            groups.append(group)
        context = device_observer_context(uids)
        for group in groups:
            add_observer_context(group, context)  # IHE AIR: the observing device in every group
        report = hd.sr.MeasurementReport(
            observation_context=context,
            procedure_reported=_PROCEDURES.get(series.modality, _PROCEDURE_OTHER),
            imaging_measurements=groups,
            title=codes.cid7021.ImagingMeasurementReport,
        )
        with warnings_without_phi(series.headers[0], series_uid=series.series_uid, what="radiomics SR"):
            sr = hd.sr.Comprehensive3DSR(
                evidence=[*source_datasets(series), *evidence.values()],
                content=report,
                series_instance_uid=uids.sr_series_uid,
                series_number=series_number,
                sop_instance_uid=uids.sr_instance_uid,
                instance_number=instance_number,
                manufacturer=MANUFACTURER,
                is_complete=True,
                coding_schemes=[CodingSchemeIdentificationItem(
                    designator=PRIVATE_SCHEME, name="dicomnode measurement names",
                    responsible_organization="dicomnode project")],
            )
    except ResultError:
        raise
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise ResultError(f"series {series.series_uid}: highdicom refused to build the radiomics SR: "
                          f"{type(exc).__name__}: {exc}") from exc
    sr.SeriesDescription = lo(series_description or f"dicomnode radiomics {settings_name}")
    sr.SoftwareVersions = lo(software_version)
    fit_character_set(sr)
    return sr


def _volume_surface(ds: Dataset, roi_number: int, series: LoadedSeries,
                    source_series: hd.sr.SourceSeriesForSegmentation) -> hd.sr.VolumeSurface | None:
    """The ROI's closed planar contours as a TID 1411 "Volume Surface" (SCOORD3D POLYGONs in the patient
    coordinates of the structure set's frame of reference, each closed by repeating its first point); None when
    the ROI has fewer than two such contours (a POLYGON surface needs two or more)."""
    contours = next((item.get("ContourSequence") or [] for item in ds.get("ROIContourSequence") or []
                     if int(item.get("ReferencedROINumber", -1)) == roi_number), [])
    polygons = []
    for contour in contours:
        if str(contour.get("ContourGeometricType", "")).upper() != "CLOSED_PLANAR":
            continue
        points = np.asarray([float(v) for v in contour.get("ContourData") or []], dtype=np.float64)
        if points.size < 9 or points.size % 3 or not np.all(np.isfinite(points)):
            continue
        points = points.reshape(-1, 3)
        if not np.array_equal(points[0], points[-1]):
            points = np.vstack([points, points[:1]])
        polygons.append(points)
    if len(polygons) < 2:
        return None
    roi = next((item for item in ds.get("StructureSetROISequence") or []
                if int(item.get("ROINumber", -1)) == roi_number), None)
    frame_of_reference = str((roi.get("ReferencedFrameOfReferenceUID") if roi is not None else None)
                             or series.headers[0].get("FrameOfReferenceUID", ""))
    return hd.sr.VolumeSurface(graphic_type=hd.sr.GraphicTypeValues3D.POLYGON, graphic_data=polygons,
                               frame_of_reference_uid=frame_of_reference, source_series=source_series)


def _reference_rtstruct(group: hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations, ds: Dataset,
                        roi_number: int) -> None:
    """Swap the group's segment reference (and its source series item) for "Region In Space" -> the RTSTRUCT, with
    the ROI Number as its "Referenced Region of Interest Identifier" (TID 1411 rows 12b, 12c): for an ROI without two
    closed planar contours (points, open contours, a single slice), which a Volume Surface cannot hold."""
    items = group[0].ContentSequence
    segment = codes.DCM.ReferencedSegment
    source = codes.DCM.SourceSeriesForSegmentation
    position = next(i for i, item in enumerate(items) if item.name == segment)
    composite = CompositeContentItem(
        name=REGION_IN_SPACE,
        referenced_sop_class_uid=RTStructureSetStorage,
        referenced_sop_instance_uid=str(ds.SOPInstanceUID),
        relationship_type=RelationshipTypeValues.CONTAINS,
    )
    composite.ContentSequence = [TextContentItem(name=REFERENCED_ROI_IDENTIFIER, value=str(roi_number),
                                                 relationship_type=RelationshipTypeValues.HAS_PROPERTIES)]
    kept = [item for item in items if item.name not in (segment, source)]
    kept.insert(position, composite)
    group[0].ContentSequence = kept


def _evidence(ds: Dataset) -> Dataset:
    """The identifying part of an RTSTRUCT / SEG, enough for the evidence sequences (no contours, no pixels)."""
    out = Dataset()
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID",
                    "PatientName", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "AccessionNumber",
                    "StudyID", "ReferringPhysicianName", "Modality"):
        if keyword in ds:
            setattr(out, keyword, ds.data_element(keyword).value)
    return out
