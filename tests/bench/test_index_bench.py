"""bench/index.py: a small run through the real serve reports every figure and the index-backed query plans
(no timed assertions: the figures are for `dicomnode bench index` to print)."""

from __future__ import annotations

import json

from dicomnode.bench.index import main


def test_index_bench_reports_figures_and_index_backed_plans(capsys, tmp_path) -> None:
    assert main(["--instances", "3000", "--per-series", "100", "--slices", "4", "--rounds", "1",
                 "--work", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["full"]["instances_before"] == 3000 and report["empty"]["instances_before"] == 0
    for side in ("empty", "full"):
        r = report[side]
        assert len(r["ingest_rounds_s"]) == 1 and r["ingest_s"] > 0 and r["index_writer_per_cpu_s"] > 0
        assert r["status_s"] > 0 and r["status_cli_s"] > 0 and r["completion_scan_s"] > 0
        plans = r["query_plans"]
        assert all("USING" in plans[k] and "INDEX" in plans[k] for k in plans), plans
    assert set(report["met"]) == {"ingest", "status", "status_cli", "completion_scan"}
