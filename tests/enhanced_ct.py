"""Enhanced (multi-frame) CT fixtures made from a real classic CT: ../shared/data has no Enhanced CT series.

:func:`legacy_enhanced_ct` is highdicom's Legacy Converted Enhanced CT Image of the classic series (what a PACS or
highdicom.legacy makes of it: the classic acquisition attributes KVP, Convolution Kernel... in the Unassigned Shared
Converted Attributes). :func:`enhanced_ct` is a copy of it in the form an Enhanced CT scanner writes: those
attributes moved into the CT X-Ray Details, CT Reconstruction and CT Acquisition Details functional group macros
(PS3.3 C.8.15.3), shared or per frame, SOP Class Enhanced CT Image Storage; or with none of them anywhere (a source
that truly has none). Nothing is made by hand but the move of those attributes.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import highdicom as hd
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import EnhancedCTImageStorage

__all__ = ["CT_MACROS", "enhanced_ct", "legacy_enhanced_ct"]

#: Attribute -> the Enhanced CT functional group macro that holds it.
CT_MACROS = {
    "KVP": "CTXRayDetailsSequence",
    "ConvolutionKernel": "CTReconstructionSequence",
    "ReconstructionDiameter": "CTReconstructionSequence",
    "DataCollectionDiameter": "CTAcquisitionDetailsSequence",
    "GantryDetectorTilt": "CTAcquisitionDetailsSequence",
}


def legacy_enhanced_ct(folder: Path, out: Path) -> Path:
    """highdicom's Legacy Converted Enhanced CT Image of the classic CT series in ``folder``, written to ``out``."""
    from highdicom.legacy import LegacyConvertedEnhancedCTImage

    datasets = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # highdicom's notes on the source's single-component Patient's Name
        image = LegacyConvertedEnhancedCTImage(
            datasets, series_instance_uid=hd.UID(), series_number=datasets[0].get("SeriesNumber") or 1,
            sop_instance_uid=hd.UID(), instance_number=1)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save_as(out, enforce_file_format=True)
    return out


def enhanced_ct(legacy: Path, out: Path, *, where: str) -> Path:
    """A copy of a Legacy Converted Enhanced CT with its acquisition attributes as an Enhanced CT writes them.

    ``where``: "shared" (the CT macros in the Shared Functional Groups), "per-frame" (in every frame's functional
    groups) or "none" (the attributes removed everywhere)."""
    ds = pydicom.dcmread(legacy)
    unassigned = ds.SharedFunctionalGroupsSequence[0].UnassignedSharedConvertedAttributesSequence[0]
    values = {kw: copy.deepcopy(unassigned[kw]) for kw in CT_MACROS if kw in unassigned}
    for kw in CT_MACROS:
        unassigned.pop(kw, None)
    if where != "none":
        targets = (ds.SharedFunctionalGroupsSequence if where == "shared" else ds.PerFrameFunctionalGroupsSequence)
        for groups in targets:
            for kw, elem in values.items():
                macro = CT_MACROS[kw]
                if macro not in groups:
                    setattr(groups, macro, DicomSequence([Dataset()]))
                groups[macro].value[0][kw] = copy.deepcopy(elem)
    ds.SOPClassUID = EnhancedCTImageStorage
    ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out, enforce_file_format=True)
    return out
