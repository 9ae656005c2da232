"""segment.py on real series: chest CT, head MR and the cropped sarcoma CT / MR / PET (../shared/data)."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests use --import-mode=importlib: find _load.py

from _load import load_dir, rasterise_rtstruct  # noqa: E402
from dicomnode.analysis.correct import correct_labels, smooth_posteriors  # noqa: E402
from dicomnode.analysis.segment import FOV_INSIDE_BODY_NOTE, segment_ct, segment_generic  # noqa: E402

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
CHEST = DATA / "chest-ct" / "A0002_B40f"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared test data not found at {DATA}")


@pytest.fixture(scope="module")
def chest():
    volume, sop_uids = load_dir(CHEST)
    result = segment_ct(volume.array, volume.spacing_mm, direction=volume.direction)
    labels, _ = correct_labels(result.labels, volume.spacing_mm)
    return volume, sop_uids, result, labels


def _ml(mask, volume):
    return np.count_nonzero(mask) * volume.voxel_volume_mm3 / 1000.0


def test_chest_ct_finds_every_region(chest):
    volume, _, result, labels = chest
    assert labels.not_found == ()
    assert FOV_INSIDE_BODY_NOTE not in result.notes
    body_ml = _ml(labels.by_label("body").mask, volume)
    # 232 mm of an adult chest, about 33 x 23 cm across: an elliptic cylinder of that size holds about 13.8 L
    assert 9_000 < body_ml < 20_000
    for name in ("bone", "adipose_tissue", "soft_tissue"):
        assert 100 < _ml(labels.by_label(name).mask, volume) < body_ml


def test_chest_ct_lungs_are_on_the_right_sides_with_adult_volumes(chest):
    volume, _, _, labels = chest
    centres = {}
    for name in ("lung_left", "lung_right"):
        mask = labels.by_label(name).mask
        # An adult's lungs hold about 4-6 L at full inspiration, 2-3 L each; the 232 mm cover nearly all of them,
        # minus a right-lower-lobe mass: 0.5-3.5 L per lung is plausible, less means a lost lung, more a leak
        assert 500 < _ml(mask, volume) < 3500, name
        centres[name] = volume.index_to_patient(np.argwhere(mask).mean(axis=0))[0]
    # LPS: the patient's left is +x; standard axial orientation puts it at the larger column index too
    assert centres["lung_left"][0] > centres["lung_right"][0] + 100
    assert np.nonzero(labels.by_label("lung_left").mask)[2].mean() > volume.shape[2] / 2
    assert not (labels.by_label("lung_left").mask & labels.by_label("lung_right").mask).any()


def test_chest_ct_tumour_boxes_lie_in_the_body_and_lungs(chest):
    volume, sop_uids, _, labels = chest
    body = labels.by_label("body").mask
    lung_or_body = body | labels.by_label("lung_left").mask | labels.by_label("lung_right").mask
    boxes = sorted((CHEST / "annotations").glob("*.xml"))
    assert len(boxes) == 10
    for xml in boxes:
        k = sop_uids.index(xml.stem)
        for obj in ET.parse(xml).getroot().iter("object"):
            bb = obj.find("bndbox")
            x0, x1, y0, y1 = (int(bb.findtext(t)) for t in ("xmin", "xmax", "ymin", "ymax"))
            box = body[k, y0:y1 + 1, x0:x1 + 1]  # xmin = column, ymin = row, inclusive
            assert box.mean() >= 0.9, xml.name
            assert lung_or_body[k, (y0 + y1) // 2, (x0 + x1) // 2], xml.name


def test_head_mr_foreground_and_classes():
    volume, _ = load_dir(DATA / "head-mr" / "T1_sag")
    res = segment_generic(volume.array, volume.spacing_mm, rng=np.random.default_rng(0))
    fraction = res.labels.by_label("body").mask.mean()
    # A head of about 16 x 19 x 23 cm (an ellipsoid of ~3.6 L plus the neck) in a 260 x 260 x 168 mm field of
    # view fills about a third of it
    assert 0.2 < fraction < 0.6
    assert res.labels.not_found == () and len(res.labels.segments) == 4
    assert FOV_INSIDE_BODY_NOTE not in res.notes
    assert smooth_posteriors(res.posteriors, volume.spacing_mm).voxels_changed >= 0


STS = [(f"STS_00{i}", m) for i in (1, 2, 3) for m in ("CT", "MR_T1", "PET")]


@pytest.mark.parametrize("patient, modality", STS)
def test_sarcoma_crops_cover_the_tumour(patient, modality):
    folder = DATA / "sts" / patient
    volume, _ = load_dir(folder / modality)
    tumour = rasterise_rtstruct(folder / f"{modality}_rtstruct" / "RS.dcm", volume)
    assert tumour.sum() > 100
    if modality == "CT":
        res = segment_ct(volume.array, volume.spacing_mm, direction=volume.direction)
        # a thigh: no lungs, and nothing else left out
        assert set(res.labels.not_found) == {"lung_left", "lung_right"}
    else:
        res = segment_generic(volume.array, volume.spacing_mm, rng=np.random.default_rng(0))
        assert len(res.labels.segments) >= 3
    assert FOV_INSIDE_BODY_NOTE in res.notes
    body = res.labels.by_label("body").mask
    assert body[tumour].mean() >= 0.9
    # air around the thigh is in view in every crop (25-40% of the field of view): the body is not the whole image
    assert 0.5 < body.mean() < 0.95
    assert all(s.mask.any() for s in res.labels.segments)


def test_abdomen_ct_jpeg2000_plausible_body_and_tissue_classes(tmp_path):
    """The upper-abdomen slab (JPEG 2000, empty UIDs repaired on a copy): body, bone, fat and soft tissue found."""
    import numpy as np
    import pydicom
    from pydicom.uid import generate_uid

    from dicomnode.analysis.segment import segment_ct
    from dicomnode.io.load import load_series
    from helpers import SHARED_DATA

    study, series = generate_uid(), generate_uid()
    paths = []
    for i, f in enumerate(sorted((SHARED_DATA / "abdomen-ct" / "upper_abdomen_j2k").iterdir())):
        if f.suffix in (".txt", ".md"):
            continue
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        out = tmp_path / f"{i:03d}.dcm"
        ds.save_as(out)
        paths.append(out)
    vol = load_series(paths).volume
    assert vol.unit == "HU"
    res = segment_ct(vol.array, vol.spacing_mm, direction=np.asarray(vol.direction))
    got = {s.info.label: s.mask for s in res.labels.segments}
    assert {"body", "bone", "adipose_tissue", "soft_tissue"} <= set(got), res.notes
    body_fraction = got["body"].mean()
    assert 0.2 < body_fraction < 0.9          # an abdomen in a typical CT field of view
    for label in ("bone", "adipose_tissue", "soft_tissue"):
        inside = (got[label] & got["body"]).sum() / got[label].sum()
        assert inside > 0.95, label            # tissue classes lie inside the body
    ml = {k: m.sum() * float(np.prod(vol.spacing_mm)) / 1000 for k, m in got.items()}
    assert ml["soft_tissue"] > ml["bone"] > 0
