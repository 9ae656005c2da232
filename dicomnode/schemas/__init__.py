"""JSON Schemas of the files dicomnode writes, shipped with the package.

``results.schema.json``: ``results.json`` (see ``docs/results-json.md``). Validate with any JSON Schema
(2020-12) validator, e.g. ``jsonschema.validate(doc, results_schema())``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS_SCHEMA = Path(__file__).with_name("results.schema.json")


def results_schema() -> dict[str, Any]:
    """The JSON Schema of ``results.json``."""
    return json.loads(RESULTS_SCHEMA.read_text())
