"""Issue 13: `dicomnode evaluate --leave-one-patient-out` on the two series whose own image cannot name their region
(the STS_002 PET buttock crop, the abdomen ADC map): each takes it from its study's anatomical series next to it (the
CT, the T2) on the same frame of reference, scored with the fold's model, and is right."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3000)]


def test_the_pet_crop_and_the_adc_map_are_right_held_out_with_their_studys_anatomy(tmp_path):
    p = subprocess.run([sys.executable, "-m", "dicomnode", "evaluate", str(REPO / "conf" / "evaluation" / "shared.toml"),
                        "--out", str(tmp_path), "--case", "sts-002-pet", "--case", "abdomen-mr-adc",
                        "--leave-one-patient-out", "-q"], capture_output=True, text=True, timeout=3000, cwd=REPO)
    assert p.returncode == 0, p.stderr[-3000:]
    doc = json.loads((tmp_path / "evaluation.json").read_text())
    assert doc["leave_one_patient_out"] and "scene" in doc["summary"]["models_refitted"]
    by_id = {c["id"]: c for c in doc["cases"]}
    for cid, sibling in (("sts-002-pet", "CT series 3"), ("abdomen-mr-adc", "MR series 901")):
        c = by_id[cid]
        assert c["scene_correct"] and not c["scene_confident_wrong"], (cid, c["scene_label"], c["notes"])
        results = json.loads((tmp_path / "cases" / cid / "results.json").read_text())
        assert any(str(r.get("source", "")).startswith(sibling) for r in results["scene"]["regions"]), cid
        assert any(f"borrowed from {sibling}" in n for n in results["notes"]), cid
