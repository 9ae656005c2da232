"""perturb: scene recognition under perturbations that keep the truth (feet first, rows flipped, a 200 mm field of
view, thick slices, noise, a padded CT circle, MR scaled, one region of a whole-body series alone)."""

from __future__ import annotations

import numpy as np
import pytest

from dicomnode.analysis.volume import Volume
from dicomnode.evaluation import perturb as pt
from helpers import REPO


def _position(v: Volume, iz: int, iy: int, ix: int) -> np.ndarray:
    return np.asarray(pt._shift(v, iz, iy, ix))


def _volume() -> Volume:
    rng = np.random.default_rng(1)
    a = rng.normal(0.0, 1.0, (20, 300, 320)).astype(np.float32)
    d = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]])  # slices stored feet to head
    return Volume(a, (2.5, 0.9, 0.8), (-120.0, -140.0, 50.0), d, "MR", "")


def test_geometric_perturbations_keep_each_voxel_at_its_patient_position():
    v = _volume()
    ff = pt.perturb(v, "feet_first")
    assert ff.array[0, 5, 7] == v.array[-1, 5, 7]
    assert np.allclose(_position(ff, 0, 5, 7), _position(v, v.shape[0] - 1, 5, 7))
    fr = pt.perturb(v, "flip_rows")
    assert fr.array[3, 0, 7] == v.array[3, -1, 7]
    assert np.allclose(_position(fr, 3, 0, 7), _position(v, 3, v.shape[1] - 1, 7))
    v.array[:, 100:250, 60:300] += 10.0  # a "body" to centre the crop on
    crop = pt.perturb(v, "fov_200")
    assert crop.shape[1] * 0.9 == pytest.approx(200.0, abs=1.0) and crop.shape[2] * 0.8 == pytest.approx(200.0, abs=1)
    y0 = int(round((crop.origin_mm[1] - v.origin_mm[1]) / 0.9))
    x0 = int(round((crop.origin_mm[0] - v.origin_mm[0]) / 0.8))
    assert np.array_equal(crop.array, v.array[:, y0:y0 + crop.shape[1], x0:x0 + crop.shape[2]])
    thick = pt.perturb(v, "thick_slices")
    assert thick.spacing_mm[0] == 5.0 and thick.shape[0] == 10
    assert np.allclose(thick.array[0], 0.5 * (v.array[0] + v.array[1]), atol=1e-5)
    assert np.allclose(_position(thick, 0, 0, 0), 0.5 * (_position(v, 0, 0, 0) + _position(v, 1, 0, 0)))
    # one stretch of z alone: slices 9 ... 16 lie at z = 27.5 ... 10 mm
    part = pt.crop_z(v, 10.0, 27.5)
    assert part.shape[0] == 8 and np.allclose(_position(part, 0, 0, 0), _position(v, 9, 0, 0))
    assert np.array_equal(part.array, v.array[9:17])
    assert pt.crop_z(v, 500.0, 600.0) is None


def test_perturbations_that_do_not_apply_say_so():
    v = _volume()
    assert pt.perturb(v, "pad_circle") is None  # MR: no reconstruction circle
    assert pt.perturb(Volume(np.zeros((20, 200, 200), np.float32), (1.0, 1.0, 1.0), modality="CT", unit="HU"),
                      "fov_200") is None  # the field is already 200 mm
    assert np.array_equal(pt.perturb(v, "mr_scale").array, v.array * 4)
    with pytest.raises(ValueError, match="unknown"):
        pt.perturb(v, "rotate")


@pytest.mark.slow
def test_cropped_fields_of_view_are_never_called_confidently_wrong(tmp_path):
    """A 200 mm field of view inside an abdomen MR (the body fills it: was `extremity` p = 0.87) and around a 20 cm
    phantom (clipped on all sides: was `head` p = 0.89) are unknown now; a chest CT cut to 200 mm keeps its lungs
    and stays chest; no perturbation of these series gives a wrong label at p >= 0.5."""
    rows = pt.scene_under_perturbations(REPO / "conf" / "evaluation" / "shared.toml", out_dir=tmp_path, in_sample=True,
                                        only=("abdomen-mr-t2", "phantom-mr-philips-classic", "chest-ct-b40f"))
    got = {(r.case, r.perturbation): r for r in rows}
    assert got[("abdomen-mr-t2", "fov_200")].label == "unknown"
    assert got[("phantom-mr-philips-classic", "fov_200")].verdict == "right"  # unknown is its truth
    assert got[("chest-ct-b40f", "fov_200")].label == "chest"
    assert {r.perturbation for r in rows} >= {"original", "feet_first", "flip_rows", "fov_200", "thick_slices"}
    assert not [r for r in rows if r.verdict == "wrong_confident"]
    s = pt.summarise(rows)
    assert s["original"]["right"] == 3
