"""The Results page's picture: key slices of a job's source series with its SEG outlined and its findings marked.

The PNG is made by the server from what the job stored, never from the chain's memory: ``results.json`` (the
findings, their probabilities, centroids and segment numbers), the job's ``seg.dcm`` (the masks, read back onto the
source grid with :func:`dicomnode.io.roi.read_seg_segment`) and the series' stored instances (the pixels, loaded with
:func:`dicomnode.io.load.load_series`, the phase the profile analysed). It is drawn by
:func:`dicomnode.evaluation.render.render_case`, the same drawing as ``dicomnode evaluate``'s PNG: SEG segments in
green, findings in red with a cross at the centroid and ``label p=...``. Only the job id, profile, modality and slice
positions are written on it: no name, ID, date or description of the patient or study.

Slices shown (at most three): the slice of each of the two most probable findings, then the slice where the SEG's
other segments cover most, else the middle slice.

The image is cached beside ``results.json`` as ``keyslices.png`` (a job's results are immutable; a re-run is a new
job with a new folder), so retention removes it with the results. Paths are checked: the result folder must lie in
``DATA/results/`` and every source file in ``DATA/instances/``, whatever the database says.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dicomnode.errors import DicomnodeError

__all__ = ["KEYSLICES_PNG", "KeySlicesError", "keyslices_png", "load_results_json", "result_folder"]

log = logging.getLogger(__name__)

KEYSLICES_PNG = "keyslices.png"
MAX_FINDING_SLICES = 2
MAX_SEGMENTS = 64  # outlined at most (a SEG is read once per segment)


#: one picture drawn at a time in the node's process: a series is loaded whole (a CT of 500 slices is ~0.5 GB), so
#: many clicks on many Results pages queue here instead of loading many series at once
_DRAWING = threading.Lock()


class KeySlicesError(DicomnodeError):
    """The key slices cannot be drawn (no results yet, a file missing or outside the data folder): the page says
    why instead of showing a picture."""


def _inside(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root.resolve())
    except OSError:
        return False


def result_folder(data_dir: Path, result_dir: str | None) -> Path:
    """A job's result folder, checked to lie inside ``DATA/results/`` (raises :class:`KeySlicesError` if not)."""
    if not result_dir:
        raise KeySlicesError("the job has no results yet (it has not finished)")
    folder = Path(result_dir)
    if not _inside(folder, data_dir / "results"):
        raise KeySlicesError("the job's result folder is not inside the node's DATA/results/: not read")
    if not folder.is_dir():
        raise KeySlicesError("the job's result folder is gone (removed by retention?)")
    return folder


def load_results_json(folder: Path) -> dict[str, Any]:
    """``results.json`` of a result folder (raises :class:`KeySlicesError` when missing or unreadable)."""
    path = folder / "results.json"
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise KeySlicesError("results.json is missing from the job's result folder") from None
    except (OSError, ValueError) as e:
        raise KeySlicesError(f"results.json cannot be read ({type(e).__name__})") from None
    if not isinstance(doc, dict):
        raise KeySlicesError("results.json is not a JSON object")
    return doc


def _phase(results: dict[str, Any], profile_params: dict[str, Any] | None) -> Any:
    phase = (profile_params or {}).get("load", {}).get("phase", "first")
    return 1 if phase == "all" else phase


def keyslices_png(data_dir: Path, result_dir: str | None, source_paths: Sequence[str], *, job_id: int,
                  profile_params: dict[str, Any] | None = None, refresh: bool = False) -> Path:
    """The job's key-slice PNG (made on first call, then read from the cache); its path.

    Parameters
    ----------
    data_dir : Path
        The node's data folder (``[node] data_dir``).
    result_dir : str or None
        The job's result folder as the database holds it.
    source_paths : sequence of str
        The stored instances of the job's source series (``Database.instance_paths``).
    job_id : int
        Written on the image with the profile and modality.
    profile_params : dict, optional
        The profile's parameters (for ``load.phase``: the phase the chain analysed).
    refresh : bool
        Draw again even if the cached PNG exists.

    Raises
    ------
    KeySlicesError
        No results, a file outside the data folder, no source instances left, or a series that no longer loads.
    """
    folder = result_folder(data_dir, result_dir)
    out = folder / KEYSLICES_PNG
    if out.is_file() and not refresh:
        return out
    with _DRAWING:
        if out.is_file() and not refresh:  # drawn by the request this one waited for
            return out
        return _draw(folder, out, source_paths, data_dir=data_dir, job_id=job_id, profile_params=profile_params)


def _draw(folder: Path, out: Path, source_paths: Sequence[str], *, data_dir: Path, job_id: int,
          profile_params: dict[str, Any] | None) -> Path:
    from dicomnode.evaluation.render import MarkedFinding, render_case
    from dicomnode.io.load import load_series

    results = load_results_json(folder)
    if results.get("kind") == "radiomics":
        raise KeySlicesError("a radiomics job: its regions came with the series, no SEG of its own to draw")
    instances = data_dir / "instances"
    files = [Path(p) for p in source_paths]
    outside = [p for p in files if not _inside(p, instances)]
    if outside:
        raise KeySlicesError(f"{len(outside)} source file(s) are not inside the node's DATA/instances/: not read")
    files = [p for p in files if p.is_file()]
    if not files:
        raise KeySlicesError("the source series' instances are gone (removed by retention?)")
    try:
        series = load_series(files, phase=_phase(results, profile_params))
    except DicomnodeError as e:
        raise KeySlicesError(f"the source series does not load any more: {str(e).splitlines()[0][:200]}") from None
    vol = series.volume

    masks = _segment_masks(folder / "seg.dcm", series)
    findings = sorted((f for f in results.get("findings") or [] if isinstance(f, dict)),
                      key=lambda f: -float(f.get("probability") or 0.0))
    finding_numbers = {int(f["segment_number"]) for f in findings if f.get("segment_number") is not None}
    marked: list[MarkedFinding] = []
    for f in findings:
        c = f.get("centroid_mm")
        if not (isinstance(c, list) and len(c) == 3 and all(isinstance(v, (int, float)) and math.isfinite(v)
                                                            for v in c)):
            continue
        zyx = vol.patient_to_index(np.asarray(c, dtype=float)[None, :])[0]
        number = f.get("segment_number")
        marked.append(MarkedFinding(str(f.get("label", "finding")), float(f.get("probability") or 0.0),
                                    (float(zyx[0]), float(zyx[1]), float(zyx[2])),
                                    masks.get(int(number)) if number is not None else None))
    anatomy = [m for n, m in sorted(masks.items()) if n not in finding_numbers]

    slices: list[int] = []
    for m in marked[:MAX_FINDING_SLICES]:
        z = int(np.clip(round(m.centroid_zyx[0]), 0, vol.shape[0] - 1))
        if z not in slices:
            slices.append(z)
    if anatomy:
        area = np.logical_or.reduce(anatomy).reshape(vol.shape[0], -1).sum(axis=1)
        if area.any() and int(np.argmax(area)) not in slices:
            slices.append(int(np.argmax(area)))
    if not slices:
        slices.append(vol.shape[0] // 2)

    z_mm = vol.index_to_patient(np.stack([np.arange(vol.shape[0]), np.zeros(vol.shape[0]),
                                          np.zeros(vol.shape[0])], axis=1).astype(float))[:, 2]
    profile = str(results.get("profile", ""))[:40]
    modality = str(results.get("modality", series.modality))[:8]
    tmp = out.with_name(f".{KEYSLICES_PNG}.{os.getpid()}.{threading.get_ident()}.tmp")
    render_case(tmp, vol.array, vol.spacing_mm, modality, title=f"job {job_id}  {profile}  {modality}",
                truth=anatomy, findings=marked, z_mm=z_mm, slices=slices,
                legend="green: SEG segments  red: findings", outline_each=True)
    os.replace(tmp, out)
    return out


def _segment_masks(seg_path: Path, series: Any) -> dict[int, np.ndarray]:
    """Segment number -> mask on the series' grid, from the job's SEG ({} without one)."""
    if not seg_path.is_file():
        return {}
    import pydicom

    from dicomnode.io.roi import read_seg_segment
    try:
        ds = pydicom.dcmread(seg_path)
    except Exception as e:  # noqa: BLE001 - a damaged SEG: the picture goes without outlines, the log says why
        log.warning("console: the job's SEG cannot be read; key slices drawn without outlines",
                    extra={"error": type(e).__name__})
        return {}
    out: dict[int, np.ndarray] = {}
    numbers = [int(item.SegmentNumber) for item in ds.get("SegmentSequence", [])][:MAX_SEGMENTS]
    for i, number in enumerate(numbers):
        try:  # highdicom's reader changes the dataset it reads: a fresh one per segment
            one = ds if i == 0 else pydicom.dcmread(seg_path)
            out[number] = read_seg_segment(one, series, number=number, path=seg_path).mask
        except DicomnodeError as e:
            log.warning("console: a SEG segment cannot be placed on the source; not outlined",
                        extra={"segment": number, "error": str(e).split(": ", 1)[-1][:160]})
    return out
