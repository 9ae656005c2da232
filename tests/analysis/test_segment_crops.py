"""segment_ct on the real chest CT (A0002) and on crops of it: lungs found when the field of view cuts through the
body, the lung fields hold the tumour the radiologists boxed, padding and other rescale intercepts handled.

The crops are made here from the shared series (a 20 cm field of view inside the chest, square and as a circular
reconstruction padded with -3024 HU), and once written as DICOM with another rescale intercept and a
PixelPaddingValue, then read by the product's loader.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests use --import-mode=importlib: find _load.py

from _load import load_dir  # noqa: E402
from dicomnode.analysis.segment import FOV_INSIDE_BODY_NOTE, segment_ct  # noqa: E402

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
CHEST = DATA / "chest-ct" / "A0002_B40f"
pytestmark = pytest.mark.skipif(not CHEST.is_dir(), reason=f"shared test data not found at {CHEST}")

CROP_MM = 200.0
CROP_ORIGIN = (110, 100)  # (row, column) of the crop's corner: the crop lies wholly inside the chest's outline


@pytest.fixture(scope="module")
def chest():
    volume, sop_uids = load_dir(CHEST)
    boxes = {}
    for xml in sorted((CHEST / "annotations").glob("*.xml")):
        bb = next(ET.parse(xml).getroot().iter("object")).find("bndbox")
        boxes[sop_uids.index(xml.stem)] = tuple(int(bb.findtext(t)) for t in ("xmin", "xmax", "ymin", "ymax"))
    return volume, boxes


def _crop(volume, n=None):
    n = n or int(round(CROP_MM / volume.spacing_mm[1]))
    r, c = CROP_ORIGIN
    return volume.array[:, r:r + n, c:c + n].copy(), n


def _lungs(res):
    left, right = res.labels.by_label("lung_left"), res.labels.by_label("lung_right")
    assert left is not None and right is not None, res.notes
    return left.mask, right.mask


def _box_fraction(mask, k, box, shift=(0, 0)):
    x0, x1, y0, y1 = box
    return float(mask[k, y0 - shift[0]:y1 + 1 - shift[0], x0 - shift[1]:x1 + 1 - shift[1]].mean())


def _check_intrapulmonary_boxes(lung, boxes, shift=(0, 0)):
    """z = 176..200 mm: the mass lies in the right lower lobe, against the posterior chest wall and the hilum. The
    air threshold alone covers 0.23-0.36 of these boxes (and all of the lowest); the lung field most of each."""
    got = [_box_fraction(lung, k, boxes[k], shift) for k in sorted(boxes)[:4]]
    assert min(got) >= 0.6 and np.mean(got) >= 0.8, got


def _ml(mask, volume):
    return float(np.count_nonzero(mask)) * volume.voxel_volume_mm3 / 1000.0


def test_lung_fields_hold_the_boxed_tumour_but_not_the_heart(chest):
    volume, boxes = chest
    res = segment_ct(volume.array, volume.spacing_mm, direction=volume.direction)
    left, right = _lungs(res)
    fields = left | right
    assert len(boxes) == 10
    _check_intrapulmonary_boxes(right, boxes)  # the patient's right lung (image left)
    # z = 208..248 mm: the mass is hilar/mediastinal, of soft-tissue density continuous with the mediastinum on a
    # non-contrast CT; the lung field reaches it (the box is not outside the lungs) but does not swallow the
    # mediastinum to take it
    for k in sorted(boxes)[4:]:
        assert _box_fraction(right, k, boxes[k]) >= 0.2, k
    # not the heart: the middle of the lowest boxed slice between the lungs is no lung, and the fields stay adult
    # lungs (0.5-3.5 L each, air threshold alone: 1.1 and 1.6 L on this series)
    k = min(boxes)
    row = int(np.mean(np.nonzero(fields[k])[0]))
    cols = np.flatnonzero(fields[k, row])
    heart = fields[k, row - 40:row + 1, (cols.min() + cols.max()) // 2 - 20:(cols.min() + cols.max()) // 2 + 20]
    assert not heart.any()
    for m in (left, right):
        assert 500 < _ml(m, volume) < 3500
    assert FOV_INSIDE_BODY_NOTE not in res.notes
    assert not any("not in view" in n for n in res.notes)


def test_lungs_found_in_a_20cm_crop_inside_the_chest(chest):
    volume, boxes = chest
    crop, n = _crop(volume)
    res = segment_ct(crop, volume.spacing_mm, direction=volume.direction)
    left, right = _lungs(res)
    assert FOV_INSIDE_BODY_NOTE in res.notes
    assert not any("not in view" in n for n in res.notes), res.notes
    assert any("cut by the edge" in n for n in res.notes)
    # a third of the crop's voxels are below -400 HU: most are lung (the rest: air in front of the chest and the
    # mattress behind it, both cut by the crop)
    air = crop < -400
    assert (air & (left | right)).sum() / air.sum() > 0.7
    # the right lung is on the image's left (column index increases to the patient's left)
    assert np.nonzero(right)[2].mean() < np.nonzero(left)[2].mean()
    # the mattress under the patient (foam, about -800 HU, cut by the crop's edge) is not lung
    assert not (left | right)[:, -8:, :].any()
    _check_intrapulmonary_boxes(right, boxes, CROP_ORIGIN)
    assert res.labels.by_label("body").mask.mean() > 0.85  # the whole crop is body


def test_circular_field_of_view_padded_with_minus_3024_is_not_air(chest):
    volume, boxes = chest
    crop, n = _crop(volume)
    yy, xx = np.ogrid[:n, :n]
    outside = (yy - n / 2) ** 2 + (xx - n / 2) ** 2 > (n / 2) ** 2
    crop[:, outside] = -3024.0
    res = segment_ct(crop, volume.spacing_mm, direction=volume.direction)
    left, right = _lungs(res)
    body = res.labels.by_label("body").mask
    assert FOV_INSIDE_BODY_NOTE in res.notes
    assert any("padding" in n for n in res.notes)
    assert not (body | left | right)[:, outside].any()
    assert body[:, ~outside].mean() > 0.85
    _check_intrapulmonary_boxes(right, boxes, CROP_ORIGIN)


def test_crop_written_with_another_intercept_and_padding_value_reads_and_segments(chest, tmp_path):
    """Stored values with RescaleIntercept -8192 (signed) and PixelPaddingValue -32768 outside the circle: the
    loader writes padding as the lowest real value (-1000 HU); the segmenter still tells it from air."""
    import pydicom
    from pydicom.uid import generate_uid

    from dicomnode.io.load import load_series

    volume, boxes = chest
    crop, n = _crop(volume)
    yy, xx = np.ogrid[:n, :n]
    outside = (yy - n / 2) ** 2 + (xx - n / 2) ** 2 > (n / 2) ** 2
    src = sorted(CHEST.glob("*.dcm"))
    series_uid = generate_uid()
    paths = []
    ordered = sorted(src, key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]))
    z_of = {float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]): p for p in ordered}
    zs = sorted(z_of)
    z_axis_up = volume.index_to_patient(np.array([[1.0, 0, 0]]))[0][2] > volume.index_to_patient(
        np.array([[0.0, 0, 0]]))[0][2]
    for k in range(crop.shape[0]):
        ds = pydicom.dcmread(z_of[zs[k] if z_axis_up else zs[-1 - k]])
        stored = np.round(crop[k] + 8192).astype(np.int16)
        stored[outside] = -32768
        ds.PixelData = stored.tobytes()
        ds.Rows = ds.Columns = n
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -8192, 1
        for tag in (0x00280106, 0x00280107, 0x00280108, 0x00280109):  # smallest/largest pixel values: stale
            if tag in ds:
                del ds[tag]
        ds.add_new(0x00280120, "SS", -32768)  # PixelPaddingValue
        r0, c0 = CROP_ORIGIN
        ipp = [float(v) for v in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [ipp[0] + c0 * volume.spacing_mm[2], ipp[1] + r0 * volume.spacing_mm[1], ipp[2]]
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        out = tmp_path / f"{k:03d}.dcm"
        ds.save_as(out, enforce_file_format=True)
        paths.append(out)
    vol = load_series(paths).volume
    assert vol.unit == "HU"
    inside = vol.array[:, ~outside]
    assert np.allclose(inside, crop[:, ~outside])  # the loader applied the intercept
    assert np.unique(vol.array[:, outside]).size == 1  # ... and filled the padding with one value
    res = segment_ct(vol.array, vol.spacing_mm, direction=np.asarray(vol.direction))
    left, right = _lungs(res)
    assert FOV_INSIDE_BODY_NOTE in res.notes
    assert not (left | right | res.labels.by_label("body").mask)[:, outside].any()
    _check_intrapulmonary_boxes(right, boxes, CROP_ORIGIN)


def test_no_lungs_in_view_is_said_only_when_no_lung_density_air_is_in_view(chest):
    volume, _ = chest
    # the same crop without its lungs: every voxel below -400 HU set to soft tissue
    crop, _ = _crop(volume)
    crop[crop < -400] = 40.0
    res = segment_ct(crop, volume.spacing_mm, direction=volume.direction)
    assert "no lungs in view" in res.notes
    assert set(res.labels.not_found) >= {"lung_left", "lung_right"}


def test_a_crop_centred_on_the_tumour_keeps_each_lung_whole_and_the_heart_out(chest):
    """A targeted reconstruction centres its 20 cm field on the tumour (in the right lung, against the hilum): the
    body fills the crop, so its centre is the tumour's, not the patient's midline. A mid-sagittal plane there cut the
    right lung in two and joined its medial half to the left lung cut by the edge; that lung's field then spanned
    the heart and the spine, and the lung search found a 'mass' in the mediastinum. The lungs now come apart on
    their own (Hu et al. 2001): the right lung holds the boxes, the heart between the lungs is no lung."""
    volume, boxes = chest
    n = int(round(CROP_MM / volume.spacing_mm[1]))
    ks = sorted(boxes)
    cy = int(np.mean([0.5 * (boxes[k][2] + boxes[k][3]) for k in ks]))
    cx = int(np.mean([0.5 * (boxes[k][0] + boxes[k][1]) for k in ks]))
    origin = (cy - n // 2, cx - n // 2)
    crop = volume.array[:, origin[0]:origin[0] + n, origin[1]:origin[1] + n].copy()
    res = segment_ct(crop, volume.spacing_mm, direction=volume.direction)
    left, right = _lungs(res)
    assert FOV_INSIDE_BODY_NOTE in res.notes
    assert np.nonzero(right)[2].mean() < np.nonzero(left)[2].mean()
    _check_intrapulmonary_boxes(right, boxes, origin)
    # the left lung is the sliver the crop's right edge cuts: none of it in the crop's left half (the right lung)
    assert not left[:, :, : n // 2].any()
    # the heart: in the lowest boxed slice, the tissue between the lungs in front of the boxes is no lung
    k = min(boxes)
    x0, x1, y0, y1 = boxes[k]
    heart = (left | right)[k, max(0, y0 - origin[0] - 60):y0 - origin[0], x1 - origin[1] + 20:x1 - origin[1] + 60]
    assert heart.mean() < 0.05


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 1, 5), (1, 1, 40), (3, 2, 2)])
def test_a_ct_smaller_than_the_coarse_grid_is_segmented(shape):
    """A CT with fewer pixels along an axis than the coarse grid's factor (a one-row or one-pixel series) gets a
    coarse grid of at least one voxel: its body is found, nothing raises (an IndexError before)."""
    from dicomnode.analysis.segment import segment_ct

    res = segment_ct(np.full(shape, 40.0, dtype=np.float32), (3.0, 1.0, 1.0))
    body = next(s for s in res.labels.segments if s.info.label == "body")
    assert body.count() == int(np.prod(shape))
