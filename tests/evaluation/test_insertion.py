"""The lesion inserter (dicomnode.evaluation.insertion) against closed-form volumes, contrasts and noise levels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from dicomnode.evaluation.insertion import (InsertedLesion, insert_lesion, local_background, sample_positions,
                                            semi_axes_mm)

SP = (3.0, 4.0, 4.0)


def _flat(level: float = 1.0, shape=(40, 48, 48)) -> np.ndarray:
    return np.full(shape, level, dtype=np.float32)


def test_semi_axes_give_the_volume():
    for ml, ratios in ((1.0, (1, 1, 1)), (5.0, (0.7, 1.2, 1.0)), (20.0, (1.4, 0.8, 0.9))):
        a = semi_axes_mm(ml, ratios)
        assert 4.0 / 3.0 * math.pi * np.prod(a) / 1000.0 == pytest.approx(ml, rel=1e-9)
        assert a[0] / a[1] == pytest.approx(ratios[0] / ratios[1])
    assert semi_axes_mm(1.0)[0] == pytest.approx(6.2035, abs=1e-3)  # a 1 mL sphere is 12.4 mm across
    with pytest.raises(ValueError, match="volume_ml"):
        semi_axes_mm(0.0)


@pytest.mark.parametrize("ml", [1.0, 5.0, 20.0])
def test_mask_volume_and_added_activity(ml):
    img = _flat(1.0)
    out, les = insert_lesion(img, SP, (20, 24, 24), volume_ml=ml, contrast=4.0, rng=np.random.default_rng(0),
                             noise=False)
    voxel_ml = np.prod(SP) / 1000.0
    # the half-inside mask holds the volume to within a voxel layer's worth on small lesions
    assert les.mask.sum() * voxel_ml == pytest.approx(ml, rel=0.25)
    assert les.volume_ml == pytest.approx(ml)
    assert les.background == pytest.approx(1.0)
    # blurring keeps the activity: added total = (contrast - 1) x background x volume
    assert (out - img).sum() * voxel_ml == pytest.approx(3.0 * ml, rel=0.02)
    assert img.max() == 1.0  # the input is not changed


def test_partial_volume_lowers_small_lesions_more():
    """Recovery (peak over true level) grows with size: a 1 mL sphere at 6.5 mm FWHM keeps well under its level,
    a 20 mL one nearly all of it (Soret et al. 2007)."""
    rec = {}
    for ml in (1.0, 20.0):
        out, _ = insert_lesion(_flat(1.0), SP, (20, 24, 24), volume_ml=ml, contrast=5.0,
                               rng=np.random.default_rng(0), noise=False)
        rec[ml] = (out.max() - 1.0) / 4.0
    assert 0.3 < rec[1.0] < 0.8
    assert rec[20.0] > 0.9
    assert rec[20.0] > rec[1.0] + 0.2


def test_noise_is_poisson_like():
    """The background's texture SD at level b is measured; the lesion at level L gets variance b_sd^2 x (L-b)/b more,
    so the total SD inside scales like sqrt(L / b)."""
    rng = np.random.default_rng(1)
    bg = ndi.gaussian_filter(rng.standard_normal((40, 64, 64)), 1.0)
    bg = (2.0 + 0.2 * bg / bg.std()).astype(np.float32)
    _, b_sd = local_background(bg, SP, (20, 32, 32), 10.0, 25.0)
    big = (20.0, 32.0, 32.0)
    out, les = insert_lesion(bg, SP, big, volume_ml=40.0, contrast=5.0, rng=np.random.default_rng(2))
    clean, _ = insert_lesion(bg, SP, big, volume_ml=40.0, contrast=5.0, rng=np.random.default_rng(2), noise=False)
    core = np.zeros(out.shape, dtype=bool)
    core[les.box] = ndi.binary_erosion(les.mask, iterations=2)
    extra = (out - clean)[core]
    # the added noise: variance b_sd^2 x (added / b), added about 4 x b inside: SD about 2 x b_sd
    assert extra.std() == pytest.approx(2.0 * b_sd, rel=0.35)
    assert abs(extra.mean()) < 0.2 * extra.std() + 0.05


def test_contains_and_truth():
    out, les = insert_lesion(_flat(1.0), SP, (20, 24, 24), volume_ml=2.0, contrast=3.0, rng=np.random.default_rng(0))
    assert isinstance(les, InsertedLesion)
    assert les.contains((20, 24, 24)) and les.contains((20.4, 23.6, 24.3))
    assert not les.contains((20, 24, 30)) and not les.contains((0, 0, 0))


def test_measured_background_scales_the_lesion():
    img = _flat(0.5)
    out, les = insert_lesion(img, SP, (20, 24, 24), volume_ml=20.0, contrast=4.0, rng=np.random.default_rng(0),
                             noise=False)
    assert les.background == pytest.approx(0.5)
    assert out[20, 24, 24] == pytest.approx(2.0, rel=0.1)  # 4 x 0.5, a 20 mL sphere recovers nearly all


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="contrast"):
        insert_lesion(_flat(), SP, (20, 24, 24), volume_ml=1.0, contrast=0.8, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="outside the grid"):
        insert_lesion(_flat(), SP, (50, 24, 24), volume_ml=1.0, contrast=3.0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="background"):
        insert_lesion(_flat(0.0), SP, (20, 24, 24), volume_ml=1.0, contrast=3.0, rng=np.random.default_rng(0))


def test_sample_positions_keep_their_distance():
    allowed = np.zeros((40, 48, 48), dtype=bool)
    allowed[5:35, 5:43, 5:43] = True
    rng = np.random.default_rng(3)
    pts = sample_positions(allowed, SP, 6, rng, min_distance_mm=40.0, avoid=[(20, 24, 24)])
    assert len(pts) == 6
    arr = np.array(pts + [(20, 24, 24)], dtype=float) * SP
    d = np.linalg.norm(arr[:, None] - arr[None], axis=2)
    assert d[np.triu_indices(len(arr), 1)].min() >= 40.0
    assert all(allowed[p] for p in pts)
    again = sample_positions(allowed, SP, 6, np.random.default_rng(3), min_distance_mm=40.0, avoid=[(20, 24, 24)])
    assert again == pts  # seeded: the same positions
    assert sample_positions(np.zeros_like(allowed), SP, 3, rng) == []
