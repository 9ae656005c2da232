"""steps/targets.py: the detect and synthesize steps in a profile, up to the SEG, SR and results.json."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicomnode.analysis.pipeline import Context, run_steps
from dicomnode.analysis.volume import Volume
from dicomnode.jobs.chain import run_chain
from dicomnode.jobs.spec import ChainSpec
from dicomnode.config import Profile
from dicomnode.steps import registry
from helpers import SHARED_DATA, dciodvfy

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analysis"))
from test_detect import TISSUE_SP, tissue_phantom  # noqa: E402
from test_masses import SP as LIMB_SP, _limbs  # noqa: E402

warnings.filterwarnings("ignore", category=UserWarning)
CHEST = SHARED_DATA / "chest-ct" / "A0002_B40f"
FINDING_KEYS = {"label", "centroid_mm", "volume_ml", "diameter_mm", "probability", "segment_number", "detect_features"}


def test_detect_step_on_a_tissue_phantom_adds_coded_segments_and_findings():
    registry()
    spheres = [((24, 40, 40), 10.0, 250.0), ((20, 70, 72), 14.0, 30.0)]
    img, _ = tissue_phantom(spheres, seed=3)
    v = Volume(img, TISSUE_SP, (5.0, 6.0, 7.0), np.eye(3), "MR", "")
    ctx = Context(volume=v, original=v)
    run_steps(ctx, ["segment", "detect"], {"segment": {"method": "generic"}, "detect": {"max_findings": 5}})
    assert len(ctx.findings) == 2
    for f in ctx.findings:
        assert set(f) == FINDING_KEYS
        seg = next(s for s in ctx.labels.segments if s.info.number == f["segment_number"])
        assert seg.info.label == f["label"] and f["label"].startswith("lesion_")
        assert seg.info.category.value == "49755003" and seg.info.type.value == "52988006"
        assert {m.name for m in ctx.measurements[seg.info.number]} == {"probability", "diameter_mm"}
        assert 0.5 <= f["probability"] <= 1
    centres = sorted(tuple(np.round(f["centroid_mm"], 1)) for f in ctx.findings)
    expected = sorted(tuple(np.round(v.index_to_patient(np.array(c))[0], 1)) for c, _, _ in spheres)
    assert np.allclose(centres, expected, atol=max(TISSUE_SP))


@pytest.mark.parametrize("scene, found", [
    ({"label": "extremity", "regions": []}, True),
    ({"label": "pelvis", "regions": [{"label": "extremity", "z_mm": [0.0, 200.0], "probability": 0.8}]}, True),
    ({"label": "pelvis", "regions": [{"label": "extremity", "z_mm": [100.0, 200.0], "probability": 0.8}]}, False),
    ({"label": "head", "regions": []}, False),
    (None, False),
])
def test_detect_step_looks_for_solid_masses_where_the_scene_says_limb(scene, found):
    """An isodense ball in one thigh (CT): the blob search sees nothing; the thickness search runs where the scene
    (which the shipped CT and MR profiles run before detect) says extremity, and only there: in the trunk and the
    head, organs are thick solid blocks."""
    registry()
    img, _ = _limbs(tumour=(100, 75))
    v = Volume(img, LIMB_SP, (0.0, 0.0, 0.0), np.eye(3), "CT", "HU")  # z_mm of the ball's centre: 75
    ctx = Context(volume=v, original=v)
    ctx.scene = scene
    run_steps(ctx, ["segment", "detect"], {"segment": {"method": "ct"}, "detect": {"method": "tissue_model"}})
    masses = [f for f in ctx.findings if f["detect_features"].get("solid_mass") == 1.0]
    assert bool(masses) is found
    if found:
        assert ctx.findings[0] is masses[0] and ctx.findings[0]["probability"] > 0.9
        x, y, z = ctx.findings[0]["centroid_mm"]
        assert (z - 75.0) ** 2 + (y - 100.0) ** 2 + (x - 75.0) ** 2 <= 35.0 ** 2
        assert any("solid masses: thickest solid lump" in n for n in ctx.notes)
    else:  # searched only where an extremity region is (and the mass outside it dropped)
        searched = any("solid masses" in n for n in ctx.notes)
        assert searched is any(r["label"] == "extremity" for r in (scene or {}).get("regions", []))


def test_detect_step_down_weights_signal_voids_on_mr_in_a_limb():
    """T1 MR of two thighs (muscle 300, fat 900, air 0) with a gas-filled ball (bowel gas: a signal void) in the fat:
    a dark blob to the blob search; in a limb it is down-weighted x0.1 as a signal void, elsewhere x0.1 as air (its
    core is at the level of air, :func:`dicomnode.analysis.detect.air_voids`), never twice; the same image as CT
    without HU (neither rule) gives the probability before."""
    registry()
    img, _ = _limbs(shape=(50, 200, 300), fat_r_mm=95.0)
    mr = np.interp(img, [-1000.0, -100.0, 50.0], [0.0, 900.0, 300.0]).astype(np.float32)
    z, y, x = np.meshgrid(*(np.arange(n, dtype=float) * s for n, s in zip(img.shape, LIMB_SP)), indexing="ij")
    void = (z - 75.0) ** 2 + (y - 26.0) ** 2 + (x - 225.0) ** 2 <= 14.0 ** 2  # in the right thigh's fat
    mr[void] = 15.0
    v = Volume(mr, LIMB_SP, (0.0, 0.0, 0.0), np.eye(3), "MR", "")
    raw = Volume(mr, LIMB_SP, (0.0, 0.0, 0.0), np.eye(3), "CT", "")
    probs = {}
    for name, scene, vol in (("limb", {"label": "extremity", "regions": []}, v), ("none", None, v),
                             ("raw", None, raw)):
        ctx = Context(volume=vol, original=vol)
        ctx.scene = scene
        run_steps(ctx, ["segment", "detect"], {"segment": {"method": "generic"},
                                               "detect": {"method": "tissue_model", "probability_threshold": 0.0,
                                                          "max_findings": 50}})
        at = [f for f in ctx.findings if (f["centroid_mm"][2] - 75) ** 2 + (f["centroid_mm"][1] - 26) ** 2
              + (f["centroid_mm"][0] - 225) ** 2 <= 6.0 ** 2]
        assert at, name
        probs[name] = at[0]
    assert probs["limb"]["detect_features"]["signal_void"] == 1.0
    assert "air_void" not in probs["limb"]["detect_features"]
    assert "signal_void" not in probs["none"]["detect_features"]
    assert probs["none"]["detect_features"]["air_void"] == 1.0
    assert not {"signal_void", "air_void"} & set(probs["raw"]["detect_features"])
    for name in ("limb", "none"):
        assert probs[name]["probability"] == pytest.approx(0.1 * probs["raw"]["probability"], rel=1e-3, abs=1e-4)


@pytest.mark.parametrize("scene, capped", [
    (None, True),
    ({"label": "abdomen", "regions": [{"label": "abdomen", "z_mm": [0.0, 120.0], "probability": 0.8}]}, True),
    ({"label": "head", "regions": [{"label": "head", "z_mm": [0.0, 116.0], "probability": 0.9}]}, False),
    # a series from the neck down: the bowel rule is off at the level of the neck only, read at each candidate
    ({"label": "abdomen", "regions": [{"label": "neck", "z_mm": [40.0, 116.0], "probability": 0.7},
                                      {"label": "abdomen", "z_mm": [0.0, 40.0], "probability": 0.8}]}, False),
    ({"label": "neck", "regions": [{"label": "neck", "z_mm": [90.0, 116.0], "probability": 0.7},
                                   {"label": "abdomen", "z_mm": [0.0, 90.0], "probability": 0.6}]}, True),
])
def test_detect_step_reads_the_scene_region_at_each_candidate_for_the_bowel_rule(scene, capped):
    """Fluid under a gas cap (the stomach of tests/analysis/test_mr_normal.py, centroid at z 60-66 mm) is bowel
    content where the scene's region at its level is not head or neck, whatever the series' dominant label; a
    series that is all head gets no bowel rule anywhere."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analysis"))
    from test_mr_normal import SP as MR_SP, _abdomen

    registry()
    _, body, img, fluid, _ = _abdomen()
    v = Volume(img, MR_SP, (0.0, 0.0, 0.0), np.eye(3), "MR", "")
    ctx = Context(volume=v, original=v)
    ctx.scene = scene
    run_steps(ctx, ["segment", "detect"], {"segment": {"method": "generic"},
                                           "detect": {"method": "tissue_model", "probability_threshold": 0.0,
                                                      "max_findings": 50, "min_diameter_mm": 4.0,
                                                      "min_volume_ml": 0.03}})
    z, y, x = fluid
    at = [f for f in ctx.findings if (f["centroid_mm"][2] - z) ** 2 + (f["centroid_mm"][1] - y) ** 2
          + (f["centroid_mm"][0] - x) ** 2 <= 10.0 ** 2]
    assert at
    feats = at[0]["detect_features"]
    assert (feats.get("bowel_content") == 1.0) is capped
    assert ("gas_cap" in feats) is capped


def test_detect_after_the_posteriors_are_released_finds_the_same():
    """detect reads only the class statistics of the posteriors: run after the runner has released them (they are
    kept in ctx.class_stats) it finds exactly what it finds with the posteriors still held (an unregistered step
    after it reads everything, so nothing is released)."""
    from dicomnode.analysis.pipeline import STEP_READS, STEPS

    registry()
    img, _ = tissue_phantom([((24, 40, 40), 10.0, 250.0), ((20, 70, 72), 14.0, 30.0)], seed=3)
    v = Volume(img, TISSUE_SP, (5.0, 6.0, 7.0), np.eye(3), "MR", "")
    params = {"segment": {"method": "generic"}, "detect": {"max_findings": 5, "probability_threshold": 0.0}}
    released = Context(volume=v, original=v)
    run_steps(released, ["segment", "correct", "detect"], params)
    assert released.posteriors is None and released.class_stats is not None
    STEPS["t_holds_all"] = lambda ctx, p: None  # registered without reads: reads everything
    try:
        held = Context(volume=v, original=v)
        run_steps(held, ["segment", "correct", "detect", "t_holds_all"], params)
    finally:
        STEPS.pop("t_holds_all", None)
        STEP_READS.pop("t_holds_all", None)
    assert held.posteriors is not None and held.findings
    assert released.findings == held.findings


def test_shipped_ct_and_mr_profiles_run_the_scene_before_detect():
    from dicomnode.config.node import load_default_profiles

    for name in ("ct", "mr"):
        steps = list(load_default_profiles()[name].steps)
        assert steps.index("scene") < steps.index("detect"), name


def test_step_parameters_are_checked():
    registry()
    v = Volume(np.zeros((4, 8, 8), np.float32), (1.0, 1.0, 1.0), modality="CT", unit="HU")
    with pytest.raises(Exception, match="unknown parameter"):
        run_steps(Context(volume=v, original=v), ["detect"], {"detect": {"method": "lung", "sigma": 1}})
    with pytest.raises(Exception, match="method"):
        run_steps(Context(volume=v, original=v), ["detect"], {"detect": {"method": "magic"}})
    with pytest.raises(Exception, match="projections"):
        run_steps(Context(volume=v, original=v), ["synthesize"], {"synthesize": {"projections": ["median"]}})
    ctx = Context(volume=v, original=v)
    run_steps(ctx, ["detect"], {})  # no lungs, no body: the tissue model over the whole (empty) volume
    assert ctx.findings == [] and not ctx.labels.segments


def test_synthesize_step_fills_derived():
    registry()
    a = np.random.default_rng(0).normal(0, 1, (12, 8, 8)).astype(np.float32)
    v = Volume(a, (2.0, 1.0, 1.0), modality="CT", unit="HU")
    ctx = Context(volume=v.with_array(a + 1), original=v)
    run_steps(ctx, ["synthesize"], {"synthesize": {"projections": ["mip", "minip", "avg"], "slab_mm": 8,
                                                   "include_working": True}})
    assert set(ctx.derived) == {"mip", "minip", "avg", "working"}
    assert ctx.derived["mip"].shape == (3, 8, 8) and ctx.derived["mip"].spacing_mm[0] == 8.0
    assert np.array_equal(ctx.derived["mip"].array[0], a[:4].max(axis=0))  # of the original by default
    assert ctx.derived["working"] is ctx.volume


def test_chest_ct_profile_reports_the_mass_in_seg_sr_and_results_json(tmp_path):
    profile = Profile(
        name="ct-targets",
        steps=("denoise", "segment", "correct", "detect", "measure", "synthesize"),
        params={"denoise": {"method": "gaussian", "sigma_mm": 0.8}, "correct": {"min_volume_ml": 0.5},
                "detect": {"method": "auto", "probability_threshold": 0.9, "max_findings": 5},
                "synthesize": {"projections": ["mip"], "slab_mm": 16}},
    )
    files = tuple(str(p) for p in sorted(CHEST.glob("*.dcm")))
    outcome = run_chain(ChainSpec(files=files, profile=profile, out_dir=str(tmp_path), uid_root="2.25."))
    results = json.loads(Path(outcome.results_json).read_text())
    assert results["findings"], results["notes"]
    top = max(results["findings"], key=lambda f: f["probability"])
    assert set(top) == FINDING_KEYS and top["label"].startswith("mass_")
    assert top["centroid_mm"][0] < 0  # the patient's right
    # the features the probability came from, as LUNG_MODEL reads them
    assert {"log10_volume_ml", "compactness", "elongation", "contrast", "lung_contact"} <= set(top["detect_features"])
    assert top["detect_features"]["volume_ml"] == pytest.approx(top["volume_ml"], rel=1e-3)
    seg_entry = next(s for s in results["segments"] if s["number"] == top["segment_number"])
    assert seg_entry["type"] == "Mass" and seg_entry["volume_ml"] == pytest.approx(top["volume_ml"], rel=1e-3)
    seg = pydicom.dcmread(tmp_path / "seg.dcm")
    assert top["label"] in [s.SegmentLabel for s in seg.SegmentSequence]
    errors, out = dciodvfy(tmp_path / "sr.dcm")
    assert errors == 0, out
    sr_text = str(pydicom.dcmread(tmp_path / "sr.dcm"))
    assert "Probability" in sr_text and top["label"] in sr_text


def test_shipped_findings_model_is_fitted_leave_one_patient_out_and_selectable():
    """``model = "findings"`` is the shipped, fitted model (scripts/evaluate_findings.py --write-model); its card says
    how it was scored. "hand-set" (the default) gives the naive Bayes; the lung method takes no other model."""
    from dicomnode.analysis.detect import TISSUE_MODEL
    from dicomnode.modelio import load_model, resolve_model

    m = load_model(resolve_model("findings"), task="findings")
    assert m.card.classes == ("other", "target")
    assert "leave-one-patient-out" in m.card.cv_scheme and set(m.card.extra["fill"]) == set(m.card.feature_names)
    assert len(m.card.extra["lopo"]) == 11  # every tissue-method series with a truth, scored held out
    registry()
    spheres = [((24, 40, 40), 10.0, 250.0)]
    img, _ = tissue_phantom(spheres, seed=3)
    v = Volume(img, TISSUE_SP, (5.0, 6.0, 7.0), np.eye(3), "MR", "")
    probs = {}
    for model in ("findings", "hand-set", None):
        ctx = Context(volume=v, original=v)
        detect = {"probability_threshold": 0.0} if model is None else {"model": model, "probability_threshold": 0.0}
        run_steps(ctx, ["segment", "detect"], {"segment": {"method": "generic"}, "detect": detect})
        top = ctx.findings[0]
        probs[model] = top["probability"]
        if model != "findings":
            assert top["probability"] == pytest.approx(TISSUE_MODEL.posterior(
                {k: float(x) for k, x in top["detect_features"].items()}), abs=1e-3)
    assert probs["findings"] != probs["hand-set"]
    ct = Volume(np.zeros((4, 8, 8), np.float32), (1.0, 1.0, 1.0), modality="CT", unit="HU")
    with pytest.raises(Exception, match="lung method"):
        run_steps(Context(volume=ct, original=ct), ["detect"], {"detect": {"method": "lung", "model": "findings"}})


def test_calibrated_model_keeps_the_hand_set_ranking_and_maps_it_with_the_card_calibration(tmp_path):
    """``model = "calibrated"`` (the shipped profiles'): the same naive Bayes ranking, each probability mapped by the
    calibration the findings card carries (``extra.calibration``, fitted by dicomnode.findings_training, its held-out
    figures in the card); the score is kept as ``ranking_score``. A calibration file (``dicomnode train --task
    findings``) given as the model does the same with its own numbers, for the lung method too."""
    from dicomnode.analysis.detect import ScoreCalibration
    from dicomnode.findings_training import FindingsCalibration
    from dicomnode.modelio import load_model, resolve_model

    card = load_model(resolve_model("findings"), task="findings").card.extra["calibration"]
    assert card["slope"] > 0 and card["top_weight"] >= 0 and card["cap"] <= 0.9 and len(card["lopo"]) == 13
    assert card["by_modality"]["PT"]["logit_clip"] > card["logit_clip"]  # PET: its own map
    shipped = FindingsCalibration.from_dict(card).for_modality("MR")
    other = FindingsCalibration(ScoreCalibration(1.0, -0.5, 1.0, 0.8, 4.0), {"PT": ScoreCalibration(1.0, 0.0)})
    path = other.save(tmp_path / "site.json")
    registry()
    spheres = [((24, 40, 40), 10.0, 250.0), ((24, 70, 70), 6.0, 180.0)]
    img, _ = tissue_phantom(spheres, seed=3)
    v = Volume(img, TISSUE_SP, (5.0, 6.0, 7.0), np.eye(3), "MR", "")
    out = {}
    for model in ("hand-set", "calibrated", str(path)):
        ctx = Context(volume=v, original=v)
        run_steps(ctx, ["segment", "detect"], {"segment": {"method": "generic"},
                                               "detect": {"model": model, "probability_threshold": 0.0,
                                                          "max_findings": 10}})
        out[model] = ctx.findings
    for model, mapping in (("calibrated", shipped), (str(path), other.mapping)):
        assert [f["centroid_mm"] for f in out["hand-set"]] == [f["centroid_mm"] for f in out[model]]
        for h, c in zip(out["hand-set"], out[model]):
            assert c["detect_features"]["ranking_score"] == pytest.approx(h["probability"], abs=1e-3)
            top = bool(c["detect_features"]["top_candidate"])
            assert top == (h is out["hand-set"][0])
            assert c["probability"] == pytest.approx(mapping.probability(c["detect_features"]["ranking_score"], top),
                                                     abs=2e-3)
            assert c["probability"] <= mapping.cap
    ct = Volume(np.zeros((4, 8, 8), np.float32), (1.0, 1.0, 1.0), modality="CT", unit="HU")
    for model in ("calibrated", str(path)):  # the lung method takes the calibration too
        run_steps(Context(volume=ct, original=ct), ["detect"], {"detect": {"method": "lung", "model": model}})
    with pytest.raises(Exception, match="findings calibration"):
        (tmp_path / "bad.json").write_text("{}")
        run_steps(Context(volume=v, original=v), ["segment", "detect"],
                  {"segment": {"method": "generic"}, "detect": {"model": str(tmp_path / "bad.json")}})
    probs = [c["probability"] for c in out["calibrated"]]
    assert probs == sorted(probs, reverse=True)  # the ranking is the hand-set one


def _pet_context(last: bool):
    """The bench's whole-body PET phantom at half its resolution, through segment and correct."""
    from dicomnode.bench.analysis import make_pet_phantom
    from dicomnode.config import load_default_profiles

    registry()
    shape, sp = (275, 85, 85), (6.54, 8.14, 8.14)
    img = make_pet_phantom(shape, sp, rng=np.random.default_rng(0))
    v = Volume(img, sp, (-300.0, -250.0, -900.0), np.eye(3), "PT", "SUV")
    prof = load_default_profiles()["pet"]
    params = {k: dict(p) for k, p in prof.params.items()}
    params["detect"].update(probability_threshold=0.0, max_findings=20)
    ctx = Context(volume=v, original=v)
    run_steps(ctx, ["denoise", "segment", "correct"], params)
    if not last:  # a later step reads the working image: the detect step must leave it whole
        ctx.later_reads = frozenset({"volume"})
    else:
        ctx.later_reads = frozenset()
    return ctx, params["detect"]


@pytest.mark.parametrize("last", [True, False])
def test_detect_step_on_pet_searches_the_body_box_and_finds_what_the_whole_grid_finds(monkeypatch, last):
    """On a PET the detect step hands the tissue search the body's box of the image (no whole-grid body mask; the
    rest of the working image let go when no later step reads it): the same findings, features and probabilities,
    placed on the grid, as the search over the whole grid (which crops to that box itself)."""
    from dicomnode.analysis.pipeline import STEPS
    from dicomnode.steps import targets

    ctx, params = _pet_context(last)
    working = ctx.volume
    assert working is not ctx.original
    STEPS["detect"](ctx, dict(params))
    assert (ctx.volume is ctx.original) if last else (ctx.volume is working)
    assert ctx.findings
    ref, _ = _pet_context(last)
    monkeypatch.setattr(targets, "_pet_search_box", lambda *a: None)  # as before: the whole grid, a whole mask
    STEPS["detect"](ref, dict(params))
    assert ref.findings == ctx.findings
    for f in ctx.findings:
        assert np.array_equal(ctx.labels.by_label(f["label"]).mask, ref.labels.by_label(f["label"]).mask)


def _shipped_profile_on(name: str, folder: Path):
    """A shipped profile with its detect limits opened (threshold 0, 10 findings), its reporting threshold, and the
    series in ``folder``."""
    from dicomnode.config import load_default_profiles
    from dicomnode.io.load import load_series
    from dicomnode.net.scu import iter_dicom_files

    registry()
    prof = load_default_profiles()[name]
    params = {k: dict(p) for k, p in prof.params.items()}
    threshold = params["detect"]["probability_threshold"]
    params["detect"].update(probability_threshold=0.0, max_findings=10)
    return prof, params, threshold, load_series(iter_dicom_files([folder]))


def test_a_phantom_gets_no_confident_finding():
    """The Philips MR phantom (../shared/data/enhanced-mr): the MR profile's scene says ``unknown`` and no body in
    view (a test phantom), so detect leaves out the calibration's top-of-series term (fitted on series that each show
    a tumour in a body) and says so: no candidate reaches the reporting threshold. With the scene saying a body is in
    view the same top candidate gets the term (p 0.9 before this rule: a phantom's insert reported as a lesion)."""
    phantom = SHARED_DATA / "enhanced-mr" / "philips_T1W_FFE_CS2_enhanced"
    prof, params, threshold, series = _shipped_profile_on("mr", phantom)
    steps = list(prof.steps[:prof.steps.index("detect")])
    ctx = Context(volume=series.volume, original=series.volume)
    run_steps(ctx, steps, params)
    assert ctx.scene["label"] == "unknown" and ctx.scene["body_in_view"] is False
    scene = dict(ctx.scene)
    run_steps(ctx, ["detect"], params)
    assert ctx.findings and max(f["probability"] for f in ctx.findings) < threshold
    assert any("no body in view" in n and "top-of-series term" in n for n in ctx.notes)
    top = ctx.findings[0]
    assert top["detect_features"]["top_candidate"] == 1.0
    placed = Context(volume=series.volume, original=series.volume)
    run_steps(placed, steps, params)
    placed.scene = {**scene, "body_in_view": True}  # (a body the scene cannot place keeps the term)
    run_steps(placed, ["detect"], params)
    assert placed.findings[0]["centroid_mm"] == top["centroid_mm"]
    assert placed.findings[0]["probability"] > threshold > top["probability"]


def test_air_in_a_head_ct_is_no_finding():
    """The tilted GE head CT (../shared/data/head-ct): its most lesion-like candidate was a 2.7 mL dark region whose
    core lies at about -340 HU (air in the mastoid or a sinus, below any fat), reported at p 0.9. On CT in HU a dark
    core below -250 HU is air (``ct_air_voids``): down-weighted x0.1, with ``core_hu`` and ``air_void`` in its
    features and a note; nothing reaches the reporting threshold."""
    prof, params, threshold, series = _shipped_profile_on("ct", SHARED_DATA / "head-ct" / "CT")
    ctx = Context(volume=series.volume, original=series.volume)
    run_steps(ctx, list(prof.steps[:prof.steps.index("detect") + 1]), params)
    assert ctx.findings and max(f["probability"] for f in ctx.findings) < threshold
    air = [f for f in ctx.findings if f["detect_features"].get("air_void") == 1.0]
    assert air and all(f["detect_features"]["core_hu"] < -250.0 for f in air)
    assert any(f["volume_ml"] == pytest.approx(2.69, abs=0.05) for f in air)
    dark = [f for f in ctx.findings if f["detect_features"].get("polarity") == -1.0]
    assert all("core_hu" in f["detect_features"] for f in dark)
    assert any("air in their core" in n for n in ctx.notes)
