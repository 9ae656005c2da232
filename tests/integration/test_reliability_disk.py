"""A full disk under the index: no acknowledged instance is ever missing from it, and no series completes short.

The data folder is a small tmpfs (the index lives there) and its ``instances`` folder a larger one, so that the
spool commits and acknowledges while SQLite fails with "database or disk is full", as on a real full disk where the
last free blocks go to instance files. Needs root for ``mount`` (CI runs as root).
"""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pydicom
import pytest

from helpers import STS_CT, storescu, wait_until


@pytest.fixture
def small_disk(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    mounted: list[Path] = []
    try:
        for where, size in ((data, "6m"), (data / "instances", "64m")):
            where.mkdir(exist_ok=True)
            p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                               capture_output=True, text=True)
            assert p.returncode == 0, f"mount tmpfs needs root (CI runs as root): {p.stderr}"
            mounted.append(where)
        yield data
    finally:
        for where in reversed(mounted):
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _fill(folder: Path) -> Path:
    """Write a ballast file until the file system is full; returns it (delete it to free the space)."""
    ballast = folder / "ballast"
    with open(ballast, "wb", buffering=0) as f:
        for size in (65536, 4096, 512, 1):  # down to the last partial blocks
            try:
                while f.write(b"\x00" * size):
                    pass
            except OSError:
                pass
    return ballast


def _series(tmp_path: Path, name: str, files: list[Path]) -> tuple[Path, str, list[str]]:
    """Copies of ``files`` as a new series (fresh Series and SOP Instance UIDs)."""
    out = tmp_path / name
    out.mkdir()
    series = pydicom.uid.generate_uid()
    sops = []
    for i, f in enumerate(files):
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        sops.append(ds.SOPInstanceUID)
        ds.save_as(out / f"{i:03d}.dcm")
    return out, series, sops


def _indexed(data: Path, series: str) -> int:
    with sqlite3.connect(data / "index.sqlite", timeout=30) as con:
        return con.execute("SELECT COUNT(*) FROM instances WHERE series_uid = ?", (series,)).fetchone()[0]


def _series_row(data: Path, series: str):
    with sqlite3.connect(data / "index.sqlite", timeout=30) as con:
        return con.execute("SELECT state, instance_count FROM series WHERE series_uid = ?", (series,)).fetchone()


def test_full_disk_under_the_index_loses_nothing(small_disk, tmp_path, make_node):
    node = make_node({"node": {"data_dir": str(small_disk)}, "series": {"quiet_seconds": 1},
                      "rules": [{"name": "none", "match": {"Modality": "XX"}}]})  # kept, unrouted: no job
    try:
        ct = sorted(STS_CT.iterdir())
        folder_a, series_a, _ = _series(tmp_path, "a", ct[:12])
        folder_b, series_b, sops_b = _series(tmp_path, "b", ct[12:20])

        # 1. the index's disk is full: every instance is still acknowledged (the spool has room) ...
        ballast = _fill(small_disk)
        sent = storescu(node.port, [folder_a])
        assert sent.returncode == 0, sent.stderr
        assert len(list((small_disk / "instances" / series_a).glob("*.dcm"))) == 12
        wait_until(lambda: "index write failed" in node.log(), timeout_s=60, what="the failed index write")
        # ... the series does not complete while its instances are not indexed, and new senders wait
        refused = storescu(node.port, [folder_b])
        assert refused.returncode != 0 and "index cannot be written" in node.log()
        # 2. space comes back: every acknowledged instance is indexed, then the series completes with all of them
        ballast.unlink()
        wait_until(lambda: _series_row(small_disk, series_a) == ("unrouted", 12), timeout_s=60,
                   what="series A complete with 12 instances")

        # 3. full again, then a clean stop with instances unindexed: the next start rescans and indexes them
        ballast = _fill(small_disk)
        sent = storescu(node.port, [folder_b])
        assert sent.returncode == 0, sent.stderr
        wait_until(lambda: node.log().count("index write failed") >= 2, timeout_s=60, what="the second failure")
        assert node.stop() == 0
        assert "acknowledged instances not in the index" in node.log()
        ballast.unlink()
        node = make_node(reuse=node)
        wait_until(lambda: _series_row(small_disk, series_b) == ("unrouted", 8), timeout_s=60,
                   what="series B complete with 8 instances after the restart")

        # 4. a file whose index row is missing gets it back when its sender resends it
        with sqlite3.connect(small_disk / "index.sqlite", timeout=30) as con:
            con.execute("DELETE FROM instances WHERE sop_instance_uid = ?", (sops_b[0],))
        assert _indexed(small_disk, series_b) == 7
        sent = storescu(node.port, [folder_b])
        assert sent.returncode == 0, sent.stderr
        wait_until(lambda: _indexed(small_disk, series_b) == 8, timeout_s=60, what="the resent instance indexed")
    finally:
        node.kill()
