"""bench/pet_lesions.py: lesions inserted into the real whole-body PET, run through the PET profile, scored; the JSON
figures (no timed assertions)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import SHARED_DATA  # noqa: E402

from dicomnode.bench.pet_lesions import REGIONS, main  # noqa: E402

WB = SHARED_DATA / "wholebody-pet-mr"


def test_pet_lesions_bench_scores_inserted_lesions(capsys, tmp_path) -> None:
    out = tmp_path / "pet.json"
    assert main(["--series", str(WB / "PET"), "--rtstruct", str(WB / "PET_rtstruct" / "1-1.dcm"),
                 "--sizes-ml", "5", "--contrasts", "6", "--regions", "liver", "axilla", "--per-run", "2",
                 "--seeds", "3", "--json", str(out), "-q"]) == 0
    printed = json.loads(capsys.readouterr().out)
    report = json.loads(out.read_text())
    assert printed["lesions_inserted"] == report["lesions_inserted"] == 2
    assert report["runs"] == 1 and {x["region"] for x in report["lesions"]} == {"liver", "axilla"}
    assert all(x["volume_ml"] == 5.0 and x["contrast"] == 6.0 for x in report["lesions"])
    # 5 mL at 6 x its background: found in the liver and the axilla, the sarcoma is no false finding
    assert report["lesions_found"] == 2, report["lesions"]
    assert report["false_per_run_max"] <= 2 and report["baseline"]["false"] <= 2
    assert report["by_region"]["liver"]["ci95"][1] == 1.0
    assert set(report["region_voxels"]) == set(REGIONS) and all(v > 0 for v in report["region_voxels"].values())


def test_pet_lesions_breakdown_says_which_stage_lost_each_lesion(tmp_path) -> None:
    # a 20 mL lesion at 6 x in the liver (found) and a 1 mL one at 3 x in the lung (at the resolution limit)
    out = tmp_path / "pet.json"
    assert main(["--series", str(WB / "PET"), "--rtstruct", str(WB / "PET_rtstruct" / "1-1.dcm"),
                 "--sizes-ml", "1", "20", "--contrasts", "3", "6", "--regions", "liver", "lung", "--per-run", "2",
                 "--seeds", "3", "--breakdown", "--json", str(out), "-q"]) == 0
    report = json.loads(out.read_text())
    assert report["lesions_inserted"] == len(report["lesions"]) >= 6  # (a 20 mL lung lesion may find no room)
    stages = {"found", "beyond_max_findings", "below_threshold", "merged", "no_candidate"}
    for x in report["lesions"]:
        assert x["stage"] in stages and (x["stage"] == "found") == x["found"], x
        assert x["depth_mm"] > 0 and x["hot_uptake_mm"] >= 25.0  # placed inside the trunk, away from hot uptake
        if x["stage"] in ("found", "below_threshold"):
            # the candidate centred in it: a reported one at or above the profile's threshold, or one below it
            assert (x["best_candidate_probability"] >= 0.5) == (x["stage"] == "found"), x
    big = [x for x in report["lesions"] if x["region"] == "liver" and x["volume_ml"] == 20.0 and x["contrast"] == 6.0]
    assert big and all(x["found"] for x in big)
    missed = report["missed_by_stage"]
    assert sum(missed.values()) == report["lesions_inserted"] - report["lesions_found"]
    # the threshold sweep at the profile's own threshold is the bench's figures; lower thresholds report more
    sweep = report["threshold_sweep"]
    assert sweep["0.5"]["found"] == report["lesions_found"]
    assert sweep["0.5"]["false_per_run_mean"] == report["false_per_run_mean"]
    assert sweep["0.1"]["found"] >= sweep["0.3"]["found"] >= sweep["0.5"]["found"]
