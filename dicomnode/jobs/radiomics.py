"""The node's radiomics job: IBSI features of the regions of an RTSTRUCT or SEG, returned as a TID 1500 SR.

A rule with ``radiomics = "<settings>"`` matches region objects (RTSTRUCT, SEG) sent by a PACS or a workstation.
The job waits until the image series the regions reference is complete (see the ``depends_on`` of the job), then
computes the features of every region (or those whose name matches the rule's ``roi_names`` globs) with the rule's
settings and writes ``sr.dcm`` (one measurement group per region, referencing the region's object and the images),
``radiomics.csv`` (the columns of ``dicomnode radiomics``) and ``results.json``.
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import json
import time
from pathlib import Path

from dicomnode.jobs.chain import RESULTS_JSON, JobOutcome, JobSpec, input_digest
from dicomnode.fsio import atomic_write
from dicomnode.errors import SeriesLoadError

RADIOMICS_CSV = "radiomics.csv"


def _settings_digest(name_or_path: str) -> str:
    from dicomnode.config.radiomics import builtin_settings
    path = builtin_settings().get(name_or_path, Path(name_or_path))
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def run_radiomics(spec: JobSpec) -> JobOutcome:
    from dicomnode.analysis.radiomics import extract_features
    from dicomnode.io.load import load_series
    from dicomnode.io.roi import read_region, region_names
    from dicomnode.config.radiomics import resolve_settings
    from dicomnode.results.radiomics_sr import build_radiomics_sr
    from dicomnode.results.uids import ResultUids

    t0 = time.perf_counter()
    if not spec.files:
        raise SeriesLoadError("the image series the regions reference has no instances on this node; send it too")
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = resolve_settings(spec.radiomics_settings)
    series = load_series([Path(f) for f in spec.files])
    regions, features, rows = [], [], []
    for roi_file in sorted(spec.roi_files):
        for number, name in region_names(roi_file):
            if spec.roi_names and not any(fnmatch.fnmatchcase(name, g) for g in spec.roi_names):
                continue
            region = read_region(roi_file, series, number=number)
            values = extract_features(series.volume.array, region.mask, series.volume.spacing_mm, settings)
            regions.append(region)
            features.append(values)
            rows += [{"roi": region.label, "roi_number": region.number, "family": v.family, "feature": v.feature,
                      "aggregation": v.aggregation, "value": v.value} for v in values]
    if not regions:
        wanted = f" matching {list(spec.roi_names)}" if spec.roi_names else ""
        raise SeriesLoadError(f"no region{wanted} in {', '.join(Path(f).name for f in spec.roi_files)}")
    roi_sops = [Path(f).stem for f in spec.roi_files]
    version = (f"{_settings_digest(spec.radiomics_settings)}."
               f"{input_digest([f[0] for f in series.frames] + roi_sops)}.{','.join(spec.roi_names)}")
    uids = ResultUids.for_series(spec.uid_root, series.series_uid, f"radiomics:{settings.name}", version)
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
        "kind": "radiomics",
        "settings": settings.name,
        "rois": [{"label": r.label, "number": r.number, "source": r.kind, "features": len(v)}
                 for r, v in zip(regions, features)],
        "steps": [{"name": "radiomics", "seconds": round(seconds, 4), "peak_rss_mb": 0.0, "ok": True}],
        "outputs": ["sr.dcm", RADIOMICS_CSV],
        "job_id": spec.job_id,
    }
    rj = out / RESULTS_JSON
    atomic_write(rj, lambda p: Path(p).write_text(json.dumps(results, indent=2)))
    return JobOutcome(series.series_uid, (str(sr_path),), (str(sr.SOPInstanceUID),), str(rj), seconds)
