"""Truth on the series' grid: Pascal VOC boxes of the chest CT (README: slices 1-09..1-18, columns 108-234, rows
253-356) and the sts RTSTRUCT through io.roi."""

from __future__ import annotations

import numpy as np
import pytest

from dicomnode.evaluation.cases import LesionSource, TruthKind
from dicomnode.evaluation.truth import TruthError, load_lesions, read_voc_boxes
from dicomnode.io.load import load_series

from helpers import SHARED_DATA

CHEST = SHARED_DATA / "chest-ct" / "A0002_B40f"


@pytest.fixture(scope="module")
def chest():
    return load_series(sorted(CHEST.glob("*.dcm")))


def test_voc_boxes_are_one_lesion_where_the_readme_puts_them(chest):
    lesions = load_lesions((LesionSource(TruthKind.VOC, CHEST / "annotations"),), chest)
    assert len(lesions) == 1 and not lesions[0].contour
    zs, ys, xs = np.nonzero(lesions[0].mask)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (253, 356, 108, 234)
    z_mm = chest.volume.index_to_patient(np.array([[zs.min(), 0, 0], [zs.max(), 0, 0]], float))[:, 2]
    assert sorted(np.round(z_mm)) == [176.0, 248.0]


def test_voc_file_for_another_series_is_named(tmp_path, chest):
    (tmp_path / "1.2.3.xml").write_text("<annotation/>")
    with pytest.raises(TruthError, match=r"1\.2\.3\.xml.*SOP Instance UID"):
        read_voc_boxes(tmp_path, chest)


def test_rtstruct_roi_is_a_contoured_lesion():
    folder = SHARED_DATA / "sts" / "STS_001"
    series = load_series(sorted((folder / "PET").glob("*.dcm")))
    lesions = load_lesions((LesionSource(TruthKind.RTSTRUCT, folder / "PET_rtstruct" / "RS.dcm",
                                         rois=("GTV_Mass",)),), series)
    assert len(lesions) == 1 and lesions[0].contour and lesions[0].voxels > 100
    with pytest.raises(TruthError, match="RS.dcm"):
        load_lesions((LesionSource(TruthKind.RTSTRUCT, folder / "PET_rtstruct" / "RS.dcm", rois=("NoSuch",)),),
                     series)
