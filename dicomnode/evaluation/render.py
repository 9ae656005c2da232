"""One PNG per case, for a person to look at: key slices with the truth outlined and the findings marked.

Panels show slices in the acquired plane (index 0 of the volume): the slice where each truth lesion is largest, the
slice of the most probable finding, else the middle slice. Truth is outlined in green, findings in red with a cross
at the centroid and ``label p=...`` beside it. Only the case id and slice positions are written on the image: no
name, ID or date of the patient.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

__all__ = ["MarkedFinding", "key_slices", "render_case"]

TRUTH_RGB = (40, 220, 60)
FINDING_RGB = (255, 50, 50)
PANEL_HEIGHT_PX = 384
MAX_PANELS = 3


@dataclass(frozen=True, eq=False)
class MarkedFinding:
    """A finding to draw: its label and probability, its centroid as (z, y, x) voxel indices, its mask if known."""

    label: str
    probability: float
    centroid_zyx: tuple[float, float, float]
    mask: np.ndarray | None = None
    true: bool = False


def key_slices(n_slices: int, truth: Sequence[np.ndarray], findings: Sequence[MarkedFinding]) -> list[int]:
    """Slice indices to show: each truth mask at its largest, the top finding's centroid, else the middle one."""
    out: list[int] = []
    for m in truth:
        area = m.reshape(m.shape[0], -1).sum(axis=1)
        if area.any():
            out.append(int(np.argmax(area)))
    if findings:
        top = max(findings, key=lambda f: f.probability)
        out.append(int(np.clip(round(top.centroid_zyx[0]), 0, n_slices - 1)))
    if not out:
        out.append(n_slices // 2)
    seen: list[int] = []
    for z in out:
        if z not in seen:
            seen.append(z)
    return seen[:MAX_PANELS]


def _window(image: np.ndarray, modality: str) -> tuple[float, float]:
    if modality == "CT":
        return -1000.0, 500.0  # lungs and soft tissue on one panel
    sample = image[:: max(1, image.shape[0] // 16)]
    lo, hi = np.percentile(sample, [0.5, 99.5])
    return float(lo), float(max(hi, lo + 1e-6))


def _outline(mask2d: np.ndarray) -> np.ndarray:
    """The mask's boundary, 2 pixels wide."""
    return mask2d & ~ndi.binary_erosion(mask2d, iterations=2)


def _fit(mask2d: np.ndarray, width: int, height: int) -> np.ndarray:
    if not mask2d.any():
        return np.zeros((height, width), dtype=bool)
    img = Image.fromarray(mask2d.astype(np.uint8) * 255).resize((width, height), Image.Resampling.NEAREST)
    return np.asarray(img) > 127


def render_case(path: Path | str, image: np.ndarray, spacing_mm: tuple[float, float, float], modality: str, *,
                title: str, truth: Sequence[np.ndarray], findings: Sequence[MarkedFinding],
                z_mm: Sequence[float] | None = None, slices: Sequence[int] | None = None,
                legend: str = "green: truth  red: findings", outline_each: bool = False) -> Path:
    """Write the case's PNG and return its path.

    Parameters
    ----------
    path : path
        The PNG to write.
    image : (Z, Y, X) ndarray
        The series as loaded (HU for CT).
    spacing_mm : tuple of 3 float
        Voxel spacing along (z, y, x) in mm; panels are drawn with square millimetres.
    modality : str
        "CT" uses a fixed -1000..500 HU window; other modalities the 0.5-99.5 percentiles.
    title : str
        Written above the panels (the case id; never patient data).
    truth : sequence of (Z, Y, X) bool ndarray
        Truth lesion masks.
    findings : sequence of MarkedFinding
    z_mm : sequence of float, optional
        Patient z of each slice, written under the panels.
    slices : sequence of int, optional
        The slices to show (at most ``MAX_PANELS``); :func:`key_slices` chooses them when not given.
    legend : str, optional
        What the colours mean, written top right (the console draws the SEG's segments in green).
    outline_each : bool, optional
        Outline each ``truth`` mask on its own (nested segments stay visible) instead of their union.
    """
    lo, hi = _window(image, modality)
    panels = []
    union = np.zeros(image.shape[1:], dtype=bool)
    chosen = key_slices(image.shape[0], truth, findings) if slices is None else \
        [int(np.clip(z, 0, image.shape[0] - 1)) for z in slices][:MAX_PANELS] or [image.shape[0] // 2]
    for z in chosen:
        h_mm, w_mm = image.shape[1] * spacing_mm[1], image.shape[2] * spacing_mm[2]
        height = PANEL_HEIGHT_PX
        width = max(1, int(round(height * w_mm / h_mm)))
        grey = np.clip((image[z].astype(np.float32) - lo) / (hi - lo), 0, 1) * 255
        rgb = np.asarray(Image.fromarray(grey.astype(np.uint8)).resize((width, height), Image.Resampling.BILINEAR))
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
        union[:] = False
        for m in truth:
            union |= m[z]
            if outline_each and m[z].any():
                rgb[_outline(_fit(m[z], width, height))] = TRUTH_RGB
        # outlines at display resolution, so that shrinking a 512-pixel slice cannot drop them
        rgb[_outline(_fit(union, width, height))] = TRUTH_RGB
        for f in findings:
            if f.mask is not None and f.mask[z].any():
                rgb[_outline(_fit(f.mask[z], width, height))] = FINDING_RGB
        panel = Image.fromarray(rgb)
        draw = ImageDraw.Draw(panel)
        sy, sx = height / image.shape[1], width / image.shape[2]
        for f in findings:
            if abs(f.centroid_zyx[0] - z) <= 0.5 or f.mask is not None and f.mask[z].any():
                cy, cx = (f.centroid_zyx[1] + 0.5) * sy, (f.centroid_zyx[2] + 0.5) * sx
                draw.line([(cx - 8, cy), (cx + 8, cy)], fill=FINDING_RGB, width=2)
                draw.line([(cx, cy - 8), (cx, cy + 8)], fill=FINDING_RGB, width=2)
                draw.text((cx + 10, cy - 6), f"{f.label} p={f.probability:.2f}", fill=FINDING_RGB)
        where = f"slice {z}" + (f", z {z_mm[z]:.1f} mm" if z_mm is not None else "")
        draw.text((4, height - 14), where, fill=(255, 255, 0))
        panels.append(panel)
    header = 22
    total_w = sum(p.width for p in panels) + 4 * (len(panels) - 1)
    canvas = Image.new("RGB", (max(total_w, 320), PANEL_HEIGHT_PX + header), (0, 0, 0))
    x = 0
    for p in panels:
        canvas.paste(p, (x, header))
        x += p.width + 4
    d = ImageDraw.Draw(canvas)
    d.text((4, 4), title, fill=(255, 255, 255))
    d.text((max(total_w, 320) - 6 * len(legend) - 8, 4), legend, fill=(200, 200, 200))
    path = Path(path)
    canvas.save(path, format="PNG")
    return path
