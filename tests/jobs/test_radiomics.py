"""jobs/radiomics.py: one place for radiomics. The node's job and ``dicomnode radiomics --sr`` give the same SR
(one UID convention), and a folder of several series is narrowed to the one the region object references."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom

from helpers import SHARED_DATA
from dicomnode.commands.radiomics import run
from dicomnode.io.headers import referenced_series_uid, referenced_series_uids
from dicomnode.jobs.radiomics import image_series_files, run_radiomics
from dicomnode.jobs.spec import RadiomicsSpec

STS = SHARED_DATA / "sts"
CT2, RS2 = STS / "STS_002" / "CT", STS / "STS_002" / "CT_rtstruct" / "RS.dcm"
CT3 = STS / "STS_003" / "CT"
FAST = ('name = "fast"\n[interpolation]\nmethod = "linear"\nspacing_mm = 4.0\n'
        '[features]\nfamilies = ["intensity statistics"]\n')


def test_node_job_and_cli_make_the_same_sr(tmp_path: Path) -> None:
    settings = tmp_path / "fast.toml"
    settings.write_text(FAST)
    sop = str(pydicom.dcmread(RS2, stop_before_pixels=True).SOPInstanceUID)
    roi = tmp_path / f"{sop}.dcm"  # named as the node's spool names it
    shutil.copy(RS2, roi)
    spec = RadiomicsSpec(files=tuple(map(str, sorted(CT2.iterdir()))), roi_files=(str(roi),), settings=str(settings),
                         out_dir=str(tmp_path / "job"), uid_root="2.25.", job_id=1, roi_names=("GTV_Mass_CT",))
    outcome = run_radiomics(spec)
    node_sr = pydicom.dcmread(outcome.files[0])
    cli_sr = tmp_path / "cli_sr.dcm"
    assert run([str(CT2), "--roi", str(roi), "--roi-name", "GTV_Mass_CT", "--settings", str(settings),
                "--out", str(tmp_path / "cli.csv"), "--sr", str(cli_sr)]) == 0
    cli = pydicom.dcmread(cli_sr)
    assert (cli.SeriesInstanceUID, cli.SOPInstanceUID) == (node_sr.SeriesInstanceUID, node_sr.SOPInstanceUID)
    assert outcome.sop_instance_uids == (str(node_sr.SOPInstanceUID),)
    assert str(cli.SOPInstanceUID).startswith("2.25.")


def test_a_folder_of_two_series_is_narrowed_to_the_referenced_one(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    shutil.copytree(CT2, folder / "a")
    shutil.copytree(CT3, folder / "b")
    want = referenced_series_uid(RS2)
    assert referenced_series_uids(RS2) == [want]
    files = image_series_files(folder, RS2)
    assert len(files) == len(list(CT2.iterdir()))
    assert {str(pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID) for f in files} == {want}
