"""Region growing of a blob candidate (dicomnode.analysis.detect): the shared growth step, on synthetic arrays (the
cut at a warmer neighbour, ``_basin_at``, was removed: docs/models.md, "PET growth stops at a warmer neighbour")."""

from __future__ import annotations

import numpy as np
from dicomnode.analysis.detect import _distance_mm, _grow_region, _seed_in

SP = (2.0, 2.0, 2.0)


def _gauss(shape, center, sd_vox, height):
    zz, yy, xx = np.indices(shape, dtype=float)
    d2 = (zz - center[0]) ** 2 + (yy - center[1]) ** 2 + (xx - center[2]) ** 2
    return height * np.exp(-d2 / (2.0 * sd_vox ** 2))


def test_seed_in_is_the_centres_voxel_in_the_box_clipped_to_it():
    box = (slice(3, 10), slice(0, 5), slice(2, 4))
    assert _seed_in((5.4, 2.6, 2.0), box) == [2, 3, 0]
    assert _seed_in((1.0, 9.0, 7.0), box) == [0, 4, 1]  # outside the box: its nearest face


def test_grow_region_stays_above_the_level_and_within_reach_and_reports_a_cut():
    shape = (20, 20, 20)
    z = _gauss(shape, (10, 10, 10), 3.0, 10.0)
    fg = np.ones(shape, dtype=bool)
    box = tuple(slice(0, n) for n in shape)
    dist = _distance_mm(box, (10, 10, 10), SP)
    region, trunc, closed = _grow_region(z, fg, dist, [10, 10, 10], reach_mm=30.0, level=5.0, polarity=1,
                                         spacing_mm=SP, max_seed_mm=2.0)
    assert region[10, 10, 10] and trunc == 0.0 and closed  # a blob well inside its reach closes
    assert np.all(z[region] > 5.0) and np.all(dist[region] <= 30.0)
    cut, trunc_cut, closed_cut = _grow_region(z, fg, dist, [10, 10, 10], reach_mm=6.0, level=5.0, polarity=1,
                                              spacing_mm=SP, max_seed_mm=2.0)
    assert cut.sum() < region.sum() and trunc_cut > 0.3 and not closed_cut  # the reach cuts it
    dark, *_ = _grow_region(-z, fg, dist, [10, 10, 10], reach_mm=30.0, level=-5.0, polarity=-1, spacing_mm=SP,
                           max_seed_mm=2.0)
    assert np.array_equal(dark, region)  # polarity -1 grows below the level
    assert _grow_region(z, fg, dist, [0, 0, 0], reach_mm=30.0, level=5.0, polarity=1, spacing_mm=SP,
                        max_seed_mm=2.0) is None  # nothing within max_seed_mm of the seed


def test_a_blob_that_closes_on_thick_slices_is_not_called_cut():
    """A blob closed by its own fall-off inside the growth limit is not cut, whatever the slice spacing: on 6.5 mm
    slices with 2 mm pixels its in-plane edge lies within one slice spacing of the limit, which the old band of the
    largest spacing counted as cut (a 53 mL sarcoma on doubled slices lost its rank: docs/evaluation.md)."""
    sp = (6.5, 2.0, 2.0)
    shape = (15, 41, 41)
    zz, yy, xx = np.indices(shape, dtype=float)
    r_mm = np.sqrt(((zz - 7) * sp[0]) ** 2 + ((yy - 20) * sp[1]) ** 2 + ((xx - 20) * sp[2]) ** 2)
    z = np.where(r_mm <= 20.0, 10.0, 0.0)  # a 20 mm ball, level 10 on 0
    fg = np.ones(shape, dtype=bool)
    box = tuple(slice(0, n) for n in shape)
    dist = _distance_mm(box, (7, 20, 20), sp)
    region, trunc, closed = _grow_region(z, fg, dist, [7, 20, 20], reach_mm=23.0, level=5.0, polarity=1,
                                         spacing_mm=sp, max_seed_mm=2.0)
    assert np.array_equal(region, z > 5.0) and trunc == 0.0 and closed
    banded = _grow_region(z, fg, dist, [7, 20, 20], reach_mm=23.0, level=5.0, polarity=1, spacing_mm=sp,
                          max_seed_mm=2.0, band_cut=True)  # the PET model's definition: the band of 6.5 mm
    assert banded[1] > 0.5 and not banded[2]
    # the same ball inside a bar that runs on along the rows: the limit cuts the bar, and only there
    bar = z.copy()
    bar[(np.abs(zz - 7) <= 1) & (np.abs(xx - 20) <= 3)] = 10.0
    cut, trunc_cut, closed_cut = _grow_region(bar, fg, dist, [7, 20, 20], reach_mm=23.0, level=5.0, polarity=1,
                                              spacing_mm=sp, max_seed_mm=2.0)
    assert 0.0 < trunc_cut < 0.2 and not closed_cut
    assert np.all(dist[cut] <= 23.0) and cut[7, 20, 20]
