"""What `dicomnode process` makes from every series of ../shared/data it accepts passes dciodvfy and Pixelmed's
validators with 0 errors, and keeps the source's identities.

One test per series (so that pytest-xdist spreads them over its workers and each stays within the test timeout):
`dicomnode process` on the series, then

* dciodvfy on every file made (SEG, main SR, evaluations SR, feature SRs, every derived image);
* Pixelmed's DicomInstanceValidator on the SEG and on the first image of every derived series;
* Patient ID, Patient's Name, Study Instance UID and Specific Character Set-decoded text as in the source, on every
  file made;
* Pixelmed's DicomSRValidator, the heavy one (about 1-2 GB of heap and a minute or more per report on this
  machine), on a few only (:data:`SR_CHECKED`): the main SR of a CT, an MR and a PET, the evaluations SR of the
  whole-body PET (its body regions) and one feature SR. The other reports share their builders and templates.

The series: the sts CT, MR T1 and PET of three patients; the whole-body PET (Bq/ml, GE) and thigh T2 MR (Siemens);
the chest CT with both kernels (Siemens); the tilted head CT (GE); the head MR; the Enhanced MR multi-frames of
Siemens and Philips and the Philips classic one; the abdomen T2 and ADC MR (Toshiba); the breast DCE MR with three
phases (GE). The SEG and SR builders are the ones the node's jobs use (dicomnode.jobs.chain.run_chain, called by
`process`).
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from dicom_validators import assert_outputs_valid, assert_valid, process, sr_validator
from helpers import SHARED_DATA

pytestmark = pytest.mark.slow

SERIES = {
    "sts_001_ct": SHARED_DATA / "sts" / "STS_001" / "CT",
    "sts_001_mr": SHARED_DATA / "sts" / "STS_001" / "MR_T1",
    "sts_001_pet": SHARED_DATA / "sts" / "STS_001" / "PET",
    "sts_002_ct": SHARED_DATA / "sts" / "STS_002" / "CT",
    "sts_002_mr": SHARED_DATA / "sts" / "STS_002" / "MR_T1",
    "sts_002_pet": SHARED_DATA / "sts" / "STS_002" / "PET",
    "sts_003_ct": SHARED_DATA / "sts" / "STS_003" / "CT",
    "sts_003_mr": SHARED_DATA / "sts" / "STS_003" / "MR_T1",
    "sts_003_pet": SHARED_DATA / "sts" / "STS_003" / "PET",
    "wholebody_pet": SHARED_DATA / "wholebody-pet-mr" / "PET",
    "wholebody_mr_t2": SHARED_DATA / "wholebody-pet-mr" / "MR_T2",
    "ct_chest_b40f": SHARED_DATA / "chest-ct" / "A0002_B40f",
    "ct_chest_b70f": SHARED_DATA / "chest-ct" / "A0002_B70f",
    "ct_head_tilted": SHARED_DATA / "head-ct" / "CT",
    "mr_head": SHARED_DATA / "head-mr" / "T1_sag",
    "mr_enhanced_siemens": SHARED_DATA / "enhanced-mr" / "siemens_xa30_T1_sag",
    "mr_enhanced_philips": SHARED_DATA / "enhanced-mr" / "philips_T1W_FFE_CS2_enhanced",
    "mr_classic_philips": SHARED_DATA / "enhanced-mr" / "philips_T1W_FFE_CS4_classic",
    "mr_abdomen_t2": SHARED_DATA / "abdomen-mr" / "T2_ax",
    "mr_abdomen_adc": SHARED_DATA / "abdomen-mr" / "ADC",
    "mr_breast_phases": SHARED_DATA / "breast-mr" / "DCE_3DFGRE",
}
#: Reports checked by the (heavy) SR validator, per series: the main SR of a CT, an MR and a PET, the evaluations
#: SR of the whole-body PET (scene and body regions), the largest feature SR of the chest CT.
SR_CHECKED = {
    "ct_chest_b40f": ("sr.dcm", "sr_features/-1"),
    "mr_head": ("sr.dcm",),
    "sts_001_pet": ("sr.dcm",),
    "wholebody_pet": ("sr_evaluations.dcm",),
}


@pytest.mark.parametrize("name", sorted(SERIES))
def test_every_output_validates(name: str, tmp_path: Path) -> None:
    folder = SERIES[name]
    out = tmp_path / name
    res = process(folder, out)
    files = assert_outputs_valid(folder, out, res)
    assert out / "seg.dcm" in files and out / "sr.dcm" in files
    if name in SR_CHECKED:
        features = sorted(f for f in files if f.match("sr_features/*.dcm"))
        chosen = [features[-1] if rel == "sr_features/-1" else out / rel for rel in SR_CHECKED[name]]
        reports = [sr_validator(f) for f in chosen]
        assert all(r.recognized for r in reports), [r.output[:500] for r in reports if not r.recognized]
        assert_valid(reports)
    if name == "wholebody_pet":  # the evaluations SR carries the scene's body regions, one TID 1501 group each
        regions = res["scene"]["regions"]
        assert regions, res["scene"]
        evaluations = pydicom.dcmread(out / "sr_evaluations.dcm")
        measurements = [i for i in evaluations.ContentSequence if i.ValueType == "CONTAINER"][0]
        tracked = [t.TextValue for g in measurements.ContentSequence for t in g.ContentSequence
                   if t.ValueType == "TEXT" and t.ConceptNameCodeSequence[0].CodeMeaning == "Tracking Identifier"]
        assert [t for t in tracked if t.startswith("scene.region.")] == [
            f"scene.region.{i}.{r['label']}" for i, r in enumerate(regions, start=1)], tracked

def test_the_result_set_lists_the_new_files_for_export(tmp_path: Path) -> None:
    out = tmp_path / "pet"
    res = process(SERIES["sts_001_pet"], out)
    outputs = res["outputs"]
    assert outputs[:3] == ["seg.dcm", "sr.dcm", "sr_evaluations.dcm"]
    features = [f for f in outputs if f.startswith("sr_features/")]
    assert len(features) == len(res["segments"])  # one feature report per segment
    for f in outputs:
        assert (out / f).is_file()
