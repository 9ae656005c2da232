"""detect_tissue on a crop whose field of view is a padded circle: the edge of the data is the field of view's.

A sarcoma crop of a thigh (STS_003's CT, 15 x 15 cm) written as a circular reconstruction, its corners padded with
-3024 HU (what GE and others write outside the circle, whether or not the header names a PixelPaddingValue), no
longer touches the image's edge: the mirror rule then took a mirror plane through the middle of the crop, found
muscle in the tumour's mirror image and down-weighted the tumour as "symmetric" (x 0.1); a fat lobule became the
only finding. The padding's edge now counts as the field of view's edge, as in segment_ct. A head CT whose padded
circle holds the whole head keeps its midline.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import SHARED_DATA

from dicomnode.analysis.denoise import gaussian
from dicomnode.analysis.detect import DetectionSettings, _crop_inside_padding, detect
from dicomnode.analysis.segment import segment_ct
from dicomnode.evaluation.perturb import perturb
from dicomnode.io.load import load_series
from dicomnode.net.scu import iter_dicom_files

STS3 = SHARED_DATA / "sts" / "STS_003"
HEAD = SHARED_DATA / "head-ct" / "CT"
pytestmark = pytest.mark.skipif(not STS3.is_dir() or not HEAD.is_dir(), reason="shared test data not found")


def _body(v):
    return segment_ct(v.array, v.spacing_mm, direction=v.direction).labels.by_label("body").mask


def test_a_padded_circular_crop_has_no_midline_a_padded_head_has():
    from dicomnode.io.roi import read_region

    series = load_series(iter_dicom_files([STS3 / "CT"]))
    truth = read_region(STS3 / "CT_rtstruct" / "RS.dcm", series, name="GTV_Mass").mask
    padded = perturb(series.volume, "pad_circle")
    assert padded is not None and (padded.array == -3024.0).mean() > 0.2
    work = gaussian(padded.array, padded.spacing_mm, sigma_mm=0.8)  # the CT profile's working image
    body = _body(padded)
    assert "no body midline" in _crop_inside_padding(work, body, -1500.0)
    res = detect(type(padded)(work, padded.spacing_mm, padded.origin_mm, padded.direction, "CT", "HU"),
                 method="tissue_model", foreground=body, window=(-200.0, 250.0),
                 settings=DetectionSettings(min_diameter_mm=10.0, min_volume_ml=0.5, max_findings=3,
                                            probability_threshold=0.0))
    assert not any(f.features.get("symmetric") for f in res.findings)
    top = max(res.findings, key=lambda f: f.probability)
    assert truth[tuple(int(round(c)) for c in top.centroid_zyx)]  # the most probable region is the sarcoma
    head = load_series(iter_dicom_files([HEAD])).volume
    assert (head.array < -1500).any()  # padded outside its circle (-2048 HU)
    assert _crop_inside_padding(head.array, _body(head), -1500.0) == ""
