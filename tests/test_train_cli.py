"""dicomnode train end to end on a small labels.csv."""

import subprocess
import sys
import warnings

import numpy as np

from dicomnode.commands.train import read_nifti
from dicomnode.modelio import load_model
from helpers import REPO, SHARED_DATA

warnings.filterwarnings("ignore", category=UserWarning)


def test_train_cli_end_to_end(tmp_path):
    csv = tmp_path / "labels.csv"
    rows = ["folder,label,patient"]
    for i in (1, 2, 3):
        rows.append(f"{SHARED_DATA}/sts/STS_00{i}/CT,extremity,STS_00{i}")
    rows.append(f"{SHARED_DATA}/chest-ct/A0002_B40f,chest,A0002")
    rows.append(f"{SHARED_DATA}/chest-ct/A0002_B70f,chest,A0002")
    rows.append(f"{SHARED_DATA}/abdomen-ct/upper_abdomen_j2k,abdomen,j2k")  # empty UIDs: repaired copy
    csv.write_text("\n".join(rows) + "\n")
    out = tmp_path / "m.skops"
    proc = subprocess.run([sys.executable, "-m", "dicomnode", "train", "--labels", str(csv), "--task", "scene",
                           "--out", str(out), "--phantoms", "2"], capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "cross-validated accuracy" in proc.stdout and "true \\ predicted" in proc.stdout
    m = load_model(out, task="scene")
    assert set(m.card.classes) == {"abdomen", "chest", "extremity"} and m.card.cv_accuracy is not None
    # fitted as the shipped model is (scene_training.fit_scene): calibration temperatures from the held-out
    # posteriors of an inner leave-one-patient-out, which the scene step applies
    extra = m.card.extra
    assert extra["temperature_ct"] >= 1.0 and extra["temperature_other"] >= 1.0
    assert f"CT {extra['temperature_ct']:.2f}" in proc.stdout
    assert extra["slab_mm"] == 60.0 and extra["stride_mm"] == 30.0
    # every series run through recognise with its patient held out; the temperatures are raised until none of
    # them is wrong with p >= 0.5
    assert sorted(r["truth"] for r in extra["series_lopo"]) == ["abdomen"] + ["chest"] * 2 + ["extremity"] * 3
    assert not any(r["wrong_confident"] for r in extra["series_lopo"])
    assert extra["series_figures"]["series"] == 6
    assert not out.with_name("m.card.json").exists()  # the user's model file only


def test_train_scene_rejects_an_unknown_label(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text(f"{SHARED_DATA}/chest-ct/A0002_B40f,lung,A0002\n")
    proc = subprocess.run([sys.executable, "-m", "dicomnode", "train", "--labels", str(csv), "--task", "scene",
                           "--out", str(tmp_path / "m.skops")], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 1 and "got lung" in proc.stderr and "label column" in proc.stderr
    assert not (tmp_path / "m.skops").exists()


def test_train_cli_bad_csv(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("no-such-folder,chest\n")
    proc = subprocess.run([sys.executable, "-m", "dicomnode", "train", "--labels", str(csv), "--task", "scene",
                           "--out", str(tmp_path / "m.skops")], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 1 and "does not exist" in proc.stderr


def test_nifti_reader_geometry():
    v = read_nifti(SHARED_DATA / "abdomen-ct/abdomen_pelvis_nifti/example_ct.nii.gz")
    assert v.shape == (112, 101, 122) and v.spacing_mm == (3.0, 3.0, 3.0) and v.unit == "HU"
    np.testing.assert_allclose(np.diag(v.direction), [-1, -1, 1])
