"""inserted: lesions inserted into another patient's PET give true candidates, labelled by the node's own chain;
the table of them round-trips and never uses the bench's seeds."""

from __future__ import annotations

import numpy as np
import pytest

from dicomnode.config import load_default_profiles
from dicomnode.evaluation import inserted as ins
from helpers import SHARED_DATA


def test_an_inserted_lesion_is_a_true_candidate_of_the_chain_tagged_with_its_patient(tmp_path):
    sts = SHARED_DATA / "sts" / "STS_002"
    src = ins.Source(sts / "PET", "STS_002", sts / "PET_rtstruct" / "RS.dcm", seed=5, runs=1, per_run=1,
                     sizes_ml=(8.0, 8.0), contrasts=(6.0, 6.0))
    cands, desc = ins.inserted_candidates(src, load_default_profiles()["pet"])
    assert desc["inserted"] == 1 and desc["found_as_candidate"] == 1
    true = [c for c in cands if c.true]
    assert len(true) == 1 and true[0].inserted and true[0].patient == "STS_002"
    assert true[0].group == "tissue_model/PT" and true[0].score > 0.5
    assert 3.0 < true[0].volume_ml < 20.0  # the 8 mL lesion, blurred by the 6.5 mm PSF
    assert all(c.inserted and c.patient == "STS_002" for c in cands) and len(cands) > 1
    path = ins.write_table(tmp_path / "t.json", cands, [desc])
    back = ins.read_table(path)
    assert [(c.case, c.score, c.true, c.top) for c in back.candidates] == [(c.case, c.score, c.true, c.top)
                                                                           for c in cands]
    assert ins.is_current(back)
    assert back.without_whole_body().candidates == back.candidates


def test_bench_seeds_are_refused_and_a_bad_table_says_how_to_regenerate(tmp_path):
    for seed in ins.BENCH_SEEDS:
        with pytest.raises(ValueError, match="bench pet_lesions"):
            ins.Source(SHARED_DATA / "x", "p", seed=seed)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="python3 -m dicomnode.evaluation.inserted"):
        ins.read_table(tmp_path / "bad.json")


def test_the_shipped_table_holds_true_pet_candidates_of_every_source_patient():
    table = ins.read_table()
    assert {c.patient for c in table.candidates} == {"STS_001", "STS_002", "STS_003"}
    assert all(c.inserted and c.group.endswith("/PT") for c in table.candidates)
    assert all(s["seed"] not in ins.BENCH_SEEDS for s in table.sources)
    for patient in ("STS_001", "STS_002", "STS_003"):
        assert sum(c.true for c in table.candidates if c.patient == patient) >= 20
    assert np.mean([c.true for c in table.candidates]) < 0.5
