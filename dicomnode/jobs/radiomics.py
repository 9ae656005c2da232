"""Radiomics in one place: IBSI features of the regions of an RTSTRUCT or SEG, for the node and the CLI.

The node's job (:func:`run_radiomics`): a rule with ``radiomics = "<settings>"`` matches region objects (RTSTRUCT,
SEG) sent by a PACS or a workstation. The job waits until the image series the regions reference is complete (the
``depends_on`` of the job), then computes the features of every region (or those whose name matches the rule's
``roi_names`` globs) with the rule's settings and writes ``sr.dcm`` (one measurement group per region, referencing
the region's object and the images), ``radiomics.csv`` (the columns of ``dicomnode radiomics``) and
``results.json``.

``dicomnode radiomics`` (:mod:`dicomnode.commands.radiomics`) measures one region of a folder's series with the same
functions: :func:`image_series_files` (the folder narrowed to the image series the region object references),
:func:`measure` (regions -> feature values) and :func:`sr_uids` (the one UID convention of a radiomics SR).
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dicomnode.errors import SeriesLoadError
from dicomnode.fsio import atomic_write
from dicomnode.jobs.spec import RESULTS_JSON, JobOutcome, RadiomicsSpec, input_digest

RADIOMICS_CSV = "radiomics.csv"


def settings_digest(name_or_path: str | None) -> str:
    """A digest of the settings file (shipped name or path; None: the shipped ``default``)."""
    from dicomnode.config.radiomics import builtin_settings
    name_or_path = name_or_path or "default"
    path = builtin_settings().get(name_or_path, Path(name_or_path))
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def sr_uids(uid_root: str | None, series: Any, roi_sop_uids: Sequence[str], settings_ref: str | None,
            settings: Any, selector: Sequence[str]) -> Any:
    """The result UIDs of a radiomics SR, the same for the node's job and ``dicomnode radiomics --sr``.

    Profile ``radiomics:<settings name>``; version: a digest of the settings file, of the image and region
    instances, and the region selector (the rule's ``roi_names`` globs, or the CLI's ``--roi-name``/``--roi-number``)
    so the same input re-makes the same SR and other input or settings a new one.
    """
    from dicomnode.results.uids import ResultUids
    version = (f"{settings_digest(settings_ref)}."
               f"{input_digest([f[0] for f in series.frames] + list(roi_sop_uids))}.{','.join(selector)}")
    return ResultUids.for_series(uid_root, series.series_uid, f"radiomics:{settings.name}", version)


def measure(series: Any, regions: Sequence[Any], settings: Any) -> list[tuple[Any, list[Any]]]:
    """(region, feature values) of each region read onto ``series``' grid, with ``settings``."""
    from dicomnode.analysis.radiomics import extract_features
    return [(r, extract_features(series.volume.array, r.mask, series.volume.spacing_mm, settings)) for r in regions]


def regions_matching(roi_files: Sequence[str | Path], series: Any, globs: Sequence[str] = ()) -> list[Any]:
    """Every region of the RTSTRUCT/SEG files whose name matches one of ``globs`` (all when none), read onto
    ``series``' grid, in file order."""
    from dicomnode.io.roi import read_region, region_names
    out = []
    for roi_file in sorted(map(str, roi_files)):
        for number, name in region_names(roi_file):
            if not globs or any(fnmatch.fnmatchcase(name, g) for g in globs):
                out.append(read_region(roi_file, series, number=number))
    return out


def image_series_files(folder: Path, roi_file: Path) -> list[Path]:
    """The image files of ``folder``: its only image series, else the one ``roi_file`` references.

    Raises SeriesLoadError naming the folder when it is not one, has no image, or has several series of which the
    region object references none (or several)."""
    from dicomnode.io.headers import referenced_series_uids
    from dicomnode.io.load import read_header

    if not folder.is_dir():
        raise SeriesLoadError(f"{folder}: not a folder; IMAGE_DIR must hold the files of one image series")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    roi = roi_file.resolve()
    groups: dict[str, list[Path]] = {}
    for p in files:
        if p.resolve() == roi:
            continue
        try:
            ds = read_header(p)
        except SeriesLoadError:
            continue  # not DICOM (a README, a thumbnail): not part of the series
        if "Rows" not in ds:  # no image: an RTSTRUCT, SR, ... in the same folder
            continue
        groups.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(p)
    if not groups:
        raise SeriesLoadError(f"{folder}: no DICOM images found")
    if len(groups) == 1:
        return next(iter(groups.values()))
    referenced = set(referenced_series_uids(roi_file))
    hits = [uid for uid in groups if uid in referenced]
    if len(hits) == 1:
        return groups[hits[0]]
    raise SeriesLoadError(f"{folder}: {len(groups)} image series ({', '.join(sorted(groups))}) and {roi_file} names "
                          "none of them; give a folder with one series")


def run_radiomics(spec: RadiomicsSpec) -> JobOutcome:
    """The node's radiomics job: every matching region of ``spec.roi_files`` on the image series -> SR, CSV, JSON."""
    from dicomnode.config.radiomics import resolve_settings
    from dicomnode.io.load import load_series
    from dicomnode.results.radiomics_sr import build_radiomics_sr

    t0 = time.perf_counter()
    if not spec.files:
        raise SeriesLoadError("the image series the regions reference has no instances on this node; send it too")
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = resolve_settings(spec.settings)
    series = load_series([Path(f) for f in spec.files])
    measured = measure(series, regions_matching(spec.roi_files, series, spec.roi_names), settings)
    if not measured:
        wanted = f" matching {list(spec.roi_names)}" if spec.roi_names else ""
        raise SeriesLoadError(f"no region{wanted} in {', '.join(Path(f).name for f in spec.roi_files)}")
    regions = [r for r, _ in measured]
    features = [v for _, v in measured]
    rows = [{"roi": r.label, "roi_number": r.number, "family": v.family, "feature": v.feature,
             "aggregation": v.aggregation, "value": v.value} for r, values in measured for v in values]
    roi_sops = [Path(f).stem for f in spec.roi_files]  # the spool names each file by its SOP Instance UID
    uids = sr_uids(spec.uid_root, series, roi_sops, spec.settings, settings, spec.roi_names)
    sr = build_radiomics_sr(series, regions, features, uids, settings=settings)
    sr_path = out / "sr.dcm"
    atomic_write(sr_path, lambda p: sr.save_as(p, enforce_file_format=True))

    def write_csv(p: str) -> None:
        with open(p, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["roi", "roi_number", "family", "feature", "aggregation", "value"])
            w.writeheader()
            w.writerows(rows)

    atomic_write(out / RADIOMICS_CSV, write_csv)
    seconds = time.perf_counter() - t0
    results = {
        "series_instance_uid": series.series_uid,
        "modality": series.modality,
        "kind": RadiomicsSpec.kind.value,
        "settings": settings.name,
        "rois": [{"label": r.label, "number": r.number, "source": r.kind, "features": len(v)}
                 for r, v in measured],
        "steps": [{"name": "radiomics", "seconds": round(seconds, 4), "peak_rss_mb": 0.0, "ok": True}],
        "outputs": ["sr.dcm", RADIOMICS_CSV],
        "job_id": spec.job_id,
    }
    rj = out / RESULTS_JSON
    atomic_write(rj, lambda p: Path(p).write_text(json.dumps(results, indent=2)))
    return JobOutcome(series.series_uid, (str(sr_path),), (str(sr.SOPInstanceUID),), str(rj), seconds)
