"""The shipped results.json schema (issue 16, item 14): a valid JSON Schema, installed with the package, and strict
about the keys it names. (Every results.json the tests make is checked against it by tests/conftest.py.)"""

from __future__ import annotations

import copy

import jsonschema
import pytest

from dicomnode.schemas import RESULTS_SCHEMA, results_schema

GOOD = {"series_instance_uid": "1.2.3", "modality": "CT", "profile": "ct", "profile_version": "1",
        "segments": [{"number": 1, "label": "body", "volume_ml": 1.5, "category": "Tissue", "type": "Body",
                      "features": {"volume_ml": 1.5, "mean": None}, "units": {"volume_ml": "ml", "mean": "[hnsf'U]"}}],
        "not_found": ["lung_left"], "steps": [{"name": "load", "seconds": 0.1, "peak_rss_mb": 10.0, "ok": True}],
        "findings": [{"label": "nodule", "probability": 0.7, "segment_number": 2, "centroid_mm": [1, 2, 3],
                      "volume_ml": 0.1, "diameter_mm": 5.0, "detect_features": {"a": 1.0}, "new_key": "kept"}],
        "scene": {"label": "chest", "probabilities": {"chest": 0.9, "abdomen": 0.1}, "header_body_part": None,
                  "agrees_with_header": None, "model": "scene.skops",
                  "regions": [{"label": "chest", "z_mm": [-300.0, -50.5], "probability": 0.95}]},
        "classifications": [], "similarities": [{"name": "shape_dice", "a": "lung_left", "b": "lung_right",
                                                 "value": 0.8, "method": "..."}],
        "corrections": {"body": 12}, "notes": ["scene: ..."], "outputs": ["seg.dcm", "sr.dcm"], "job_id": None,
        "a_future_key": {"anything": 1}}


def test_schema_is_valid_and_shipped():
    jsonschema.Draft202012Validator.check_schema(results_schema())
    assert RESULTS_SCHEMA.parent.name == "schemas" and RESULTS_SCHEMA.parent.parent.name == "dicomnode"


def test_known_keys_are_typed_and_new_keys_allowed():
    jsonschema.validate(GOOD, results_schema())
    radiomics = {"series_instance_uid": "1.2.3", "modality": "CT", "kind": "radiomics", "settings": "ibsi-config-C",
                 "rois": [{"label": "GTV", "number": 1, "source": "RTSTRUCT", "features": 170}],
                 "steps": [{"name": "radiomics", "seconds": 1.0, "ok": True}], "outputs": ["sr.dcm"], "job_id": 3}
    jsonschema.validate(radiomics, results_schema())


@pytest.mark.parametrize("path, value", [
    (("scene", "regions", 0, "z_mm"), [1.0]),
    (("scene", "probabilities", "chest"), 1.5),
    (("findings", 0, "probability"), "high"),
    (("segments", 0, "units", "mean"), 3),
    (("corrections", "body"), -1),
    (("series_instance_uid",), "1.2.abc"),
])
def test_wrong_types_are_refused(path, value):
    doc = copy.deepcopy(GOOD)
    node = doc
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, results_schema())
