"""Image processing: IBSI grid alignment, interpolation on analytic images, re-segmentation."""

from __future__ import annotations

import numpy as np
import pytest

from dicomnode.analysis.features.processing import (
    crop_to_roi,
    outlier_mask,
    resample,
    resample_grid,
    resegment,
    roi_bounding_box,
)


def test_ibsi_grid_example() -> None:
    # IBSI manual, "Interpolation grid": 4 points at 3 mm -> ceil(4 * 3 / 2) = 6 points at 2 mm, origin at
    # x_b,g = (3 - 2/3 * 5) / 2 = -1/6 grid units = -0.5 mm; both grids share their centre (4.5 mm).
    shape, offset = resample_grid((4, 4, 4), (3.0, 3.0, 3.0), (2.0, 2.0, 2.0))
    assert shape == (6, 6, 6)
    assert offset == pytest.approx((-0.5, -0.5, -0.5))
    assert offset[0] + 2.0 * (shape[0] - 1) / 2 == pytest.approx(3.0 * 3 / 2)


def test_grid_size_is_robust_to_round_off() -> None:
    shape, offset = resample_grid((3, 10, 10), (0.7, 0.1, 0.3), (0.7, 0.1, 0.3))
    assert shape == (3, 10, 10) and offset == pytest.approx((0, 0, 0))


def _ramp(shape, spacing, coef=(0.5, -1.25, 2.0), const=3.0):
    z, y, x = (np.arange(n) * s for n, s in zip(shape, spacing))
    return (coef[0] * z[:, None, None] + coef[1] * y[None, :, None] + coef[2] * x[None, None, :] + const)


@pytest.mark.parametrize("order", [1, 3])
def test_linear_ramp_is_interpolated_exactly(order: int) -> None:
    spacing, new = (1.5, 0.8, 0.8), (1.0, 1.1, 0.7)
    shape = (12, 15, 16)
    image = _ramp(shape, spacing).astype(np.float32)
    mask = np.ones(shape, bool)
    out, _, grid = resample(image, mask, spacing, new_spacing_mm=new, order=order)
    assert out.dtype == np.float32
    pos = [grid.offset_mm[a] + np.arange(out.shape[a]) * new[a] for a in range(3)]
    expected = _ramp(out.shape, new) + sum(c * o for c, o in zip((0.5, -1.25, 2.0), grid.offset_mm))
    # Inside the original grid linear interpolation is exact. A cubic spline reproduces linear functions too, but
    # its boundary condition (IBSI: pad with the edge value) bends it near the edges, an error that shrinks by
    # 2 - sqrt(3) = 0.27 per voxel inwards: check it from 5 voxels in.
    edge = 0 if order == 1 else 5
    inside = [(p >= edge * s) & (p <= (n - 1 - edge) * s) for p, n, s in zip(pos, shape, spacing)]
    sel = np.ix_(*inside)
    np.testing.assert_allclose(out[sel], expected[sel], atol=1e-4 if order == 1 else 1e-3)  # float32 storage
    # Outside the grid: nearest boundary value, e.g. the first new x beyond the last original column.
    if (~inside[2]).any():
        assert np.isfinite(out).all()


def test_cropped_block_equals_the_whole_grid() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(20, 40, 40)).astype(np.float32)
    mask = np.zeros(image.shape, bool)
    mask[8:12, 15:25, 10:20] = True
    for order in (1, 3):
        full_img, full_mask, full = resample(image, mask, (1.5, 0.8, 0.8), new_spacing_mm=2.0, order=order)
        img, msk, grid = resample(image, mask, (1.5, 0.8, 0.8), new_spacing_mm=2.0, order=order, crop_margin_mm=3.0)
        assert grid.full_shape == full_img.shape
        block = tuple(slice(s, s + n) for s, n in zip(grid.start, img.shape))
        np.testing.assert_allclose(img, full_img[block], atol=1e-5)
        assert np.array_equal(msk, full_mask[block])
        assert msk.sum() == full_mask.sum()  # the whole ROI is inside the block
        assert grid.offset_mm == pytest.approx([o + s * 2.0 for o, s in zip(full.offset_mm, grid.start)])


def test_mask_partial_volume_threshold() -> None:
    # A slab 3 voxels (3 mm) thick at 1 mm, resampled to 2 mm. The new grid starts at (1 * 11 - 2 * 5) / 2 = 0.5 mm,
    # so new voxels sit at z = 0.5, 2.5, 4.5, 6.5 mm...: the slab (z = 4, 5, 6) interpolates to 0, 0, 1, 0.5.
    mask = np.zeros((12, 4, 4), bool)
    mask[4:7] = True
    image = mask.astype(np.float32) * 100
    _, new_mask, grid = resample(image, mask, (1.0, 1.0, 1.0), new_spacing_mm=2.0)
    assert grid.offset_mm[0] == pytest.approx(0.5)
    assert new_mask[:, 0, 0].tolist() == [False, False, True, True, False, False]  # 0.5 is kept at threshold 0.5
    _, strict, _ = resample(image, mask, (1.0, 1.0, 1.0), new_spacing_mm=2.0, pv_threshold=1.0)
    assert strict[:, 0, 0].tolist() == [False, False, True, False, False, False]


def test_in_plane_only_and_rounding() -> None:
    image = _ramp((5, 10, 10), (3.0, 0.7, 0.7)).astype(np.float32)
    out, mask, grid = resample(image, np.ones(image.shape, bool), (3.0, 0.7, 0.7), new_spacing_mm=2.0,
                               in_plane_only=True, round_intensities=True)
    assert out.shape[0] == 5 and grid.spacing_mm == (3.0, 2.0, 2.0) and grid.offset_mm[0] == 0.0
    assert np.array_equal(out, np.rint(out)) and mask.all()


def test_resample_rejects_bad_settings() -> None:
    img, m = np.zeros((3, 3, 3), np.float32), np.ones((3, 3, 3), bool)
    with pytest.raises(ValueError, match="spacing"):
        resample(img, m, (1, 1, 1), new_spacing_mm=0.0)
    with pytest.raises(ValueError, match="pv_threshold"):
        resample(img, m, (1, 1, 1), new_spacing_mm=1.0, pv_threshold=0.0)
    with pytest.raises(ValueError, match="shape"):
        resample(img, m[:2], (1, 1, 1), new_spacing_mm=1.0)


def test_resegment_and_outliers() -> None:
    image = np.array([[[-1200.0, -500.0, 0.0, 400.0, 401.0]]])
    mask = np.ones(image.shape, bool)
    assert resegment(image, mask, lower=-500, upper=400).tolist() == [[[False, True, True, True, False]]]
    assert resegment(image, mask, lower=-1000).sum() == 4  # half-open range
    values = np.r_[np.zeros(99), 1000.0].reshape(1, 1, 100)
    kept = outlier_mask(values, np.ones(values.shape, bool), n_sd=3.0)
    assert kept.sum() == 99 and not kept[0, 0, -1]


def test_crop_to_roi() -> None:
    mask = np.zeros((10, 10, 10), bool)
    mask[3:5, 4, 6:9] = True
    box = roi_bounding_box(mask, margin_voxels=(1, 0, 5))
    assert box == (slice(2, 6), slice(4, 5), slice(1, 10))
    image, cropped, start = crop_to_roi(np.arange(1000.0).reshape(10, 10, 10), mask, margin_voxels=1)
    assert start == (2, 3, 5) and cropped.sum() == mask.sum() and image[0, 0, 0] == 235.0
    with pytest.raises(ValueError, match="empty"):
        roi_bounding_box(np.zeros((2, 2, 2), bool))
