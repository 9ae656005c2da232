"""perturb_findings: the findings of the lesion cases under perturbations that keep the truth, scored against the
truth put through the same array operation (perturb.perturb_mask)."""

from __future__ import annotations

import numpy as np

from dicomnode.analysis.volume import Volume
from dicomnode.evaluation import perturb as pt
from dicomnode.evaluation import perturb_findings as pf
from helpers import REPO


def _volume() -> Volume:
    a = np.full((20, 400, 400), -1000.0, np.float32)
    a[:, 60:340, 40:360] = 40.0  # a body, its centre at row 200, column 200
    d = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]])
    return Volume(a, (2.5, 1.0, 1.0), (-200.0, -200.0, 50.0), d, "CT", "HU")


def test_masks_go_through_the_volumes_array_operation():
    v = _volume()
    lesion = np.zeros(v.shape, bool)
    lesion[4:10, 70:100, 300:340] = True  # slices 4-9 (whole pairs), against the body's right edge, outside a 200 mm crop of its centre
    v.array[lesion] = 300.0
    for name in ("original", "feet_first", "flip_rows", "thick_slices", "noise", "pad_circle"):
        pv, pm = pt.perturb(v, name), pt.perturb_mask(lesion, v, name)
        assert pm.shape == pv.shape
        if name not in ("noise", "pad_circle"):  # the mask marks exactly the lesion's voxels in the perturbed array
            assert np.all(pv.array[pm] == 300.0) and pm.any()
    assert pt.perturb_mask(lesion, v, "mr_scale") is None  # not an MR: does not apply, as perturb says
    assert not pt.perturb_mask(lesion, v, "fov_200").any()  # the body-centred crop cuts the lesion away
    centre = pf._centre_yx([lesion])
    pm = pt.perturb_mask(lesion, v, "fov_200", centre_yx=centre)
    assert pm.sum() == lesion.sum()  # centred on it, the crop keeps all of it
    assert np.all(pt.perturb(v, "fov_200", centre_yx=centre).array[pm] == 300.0)


def test_a_sarcoma_mr_flipped_is_scored_against_its_flipped_contour(tmp_path):
    """STS_002's T1 MR (a gluteal sarcoma, a small crop), shipped models (in sample, to keep CI short), as stored
    and with its rows reversed: the physician's contour keeps its volume through the flip, and the most probable
    finding lies inside it both times, with no false finding at the reporting threshold."""
    rows = pf.findings_under_perturbations(REPO / "conf" / "evaluation" / "shared.toml", out_dir=tmp_path,
                                           in_sample=True, only=("sts-002-mr-t1",),
                                           perturbations=("original", "flip_rows"))
    got = {r.perturbation: r for r in rows}
    assert set(got) == {"original", "flip_rows"}
    assert got["original"].truth_ml > 10 and got["flip_rows"].truth_ml == got["original"].truth_ml
    for r in rows:
        assert r.top_true and r.lesions_found == 1 and r.false_findings == 0 and not r.error, r
    s = pf.summarise(rows)
    assert s["flip_rows"]["top_true"] == 1 and s["flip_rows"]["series"] == 1
