"""Real peers on loopback: `dicomnode serve` as a subprocess, DCMTK storescp as a destination."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import tomli_w

from helpers import dcmtk, dcmtk_env, free_port, wait_for_port


def to_toml(doc: dict) -> str:
    return tomli_w.dumps(doc)


@dataclass
class NodeProcess:
    config_path: Path
    data_dir: Path
    port: int
    log_path: Path
    proc: subprocess.Popen | None = None
    extra_env: dict = field(default_factory=dict)

    def start(self) -> "NodeProcess":
        env = dict(os.environ, **self.extra_env)
        self._log = open(self.log_path, "ab")
        # its own session: the node's worker pool (a forkserver and its workers) outlives a SIGKILLed node, so the
        # tests kill the whole process group (as systemd's KillMode=control-group does in production)
        self.proc = subprocess.Popen([sys.executable, "-m", "dicomnode", "serve", "--config", str(self.config_path)],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            wait_for_port(self.port, timeout_s=60)
        except TimeoutError:
            raise AssertionError(f"node did not start:\n{self.log()}") from None
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the node (no clean shutdown), then whatever it left behind in its process group."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
        self.reap()

    def reap(self) -> None:
        """Kill every process left in the node's process group (its worker pool after a SIGKILL)."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def stop(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError("node did not stop within 60 s of SIGTERM")
            finally:
                self.reap()
        return self.proc.returncode if self.proc else 0

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run([sys.executable, "-m", "dicomnode", *args, "--config", str(self.config_path)],
                           capture_output=True, text=True, timeout=120)
        if check:
            assert p.returncode == 0, p.stderr
        return p

    def status(self) -> dict:
        return json.loads(self.cli("status", "--json").stdout)


@pytest.fixture
def make_node(tmp_path):
    nodes: list[NodeProcess] = []

    def make(config: dict | None = None, *, name: str = "node", reuse: NodeProcess | None = None) -> NodeProcess:
        if reuse is not None:
            n = NodeProcess(reuse.config_path, reuse.data_dir, reuse.port, reuse.log_path)
            nodes.append(n)
            return n.start()
        port = free_port()
        data_dir = tmp_path / f"{name}-data"
        doc = {"node": {"ae_title": "DICOMNODE", "bind": "127.0.0.1", "port": port, "data_dir": str(data_dir)},
               "series": {"quiet_seconds": 2, "check_interval_seconds": 0.2},
               "workers": {"count": 1, "retry_backoff_seconds": [1]},
               "export": {"retry_backoff_seconds": [1], "max_attempts": 20, "timeout_seconds": 10}}
        for k, v in (config or {}).items():
            if isinstance(v, dict) and isinstance(doc.get(k), dict):
                doc[k] = {**doc[k], **v}
            else:
                doc[k] = v
        cfg = tmp_path / f"{name}.toml"
        cfg.write_text(to_toml(doc))
        n = NodeProcess(cfg, data_dir, port, tmp_path / f"{name}.log")
        nodes.append(n)
        return n.start()

    yield make
    for n in nodes:
        try:
            n.kill()
        except Exception:
            pass


@dataclass
class StoreSCP:
    port: int
    out_dir: Path
    proc: subprocess.Popen | None = None

    def start(self) -> "StoreSCP":
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([dcmtk("storescp"), "-aet", "DEST", "+B", "-od", str(self.out_dir),
                                      str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dcmtk_env())
        wait_for_port(self.port)
        return self

    def files(self) -> list[Path]:
        return sorted(p for p in self.out_dir.iterdir() if p.is_file()) if self.out_dir.exists() else []

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def storescp(tmp_path):
    scps: list[StoreSCP] = []

    def make(port: int | None = None, start: bool = True) -> StoreSCP:
        s = StoreSCP(port or free_port(), tmp_path / f"dest-{len(scps)}")
        scps.append(s)
        return s.start() if start else s

    yield make
    for s in scps:
        s.stop()
