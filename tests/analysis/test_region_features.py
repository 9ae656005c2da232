import numpy as np

from dicomnode.analysis.features.intensity import statistics_features
from dicomnode.analysis.region_features import RegionFeatureSettings, region_features


def _sphere(shape=(40, 48, 48), r=10.0):
    z, y, x = np.indices(shape)
    c = np.array(shape) / 2
    return (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= r * r


def test_basic_and_ibsi_features_of_a_segment():
    rng = np.random.default_rng(0)
    mask = _sphere()
    img = np.round(rng.normal(40, 10, mask.shape)).astype(np.float32)
    meas, notes = region_features(img, mask, (1.0, 1.0, 1.0), unit="HU")
    by = {m.name: m for m in meas}
    assert abs(by["volume_ml"].value - mask.sum() / 1000.0) < 1e-12 and by["volume_ml"].unit == "ml"
    assert abs(by["mean"].value - img[mask].mean()) < 1e-6 and by["mean"].unit == "[hnsf'U]"
    # IBSI statistics equal the reference implementation of the family on the same values
    ref = {f.feature: f.value for f in statistics_features(img[mask].astype(np.float64))}
    assert abs(by["intensity statistics/median"].value - ref["median"]) < 1e-9
    assert by["morphology/volume (voxel counting)"].value == mask.sum()
    assert by["morphology/volume (mesh)"].unit == "mm3"
    assert 0.8 < by["morphology/sphericity"].value <= 1.0
    assert not notes


def test_constant_segment_gets_no_ivh_and_no_crash():
    mask = _sphere()
    img = np.full(mask.shape, 40.0, np.float32)
    meas, notes = region_features(img, mask, (1.0, 1.0, 1.0), unit="HU")
    assert not any(m.name.startswith("intensity-volume") for m in meas)
    assert any("all equal" in n for n in notes)


def test_large_segments_use_a_coarser_grid_for_morphology_and_say_so():
    mask = _sphere((60, 80, 80), 25)
    img = np.zeros(mask.shape, np.float32)
    settings = RegionFeatureSettings(morphology_max_voxels=5000, moran_max_voxels=1000)
    meas, notes = region_features(img, mask, (1.0, 0.5, 0.5), unit="HU", settings=settings)
    by = {m.name: m.value for m in meas}
    true_mm3 = mask.sum() * 0.25
    assert abs(by["morphology/volume (mesh)"] - true_mm3) / true_mm3 < 0.1
    assert any("block-averaged grid" in n for n in notes)
    assert "morphology/Moran's I index" not in by


def test_unknown_parameter_is_refused_with_the_allowed_ones():
    import pytest
    with pytest.raises(ValueError, match="allowed"):
        RegionFeatureSettings.from_params({"bins": 3})
