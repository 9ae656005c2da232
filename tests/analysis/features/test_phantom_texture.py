"""Every texture row of the IBSI-1 digital phantom reference table (408 rows), one test per row.

Comparison as /work/shared/data/ibsi/README.md prescribes: where the table gives a tolerance, |result - value| <=
tolerance; where it gives 0 (no published tolerance, value printed to 3 significant digits), the result rounded to 3
significant digits must equal the printed value (parsed as a float, so "2.2" means 2.20 and "1.2e+03" 1200).
"""

from __future__ import annotations

import csv
import math
from functools import lru_cache

import numpy as np
import pytest

from dicomnode.analysis.features.texture import AGGREGATIONS, FEATURES, texture_features
from helpers import SHARED_DATA

DATA = SHARED_DATA / "ibsi"
TEXTURE = ("GLCM", "GLRLM", "GLSZM", "GLDZM", "NGTDM", "NGLDM")
EXPECTED_ROWS = {"GLCM": 150, "GLRLM": 96, "GLSZM": 48, "GLDZM": 48, "NGTDM": 15, "NGLDM": 51}


def _rows() -> list[dict[str, str]]:
    with (DATA / "digital_phantom_reference.tsv").open(newline="", encoding="utf-8") as f:
        return [r for r in csv.DictReader(f, delimiter="\t") if r["family"] in TEXTURE]


ROWS = _rows()


@lru_cache(maxsize=1)
def _results() -> dict[tuple[str, str, str], float]:
    phantom = np.load(DATA / "digital_phantom.npz")
    values = texture_features(phantom["image"], phantom["mask"].astype(bool), 6)
    return {(v.family, v.feature, v.aggregation): v.value for v in values}


def _round_3_significant(x: float) -> float:
    return float(f"{x:.3g}") if math.isfinite(x) else x


def test_table_covers_every_texture_feature_and_aggregation():
    counts = {f: sum(r["family"] == f for r in ROWS) for f in TEXTURE}
    assert counts == EXPECTED_ROWS
    keys = {(r["family"], r["feature"], r["aggregation"]) for r in ROWS}
    produced = set(_results())
    assert keys == produced  # every reference row is produced, and nothing beyond them
    assert all(len(FEATURES[f]) * len(AGGREGATIONS[f]) == n for f, n in EXPECTED_ROWS.items())


@pytest.mark.parametrize("row", ROWS, ids=[f"{r['family']}/{r['feature']}/{r['aggregation']}" for r in ROWS])
def test_reference_value(row):
    result = _results()[(row["family"], row["feature"], row["aggregation"])]
    reference = float(row["value"])
    tolerance = float(row["tolerance"])
    if tolerance > 0:
        assert abs(result - reference) <= tolerance, f"{result} vs {reference} +/- {tolerance}"
    else:
        rounded = _round_3_significant(result)
        assert rounded == reference, f"{result} (rounded {rounded}) vs {reference}"
