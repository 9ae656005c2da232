"""Region growing of a blob candidate (dicomnode.analysis.detect): the shared growth step and the cut at a saddle
towards a warmer neighbour, on synthetic arrays."""

from __future__ import annotations

import numpy as np
import pytest

from dicomnode.analysis.detect import _basin_at, _distance_mm, _grow_region, _seed_in

SP = (2.0, 2.0, 2.0)


def _gauss(shape, center, sd_vox, height):
    zz, yy, xx = np.indices(shape, dtype=float)
    d2 = (zz - center[0]) ** 2 + (yy - center[1]) ** 2 + (xx - center[2]) ** 2
    return height * np.exp(-d2 / (2.0 * sd_vox ** 2))


def _lesion_beside_organ(shape=(24, 24, 40)):
    """A lesion (peak 10) and, 13 voxels (26 mm) away on x, a warmer organ (peak 16), joined above level 3."""
    z = _gauss(shape, (12, 12, 12), 3.0, 10.0) + _gauss(shape, (12, 12, 25), 4.0, 16.0)
    return z, (12, 12, 12), (12, 12, 25)


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


def test_basin_cuts_a_lesion_from_a_warmer_neighbour_at_the_saddle():
    z, lesion, organ = _lesion_beside_organ()
    joined = z > 3.0
    assert joined[lesion] and joined[organ] and np.count_nonzero(joined) > 0
    from scipy import ndimage as ndi
    assert ndi.label(joined)[1] == 1  # one region above the level: the lesion leaks into the organ
    basin = _basin_at(z, joined, lesion, min_dip=2.0)
    assert basin[lesion] and not basin[organ]
    # the cut lies at the saddle: every voxel of the basin is nearer to the lesion's side of it
    xs = np.argwhere(basin)[:, 2]
    saddle_x = 12 + int(np.argmin(z[12, 12, 12:26]))
    assert xs.max() <= saddle_x + 1
    # the organ's side from a seed there
    other = _basin_at(z, joined, organ, min_dip=2.0)
    assert other[organ] and not other[lesion] and not np.any(basin & other)


def test_basin_keeps_the_region_when_the_dip_is_shallower_than_min_dip():
    z, lesion, organ = _lesion_beside_organ()
    joined = z > 3.0
    dip = z[lesion] - z[12, 12, 12:26].min()  # the lesion's peak over the saddle
    assert np.array_equal(_basin_at(z, joined, lesion, min_dip=dip + 0.5), joined)
    assert not np.array_equal(_basin_at(z, joined, lesion, min_dip=dip - 0.5), joined)


def test_basin_of_one_noisy_blob_is_the_whole_blob():
    rng = np.random.default_rng(5)
    shape = (20, 20, 20)
    z = _gauss(shape, (10, 10, 10), 3.0, 10.0) + rng.normal(0.0, 0.3, shape)
    region = z > 5.0
    from scipy import ndimage as ndi
    lab, _ = ndi.label(region)
    region = lab == lab[10, 10, 10]
    assert np.array_equal(_basin_at(z, region, (10, 10, 10), min_dip=2.0), region)


def test_basin_of_a_seed_outside_the_region_is_the_nearest_basin():
    z, lesion, organ = _lesion_beside_organ()
    joined = z > 3.0
    outside = (12, 12, 0)
    assert not joined[outside]
    assert np.array_equal(_basin_at(z, joined, outside, min_dip=2.0), _basin_at(z, joined, lesion, min_dip=2.0))


def test_basin_rejects_bad_arguments():
    z, lesion, _ = _lesion_beside_organ()
    with pytest.raises(ValueError, match="min_dip"):
        _basin_at(z, z > 3.0, lesion, min_dip=0.0)
    with pytest.raises(ValueError, match="one shape"):
        _basin_at(z, (z > 3.0)[1:], lesion, min_dip=1.0)
    assert not _basin_at(z, np.zeros(z.shape, dtype=bool), lesion, min_dip=1.0).any()


def test_grow_region_with_min_dip_stops_at_the_warmer_neighbour_and_closes():
    z, lesion, organ = _lesion_beside_organ()
    fg = np.ones(z.shape, dtype=bool)
    box = tuple(slice(0, n) for n in z.shape)
    dist = _distance_mm(box, lesion, SP)
    leaked, trunc, closed = _grow_region(z, fg, dist, list(lesion), reach_mm=30.0, level=3.0, polarity=1,
                                         spacing_mm=SP, max_seed_mm=2.0)
    assert leaked[organ] and trunc > 0 and not closed  # without the cut: into the organ, up to the limit
    cut, trunc_cut, closed_cut = _grow_region(z, fg, dist, list(lesion), reach_mm=30.0, level=3.0, polarity=1,
                                              spacing_mm=SP, max_seed_mm=2.0, min_dip=2.0)
    assert cut[lesion] and not cut[organ] and closed_cut  # stopped at the saddle, off the growth limit
    assert np.all(cut <= leaked)
    # its truncation counts the face it was cut along, against the organ: a neck, a small part of its boundary
    assert 0.0 < trunc_cut < 0.5


def test_grow_region_without_a_saddle_is_the_same_with_min_dip():
    shape = (20, 20, 20)
    z = _gauss(shape, (10, 10, 10), 3.0, 10.0)
    fg = np.ones(shape, dtype=bool)
    dist = _distance_mm(tuple(slice(0, n) for n in shape), (10, 10, 10), SP)
    for reach in (6.0, 30.0):
        plain = _grow_region(z, fg, dist, [10, 10, 10], reach_mm=reach, level=5.0, polarity=1, spacing_mm=SP,
                             max_seed_mm=2.0)
        cut = _grow_region(z, fg, dist, [10, 10, 10], reach_mm=reach, level=5.0, polarity=1, spacing_mm=SP,
                           max_seed_mm=2.0, min_dip=2.0)
        assert np.array_equal(plain[0], cut[0]) and plain[1:] == cut[1:]
