"""bench/radiomics.py: the filtered (IBSI-2) round runs and reports its figures (no timed assertions)."""

from __future__ import annotations

import json

from dicomnode.bench.radiomics import FILTERS, main


def test_filtered_round_reports_each_filter(capsys) -> None:
    assert main(["--shape", "40,96,96", "--volume-ml", "5", "--cases", "filtered", "--no-mirp"]) == 0
    report = json.loads(capsys.readouterr().out)
    round_ = report["cases"]["filtered"]
    assert round_["unfiltered"]["n_values"] == 18
    assert set(round_["filters"]) == set(FILTERS)
    for name, r in round_["filters"].items():
        assert "error" not in r, (name, r)
        assert r["n_values"] == 18 and r["n_nan"] == 0
        assert r["seconds"] > 0 and r["cpu_seconds"] >= 0 and r["peak_rss_mb"] > 0
        assert isinstance(r["meets_target"], bool)
    assert report["mirp"] == {"measured": False, "why": "--no-mirp"}
