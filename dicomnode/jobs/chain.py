"""One series through the analysis chain: files in, result files out.

:func:`run_chain` is the job that every executor runs (the local process pool, a Dask worker) and that
``dicomnode process`` calls: a plain function of (series files, profile) that writes the SEG (``seg.dcm``), the main
SR (``sr.dcm``: findings and key measurements of every segment), the evaluations SR (``sr_evaluations.dcm``: scene,
body regions, classifications, similarities), the feature SRs (``sr_features/NNNN.dcm``: every feature, one
report per segment), the derived series (``derived/<kind>/NNNN.dcm``) and ``results.json`` into an output folder and
returns their paths, in sending order. It knows nothing of the network or the index.

Result UIDs are derived from the source series, the profile (name, version and a digest of its parameters) and the
set of source instances, so a re-run on the same input re-makes the same objects (a PACS never holds two copies),
while a series that received more instances gets new ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

from dicomnode.analysis.pipeline import Context, StepRecord, run_steps
from dicomnode.analysis.threads import pin_blas_threads
from dicomnode.config import Profile
from dicomnode.fsio import atomic_write
from dicomnode.io.headers import header_strings
from dicomnode.obs.memory import PeakRSS
from dicomnode.jobs.spec import RESULTS_JSON, ChainSpec, ContextSeries, JobOutcome, input_digest
from dicomnode.jobs.workerproc import release_free_memory, tune_malloc

log = logging.getLogger("dicomnode.chain")  # its name before jobs/ (log filters use it)

def profile_fingerprint(profile: Profile) -> str:
    """The profile's declared version plus a digest of its steps and parameters."""
    blob = json.dumps({"steps": profile.steps, "params": profile.params, "outputs": profile.outputs},
                      sort_keys=True, default=str)
    return f"{profile.version}.{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def run_chain(spec: ChainSpec, *, progress: Callable[[str], None] | None = None) -> JobOutcome:
    """Load the series, run the profile, build and write the results. Raises a DicomnodeError on bad input."""
    tune_malloc()  # the same allocation policy in a pool worker, a Dask worker and `dicomnode process`
    pin_blas_threads()  # one BLAS thread: the same values in every executor and on any machine
    from dicomnode.io.load import load_series, on_source_slices
    from dicomnode.results.seg import build_seg
    from dicomnode.results._common import source_notes
    from dicomnode.results.sr import build_evaluation_sr, build_feature_srs, build_sr, is_key_measurement
    from dicomnode.results.uids import ResultUids

    from dicomnode.steps import registry
    registry()
    t0 = time.perf_counter()
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records: list[StepRecord] = []

    phase = spec.profile.params.get("load", {}).get("phase", "first")  # [profiles.X.load] phase
    with PeakRSS() as m:
        series = load_series([Path(f) for f in spec.files], phase=1 if phase == "all" else phase)
    records.append(StepRecord("load", round(time.perf_counter() - t0, 4), round(m.peak_rss_mb, 1)))
    header = header_strings(series.headers[0])
    ctx = Context(volume=series.volume, original=series.volume, header=header,
                  siblings=study_siblings(spec.context, series, uid_root=spec.uid_root))
    ctx.notes.extend(series.notes)  # what the loader did: SUV conversion and its inputs, phase chosen, ...
    others: list[JobOutcome] = []
    if phase == "all" and series.n_phases > 1:  # each further phase: its own results in phase_N/, its own UIDs
        for k in range(2, series.n_phases + 1):
            params = {**spec.profile.params, "load": {"phase": k}}
            others.append(run_chain(replace(spec, out_dir=str(out / f"phase_{k}"),
                                            profile=replace(spec.profile, params=params)), progress=progress))
        ctx.notes.append(f"load phase = \"all\": phase 1 here, phases 2...{series.n_phases} in "
                         f"{', '.join(f'phase_{k}/' for k in range(2, series.n_phases + 1))}")
    records += run_steps(ctx, spec.profile.steps, spec.profile.params, meter=PeakRSS, progress=progress,
                         between_steps=release_free_memory)
    contiguous_segments(ctx)

    version = f"{profile_fingerprint(spec.profile)}.{input_digest([f[0] for f in series.frames])}"
    if ctx.inputs:  # regions borrowed from a sibling series: its instances are inputs too
        version += f".{input_digest(ctx.inputs)}"
    uids = ResultUids.for_series(spec.uid_root, series.series_uid, spec.profile.name, version)
    files: list[str] = []
    sops: list[str] = []
    t1 = time.perf_counter()
    with PeakRSS() as m:
        if (ctx.labels.segments and {"seg", "sr"} & set(spec.profile.outputs)) or (
                "derived" in spec.profile.outputs and ctx.derived):
            ctx.notes.extend(source_notes(series))  # what the result headers leave out or fix, and why
        if ctx.labels.segments and ("seg" in spec.profile.outputs or "sr" in spec.profile.outputs):
            seg = build_seg(*on_source_slices(series, ctx.labels), uids)  # the SEG frames are the source slices
            seg_path = out / "seg.dcm"
            atomic_write(seg_path, lambda p: seg.save_as(p, enforce_file_format=True))
            if "seg" in spec.profile.outputs:
                files.append(str(seg_path))
                sops.append(str(seg.SOPInstanceUID))
            if "sr" in spec.profile.outputs:
                from dicomnode.results.sr_evaluations import evaluation_groups
                extra = evaluation_groups(ctx.scene, ctx.classifications, ctx.similarities, uids)
                finite = {k: [m for m in v if math.isfinite(m.value)] for k, v in ctx.measurements.items()}
                dropped = sum(len(v) for v in ctx.measurements.values()) - sum(len(v) for v in finite.values())
                if dropped:
                    ctx.notes.append(f"{dropped} undefined measurement(s) (NaN) left out of the SR; null in results.json")
                key = {k: [m for m in v if is_key_measurement(m)] for k, v in finite.items()}
                sr = build_sr(series, seg, ctx.labels, key, uids, max_source_images=0)
                sr_path = out / "sr.dcm"
                atomic_write(sr_path, lambda p: sr.save_as(p, enforce_file_format=True))
                files.append(str(sr_path))
                sops.append(str(sr.SOPInstanceUID))
                if extra:  # scene, body regions, classifications, similarities: TID 1501, the main series' 2nd
                    ev = build_evaluation_sr(series, extra, uids)
                    ev_path = out / "sr_evaluations.dcm"
                    atomic_write(ev_path, lambda p: ev.save_as(p, enforce_file_format=True))
                    files.append(str(ev_path))
                    sops.append(str(ev.SOPInstanceUID))
                if any(len(key[k]) < len(finite[k]) for k in finite):  # more than the key measurements
                    folder = out / "sr_features"
                    folder.mkdir(parents=True, exist_ok=True)
                    for i, fsr in enumerate(build_feature_srs(series, seg, ctx.labels, finite, uids), start=1):
                        path = folder / f"{i:04d}.dcm"
                        atomic_write(path, lambda p, d=fsr: d.save_as(p, enforce_file_format=True))
                        files.append(str(path))
                        sops.append(str(fsr.SOPInstanceUID))
        elif not ctx.labels.segments:
            ctx.notes.append("no segment was found: no SEG or SR was made")
        if "derived" in spec.profile.outputs and ctx.derived:
            from dicomnode.results.derived import build_all_derived
            slab = spec.profile.params.get("synthesize", {}).get("slab_mm")
            for kind, datasets in build_all_derived(series, ctx.derived, uids, slab_mm=slab).items():
                folder = out / "derived" / kind
                folder.mkdir(parents=True, exist_ok=True)
                for i, ds in enumerate(datasets, start=1):
                    path = folder / f"{i:04d}.dcm"
                    atomic_write(path, lambda p, d=ds: d.save_as(p, enforce_file_format=True))
                    files.append(str(path))
                    sops.append(str(ds.SOPInstanceUID))
    records.append(StepRecord("results", round(time.perf_counter() - t1, 4), round(m.peak_rss_mb, 1)))

    results = build_results_json(series_uid=series.series_uid, modality=series.modality, profile=spec.profile,
                                 ctx=ctx, records=records, files=files, job_id=spec.job_id, out_dir=str(out))
    rj = out / RESULTS_JSON
    atomic_write(rj, lambda p: Path(p).write_text(json.dumps(results, indent=2, allow_nan=False, default=_json)))
    for o in others:
        files += o.files
        sops += o.sop_instance_uids
    seconds = time.perf_counter() - t0
    log.info("chain done", extra={"series_uid": series.series_uid, "job_id": spec.job_id,
                                  "profile": spec.profile.name, "seconds": round(seconds, 3),
                                  "segments": len(ctx.labels.segments)})
    return JobOutcome(series.series_uid, tuple(files), tuple(sops), str(rj), seconds)


#: Secondary Capture image storage classes (single- and multi-frame): pictures, not the patient's anatomy in place.
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def _source(tags: dict[str, str], modality: str) -> str:
    """How notes name a series: modality, series number and description (no name, ID or UID)."""
    number = tags.get("SeriesNumber", "").strip()
    desc = " ".join(tags.get("SeriesDescription", "").split())[:48]
    return f"{tags.get('Modality', modality) or modality or 'an image'} series{f' {number}' if number else ''}" + \
        (f" ({desc})" if desc else "")


def _unusable(tags: dict[str, str], series: Any, frame: str, uid_root: str) -> str | None:
    """Why a series cannot lend its anatomy to ``series`` (None when it can)."""
    from dicomnode.io.headers import is_image_storage
    sop = tags.get("SOPClassUID", "")
    if tags.get("SeriesInstanceUID", "") == series.series_uid:
        return "it is this series"
    if not is_image_storage(sop) or sop.startswith(_SECONDARY_CAPTURE):
        return "not an image series of the patient (SEG, SR, RT, secondary capture...)"
    if uid_root and tags.get("SeriesInstanceUID", "").startswith(uid_root):
        return "made by this node"
    if tags.get("ImageType", "").split("\\")[0].strip().upper() == "DERIVED":
        return "a derived image (ImageType DERIVED): only original images lend their anatomy"
    if tags.get("StudyInstanceUID", "") != series.study_uid:
        return "another study"
    if tags.get("FrameOfReferenceUID", "") != frame:
        return "another frame of reference (its z is not this series' z)"
    return None


def study_siblings(context: Sequence[ContextSeries], series: Any, *, uid_root: str) -> tuple[Any, ...]:
    """The study's other series on the frame of reference of ``series`` (a ``LoadedSeries``), each loaded only when
    the scene step asks (:class:`dicomnode.analysis.scene_context.StudySibling`): the header of its first file is
    checked first (same study and frame of reference, an original image series not made by this node), then it
    is loaded with :func:`dicomnode.io.load.load_series` (a localizer is refused there, as everywhere)."""
    if not context:
        return ()
    from dicomnode.analysis.scene_context import SiblingImage, SiblingSkipped, StudySibling
    from dicomnode.errors import DicomnodeError, SeriesRefusedError
    from dicomnode.io.headers import HeaderReadError, read_tags
    from dicomnode.io.load import load_series

    frame = str(series.headers[0].get("FrameOfReferenceUID", "") or "")

    def loader(c: ContextSeries):
        def load() -> SiblingImage | SiblingSkipped:
            try:
                tags = read_tags(c.files[0])  # bounded: top-level values only, no pixels
            except (HeaderReadError, OSError):
                return SiblingSkipped(f"{c.modality or 'an image'} series", "its header cannot be read")
            source = _source(tags, c.modality)
            if not frame:
                return SiblingSkipped(source, "this series has no FrameOfReferenceUID: z cannot be compared")
            why = _unusable(tags, series, frame, uid_root)
            if why:
                return SiblingSkipped(source, why)
            try:
                loaded = load_series([Path(f) for f in c.files])
            except SeriesRefusedError:
                return SiblingSkipped(source, "refused by the loader: not one volume (a localizer)")
            except DicomnodeError as e:
                return SiblingSkipped(source, f"it cannot be loaded ({type(e).__name__})")
            return SiblingImage(loaded.volume, header_strings(loaded.headers[0]), source,
                                digest=input_digest([f[0] for f in loaded.frames]))
        return load

    return tuple(StudySibling(c.modality, loader(c)) for c in context if c.files)


def _json(o: Any) -> Any:
    import numpy as np
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _finite(v: float) -> float | None:
    return None if v != v or v in (float("inf"), float("-inf")) else float(v)


def build_results_json(*, series_uid: str, modality: str, profile: Profile, ctx: Context,
                       records: Sequence[StepRecord], files: Sequence[str], job_id: int | None,
                       out_dir: str = "") -> dict[str, Any]:
    """The ``results.json`` contract: series_instance_uid, modality, profile, segments, steps (+ more keys)."""
    segments = []
    for seg in ctx.labels.segments:
        meas = ctx.measurements.get(seg.info.number, [])
        vol = next((m.value for m in meas if m.name == "volume_ml"), None)
        segments.append({
            "number": seg.info.number,
            "label": seg.info.label,
            "volume_ml": _finite(vol) if vol is not None else None,
            "category": seg.info.category.meaning,
            "type": seg.info.type.meaning,
            "features": {m.name: _finite(m.value) for m in meas},
            "units": {m.name: m.unit for m in meas},
        })
    return {
        "series_instance_uid": series_uid,
        "modality": modality,
        "profile": profile.name,
        "profile_version": profile.version,
        "segments": segments,
        "not_found": list(ctx.labels.not_found),
        "steps": [{"name": r.name, "seconds": r.seconds, "peak_rss_mb": r.peak_rss_mb, "ok": r.ok,
                   **({"error": r.error} if r.error else {})} for r in records],
        "findings": ctx.findings,
        "scene": ctx.scene,
        "classifications": ctx.classifications,
        "similarities": ctx.similarities,
        "corrections": ctx.corrections,
        "notes": ctx.notes,
        "outputs": [os.path.relpath(f, out_dir) if out_dir else Path(f).name for f in files],
        "job_id": job_id,
    }


def contiguous_segments(ctx: Context) -> None:
    """Number the segments 1, 2, ..., N in their order, in place: a step that drops a segment left empty (the correct
    step, a tissue class no voxel is most probable in) leaves a gap, and a BINARY SEG needs 1..N (highdicom's rule).
    The label map, the measurements (keyed by number) and the findings' ``segment_number`` change together, so the
    SEG, the SR and results.json keep naming the same segment."""
    labels, new_of = ctx.labels.renumbered()
    if labels is ctx.labels:
        return
    ctx.labels = labels
    ctx.measurements = {new_of[k]: v for k, v in ctx.measurements.items() if k in new_of}
    for f in ctx.findings:
        if f.get("segment_number") in new_of:
            f["segment_number"] = new_of[f["segment_number"]]
