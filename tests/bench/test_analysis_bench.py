"""`dicomnode bench analysis` on small phantoms: every shipped profile runs and its figures are there.

Figures are checked for presence and consistency only: speed is measured by the benchmark, never asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from dicomnode.bench.analysis import make_mr_phantom, make_pet_phantom


def test_bench_analysis_runs_every_shipped_profile_on_its_phantom(tmp_path) -> None:
    run = subprocess.run([sys.executable, "-m", "dicomnode", "bench", "analysis", "--shape", "24,96,96",
                          "--pet-shape", "110,40,40", "--pet-spacing-mm", "16,16,16", "--mr-shape", "20,96,96",
                          "--mr-spacing-mm", "6,4,4", "--warm"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout)
    assert out["bench"] == "analysis" and out["cpu_model"] and out["cpus"] >= 1
    assert [r["profile"] for r in out["runs"]] == ["ct", "pet", "mr", "generic"]
    assert [r["phantom"] for r in out["runs"]] == ["ct", "pet", "mr", "mr"]
    for r in out["runs"]:
        assert r["voxels"] == int(np.prod(r["shape_zyx"]))
        assert r["voxels_per_second"] > 0 and r["total_seconds"] > 0 and r["total_cpu_seconds"] > 0
        assert [s["name"] for s in r["steps"]] == r["steps_in_profile"] and all(s["ok"] for s in r["steps"])
        assert r["peak_rss_mb"] >= r["rss_before_mb"] > 0
        # the imports' fixed cost, measured before the phantom (which is then part of rss_before_mb)
        assert 0 < r["rss_after_imports_mb"] <= r["peak_rss_mb"]
        assert r["imports_over_volume"] == round(r["rss_after_imports_mb"] / r["float32_volume_mb"], 2) or \
            r["float32_volume_mb"] < 1
        assert r["peak_rss_over_volume"] == round(r["peak_rss_mb"] / r["float32_volume_mb"], 2) or \
            r["float32_volume_mb"] < 1
        assert r["segments_ml"], r["profile"]
        # --warm: run once first (imports, models: a job process's steady state)
        assert r["warm"] is True and r["warmup_seconds"] > 0 and r["warmup_error"] is None, r["warmup_error"]
        assert out["met"][r["profile"]]["ratio_to_ct"] == (r["ratio_to_ct"] >= 0.6)
    assert out["runs"][0]["ratio_to_ct"] == 1.0


def test_pet_phantom_has_physiological_uptake_and_lesions() -> None:
    img = make_pet_phantom(rng=np.random.default_rng(0))
    assert img.shape == (550, 170, 170) and img.dtype == np.float32 and img.min() >= 0
    # brain (top of the body) and bladder hotter than the liver, the liver hotter than the lungs and soft tissue
    spacing = (3.27, 4.07, 4.07)
    s = 550 * 3.27 / 1780

    def at(h_mm, y_mm, x_mm):
        k, j, i = (int((h_mm * s) / spacing[0]), int((170 * 4.07 / 2 + y_mm * s) / spacing[1]),
                   int((170 * 4.07 / 2 + x_mm * s) / spacing[2]))
        return float(img[k - 1:k + 2, j - 1:j + 2, i - 1:i + 2].mean())

    brain, bladder, liver, lung, thigh_mass = at(1680, 0, 0), at(920, -10, 0), at(1200, 0, -90), at(1350, -5, 75), \
        at(600, 0, 100)
    assert bladder > brain > liver > lung > 0
    assert thigh_mass > 2 * liver
    assert at(1000, 0, 300) == 0.0  # air beside the body


def test_mr_phantom_is_magnitude_with_bright_fat() -> None:
    img = make_mr_phantom((20, 96, 96), (6.0, 4.0, 4.0), rng=np.random.default_rng(0))
    assert img.min() >= 0 and img.dtype == np.float32
    air, fat, muscle = np.median(img[10, 40:56, 0:3]), np.median(img[10, 46:50, 8]), np.median(img[10, 30:34, 46:50])
    assert air < 150 < muscle < fat  # T1: subcutaneous fat brighter than muscle, air dark
