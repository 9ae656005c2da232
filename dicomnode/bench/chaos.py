"""Crash benchmark: SIGKILLs during receive, processing and sending; nothing lost, nothing sent twice.

``dicomnode bench chaos [--series 12] [--kills 20] [--slices 12] [--seed 0] [--work DIR]`` runs the real
``dicomnode serve`` (its own process group, killed as a whole, as systemd's ``KillMode=control-group`` does) with a
DCMTK ``storescp +uf --sleep-during 1`` destination (unique file names, so a duplicate shows as a second file;
one second per C-STORE, so a kill lands in the middle of a batch) and DCMTK ``storescu`` senders that resend a whole
series when the node went away, as a modality does. A killer thread cycles through the phases: it waits until an
instance of the series being sent is on disk (receive), a job is running (process) or a result is being sent
(send), then SIGKILLs the node and starts it again. When the kills are done and the work has drained it prints:

* ``acknowledged`` / ``present`` / ``indexed``: SOP instances with a success response, those on disk, those in the
  index (all three must be equal);
* ``series`` / ``processed`` / ``completed_twice``: series sent, series with a done job, series with a second job;
* ``results_expected`` / ``delivered`` / ``duplicated``: result instances queued, distinct ones received by the
  destination, extra copies received; ``kills.send`` bounds ``duplicated`` (the instance in flight at each kill);
* ``max_job_attempts``: a kill is not a failed attempt, so 1.

The test ``tests/integration/test_reliability_chaos.py`` runs a small version and asserts on these figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dicomnode.bench._common import SyntheticCT, env_nodelay, free_port, listening

__all__ = ["ChaosReport", "main", "run_chaos"]

STORESCU = "/usr/bin/storescu"
STORESCP = "/usr/bin/storescp"
PHASES = ("receive", "process", "send")


def write_series(folder: Path, slices: int, size: int, rng: np.random.Generator) -> tuple[str, dict[str, str]]:
    """A small synthetic CT series (see :class:`SyntheticCT`) with fresh UIDs; returns (series UID,
    {path: SOP Instance UID})."""
    series, sops, _ = SyntheticCT(slices, rng, size=size, fov_mm=384.0, thickness_mm=3.0, name="Chaos",
                                  noise_sd=15.0, breathing_blob=False).write(folder)
    return series, {str(path): sop for path, sop in sops.items()}


@dataclass
class _Node:
    config: Path
    data_dir: Path
    port: int
    log: Path
    proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 120.0) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "dicomnode", "serve", "--config", str(self.config)],
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while not listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the node did not start; see {self.log}")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                pass
        self.kill()


@dataclass
class ChaosReport:
    acknowledged: int = 0
    present: int = 0
    indexed: int = 0
    series: int = 0
    processed: int = 0
    completed_twice: int = 0
    results_expected: int = 0
    delivered: int = 0
    duplicated: int = 0
    max_job_attempts: int = 0
    jobs_failed: int = 0
    kills: dict[str, int] = field(default_factory=lambda: {p: 0 for p in PHASES})
    seconds: float = 0.0
    drained: bool = False

    def as_dict(self) -> dict[str, object]:
        return {"acknowledged": self.acknowledged, "present": self.present, "indexed": self.indexed,
                "lost": self.acknowledged - self.present, "unindexed": self.acknowledged - self.indexed,
                "series": self.series, "processed": self.processed, "completed_twice": self.completed_twice,
                "results_expected": self.results_expected, "delivered": self.delivered,
                "duplicated": self.duplicated, "duplicates_allowed": self.kills["send"],
                "max_job_attempts": self.max_job_attempts, "jobs_failed": self.jobs_failed,
                "kills": dict(self.kills), "kills_total": sum(self.kills.values()), "drained": self.drained,
                "seconds": round(self.seconds, 1)}


class _Sender(threading.Thread):
    """Sends each series with storescu; resends the whole series until one run gets every response."""

    def __init__(self, port: int, series: list[tuple[Path, str, dict[str, str]]], pause_s: float) -> None:
        super().__init__(name="chaos-sender", daemon=True)
        self.port = port
        self.series = series
        self.pause_s = pause_s
        self.acked: set[str] = set()
        self.current: tuple[str, int] | None = None  # (series UID, instances) being sent
        self.done = threading.Event()
        self.error = ""

    def run(self) -> None:
        try:
            for folder, uid, sops in self.series:
                self.current = (uid, len(sops))
                for _ in range(100):
                    while not listening(self.port):
                        time.sleep(0.1)
                    p = subprocess.run([STORESCU, "-v", "-aet", "MODALITY", "-aec", "DICOMNODE", "127.0.0.1",
                                        str(self.port), *sorted(sops)], capture_output=True, text=True, env=env_nodelay())
                    self.acked |= _acknowledged(p.stdout + p.stderr, sops)
                    if p.returncode == 0:
                        break
                    time.sleep(0.5)
                else:
                    self.error = f"series {uid} could not be sent in 100 tries"
                self.current = None
                time.sleep(self.pause_s)
        finally:
            self.done.set()


def _acknowledged(output: str, sops: dict[str, str]) -> set[str]:
    """SOP Instance UIDs whose C-STORE got a success response, from ``storescu -v`` output."""
    out: set[str] = set()
    current = None
    for line in output.splitlines():
        m = re.search(r"Sending file: (.+)$", line)
        if m:
            current = m.group(1).strip()
        elif "Received Store Response (Success)" in line and current in sops:
            out.add(sops[current])
    return out


def _query(db: Path, sql: str, args: tuple = ()) -> list[tuple]:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as con:
            return con.execute(sql, args).fetchall()
    except sqlite3.Error:
        return []


def run_chaos(work: Path, *, series: int = 12, kills: int = 20, slices: int = 12, size: int = 128, seed: int = 0,
              pause_s: float = 2.0, drain_timeout_s: float = 900.0) -> ChaosReport:
    """Run the chaos scenario in ``work`` (see the module docstring); returns the figures."""
    for tool in (STORESCU, STORESCP):
        if not Path(tool).exists():
            raise RuntimeError(f"{tool} is missing: apt-get install -y dcmtk")
    t0 = time.monotonic()
    rng = np.random.default_rng(seed)
    sent = [(work / "in" / f"s{i:02d}", *write_series(work / "in" / f"s{i:02d}", slices, size, rng))
            for i in range(series)]
    dest_port, node_port = free_port(), free_port()
    dest_dir = work / "dest"
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = subprocess.Popen([STORESCP, "-aet", "DEST", "+uf", "--sleep-during", "1", "-od", str(dest_dir),
                             str(dest_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env_nodelay())
    data_dir = work / "node-data"
    import tomli_w

    cfg = work / "node.toml"
    cfg.write_text(tomli_w.dumps({
        "node": {"ae_title": "DICOMNODE", "bind": "127.0.0.1", "port": node_port, "data_dir": str(data_dir)},
        "series": {"quiet_seconds": 5, "check_interval_seconds": 0.2},
        "workers": {"count": 1, "retry_backoff_seconds": [1]},
        "export": {"retry_backoff_seconds": [1], "max_attempts": 50, "timeout_seconds": 20},
        "destinations": [{"name": "DEST", "ae_title": "DEST", "host": "127.0.0.1", "port": dest_port}],
        "profiles": {"basic": {"steps": ["foreground", "measure"], "outputs": ["seg", "sr"]}},
        "rules": [{"name": "ct", "match": {"Modality": "CT"}, "profile": "basic", "destinations": ["DEST"]}]}))
    node = _Node(cfg, data_dir, node_port, work / "node.log")
    db = data_dir / "index.sqlite"
    report = ChaosReport(series=series)
    sender = _Sender(node_port, sent, pause_s)
    try:
        node.start()
        sender.start()
        phase = 0
        while sum(report.kills.values()) < kills:
            want = PHASES[phase % len(PHASES)]
            if _wait_for_phase(want, sender, data_dir, db, timeout_s=60 if not sender.done.is_set() else 20):
                node.kill()
                report.kills[want] += 1
                node.start()
            elif sender.done.is_set() and _drained(db, series):
                break  # nothing left to interrupt
            phase += 1
        sender.join(timeout=drain_timeout_s)
        deadline = time.monotonic() + drain_timeout_s
        while time.monotonic() < deadline and not _drained(db, series):
            time.sleep(1.0)
        report.drained = _drained(db, series)
        node.stop()
        time.sleep(1.5)  # the destination finishes its last --sleep-during
    finally:
        node.kill()
        dest.terminate()
        try:
            dest.wait(10)
        except subprocess.TimeoutExpired:
            dest.kill()
    all_sops = {sop for _, _, sops in sent for sop in sops.values()}
    on_disk = {p.stem for p in (data_dir / "instances").rglob("*.dcm")}
    in_index = {r[0] for r in _query(db, "SELECT sop_instance_uid FROM instances")}
    report.acknowledged = len(sender.acked)
    report.present = len(sender.acked & on_disk)
    report.indexed = len(sender.acked & in_index)
    series_uids = {uid for _, uid, _ in sent}
    done = {r[0] for r in _query(db, "SELECT DISTINCT series_uid FROM jobs WHERE state = 'done'")}
    report.processed = len(series_uids & done)
    report.completed_twice = len({r[0] for r in _query(db, "SELECT series_uid FROM jobs WHERE generation > 1")})
    report.max_job_attempts = max([r[0] for r in _query(db, "SELECT attempts FROM jobs")] or [0])
    report.jobs_failed = len(_query(db, "SELECT id FROM jobs WHERE state = 'failed'"))
    expected = {r[0] for r in _query(db, "SELECT sop_instance_uid FROM exports")}
    report.results_expected = len(expected)
    received = Counter(_sop_of(p) for p in dest_dir.iterdir() if p.is_file())
    report.delivered = len(expected & set(received))
    report.duplicated = sum(n - 1 for n in received.values() if n > 1)
    report.seconds = time.monotonic() - t0
    if sender.error:
        raise RuntimeError(sender.error)
    assert all_sops  # the series were written
    return report


def _sop_of(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID)


def _drained(db: Path, series: int) -> bool:
    """Every series has a done job and every result is sent."""
    done = _query(db, "SELECT COUNT(DISTINCT series_uid) FROM jobs WHERE state = 'done'")
    waiting = _query(db, "SELECT COUNT(*) FROM exports WHERE state != 'sent'")
    busy = _query(db, "SELECT COUNT(*) FROM jobs WHERE state IN ('pending', 'running')")
    return bool(done and waiting and busy) and done[0][0] >= series and waiting[0][0] == 0 and busy[0][0] == 0


def _wait_for_phase(phase: str, sender: _Sender, data_dir: Path, db: Path, *, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if phase == "receive":
            cur = sender.current
            if cur is None and sender.done.is_set():
                return False
            if cur is not None:
                folder = data_dir / "instances" / cur[0]
                n = sum(1 for _ in folder.glob("*.dcm")) if folder.is_dir() else 0
                if 2 <= n < cur[1] - 1:
                    return True
        elif phase == "process":
            if _query(db, "SELECT 1 FROM jobs WHERE state = 'running' AND started_at < ?", (time.time() - 0.3,)):
                return True
        elif _query(db, "SELECT 1 FROM exports WHERE state = 'sending'"):
            return True
        time.sleep(0.02)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dicomnode bench chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=12)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--slices", type=int, default=12)
    parser.add_argument("--size", type=int, default=128, help="rows and columns of each slice")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="keep everything in this folder")
    a = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up the node and the destination too
    work = a.work or Path(tempfile.mkdtemp(prefix="dicomnode-chaos-"))
    try:
        report = run_chaos(work, series=a.series, kills=a.kills, slices=a.slices, size=a.size, seed=a.seed)
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report.as_dict(), indent=2))
    r = report
    ok = (r.present == r.indexed == r.acknowledged and r.processed == r.series and r.completed_twice == 0
          and r.duplicated <= r.kills["send"] and r.delivered == r.results_expected and r.drained)
    return 0 if ok else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
