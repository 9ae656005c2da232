"""Batch runs: series found by UIDs, bad series listed, resume, one table (local process pool)."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from helpers import SHARED_DATA, STS_CT
from dicomnode.jobs.batch import find_series, result_rows, run_batch
from dicomnode.config import parse_config
from dicomnode.jobs.executors import LocalExecutor

QUICK = parse_config({"profiles": {"quick": {"steps": ["foreground", "measure"]}}}).profiles["quick"]
STS_UID = "1.3.6.1.4.1.14519.5.2.1.5168.1900.449841255123215696894565592289"
ABDOMEN = SHARED_DATA / "abdomen-ct" / "upper_abdomen_j2k"


@pytest.fixture
def archive(tmp_path) -> Path:
    """STS CT split over two folders, a one-slice series, empty-UID files, a SEG and a text file."""
    root = tmp_path / "archive"
    files = sorted(p for p in STS_CT.iterdir() if p.is_file())
    for i, f in enumerate(files):  # one series in two folders: found by UID, not by folder
        d = root / ("a" if i % 2 else "b")
        d.mkdir(parents=True, exist_ok=True)
        os.symlink(f, d / f.name)
    (root / "one").mkdir()
    shutil.copy(SHARED_DATA / "chest-ct" / "A0002_B40f" / "1-01.dcm", root / "one" / "x.dcm")
    (root / "noid").mkdir()
    for f in sorted(ABDOMEN.glob("CT.*"))[:3]:
        os.symlink(f, root / "noid" / f.name)
    shutil.copy(SHARED_DATA / "seg-sr-examples" / "seg_image_ct_binary.dcm", root / "seg.dcm")
    (root / "README.txt").write_text("not DICOM")
    return root


def test_find_series_groups_by_uid_and_names_what_it_cannot_use(archive):
    found = find_series(archive)
    assert sorted(found.series) == sorted([STS_UID, "1.3.6.1.4.1.14519.5.2.1.6655.2359.207154000096236603057216610983"])
    assert len(found.series[STS_UID]) == len([p for p in STS_CT.iterdir() if p.is_file()])
    assert found.not_dicom == 1 and found.not_images == 1
    (noid,) = found.failures
    assert noid.files == 3 and "empty Series Instance UID" in noid.reason


def test_batch_runs_lists_failures_resumes_and_writes_one_table(archive, tmp_path):
    out = tmp_path / "out"
    ex = LocalExecutor(1)
    seen: list[tuple[str, str]] = []
    try:
        r1 = run_batch(archive, out, QUICK, ex, uid_root="2.25.", on_progress=lambda u, s: seen.append((u, s)))
        r2 = run_batch(archive, out, QUICK, ex, uid_root="2.25.")
    finally:
        ex.shutdown(wait=True)
    assert r1.done == [STS_UID] and not r1.skipped
    assert {f.reason.split(":")[0] for f in r1.failed} >= {"SeriesLoadError"}
    assert len(r1.failed) == 2 and len(seen) == 3
    assert (out / STS_UID / "results.json").exists() and (out / STS_UID / "seg.dcm").exists()
    with open(out / "failures.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["reason"].split(":")[0] for r in rows} == {"SeriesLoadError", "3 file(s) in " + str(archive / "noid")
                                                         + " have an empty Series Instance UID"}
    # resumed: nothing run again, the same table
    assert r2.skipped == [STS_UID] and not r2.done and len(r2.failed) == 2
    table = pq.read_table(out / "results.parquet").to_pylist()
    assert len(table) == r1.rows == r2.rows == 1
    row = table[0]
    assert row["series_uid"] == STS_UID and row["segment_label"] == "foreground" and row["profile"] == "quick"
    assert row["volume_ml"] > 1000 and row["mean"] is not None and row["sd"] > 0
    assert row["n_findings"] == 0 and row["scene_label"] is None
    assert row["seconds_total"] > 0 and {"seconds_load", "seconds_foreground", "seconds_measure",
                                         "seconds_results"} <= set(row)
    with open(out / "results.csv", newline="") as f:
        assert [r["series_uid"] for r in csv.DictReader(f)] == [STS_UID]


def test_result_rows_summarise_scene_findings_and_timing():
    rows = result_rows({
        "series_instance_uid": "1.2.3", "modality": "CT", "profile": "ct", "profile_version": "1",
        "segments": [{"number": 1, "label": "lung", "volume_ml": 2.5, "features": {"volume_ml": 2.5, "mean": -800.0}},
                     {"number": 2, "label": "bone", "volume_ml": 1.0, "features": {"mean": 700.0, "n_findings": 3}}],
        "scene": {"label": "chest", "probability": 0.9},
        "findings": [{"probability": 0.6}, {"probability": 0.8}],
        "steps": [{"name": "load", "seconds": 0.5}, {"name": "segment", "seconds": 1.0}],
    })
    assert [r["segment_label"] for r in rows] == ["lung", "bone"]
    assert rows[0]["mean"] == -800.0 and "feature_volume_ml" not in rows[0]
    assert rows[1]["feature_n_findings"] == 3.0 and rows[1]["n_findings"] == 2
    assert rows[0]["scene_label"] == "chest" and rows[0]["max_finding_probability"] == 0.8
    assert rows[0]["seconds_total"] == 1.5 and rows[0]["seconds_segment"] == 1.0
    empty = result_rows({"series_instance_uid": "1.2.4", "segments": [], "steps": []})
    assert len(empty) == 1 and empty[0]["segment_number"] is None


def test_batch_lists_a_refused_localizer_with_its_reason(tmp_path):
    """mr-localizer/LOC: three orientations in one series, files without an extension: a failures.csv row."""
    root = tmp_path / "archive"
    root.mkdir()
    for f in sorted((SHARED_DATA / "mr-localizer" / "LOC").iterdir()):
        os.symlink(f, root / f.name)
    out = tmp_path / "out"
    ex = LocalExecutor(1)
    try:
        report = run_batch(root, out, QUICK, ex, uid_root="2.25.")
    finally:
        ex.shutdown(wait=True)
    assert report.found == 1 and not report.done
    (failure,) = report.failed
    assert failure.reason.startswith("SeriesRefusedError") and "3 image orientations" in failure.reason
    with open(report.failures_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and "localizer" in rows[0]["reason"] and "refused" in rows[0]["reason"]
