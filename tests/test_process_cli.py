"""`dicomnode process`: the chain offline on real series, the results.json contract, bad input answered clearly."""

from __future__ import annotations

import json
import subprocess
import sys

import highdicom as hd
import pytest

from helpers import SHARED_DATA, dciodvfy

STS = SHARED_DATA / "sts"
ABDOMEN_J2K = SHARED_DATA / "abdomen-ct" / "upper_abdomen_j2k"


def _process(folder, out, *extra):
    return subprocess.run([sys.executable, "-m", "dicomnode", "process", str(folder), "--out", str(out), "-q",
                           *extra], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("series", ["STS_001/CT", "STS_002/MR_T1", "STS_003/PET"])
def test_process_writes_seg_sr_and_the_results_json_contract(series, tmp_path):
    p = _process(STS / series, tmp_path)
    assert p.returncode == 0, p.stderr
    res = json.loads((tmp_path / "results.json").read_text())
    for key in ("series_instance_uid", "modality", "profile", "segments", "steps", "findings", "scene",
                "classifications", "similarities"):
        assert key in res, key
    assert res["profile"] == {"CT": "ct", "MR": "mr", "PT": "pet"}[res["modality"]]
    assert res["segments"], res["notes"]
    for seg in res["segments"]:
        assert {"number", "label", "volume_ml", "features"} <= set(seg)
        assert seg["volume_ml"] > 0
    fov_ml = max(s["volume_ml"] for s in res["segments"])
    assert all(s["volume_ml"] <= fov_ml for s in res["segments"])
    for step in res["steps"]:
        assert {"name", "seconds", "peak_rss_mb"} <= set(step) and step["seconds"] >= 0
    for f in res["findings"]:
        assert {"label", "centroid_mm", "volume_ml", "diameter_mm", "probability"} <= set(f)
        assert len(f["centroid_mm"]) == 3
    if res["scene"] is not None:
        assert {"label", "probabilities", "header_body_part", "agrees_with_header"} <= set(res["scene"])
    for name in ("seg.dcm", "sr.dcm"):
        n, out = dciodvfy(tmp_path / name)
        assert n == 0, out
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    assert len(seg.SegmentSequence) == len(res["segments"])
    # the physician's tumour contour lies inside the body/foreground segment written to the SEG
    from dicomnode.io.load import load_series
    from dicomnode.io.roi import read_region
    images = load_series(sorted((STS / series).iterdir()))
    largest = max(res["segments"], key=lambda x: x["volume_ml"])
    body = read_region(tmp_path / "seg.dcm", images, number=largest["number"]).mask
    rtstruct = next((STS / f"{series}_rtstruct").iterdir())
    tumour = read_region(rtstruct, images, name="GTV_Mass").mask
    assert tumour.sum() > 0
    assert (tumour & body).sum() >= 0.9 * tumour.sum(), (largest["label"], (tumour & body).sum() / tumour.sum())


def test_process_refuses_the_abdomen_ct_with_empty_uids_naming_the_field(tmp_path):
    p = _process(ABDOMEN_J2K, tmp_path)
    assert p.returncode == 1
    assert "UID" in p.stderr and "empty" in p.stderr.lower()
    assert not (tmp_path / "results.json").exists()


def test_process_unknown_profile_and_missing_folder_are_usage_errors(tmp_path):
    p = _process(STS / "STS_001" / "CT", tmp_path, "--profile", "nope")
    assert p.returncode == 2 and "no such profile" in p.stderr
    p = _process(tmp_path / "missing", tmp_path / "o")
    assert p.returncode == 2 and "not a folder" in p.stderr


def test_process_names_what_is_wrong_with_consistent_exit_codes_and_leaves_no_folder(tmp_path):
    """Issue 16, item 9: non-DICOM files named, several series -> `dicomnode batch`, exit 2 for both; no output
    folder left behind when the series fails (exit 1)."""
    from helpers import run_cli
    txt = tmp_path / "txt"
    txt.mkdir()
    (txt / "notes.txt").write_text("not DICOM")
    p = run_cli("process", txt, "--out", tmp_path / "o1", "-q", cwd=tmp_path)
    assert p.returncode == 2 and "holds no DICOM image files" in p.stderr and str(txt / "notes.txt") in p.stderr
    mix = tmp_path / "mix"
    mix.mkdir()
    for f in (SHARED_DATA / "chest-ct" / "A0002_B40f" / "1-01.dcm", STS / "STS_001" / "CT" / "000000.dcm"):
        (mix / f.name).symlink_to(f)
    p = run_cli("process", mix, "--out", tmp_path / "o2", "-q", cwd=tmp_path)
    assert p.returncode == 2 and "holds 2 series" in p.stderr
    assert f"dicomnode batch {mix} --out {tmp_path / 'o2'}" in p.stderr and "group_series" not in p.stderr
    p = run_cli("process", ABDOMEN_J2K, "--out", tmp_path / "o3", "-q", cwd=tmp_path)
    assert p.returncode == 1 and "UID" in p.stderr
    assert not any((tmp_path / o).exists() for o in ("o1", "o2", "o3"))
