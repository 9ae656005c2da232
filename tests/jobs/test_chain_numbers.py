"""Segment numbers 1..N after a step dropped one (a tissue class left empty): the SEG is still made, and the
measurements and the findings follow their segment (found by `dicomnode bench scale` on a tiny generic phantom)."""

from __future__ import annotations

import numpy as np

from dicomnode.analysis.pipeline import Context
from dicomnode.analysis.segment import _info
from dicomnode.analysis.volume import LabelMap, Measurement, Segment, SegmentInfo, Volume
from dicomnode.jobs.chain import contiguous_segments


def _real_info(number: int, label: str) -> SegmentInfo:
    return _info(number, label, "generic")


def test_a_gap_left_by_a_dropped_segment_is_closed_with_measurements_and_findings():
    vol = Volume(array=np.zeros((4, 8, 8), np.float32), spacing_mm=(1.0, 1.0, 1.0))
    masks = {}
    for n, (label, z) in {1: ("body", 0), 2: ("tissue_class_1", 1), 4: ("tissue_class_3", 2), 5: ("lung_left", 3)}.items():
        m = np.zeros(vol.shape, bool)
        m[z, 2:5, 2:5] = True
        masks[n] = (label, m)
    ctx = Context(volume=vol, original=vol)
    ctx.labels = LabelMap(tuple(Segment(_real_info(n, lab), m) for n, (lab, m) in masks.items()), ("tissue_class_2",))
    ctx.measurements = {4: [Measurement("volume", 9.0, "mm3")], 5: [Measurement("volume", 9.0, "mm3")]}
    ctx.findings = [{"label": "lung_left", "segment_number": 5}]
    contiguous_segments(ctx)
    got = {s.info.number: s.info.label for s in ctx.labels.segments}
    assert got == {1: "body", 2: "tissue_class_1", 3: "tissue_class_3", 4: "lung_left"}
    assert ctx.labels.not_found == ("tissue_class_2",)
    assert sorted(ctx.measurements) == [3, 4] and ctx.findings[0]["segment_number"] == 4
    seg3 = next(s for s in ctx.labels.segments if s.info.number == 3)
    assert np.array_equal(seg3.mask, masks[4][1])                # the same voxels under the new number
    before = ctx.labels
    contiguous_segments(ctx)                                      # already 1..N: nothing changes
    assert ctx.labels is before
