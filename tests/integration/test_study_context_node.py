"""Issue 13, the scene from the study's anatomy, through a running node: a PET/CT study sent by storescu over
loopback; the PET's job reads its study's CT (same frame of reference, complete, matched by no rule) and its scene
names the region its own crop cannot."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import SHARED_DATA, storescu, wait_until

STS2 = SHARED_DATA / "sts" / "STS_002"


def test_a_pet_sent_after_its_ct_gets_the_cts_anatomy(make_node):
    node = make_node({"profiles": {"scene-only": {"steps": ["scene"], "outputs": []}},
                      "rules": [{"name": "pet", "match": {"Modality": "PT"}, "profile": "scene-only"}]})
    assert storescu(node.port, [STS2 / "CT"]).returncode == 0
    # the CT matches no rule: complete without a job (unrouted), kept in the index as the study's anatomy
    wait_until(lambda: [s["state"] for s in node.status()["series"]] == ["unrouted"], timeout_s=60,
               what="the CT complete")
    assert storescu(node.port, [STS2 / "PET"]).returncode == 0

    def finished():
        jobs = [j for j in node.status()["jobs"]["recent"] if j["state"] in ("done", "failed")]
        return jobs[0] if jobs else None
    job = wait_until(finished, timeout_s=240, what="the PET's job")
    assert job["state"] == "done", node.log()[-3000:]
    results = json.loads(Path(job["result_dir"], "results.json").read_text())
    assert results["modality"] == "PT"
    scene = results["scene"]
    assert scene["label"] == "pelvis", results["notes"]
    assert any(str(r.get("source", "")).startswith("CT series 3") for r in scene["regions"])
    assert any("borrowed from CT series 3" in n for n in results["notes"])
