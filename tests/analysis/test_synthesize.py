"""Thick-slab projections: weights, values and the geometry of each output slice."""

from __future__ import annotations

import numpy as np
import pytest

from dicomnode.analysis.synthesize import slab_weights, thick_slab
from dicomnode.analysis.volume import Volume


def _volume(n=20, dz=2.0, direction=None):
    rng = np.random.default_rng(0)
    arr = rng.normal(0, 10, (n, 16, 12)).astype(np.float32)
    d = np.eye(3) if direction is None else direction
    return Volume(arr, (dz, 0.5, 0.7), (-10.0, 20.0, 100.0), d, "CT", "HU")


def test_slab_weights_cover_the_volume_in_contiguous_slabs():
    w, centres = slab_weights(20, 2.0, slab_mm=10.0, spacing_mm=10.0)
    assert w.shape == (4, 20)
    assert np.allclose(w.sum(axis=1), 10.0)       # each slab is 10 mm of source
    assert np.allclose(w.sum(axis=0), 2.0)        # each slice is used once, fully
    assert np.allclose(centres, [2.0, 7.0, 12.0, 17.0])  # slab k: slices 5k..5k+4, centre at index 5k+2


def test_overlapping_and_partial_slabs():
    w, centres = slab_weights(10, 3.0, slab_mm=4.0, spacing_mm=2.0)
    assert np.allclose(w.sum(axis=1), 4.0)
    assert centres[1] - centres[0] == pytest.approx(2.0 / 3.0)
    one, c = slab_weights(5, 2.0, slab_mm=50.0, spacing_mm=5.0)  # thicker than the volume: one slab
    assert one.shape == (1, 5) and c[0] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="slab_mm"):
        slab_weights(5, 2.0, slab_mm=0.0, spacing_mm=1.0)


def test_mip_minip_avg_values():
    v = _volume()
    mip = thick_slab(v, projection="mip", slab_mm=10.0)
    minip = thick_slab(v, projection="minip", slab_mm=10.0)
    avg = thick_slab(v, projection="avg", slab_mm=10.0)
    a = v.array
    assert np.array_equal(mip.array[1], a[5:10].max(axis=0))
    assert np.array_equal(minip.array[3], a[15:20].min(axis=0))
    assert np.allclose(avg.array[0], a[0:5].mean(axis=0), atol=1e-5)
    assert mip.unit == "HU" and mip.modality == "CT" and mip.array.dtype == np.float32
    with pytest.raises(ValueError, match="projection"):
        thick_slab(v, projection="median", slab_mm=10.0)


def test_each_output_slice_sits_at_its_slab_centre():
    theta = 0.3  # an oblique stack: the slice normal is not the patient z axis
    d = np.array([[1, 0, 0], [0, np.cos(theta), -np.sin(theta)], [0, np.sin(theta), np.cos(theta)]])
    v = _volume(direction=d)
    arr = np.zeros_like(v.array)
    arr[13, 4, 7] = 1000.0  # a bright point in slab 2 (slices 10..14)
    v = v.with_array(arr)
    mip = thick_slab(v, projection="mip", slab_mm=10.0)
    assert mip.spacing_mm == (10.0, 0.5, 0.7)
    k, j, i = np.unravel_index(np.argmax(mip.array), mip.shape)
    assert (k, j, i) == (2, 4, 7)
    # the output slice holding the point lies at the slab centre (source index 12), the point within half a slab
    out_xyz = mip.index_to_patient(np.array([k, j, i]))[0]
    assert np.allclose(out_xyz, v.index_to_patient(np.array([12.0, 4, 7]))[0])
    src_xyz = v.index_to_patient(np.array([13, 4, 7]))[0]
    assert np.linalg.norm(out_xyz - src_xyz) <= 5.0 + 1e-9
    assert np.allclose(mip.direction, d)


def test_avg_of_a_constant_is_that_constant_with_fractional_slabs():
    v = _volume(n=7, dz=3.0).with_array(np.full((7, 16, 12), 42.0, np.float32))
    avg = thick_slab(v, projection="avg", slab_mm=5.0, spacing_mm=2.5)
    assert np.allclose(avg.array, 42.0)
    assert avg.shape[0] == 7  # floor((21 - 5) / 2.5) + 1
