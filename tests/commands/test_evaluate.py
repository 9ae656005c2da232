"""`dicomnode evaluate` as a user runs it: a small case file in, evaluation.json/.csv/.md and PNGs out."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
from PIL import Image

from dicomnode.evaluation.run import CSV_COLUMNS

from helpers import SHARED_DATA

CASES = """
[[cases]]
id = "sts-003-pet"
series = "sts/STS_003/PET"
patient = "STS_003"
scene = "extremity"
lesions = [{ rtstruct = "sts/STS_003/PET_rtstruct/RS.dcm", rois = ["GTV_Mass"] }]

[[cases]]
id = "localizer"
series = "mr-localizer/LOC"
expect_refusal = true
"""


def _evaluate(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "dicomnode", "evaluate", *map(str, args)], capture_output=True,
                          text=True, timeout=600, cwd=cwd)


def test_evaluate_writes_json_csv_and_a_png_per_case(tmp_path):
    cases = tmp_path / "cases.toml"
    cases.write_text(CASES)
    out = tmp_path / "out"
    p = _evaluate(cases, "--out", out, "--data-root", SHARED_DATA)
    assert p.returncode == 0, p.stderr
    assert "| sts-003-pet | pet | ok |" in p.stdout
    doc = json.loads((out / "evaluation.json").read_text())
    assert {"case_file", "data_root", "summary", "cases"} <= set(doc)
    s = doc["summary"]
    for key in ("scene_correct", "scene_confident_wrong", "lesions_found", "top_finding_true", "false_findings_total",
                "dice_best_mean", "lungs_found", "reliability", "regions_agreement_mean"):
        assert key in s, key
    assert s["status"] == {"ok": 1, "refused": 1, "error": 0}
    assert s["refusals_expected_and_made"]["successes"] == 1
    lo, hi = s["lesions_found"]["wilson95"]
    assert 0 <= lo <= (s["lesions_found"]["fraction"] or 0) <= hi <= 1
    pet = next(c for c in doc["cases"] if c["id"] == "sts-003-pet")
    assert pet["lesions_total"] == 1 and pet["lesions"][0]["contour"] and pet["lesions"][0]["volume_ml"] > 1
    contrast = pet["lesions"][0]["contrast"]  # visibility from the image and the contour (measured: d 2.62, CNR 12.1)
    assert contrast["shell_mm"] == [5.0, 10.0] and contrast["smd"] > 2.0 and contrast["cnr"] > 5.0
    assert pet["scene_label"] is not None and pet["scene_correct"] == (pet["scene_label"] == "extremity")
    assert pet["dice_best"] is None or 0 <= pet["dice_best"] <= 1
    for f in pet["findings"]:
        assert {"label", "probability", "reported", "true"} <= set(f)
    assert pet["false_findings"] == sum(f["reported"] and not f["true"] for f in pet["findings"])
    assert sum(b["count"] for b in s["reliability"]) == len(pet["findings"])
    loc = next(c for c in doc["cases"] if c["id"] == "localizer")
    assert loc["status"] == "refused" and "orientation" in loc["message"]

    with (out / "evaluation.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r["id"] for r in rows] == ["sts-003-pet", "localizer"]
    assert (out / "evaluation.md").read_text().startswith("| case |")

    png = Image.open(out / pet["png"])
    assert png.format == "PNG"
    a = np.asarray(png.convert("RGB")).astype(int)
    assert a.std() > 10, "blank image"
    green = (a[:, :, 1] > 180) & (a[:, :, 0] < 100) & (a[:, :, 2] < 120)
    assert green.sum() > 50, "no truth outline"
    assert not (out / "png" / "localizer.png").exists()


def test_bad_case_file_names_the_file_key_and_fix(tmp_path):
    cases = tmp_path / "cases.toml"
    cases.write_text('[[cases]]\nid = "x"\nseries = "no/such"\nscene = "thorax"\n')
    p = _evaluate(cases, "--out", tmp_path / "out", "--data-root", SHARED_DATA)
    assert p.returncode == 2
    assert str(cases) in p.stderr and "cases[0].series" in p.stderr and "cases[0].scene" in p.stderr
    assert "use one of head" in p.stderr
    p = _evaluate(cases, "--out", tmp_path / "out", "--data-root", tmp_path / "missing")
    assert p.returncode == 2 and "--data-root" in p.stderr
