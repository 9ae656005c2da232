"""steps/parameters.py: the parameter table config check uses agrees with the functions the steps call."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from dicomnode.steps.parameters import STEP_METHODS, STEP_PARAMETERS, check_step_params
from dicomnode.steps import step_names


def _keywords(fn, *drop: str) -> set[str]:
    return {n for n, p in inspect.signature(fn).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and n not in drop}


def _expected() -> dict[tuple[str, str | None], set[str]]:
    from dicomnode.analysis import correct, denoise, detect, enhance, segment
    from dicomnode.analysis.region_features import RegionFeatureSettings
    from dicomnode.analysis.steps import foreground

    limits = {f.name for f in dataclasses.fields(detect.DetectionSettings)}
    ct = _keywords(segment.segment_ct, "direction")
    generic = _keywords(segment.segment_generic, "rng")
    lung = _keywords(detect.detect_lung, "settings", "model") | limits
    tissue = _keywords(detect.detect_tissue, "settings", "class_means", "class_sds") | limits
    return {
        ("foreground", None): _keywords(foreground),
        **{("enhance", m): _keywords(getattr(enhance, m)) for m in STEP_METHODS["enhance"]},
        **{("denoise", m): _keywords(getattr(denoise, m)) for m in STEP_METHODS["denoise"]},
        ("segment", "ct"): ct, ("segment", "generic"): generic, ("segment", "auto"): ct | generic,
        ("segment", "foreground"): _keywords(foreground),
        ("correct", None): _keywords(correct.correct_labels) | {"posterior_sigma_mm", "posterior_iterations"},
        ("features", None): {f.name for f in dataclasses.fields(RegionFeatureSettings)},
        ("detect", "lung"): lung | {"model"}, ("detect", "tissue_model"): tissue, ("detect", "auto"): lung | tissue,
    }


def test_every_step_has_a_parameter_table():
    assert set(STEP_PARAMETERS) == set(step_names())


@pytest.mark.parametrize("step,method", list(_expected()))
def test_table_keys_are_the_keywords_of_the_function_the_step_calls(step, method):
    assert set(STEP_PARAMETERS[step][method]) == _expected()[(step, method)]


def test_shipped_profiles_pass():
    import tomllib

    from dicomnode.config import PROFILES_DIR

    for path in sorted(PROFILES_DIR.glob("*.toml")):
        doc = tomllib.loads(path.read_text())
        for step in doc["steps"]:
            assert check_step_params(step, doc.get(step, {})) == [], (path.name, step)


@pytest.mark.parametrize("step,params,key,words", [
    ("denoise", {"sigmamm": 1}, "sigmamm", "unknown parameter of step denoise with method = \"gaussian\"; allowed"),
    ("denoise", {"method": "gausian"}, "method", "use one of: gaussian, box_mean, median, nl_means"),
    ("denoise", {"sigma_mm": "1"}, "sigma_mm", "must be a number"),
    ("denoise", {"sigma_mm": -1}, "sigma_mm", "must be >= 0"),
    ("detect", {"probability_threshold": 1.5}, "probability_threshold", "must be <= 1"),
    ("detect", {"max_findings": 2.5}, "max_findings", "must be a whole number"),
    ("features", {"families": ["morphology", "shape"]}, "families", "a list drawn from"),
    ("features", {"bin_width": 0}, "bin_width", "must be > 0"),
    ("segment", {"method": "ct", "bone_range_hu": [3000, 200]}, "bone_range_hu", "low < high"),
    ("correct", {"fill_holes": "yes"}, "fill_holes", "true or false"),
    ("classify", {}, "model", "required by step classify"),
    ("synthesize", {"projections": ["mip", "max"]}, "projections", "mip, minip, avg"),
    ("measure", {"optional": 1}, "optional", "true or false"),
])
def test_problems_name_the_key_and_the_fix(step, params, key, words):
    problems = check_step_params(step, params)
    assert [p[0] for p in problems] == [key]
    assert words in problems[0][2]


def test_good_tables_pass():
    assert check_step_params("features", {"bin_width": "none", "n_bins": 32}) == []
    assert check_step_params("denoise", {"method": "box_mean", "n": 3, "optional": True}) == []
    assert check_step_params("segment", {"method": "auto", "body_threshold_hu": -500, "n_classes": 3}) == []
