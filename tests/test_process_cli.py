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
    """Issue 16, item 9: non-DICOM files named, several series -> `dicomnode batch`; exit 1 for input that cannot be
    processed, 2 for bad usage only; no output folder left behind."""
    from helpers import run_cli
    txt = tmp_path / "txt"
    txt.mkdir()
    (txt / "notes.txt").write_text("not DICOM")
    p = run_cli("process", txt, "--out", tmp_path / "o1", "-q", cwd=tmp_path)
    assert p.returncode == 1 and "holds no DICOM image files" in p.stderr and str(txt / "notes.txt") in p.stderr
    mix = tmp_path / "mix"
    mix.mkdir()
    for f in (SHARED_DATA / "chest-ct" / "A0002_B40f" / "1-01.dcm", STS / "STS_001" / "CT" / "000000.dcm"):
        (mix / f.name).symlink_to(f)
    p = run_cli("process", mix, "--out", tmp_path / "o2", "-q", cwd=tmp_path)
    assert p.returncode == 1 and "holds 2 series" in p.stderr
    assert f"dicomnode batch {mix} --out {tmp_path / 'o2'}" in p.stderr and "group_series" not in p.stderr
    p = run_cli("process", ABDOMEN_J2K, "--out", tmp_path / "o3", "-q", cwd=tmp_path)
    assert p.returncode == 1 and "UID" in p.stderr
    assert not any((tmp_path / o).exists() for o in ("o1", "o2", "o3"))


# --- issue 12 item 3: every input read right ----------------------------------------------------------------------

LOCALIZER = SHARED_DATA / "mr-localizer" / "LOC"
BREAST = SHARED_DATA / "breast-mr" / "DCE_3DFGRE"
WB_PET = SHARED_DATA / "wholebody-pet-mr" / "PET"


def test_process_refuses_the_three_plane_localizer_saying_why(tmp_path):
    p = _process(LOCALIZER, tmp_path)
    assert p.returncode == 1, p.stderr
    assert "3 image orientations in one series" in p.stderr and "localizer" in p.stderr and "refused" in p.stderr
    assert "7 axial" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "results.json").exists()


@pytest.mark.slow
def test_process_wholebody_pet_in_bqml_analyses_suv_and_says_how(tmp_path):
    p = _process(WB_PET, tmp_path)
    assert p.returncode == 0, p.stderr
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["profile"] == "pet"
    note = next(n for n in res["notes"] if "SUVbw" in n)
    assert "weight 71 kg" in note and "388.78 MBq" in note and "45.2 min" in note
    # the SR states its measurements in SUV, not in Bq/ml
    means = [s["units"].get("mean") for s in res["segments"] if "mean" in s["units"]]
    assert means and all(u == "{SUVbw}g/ml" for u in means)


def test_process_all_phases_writes_each_phase_with_its_own_results(tmp_path):
    """[profiles.X.load] phase = "all" on the three-phase breast DCE: phase 1 in OUT, phases 2 and 3 in phase_N/."""
    cfg = tmp_path / "dicomnode.toml"
    cfg.write_text('[profiles.quick]\nsteps = ["foreground", "measure"]\n[profiles.quick.load]\nphase = "all"\n')
    out = tmp_path / "out"
    p = _process(BREAST, out, "--config", str(cfg), "--profile", "quick")
    assert p.returncode == 0, p.stderr
    phases = {1: out, 2: out / "phase_2", 3: out / "phase_3"}
    seg_uids, referenced = set(), {}
    for k, folder in phases.items():
        res = json.loads((folder / "results.json").read_text())
        assert any(f"phase {k} of 3" in n for n in res["notes"]), res["notes"]
        seg = hd.seg.segread(folder / "seg.dcm")
        seg_uids.add(str(seg.SOPInstanceUID))
        instances = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
        referenced[k] = {str(i.ReferencedSOPInstanceUID) for i in instances}
        assert len(referenced[k]) <= 60
        n, text = dciodvfy(folder / "seg.dcm")
        assert n == 0, text
    assert len(seg_uids) == 3
    assert not referenced[1] & referenced[2] and not referenced[2] & referenced[3]
    assert "phase_2/" in " ".join(json.loads((out / "results.json").read_text())["notes"])


def test_config_rejects_an_unknown_phase(tmp_path):
    cfg = tmp_path / "dicomnode.toml"
    cfg.write_text('[profiles.quick]\nsteps = ["foreground"]\n[profiles.quick.load]\nphase = "middle"\n')
    p = _process(BREAST, tmp_path / "out", "--config", str(cfg), "--profile", "quick")
    assert p.returncode == 2 and "profiles.quick.load.phase" in p.stderr and "middle" in p.stderr


def _series_folders():
    from dicomnode.io.headers import is_dicom_file
    folders = sorted({f.parent for f in SHARED_DATA.rglob("*") if f.is_file() and is_dicom_file(f)})
    assert len(folders) >= 30  # every series folder of ../shared/data, found, not listed by hand
    return folders


#: Folders that must be refused, and the reason the message gives.
REFUSED = {
    "abdomen-ct/upper_abdomen_j2k": "empty",                     # empty UIDs (README)
    "mr-localizer/LOC": "3 image orientations",                  # a 3-plane localizer
    "breast-mr/SEG_fibroglandular": "Segmentation Storage",      # not an image
    "seg-sr-examples": "series",                                 # objects of several series
}
#: Heavy series (hundreds of slices or 512 x 512 x 30 and more): still run, marked slow.
HEAVY = {"wholebody-pet-mr/PET", "breast-mr/DCE_3DFGRE", "chest-ct/A0002_B40f", "chest-ct/A0002_B70f", "head-ct/CT",
         "abdomen-mr/T2_ax", "abdomen-mr/ADC", "head-mr/T1_sag", "wholebody-pet-mr/MR_T2"}


@pytest.mark.parametrize("folder", [
    pytest.param(f, id=str(f.relative_to(SHARED_DATA)),
                 marks=[pytest.mark.slow] if str(f.relative_to(SHARED_DATA)) in HEAVY else [])
    for f in _series_folders()])
def test_every_series_folder_runs_through_process(folder, tmp_path):
    name = str(folder.relative_to(SHARED_DATA))
    p = _process(folder, tmp_path)
    assert "Traceback" not in p.stderr, p.stderr
    if name in REFUSED or name.endswith("_rtstruct"):
        assert p.returncode == 1, p.stderr
        message = [line for line in p.stderr.splitlines() if line.startswith("dicomnode process: ")]
        assert len(message) == 1 and REFUSED.get(name, "RT Structure Set") in message[0], p.stderr
        assert not (tmp_path / "results.json").exists()
        return
    assert p.returncode == 0, p.stderr
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["series_instance_uid"] and res["steps"]


def test_process_context_gives_the_pet_its_cts_anatomy_and_refuses_a_missing_folder(tmp_path):
    p = _process(STS / "STS_002" / "PET", tmp_path / "pet", "--context", str(STS / "STS_002" / "CT"),
                 "--context", str(STS / "STS_003" / "CT"))          # another patient's study: not used, said so
    assert p.returncode == 0, p.stderr
    res = json.loads((tmp_path / "pet" / "results.json").read_text())
    assert res["scene"]["label"] == "pelvis", res["notes"]
    assert any(r.get("source", "").startswith("CT series 3") for r in res["scene"]["regions"])
    p = subprocess.run([sys.executable, "-m", "dicomnode", "process", str(STS / "STS_002" / "PET"), "--out",
                        str(tmp_path / "again"), "--context", str(STS / "STS_003" / "CT")],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0 and "no image series of the same study and frame of reference" in p.stderr
    p = _process(STS / "STS_002" / "PET", tmp_path / "x", "--context", str(tmp_path / "nowhere"))
    assert p.returncode == 2 and "--context" in p.stderr and "not a folder" in p.stderr
    assert not (tmp_path / "x").exists()
