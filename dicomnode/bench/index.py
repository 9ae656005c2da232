"""Index benchmark: does the SQLite index stay fast at hospital scale?

``dicomnode bench index [--instances 1000000] [--slices 100] [--rounds 3]`` builds an empty index and one filled
with ``--instances`` rows (about a month of a busy CT department; a direct SQL bulk insert, series of 200, all
complete, received over 30 days) and measures on both:

* ``ingest_s``: the real ``dicomnode serve`` on that index receiving a ``--slices`` x 512x512 CT from DCMTK
  ``storescu``, from the first byte until the last instance is in the index (median of ``--rounds``, the two
  indexes alternating); ``ingest_ratio`` = empty / full throughput (goal: >= 0.9);
* ``index_writer_per_cpu_s``: instances per CPU second through :meth:`Database.add_instances` alone (50 per
  transaction, as the node's index writer), for reference: it runs off the C-STORE path;
* ``status_s``: ``status_dict`` (what ``dicomnode status`` shows), in process; ``status_cli_s``: the whole
  ``dicomnode status --json`` command, Python start-up and imports included (goal: < 1 s);
* ``completion_scan_s``: one pass of the series monitor's queries (open series past their quiet period, then each
  one's instance paths) with 20 open series of 200 (goal: independent of the rows: ratio <= 2), and the query plans.

Prints one JSON object with the figures, the goals and whether each is met. Anchor: Orthanc's FAQ says its SQLite
index slows down past 25-50k instances.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

__all__ = ["main"]

CT = "1.2.840.10008.5.1.4.1.1.2"


def _uid() -> str:
    return "2.25." + str(uuid.uuid4().int)


def _records(n: int, per_series: int, t: float):
    from dicomnode.store.db import InstanceRecord

    out = []
    series = _uid()
    for i in range(n):
        if i % per_series == 0:
            series = _uid()
        sop = _uid()
        out.append(InstanceRecord(sop, series, "2.25.1", CT, "CT", "1.2.840.10008.1.2.1",
                                  f"/data/instances/{series}/{sop}.dcm", 526000, "CT01", "10.0.0.5", t))
    return out


def _fill(db_path: Path, n: int, per_series: int, now: float) -> float:
    """Bulk insert ``n`` instances in complete series, received over the last 30 days; returns seconds."""
    import sqlite3

    t0 = time.perf_counter()
    con = sqlite3.connect(db_path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("BEGIN")
    month = 30 * 86400.0
    for start in range(0, n, per_series):
        series = _uid()
        k = min(per_series, n - start)
        t = now - month + month * start / n
        con.executemany(
            "INSERT INTO instances(sop_instance_uid, series_uid, study_uid, sop_class_uid, modality, transfer_syntax,"
            " path, size_bytes, calling_ae, peer_host, received_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [(sop, series, "2.25.1", CT, "CT", "1.2.840.10008.1.2.1", f"/data/instances/{series}/{sop}.dcm", 526000,
              "CT01", "10.0.0.5", t + i * 0.1) for i, sop in enumerate(_uid() for _ in range(k))])
        con.execute("INSERT INTO series(series_uid, study_uid, modality, sop_class_uid, state, generation,"
                    " instance_count, first_received_at, last_received_at, completed_at, rule, quiet_seconds)"
                    " VALUES (?,?,?,?,?,1,?,?,?,?,?,?)",
                    (series, "2.25.1", "CT", CT, "complete", k, t, t + k * 0.1, t + k * 0.1 + 30, "ct", 30.0))
    con.execute("COMMIT")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return time.perf_counter() - t0


def _completion_scan(db, open_series: int, repeats: int = 20) -> float:
    """Median seconds of one monitor pass: the due open series, then each one's instance paths."""
    now = time.time() + 3600  # every open series is past its quiet period
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        due = db.open_series_quiet_since(now, 30.0)
        for s in due:
            db.instance_paths(s.series_uid)
        times.append(time.perf_counter() - t0)
        assert len(due) >= open_series, (len(due), open_series)  # (and the series sent by the ingest rounds)
    return statistics.median(times)


def _plans(db_path: Path) -> dict[str, str]:
    import sqlite3

    con = sqlite3.connect(db_path)
    out = {}
    for name, sql in (("open_series", "SELECT * FROM series WHERE state = 'open' AND last_received_at <= 1 - "
                                      "COALESCE(quiet_seconds, 30)"),
                      ("instance_paths", "SELECT path FROM instances WHERE series_uid = 'x' ORDER BY path"),
                      ("activity", "SELECT COUNT(*) FROM instances WHERE received_at >= 1"),
                      ("recent_series", "SELECT * FROM series ORDER BY last_received_at DESC LIMIT 20")):
        out[name] = "; ".join(r[3] for r in con.execute("EXPLAIN QUERY PLAN " + sql))
    con.close()
    return out


def _prepare(work: Path, name: str, fill: int, per_series: int) -> tuple[Path, dict]:
    from dicomnode.store.db import Database

    data = work / name
    data.mkdir(parents=True)
    db_path = data / "index.sqlite"
    db = Database(db_path)
    db.set_meta("clean_shutdown", "1")  # the spool holds none of the bulk rows' files: no rescan
    db.close()
    out: dict = {"instances_before": fill}
    if fill:
        out["fill_s"] = round(_fill(db_path, fill, per_series, time.time()), 1)
    return data, out


def _index_figures(work: Path, data: Path, per_series: int, out: dict) -> None:
    from dicomnode.obs.status import status_dict
    from dicomnode.config import parse_config
    from dicomnode.store.db import Database

    db_path = data / "index.sqlite"
    db = Database(db_path)
    recs = _records(20 * per_series, per_series, time.time())  # 20 open series
    t0 = time.process_time()
    for i in range(0, len(recs), 50):
        db.add_instances(recs[i:i + 50])
    out["index_writer_per_cpu_s"] = round(len(recs) / (time.process_time() - t0))
    out["completion_scan_s"] = round(_completion_scan(db, 20), 5)
    cfg = parse_config({"node": {"data_dir": str(data)}}, source="bench")
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        status_dict(cfg, db)
        times.append(time.perf_counter() - t0)
    out["status_s"] = round(statistics.median(times), 4)
    db.close()
    cfg_path = work / f"{data.name}.toml"
    cfg_path.write_text(f"[node]\ndata_dir = '{data}'\n")
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "dicomnode", "status", "--json", "--config", str(cfg_path)],
                       capture_output=True, text=True, timeout=300)
    out["status_cli_s"] = round(time.perf_counter() - t0, 3)
    if p.returncode != 0:
        raise RuntimeError(f"dicomnode status failed: {p.stderr[-2000:]}")
    out["query_plans"] = _plans(db_path)


def _ingest_once(work: Path, data: Path, folder: Path, slices: int) -> float:
    """Start serve on ``data``, send ``folder``, time until its instances are all indexed, stop."""
    import sqlite3

    from dicomnode.bench._common import env_nodelay, free_port, wait_for_port
    from dicomnode.bench.ingest import STORESCU

    port = free_port()
    cfg = work / f"serve-{data.name}.toml"
    cfg.write_text(f'[node]\nae_title = "DICOMNODE"\nbind = "127.0.0.1"\nport = {port}\ndata_dir = "{data}"\n\n'
                   "[series]\nquiet_seconds = 3600\n")
    with open(work / f"serve-{data.name}.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "dicomnode", "serve", "--config", str(cfg)], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, proc)
        con = sqlite3.connect(f"file:{data / 'index.sqlite'}?mode=ro", uri=True, timeout=30)
        before = con.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
        t0 = time.perf_counter()
        p = subprocess.run([STORESCU, "-aet", "BENCH", "-aec", "DICOMNODE", "+sd", "127.0.0.1", str(port),
                            str(folder)], capture_output=True, text=True, env=env_nodelay(), timeout=600)
        if p.returncode != 0:
            raise RuntimeError(f"storescu failed: {p.stdout[-2000:]}{p.stderr[-2000:]}")
        while con.execute("SELECT COUNT(*) FROM instances").fetchone()[0] < before + slices:
            time.sleep(0.005)
        seconds = time.perf_counter() - t0
        con.close()
        return seconds
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dicomnode bench index", description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=1_000_000, help="rows in the filled index")
    parser.add_argument("--per-series", type=int, default=200)
    parser.add_argument("--slices", type=int, default=100, help="512x512 CT slices sent per ingest round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None)
    a = parser.parse_args(argv)
    import numpy as np

    from dicomnode.bench.ingest import SeriesWriter

    work = a.work or Path(tempfile.mkdtemp(prefix="dicomnode-index-"))
    try:
        empty_dir, empty = _prepare(work, "empty", 0, a.per_series)
        full_dir, full = _prepare(work, "full", a.instances, a.per_series)
        writer = SeriesWriter(a.slices, np.random.default_rng(0))
        times: dict[str, list[float]] = {"empty": [], "full": []}
        for r in range(a.rounds):
            order = [("empty", empty_dir), ("full", full_dir)]
            for name, data in (order if r % 2 == 0 else order[::-1]):
                folder = work / f"series-{name}-{r}"
                writer.write(folder)
                times[name].append(_ingest_once(work, data, folder, a.slices))
                shutil.rmtree(folder)
        mb = a.slices * writer.slice_bytes / 1e6
        for name, out in (("empty", empty), ("full", full)):
            out["ingest_s"] = round(statistics.median(times[name]), 3)
            out["ingest_rounds_s"] = [round(t, 3) for t in times[name]]
            out["ingest_mb_per_s"] = round(mb / statistics.median(times[name]), 1)
        _index_figures(work, empty_dir, a.per_series, empty)
        _index_figures(work, full_dir, a.per_series, full)
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    ratio = empty["ingest_s"] / full["ingest_s"]
    scan_ratio = full["completion_scan_s"] / max(empty["completion_scan_s"], 1e-9)
    report = {
        "empty": empty, "full": full,
        "ingest_ratio": round(ratio, 3),
        "index_writer_ratio": round(full["index_writer_per_cpu_s"] / empty["index_writer_per_cpu_s"], 3),
        "completion_scan_ratio": round(scan_ratio, 2),
        "goals": {"ingest_ratio_min": 0.9, "status_s_max": 1.0, "completion_scan_ratio_max": 2.0},
        "met": {"ingest": ratio >= 0.9, "status": full["status_s"] < 1.0, "status_cli": full["status_cli_s"] < 1.0,
                "completion_scan": scan_ratio <= 2.0},
        "settings": {"instances": a.instances, "per_series": a.per_series, "slices": a.slices, "rounds": a.rounds},
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
