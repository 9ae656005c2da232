"""What `dicomnode process` makes from real series passes dciodvfy and Pixelmed's validators with 0 errors.

One module-scoped run of `dicomnode process` per series (a chest CT with its MIP series, a head MR, an sts PET in
SUV, an abdomen MR of another vendor, a Siemens Enhanced MR multi-frame, a gantry-tilted de-identified head CT, a
breast DCE MR with three phases); then:

* dciodvfy on every file made (SEG, main SR, evaluations SR, feature SRs, every derived image);
* Pixelmed's DicomInstanceValidator on every SEG and on the first image of every derived series;
* Pixelmed's DicomSRValidator, the heavy one (about 1-2 GB of heap and a minute or more per report on this
  machine), on a handful: the main SR of a CT, an MR and a PET, one evaluations SR and one feature SR.

The SEG and SR builders are the ones the node's jobs use (dicomnode.jobs.chain.run_chain, called by `process`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dicom_validators import assert_valid, dciodvfy, instance_validator, sr_validator
from helpers import SHARED_DATA

SERIES = {
    "ct_chest": SHARED_DATA / "chest-ct" / "A0002_B40f",
    "mr_head": SHARED_DATA / "head-mr" / "T1_sag",
    "pet_sts": SHARED_DATA / "sts" / "STS_001" / "PET",
    "mr_abdomen": SHARED_DATA / "abdomen-mr" / "T2_ax",
    "mr_enhanced": SHARED_DATA / "enhanced-mr" / "siemens_xa30_T1_sag",
    "ct_head_tilted": SHARED_DATA / "head-ct" / "CT",
    "mr_breast_phases": SHARED_DATA / "breast-mr" / "DCE_3DFGRE",
}
#: Main reports checked by the (heavy) SR validator: one per modality; the others share their builder and content.
SR_CHECKED = ("ct_chest", "mr_head", "pet_sts")


@pytest.fixture(scope="module")
def processed(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    root = tmp_path_factory.mktemp("validated")
    out: dict[str, tuple[Path, dict]] = {}
    for name, folder in SERIES.items():
        target = root / name
        p = subprocess.run([sys.executable, "-m", "dicomnode", "process", str(folder), "--out", str(target), "-q"],
                           capture_output=True, text=True, timeout=1800)
        assert p.returncode == 0, f"{name}: {p.stderr[-3000:]}"
        out[name] = (target, json.loads((target / "results.json").read_text()))
    return out


def _files(processed, pattern: str) -> list[Path]:
    return [target / f for target, res in processed.values() for f in res["outputs"] if Path(f).match(pattern)]


def test_every_output_passes_dciodvfy(processed) -> None:
    files = [target / f for target, res in processed.values() for f in res["outputs"]]
    assert any(f.match("derived/mip/*.dcm") for f in files) and any(f.match("sr_features/*.dcm") for f in files)
    assert_valid([dciodvfy(f) for f in files])


def test_segs_and_derived_images_pass_pixelmed_instance_validator(processed) -> None:
    segs = _files(processed, "seg.dcm")
    assert len(segs) == len(SERIES)
    reports = [instance_validator(f) for f in segs]
    assert all(r.recognized for r in reports), [r.output for r in reports if not r.recognized]
    firsts = _files(processed, "derived/*/0001.dcm")
    assert firsts
    reports += [instance_validator(f) for f in firsts]  # Pixelmed 20220618 does not know the CT Image IOD: dciodvfy
    assert_valid(reports)


def test_srs_pass_pixelmed_sr_validator(processed) -> None:
    mains = [processed[name][0] / "sr.dcm" for name in SR_CHECKED]
    assert len(_files(processed, "sr.dcm")) == len(SERIES)
    evaluations = _files(processed, "sr_evaluations.dcm")
    features = _files(processed, "sr_features/*.dcm")
    assert evaluations and features
    chosen = [*mains, evaluations[0], features[-1]]  # the last feature report: a finding's, the largest
    reports = [sr_validator(f) for f in chosen]
    assert all(r.recognized for r in reports), [r.output[:500] for r in reports if not r.recognized]
    assert_valid(reports)


def test_the_result_set_lists_the_new_files_for_export(processed) -> None:
    target, res = processed["pet_sts"]
    outputs = res["outputs"]
    assert outputs[:3] == ["seg.dcm", "sr.dcm", "sr_evaluations.dcm"]
    features = [f for f in outputs if f.startswith("sr_features/")]
    assert len(features) == len(res["segments"])  # one feature report per segment
    for f in outputs:
        assert (target / f).is_file()
