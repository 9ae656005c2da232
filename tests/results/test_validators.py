"""What `dicomnode process` makes from every series of ../shared/data it accepts passes dciodvfy and Pixelmed's
validators with 0 errors, and keeps the source's identities.

One test per series (so that pytest-xdist spreads them over its workers and each stays within the test timeout):
`dicomnode process` on the series, then

* dciodvfy on every file made (SEG, main SR, evaluations SR, feature SRs, every derived image);
* Pixelmed's DicomInstanceValidator on the SEG and on the first image of every derived series;
* Patient ID, Patient's Name, Study Instance UID and Specific Character Set-decoded text as in the source, on every
  file made;
* Pixelmed's DicomSRValidator, the heavy one (about 1-2 GB of heap and a minute or more per report on this
  machine), on every kind of SR we make at least once (:data:`SR_CHECKED`): the main SR of a CT, an MR and a PET,
  the evaluations SR of the chest CT (scene, classifications, similarities) and of the whole-body PET (its body
  regions), one feature SR; and the radiomics job's SR (:func:`test_radiomics_srs_validate`: a region of an
  RTSTRUCT and one of a SEG, unfiltered and filtered features). The reports of one test go through one JVM
  (``sr_validators``: the validator's stylesheets compiled once). The other reports share their builders and
  templates.

Enhanced CT: ../shared/data has none; highdicom.legacy's conversion of the real sts CT, as it comes and in the form
of an Enhanced CT (tests/enhanced_ct.py), goes through `dicomnode process` too, its derived CT with the source's KVP
and kernel (issue 13).

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

from dicom_validators import assert_outputs_valid, assert_valid, process, sr_validator, sr_validators
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
#: SR of the chest CT (scene, classifications, similarities) and of the whole-body PET (scene and body regions), the
#: largest feature SR of the chest CT.
SR_CHECKED = {
    "ct_chest_b40f": ("sr.dcm", "sr_evaluations.dcm", "sr_features/-1"),
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
        reports = sr_validators(chosen)  # one JVM
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


@pytest.mark.parametrize("form", ["legacy", "shared"])
def test_an_enhanced_ct_validates_and_its_derived_ct_keeps_kvp_and_kernel(form: str, tmp_path: Path) -> None:
    """highdicom.legacy's Legacy Converted Enhanced CT of the real sts CT (``legacy``) and the same with its
    acquisition attributes in the CT functional group macros, as an Enhanced CT scanner writes them (``shared``)."""
    from enhanced_ct import enhanced_ct, legacy_enhanced_ct

    folder = tmp_path / "source"
    legacy = legacy_enhanced_ct(SHARED_DATA / "sts" / "STS_001" / "CT", folder / "ct.dcm")
    if form == "shared":
        enhanced_ct(legacy, legacy, where="shared")
    out = tmp_path / "out"
    res = process(folder, out)
    files = assert_outputs_valid(folder, out, res)
    derived = sorted(f for f in files if f.match("derived/*/0001.dcm"))
    assert derived, res["outputs"]
    for f in derived:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        assert ds.SOPClassUID == pydicom.uid.CTImageStorage
        assert (float(ds.KVP), ds.ConvolutionKernel) == (140.0, "SOFT"), f  # the sts CT's


def test_radiomics_srs_validate(tmp_path: Path) -> None:
    """The radiomics job's SR (series 9003), the one SR kind the chain does not make: regions of an RTSTRUCT and
    of a SEG in one report, unfiltered features (intensity statistics and morphology) and filtered ones (IBSI-2
    mean filter: the method modifier and the filter's algorithm parameters). dciodvfy and DicomSRValidator, both in
    one JVM."""
    from dicomnode.analysis.radiomics import extract_features
    from dicomnode.analysis.volume import CATEGORY_MORPHOLOGICALLY_ABNORMAL, Code, LabelMap, SegmentInfo
    from dicomnode.config.radiomics import resolve_settings
    from dicomnode.io.load import load_series
    from dicomnode.io.roi import read_region
    from dicomnode.results.radiomics_sr import build_radiomics_sr
    from dicomnode.results.seg import build_seg
    from dicomnode.results.uids import ResultUids
    from dicom_validators import dciodvfy

    case = SHARED_DATA / "sts" / "STS_002"
    series = load_series(sorted((case / "CT").glob("*.dcm")))
    rt = read_region(case / "CT_rtstruct" / "RS.dcm", series, name="GTV_Mass")
    core = rt.mask.copy()
    core[: core.shape[0] // 2] = False
    uids = ResultUids.for_series(None, series.series_uid, "radiomics", "1")
    labels = LabelMap().add(SegmentInfo(1, "core", CATEGORY_MORPHOLOGICALLY_ABNORMAL,
                                        Code("108369006", "SCT", "Tumor")), core)
    build_seg(series, labels, uids).save_as(tmp_path / "seg.dcm")
    seg = read_region(tmp_path / "seg.dcm", series, number=1)
    small = tmp_path / "small.toml"
    small.write_text('name = "small"\n[interpolation]\nmethod = "linear"\nspacing_mm = 4.0\n'
                     '[features]\nfamilies = ["morphology", "intensity statistics"]\n')
    paths = []
    for name in (str(small), "ibsi2-config-2A"):
        settings = resolve_settings(name)
        feats = [extract_features(series.volume.array, r.mask, series.volume.spacing_mm, settings)
                 for r in (rt, seg)]
        sr = build_radiomics_sr(series, [rt, seg], feats, uids, settings=settings)
        path = tmp_path / f"radiomics_{len(paths)}.dcm"
        sr.save_as(path, enforce_file_format=True)
        paths.append(path)
    assert_valid([dciodvfy(p) for p in paths])
    reports = sr_validators(paths)
    assert all(r.recognized for r in reports), [r.output[:500] for r in reports if not r.recognized]
    assert_valid(reports)


def test_the_batch_sr_validator_says_what_the_command_line_says() -> None:
    """tests/pixelmed/BatchSRValidator.java (several files in one JVM) gives each file the report Pixelmed's own
    command line gives it: on highdicom's reference SRs, one with errors of its own."""
    examples = SHARED_DATA / "seg-sr-examples"
    paths = [examples / "sr_document.dcm", examples / "sr_document_with_multiple_groups.dcm"]
    batch = sr_validators(paths)
    from dicom_validators import _java, _sr_report

    for path, report in zip(paths, batch):
        alone = _sr_report(path, _java("com.pixelmed.validate.DicomSRValidator", [str(path)], heap="1g",
                                       timeout_s=600))
        assert (report.errors, report.warnings, report.recognized) == (alone.errors, alone.warnings,
                                                                       alone.recognized)
    assert batch[0].errors  # the reference document has errors of its own: the frames do not hide them
