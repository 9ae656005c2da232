"""CI: `dicomnode evaluate conf/evaluation/shared.toml --leave-one-patient-out` on ../shared/data, with floors.

Leave one patient out, as the goals of issue 13 are stated: the scene model and the findings calibration are fitted
again without each case's patient, so the figures are held-out figures, not in-sample.

The floors are the figures measured when the command was added (docs/evaluation.md): they guard against
regressions and are raised as recognition improves. No time is asserted (speed is `dicomnode bench`'s job).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from helpers import REPO

# about 100 s of CPU alone; on a busy 2-core machine (CI runs two test workers) it can take far longer than the
# suite-wide 600 s timeout of pyproject.toml
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3000)]

#: summary key -> least number of successes (Proportion) or bound, as measured (docs/evaluation.md)
FLOORS = {
    "scene_correct": 20,  # 16, 17: + breast MR (breast landmark), + STS_002 CT (pelvis), - STS_003 CT (unknown);
    #                       18: + STS_003 CT (above the thighs only pelvis or extremity, branch scene5);
    #                       20: + STS_002 PET (pelvis from its CT), + abdomen ADC (abdomen from its T2): the study's
    #                       anatomy on the same frame of reference (branch studyctx)
    "lesions_found": 12,
    "top_finding_true": 12,
    "series_with_a_true_finding": 12,
    "refusals_expected_and_made": 2,
}
CEILINGS = {
    "scene_confident_wrong": 0,
}
#: measured 0 since MR tells fat from a solid mass (STS_003's T1 fat lobule, p 0.82 held out before, is gone)
MAX_FALSE_FINDINGS = 1
#: measured 0.667 (0.672 before the fat rule: the fat lobule reported on STS_003's T1 MR touched the tumour's edge,
#: Dice 0.05; without it that series reports nothing, Dice 0)
MIN_DICE_MEAN = 0.665
MIN_LUNGS_FOUND = 2
#: mean regions agreement (the whole-body PET's hand-read regions covered by scene regions of the same label)
MIN_REGIONS_AGREEMENT = 0.99


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluation")
    p = subprocess.run([sys.executable, "-m", "dicomnode", "evaluate", str(REPO / "conf" / "evaluation" / "shared.toml"),
                        "--out", str(out), "--leave-one-patient-out", "-q"], capture_output=True, text=True, timeout=3000, cwd=REPO)
    assert p.returncode == 0, p.stderr[-3000:]
    doc = json.loads((out / "evaluation.json").read_text())
    # the scene model and the findings calibration (model = "calibrated", the CT, MR and PET profiles') are both
    # fitted again without each case's patient: nothing is scored in-sample
    assert doc["leave_one_patient_out"] is True and doc["summary"]["models_refitted"] == ["findings", "scene"]
    assert doc["summary"]["models_in_sample"] == []
    return out, doc


def test_every_shared_case_ran_without_internal_error(shared):
    out, doc = shared
    assert doc["summary"]["status"]["error"] == 0, [(c["id"], c["message"]) for c in doc["cases"]
                                                   if c["status"] == "error"]
    with (out / "evaluation.csv").open() as f:
        assert len(list(csv.DictReader(f))) == len(doc["cases"]) >= 20
    for c in doc["cases"]:
        if c["status"] == "ok":
            assert (out / c["png"]).stat().st_size > 1000, c["id"]


def test_shared_evaluation_meets_its_floors(shared):
    s = shared[1]["summary"]
    for key, floor in FLOORS.items():
        assert s[key]["successes"] >= floor, (key, s[key])
    for key, ceiling in CEILINGS.items():
        assert s[key]["successes"] <= ceiling, (key, s[key])
    assert s["false_findings_total"] <= MAX_FALSE_FINDINGS
    assert s["dice_best_mean"] is not None and s["dice_best_mean"] >= MIN_DICE_MEAN
    assert s["lungs_found"]["successes"] >= MIN_LUNGS_FOUND
    assert s["regions_agreement_mean"] is not None and s["regions_agreement_mean"] >= MIN_REGIONS_AGREEMENT


def test_series_known_to_hold_no_lesion_report_none(shared):
    """The phantoms (an MR phantom's inserts, as enhanced and as classic frames) hold no lesion, and the head CT's
    most lesion-like regions are air (a sinus, mastoid cells): none reports a finding. The series without truth are
    counted apart in the summary (their findings' status is unknown)."""
    cases = {c["id"]: c for c in shared[1]["cases"]}
    for case_id in ("phantom-mr-philips-enhanced", "phantom-mr-philips-classic", "head-ct"):
        assert cases[case_id]["status"] == "ok" and cases[case_id]["findings_reported"] == 0, case_id
    s = shared[1]["summary"]
    without = [c for c in shared[1]["cases"] if not c["lesions_total"] and c["status"] == "ok"]
    assert s["series_without_truth_reporting"]["trials"] == len(without) >= 8
    assert s["series_without_truth_reporting"]["successes"] == sum(c["findings_reported"] > 0 for c in without)
    assert s["findings_reported_without_truth"] == sum(c["findings_reported"] for c in without)


def test_finding_probabilities_are_calibrated_held_out(shared):
    """The reliability table of every reported finding (each case scored with the findings calibration fitted without
    its patient): no bin's mean probability above its observed fraction's 95 % interval, and never p >= 0.99 on a
    false finding (the calibration is capped at 0.9)."""
    s = shared[1]["summary"]
    for b in s["reliability"]:
        if b["count"]:
            assert b["mean_predicted"] <= b["observed"]["wilson95"][1], b
    assert not any(f["probability"] >= 0.99 and not f["true"] for c in shared[1]["cases"] for f in c["findings"])
    with_truth = [c for c in shared[1]["cases"] if c["lesions_total"] and c["status"] == "ok"]
    assert all(c["false_findings"] <= 2 for c in with_truth), [(c["id"], c["false_findings"]) for c in with_truth]


def test_top_finding_is_the_tumour_where_the_image_shows_it_apart(shared):
    """Reported (p >= 0.5 with the held-out calibration) and first: the chest CT mass, every sarcoma CT (STS_001's
    isodense one by the solid-mass search), the T1 MRs of STS_001 and STS_002, every PET and the thigh T2 MR
    (docs/models.md says why not STS_003's T1 MR: there T1 alone does not tell the sarcoma from normal muscle, and
    the node reports nothing rather than the fat lobule that ranked first before)."""
    ids = ("chest-ct-b40f", "chest-ct-b70f", "sts-001-ct", "sts-002-ct", "sts-003-ct", "sts-001-mr-t1", "sts-002-mr-t1",
           "sts-001-pet", "sts-002-pet", "sts-003-pet", "wholebody-pet", "wholebody-mr-t2")
    for cid in ids:
        c = next(c for c in shared[1]["cases"] if c["id"] == cid)
        assert c["first_true_rank"] == 1 and c["lesions_found"] == c["lesions_total"], (cid, c["findings"])
    sts003 = next(c for c in shared[1]["cases"] if c["id"] == "sts-003-mr-t1")
    assert sts003["false_findings"] == 0, sts003["findings"]  # fat is not a mass: no confident fat lobule


def test_chest_ct_tumour_is_the_top_finding(shared):
    """The one series with radiologists' boxes: the mass ranks first, the lungs are found, the scene is chest."""
    for cid in ("chest-ct-b40f", "chest-ct-b70f"):
        c = next(c for c in shared[1]["cases"] if c["id"] == cid)
        assert c["scene_correct"] and c["lungs_found"] and c["first_true_rank"] == 1, c


def test_pet_lesions_first_with_at_most_two_false_findings(shared):
    """Issue 13's PET goal on the shared PETs (tumours of 54-366 mL): every lesion reported and ranked first (the
    whole-body PET's heart, bladder and kidneys told apart by organ context), at most 2 false findings per series at
    the reporting threshold."""
    pets = [c for c in shared[1]["cases"] if c["profile"] == "pet" and c["lesions_total"]]
    assert len(pets) == 4
    for c in pets:
        assert c["lesions_found"] == c["lesions_total"] and c["first_true_rank"] == 1, c["id"]
        assert c["false_findings"] <= 2, (c["id"], c["false_findings"])


def test_series_the_image_alone_cannot_name_take_their_studys_anatomy(shared):
    """The STS_002 PET crop and the abdomen ADC map (docs/models.md: no landmark in their own image) are right held
    out through their study's CT and T2 on the same frame of reference; no case is confidently wrong by it."""
    out, doc = shared
    for cid, sibling in (("sts-002-pet", "CT series 3"), ("abdomen-mr-adc", "MR series 901")):
        c = next(c for c in doc["cases"] if c["id"] == cid)
        assert c["scene_correct"], (cid, c["scene_label"])
        results = json.loads((out / "cases" / cid / "results.json").read_text())
        assert any(str(r.get("source", "")).startswith(sibling) for r in results["scene"]["regions"]), cid
