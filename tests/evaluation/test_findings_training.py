"""findings_training: the findings calibration is fitted on scored detect candidates, never on the held-out patient;
evaluate's folds swap it in; `dicomnode train --task findings` writes one a profile can use."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dicomnode import findings_training as ft
from dicomnode.config import Profile
from dicomnode.evaluation.cases import Case
from dicomnode.evaluation.loo import FoldModels, fold_profile
from helpers import REPO, SHARED_DATA


def _candidates(seed: int = 0) -> list[ft.Candidate]:
    """Four patients, two series each: a true top candidate in most series, many low-scoring false ones, and some
    false high-scoring non-top ones (the naive Bayes' overconfidence)."""
    rng = np.random.default_rng(seed)
    out = []
    for p in ("p1", "p2", "p3", "p4"):
        for s in ("a", "b"):
            case = f"{p}-{s}"
            top_true = not (p == "p4" and s == "b")
            out.append(ft.Candidate(case, p, "tissue_model/MR", 0.999, True, top_true, "lesion_1"))
            out.append(ft.Candidate(case, p, "tissue_model/MR", 0.99, False, False, "lesion_2"))
            for k in range(12):
                out.append(ft.Candidate(case, p, "tissue_model/MR", float(rng.uniform(1e-4, 0.3)), False, False,
                                        f"lesion_{k + 3}"))
    return out


def test_fit_is_monotone_capped_and_learns_that_the_top_candidate_is_the_lesion():
    cands = _candidates()
    fit = ft.fit_findings(cands)
    m = fit.mapping
    assert m.slope >= 0 and m.top_weight > 1.0 and m.cap == ft.CAP and m.logit_clip == ft.LOGIT_CLIP
    assert fit.patients == ("p1", "p2", "p3", "p4") and fit.candidates == len(cands) and fit.hits == 7
    top = fit.probability(cands[0])
    # 7 of 8 top candidates are true: the top's probability is high but below the cap; the overconfident
    # non-top 0.99 (never true) stays well below the reporting threshold
    assert 0.6 < top <= ft.CAP and fit.probability(cands[1]) < 0.3
    probs = [fit.probability(c) for c in cands if not c.top]
    scores = [c.score for c in cands if not c.top]
    order = np.argsort(scores)
    assert all(np.diff(np.asarray(probs)[order]) >= -1e-12)  # monotone in the score
    # the calibration's mean on the training candidates matches the fraction true (a logistic fit's property,
    # up to the penalty)
    assert abs(np.mean([fit.probability(c) for c in cands]) - fit.hits / len(cands)) < 0.01


def test_a_fold_never_sees_its_patient():
    """The held-out patient's own labels cannot change its probabilities: flip them and refit the fold."""
    cands = _candidates()
    fold = ft.fit_findings(cands, exclude="p2")
    assert fold.patients == ("p1", "p3", "p4") and fold.candidates == len(cands) - 28
    flipped = [ft.Candidate(c.case, c.patient, c.group, c.score, c.top, not c.true if c.patient == "p2" else c.true,
                            c.label) for c in cands]
    same = ft.fit_findings(flipped, exclude="p2")
    assert same.mapping == fold.mapping and same.by_modality == fold.by_modality
    lopo = ft.leave_one_patient_out(cands)
    lopo_flipped = ft.leave_one_patient_out(flipped)
    for c in cands:
        if c.patient == "p2":
            assert lopo[ft.key(c)] == lopo_flipped[ft.key(c)]
    with pytest.raises(ValueError, match="no true candidate"):
        ft.fit_findings([c for c in cands if not c.true])


def test_series_are_scored_as_evaluate_scores_them():
    cands = _candidates()
    probs = {ft.key(c): (0.8 if c.top else 0.6 if c.label == "lesion_2" else 0.1) for c in cands}
    series = ft.score_series(cands, probs)
    assert len(series) == 8
    p4b = series["p4-b"]
    assert not p4b["top_true"] and p4b["false_findings"] == 2 and p4b["first_true_probability"] is None
    assert series["p1-a"]["top_true"] and series["p1-a"]["false_findings"] == 1  # MR profile: at most 3 reported
    rel = {b["low"]: b for b in ft.reliability(series)}
    assert rel[0.7]["count"] == 8 and rel[0.7]["observed"]["successes"] == 7
    assert rel[0.5]["count"] == 8 and rel[0.5]["observed"]["successes"] == 0


def test_calibration_file_round_trip_and_bad_file(tmp_path):
    fit = ft.fit_findings(_candidates())
    path = fit.save(tmp_path / "f.json")
    back = ft.read_calibration(path)
    for name in ("slope", "intercept", "top_weight"):
        assert getattr(back.mapping, name) == pytest.approx(getattr(fit.mapping, name), abs=1e-4)
    assert back.mapping.cap == fit.mapping.cap and back.mapping.logit_clip == ft.LOGIT_CLIP
    assert back.mapping.top_min_score == fit.mapping.top_min_score == ft.TOP_MIN_SCORE
    # PET has its own map (no clip: a second saturated PET lesion can be reported); other modalities the default
    assert back.for_modality("PT").logit_clip == ft.MODALITY_LOGIT_CLIP["PT"] > ft.LOGIT_CLIP
    assert back.for_modality("MR") == back.mapping and back.for_modality("CT") == back.mapping
    (tmp_path / "bad.json").write_text(json.dumps({"slope": 1.0}))
    with pytest.raises(ValueError, match="not a findings calibration"):
        ft.read_calibration(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="cannot read"):
        ft.read_calibration(tmp_path / "missing.json")


def test_fold_profile_swaps_the_calibrated_findings_model_for_the_fold_file(tmp_path):
    case = Case("c", Path("/data/s"), patient="P")
    folds = FoldModels(scene={"P": tmp_path / "scene.skops"}, findings={"P": tmp_path / "findings-fold.json"})
    prof = Profile("ct", ("detect", "scene"), {"scene": {"model": "scene"}, "detect": {"model": "calibrated"}})
    p, refitted, in_sample = fold_profile(prof, case, folds)
    assert p.params["detect"]["model"] == str(tmp_path / "findings-fold.json")
    assert refitted == ["scene", "findings"] and in_sample == []
    assert prof.params["detect"]["model"] == "calibrated"
    prof = Profile("mr", ("detect",), {"detect": {"model": "findings"}})
    assert fold_profile(prof, case, folds)[1:] == ([], ["findings (findings)"])
    # no fold calibration for the patient (e.g. no true candidate elsewhere): in-sample, and said so
    other = Case("d", Path("/data/t"), patient="Q")
    prof = Profile("pet", ("detect",), {"detect": {"model": "calibrated"}})
    assert fold_profile(prof, other, folds)[1:] == ([], ["findings (calibrated)"])


@pytest.mark.slow
def test_train_findings_on_a_real_case_writes_a_calibration_the_step_uses(tmp_path):
    """`dicomnode train --task findings` on STS_002's PET and CT: the PET's sarcoma is a candidate inside its
    GTV_Mass and ranks first; the written calibration is monotone, capped, and a profile can name it."""
    cases = tmp_path / "cases.toml"
    cases.write_text(f'data_root = "{SHARED_DATA}"\n' + "".join(
        f'[[cases]]\nid = "{cid}"\nseries = "sts/STS_002/{mod}"\npatient = "STS_002"\n'
        f'lesions = [{{ rtstruct = "sts/STS_002/{mod}_rtstruct/RS.dcm", rois = ["GTV_Mass"] }}]\n\n'
        for cid, mod in (("pet", "PET"), ("ct", "CT"))))
    out = tmp_path / "findings.json"
    p = subprocess.run([sys.executable, "-m", "dicomnode", "train", "--task", "findings", "--cases", str(cases),
                        "--out", str(out), "--cache", str(tmp_path / "cache")], capture_output=True, text=True,
                       cwd=REPO, timeout=1800)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "findings training: pet:" in p.stdout and "one patient only" in p.stdout
    doc = json.loads(out.read_text())
    assert doc["training_patients"] == 1 and doc["hits"] >= 2 and doc["candidates"] > 10
    cal = ft.read_calibration(out).mapping
    assert cal.slope >= 0 and cal.cap <= ft.CAP
    from dicomnode.evaluation.cases import load_cases
    cached = ft.collect_candidates(load_cases(cases), cache=ft.CandidateCache(tmp_path / "cache"))
    pet = [c for c in cached if c.case == "pet"]
    assert pet[0].top and pet[0].true and pet[0].group == "tissue_model/PT"
    assert sum(c.top for c in pet) == 1
    assert math.isclose(max(c.score for c in pet), pet[0].score)
    # scores at full precision, not results.json's 4 places (PET's map reads the logit near 1 unclipped)
    assert any(round(c.score, 4) != c.score for c in pet)
    # --inserted: the shipped table of inserted-lesion PET candidates joins the PET map's fit (candidates from the
    # cache); a table made by other analysis code is refused, naming the fix
    from dicomnode.evaluation.inserted import DEFAULT_TABLE
    out2 = tmp_path / "findings-inserted.json"
    p = subprocess.run([sys.executable, "-m", "dicomnode", "train", "--task", "findings", "--cases", str(cases),
                        "--out", str(out2), "--cache", str(tmp_path / "cache"), "--inserted", str(DEFAULT_TABLE)],
                       capture_output=True, text=True, cwd=REPO, timeout=1800)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "inserted-lesion candidates: " in p.stdout
    pet_map = ft.read_calibration(out2).for_modality("PT")
    assert pet_map != ft.read_calibration(out).for_modality("PT")  # the inserted candidates moved the PET map
    stale = json.loads(Path(DEFAULT_TABLE).read_text())
    stale["code"] = "0" * 16
    (tmp_path / "stale.json").write_text(json.dumps(stale))
    p = subprocess.run([sys.executable, "-m", "dicomnode", "train", "--task", "findings", "--cases", str(cases),
                        "--out", str(out2), "--cache", str(tmp_path / "cache"), "--inserted",
                        str(tmp_path / "stale.json")], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert p.returncode == 1 and "stale.json" in p.stderr and "regenerate" in p.stderr
    # a bad --out and a missing --cases say what to do
    bad = subprocess.run([sys.executable, "-m", "dicomnode", "train", "--task", "findings", "--out", "x.json"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert bad.returncode == 1 and "--cases" in bad.stderr


def _pet_set(rng: np.random.Generator, n: int, patients: tuple[str, ...], intercept: float, slope: float,
             inserted: bool) -> list[ft.Candidate]:
    """PET candidates whose truth follows a known logistic map of the unclipped logit of the score."""
    x = rng.uniform(-8.0, 12.0, n)
    p = 1.0 / (1.0 + np.exp(-(slope * x + intercept)))
    y = rng.random(n) < p
    score = 1.0 / (1.0 + np.exp(-x))
    return [ft.Candidate(f"{patients[i % len(patients)]}-{'ins' if inserted else 'real'}", patients[i % len(patients)],
                         "tissue_model/PT", float(score[i]), False, bool(y[i]), f"lesion_{i}", inserted=inserted)
            for i in range(n)]


def test_pet_map_takes_its_slope_from_inserted_candidates_and_its_intercept_from_the_real_ones(monkeypatch):
    """Known answer: real and inserted PET candidates share the slope (0.5) of logit(score); the inserted series
    hold far more lesions (intercept -1 against the real -4). The fit recovers the slope and the REAL intercept;
    a plain fit on both together over-states the probabilities on real series. The prior of
    LESIONS_PER_SERIES then shifts the intercept by exactly log(prior / true candidates per real series)."""
    rng = np.random.default_rng(3)
    real = _pet_set(rng, 6000, ("p1", "p2", "p3"), -4.0, 0.5, False)
    ins = _pet_set(rng, 6000, ("p1", "p2", "p3"), -1.0, 0.5, True)
    with_prior = ft.fit_findings(real, inserted=ins).for_modality("PT")
    prior = ft.LESIONS_PER_SERIES["PT"]
    monkeypatch.setattr(ft, "LESIONS_PER_SERIES", {})
    fit = ft.fit_findings(real, inserted=ins)
    pet = fit.for_modality("PT")
    assert pet.slope == pytest.approx(0.5, abs=0.05)
    assert pet.intercept == pytest.approx(-4.0, abs=0.3)
    assert fit.inserted_candidates == len(ins) and fit.inserted_hits == sum(c.true for c in ins)
    # on the real candidates the mean probability is the fraction true (prevalence kept); pooled it is not
    probs = [pet.probability(c.score) for c in real]
    assert abs(np.mean(probs) - np.mean([c.true for c in real])) < 0.01
    pooled = ft.fit_findings(real + [ft.Candidate(c.case, c.patient, c.group, c.score, c.top, c.true, c.label)
                                     for c in ins]).for_modality("PT")
    assert pooled.intercept > pet.intercept + 1.0
    # the default map (CT, MR) never sees the inserted candidates
    assert fit.mapping == ft.fit_findings(real).mapping
    per_series = sum(c.true for c in real) / 3
    assert with_prior.slope == pet.slope and with_prior.top_weight == pet.top_weight
    assert with_prior.intercept - pet.intercept == pytest.approx(math.log(prior / per_series))


def test_a_fold_leaves_out_its_patients_inserted_candidates():
    rng = np.random.default_rng(4)
    real = _pet_set(rng, 900, ("p1", "p2", "p3"), -4.0, 0.5, False)
    ins = _pet_set(rng, 900, ("p1", "p2", "p3"), -1.0, 0.5, True)
    fold = ft.fit_findings(real, exclude="p2", inserted=ins)
    assert fold.inserted_candidates == sum(c.patient != "p2" for c in ins)
    assert "p2" not in fold.patients
    flipped = [ft.Candidate(c.case, c.patient, c.group, c.score, c.top, not c.true if c.patient == "p2" else c.true,
                            c.label, inserted=True) for c in ins]
    assert ft.fit_findings(real, exclude="p2", inserted=flipped).by_modality == fold.by_modality
    lopo = ft.leave_one_patient_out(real, inserted=ins)
    lopo_flipped = ft.leave_one_patient_out(real, inserted=flipped)
    assert all(lopo[ft.key(c)] == lopo_flipped[ft.key(c)] for c in real if c.patient == "p2")
    # but a fold holding another patient out does use p2's inserted candidates
    assert ft.fit_findings(real, exclude="p1", inserted=flipped).by_modality != \
        ft.fit_findings(real, exclude="p1", inserted=ins).by_modality


def test_reporting_rule_is_the_shipped_profiles():
    """The fits score series as the node reports them: each modality's threshold and most findings are its shipped
    profile's (the PET profile reports from 0.4 since petsens2: docs/models.md)."""
    from dicomnode.config import load_default_profiles

    profiles = load_default_profiles()
    for modality, name in (("CT", "ct"), ("MR", "mr"), ("PT", "pet")):
        detect = profiles[name].params["detect"]
        assert ft.REPORTING[modality] == (float(detect["probability_threshold"]), int(detect["max_findings"]))
    assert ft.REPORTING["PT"][0] == 0.4
