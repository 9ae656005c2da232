"""`dicomnode bench scale` end to end on tiny series: every round runs on its executor and the figures are there.

Figures are checked for presence and consistency only: speed is measured by the benchmark, never asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def test_bench_scale_runs_every_round_and_reports_cpu_and_scaling(tmp_path) -> None:
    run = subprocess.run([sys.executable, "-m", "dicomnode", "bench", "scale", "--series", "2", "--slices", "12",
                          "--size", "48", "--profile", "generic"], capture_output=True, text=True, timeout=600,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout)
    assert out["bench"] == "scale" and out["series"] == 2 and out["shape"] == [12, 48, 48]
    assert set(out["rounds"]) == {"local_1", "local_2", "dask_1", "dask_2"}
    for name, r in out["rounds"].items():
        assert r["series_per_min"] > 0 and r["mean_job_s"] > 0, name
        assert r["series_per_min"] * r["wall_s"] / 60 == pytest.approx(2, rel=0.02)
        assert r["cpu_s"]["workers"] > 0, (name, r["cpu_s"])  # the jobs ran in the workers, not in this process
    assert set(out["rounds"]["dask_2"]["cpu_s"]) == {"node", "scheduler", "nannies", "workers"}
    assert out["scaling_2_vs_1"] == round(out["rounds"]["dask_1"]["wall_s"] / out["rounds"]["dask_2"]["wall_s"], 3)
    assert out["scaling_met"] == (out["scaling_2_vs_1"] >= 1.8)
    assert {"local_scaling_2_vs_1", "dask_overhead_pct_of_job", "overhead_met"} <= set(out)
