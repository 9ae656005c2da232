"""`dicomnode batch` as a user runs it (issue 16, item 4): the scene probability of the chosen label, and columns
that trace each row back to its folder, patient and study."""

from __future__ import annotations

import csv
import json

import pydicom
import pyarrow.parquet as pq

from helpers import SHARED_DATA, run_cli

CHEST = SHARED_DATA / "chest-ct" / "A0002_B40f"


def test_batch_table_has_scene_probability_and_source_columns(tmp_path):
    archive = tmp_path / "archive" / "patient-a"
    archive.mkdir(parents=True)
    for f in sorted(CHEST.glob("*.dcm")):
        (archive / f.name).symlink_to(f)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[workers]\ncount = 1\n[profiles.sc]\nsteps = ["foreground", "measure", "scene"]\n')
    out = tmp_path / "out"
    p = run_cli("batch", tmp_path / "archive", "--out", out, "--profile", "sc", "--config", cfg, "-q",
                cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "Lung_Dx-A0002" not in p.stderr  # job processes' library warnings are scrubbed too
    (rj,) = out.glob("*/results.json")
    scene = json.loads(rj.read_text())["scene"]
    head = pydicom.dcmread(next(archive.iterdir()), stop_before_pixels=True)
    with open(out / "results.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["scene_label"] == scene["label"]
    assert float(row["scene_probability"]) == scene["probabilities"][scene["label"]]
    assert row["source_folder"] == str(archive)
    assert row["patient_id"] == str(head.PatientID) and row["study_instance_uid"] == str(head.StudyInstanceUID)
    assert row["study_id"] == str(head.get("StudyID", "") or "")
    (prow,) = pq.read_table(out / "results.parquet").to_pylist()
    assert prow["scene_probability"] == scene["probabilities"][scene["label"]]
    assert prow["source_folder"] == str(archive)
