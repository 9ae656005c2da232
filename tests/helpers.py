"""Helpers shared by the tests: real tools, free ports, shared data paths."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()
STS_CT = SHARED_DATA / "sts" / "STS_001" / "CT"

# pynetdicom installs its own storescu/storescp/echoscu scripts, which can shadow DCMTK's on PATH:
# always use Debian's DCMTK binaries by absolute path.
DCMTK_DIR = Path("/usr/bin")


def dcmtk(tool: str) -> str:
    """Absolute path of a DCMTK tool; fails (never skips) when it is missing: CI installs dcmtk."""
    path = DCMTK_DIR / tool
    assert path.exists(), f"DCMTK tool {path} is missing: apt-get install -y dcmtk"
    return str(path)


def dcmtk_env() -> dict[str, str]:
    """Environment for DCMTK tools: TCP_NODELAY avoids DCMTK's ~40 ms per-PDU stall on loopback."""
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, host: str = "127.0.0.1", timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s} s")


def dciodvfy(path: Path | str) -> tuple[int, str]:
    """Run dicom3tools' dciodvfy; return (number of errors, full output)."""
    exe = shutil.which("dciodvfy") or "/usr/bin/dciodvfy"
    assert Path(exe).exists(), "dciodvfy is missing: apt-get install -y dicom3tools"
    proc = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    errors = len(re.findall(r"^Error", out, flags=re.MULTILINE))
    return errors, out


def storescu(port: int, paths, *, aet: str = "WORKSTATION", aec: str = "DICOMNODE", extra=(), timeout=300):
    args = [dcmtk("storescu"), "-v", "-aet", aet, "-aec", aec, *extra, "+sd", "127.0.0.1", str(port), *map(str, paths)]
    return subprocess.run(args, capture_output=True, text=True, env=dcmtk_env(), timeout=timeout)


def wait_until(pred, timeout_s: float = 120, interval_s: float = 0.25, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what} (last: {last!r})")


def dicomnode_exe() -> str:
    """The installed ``dicomnode`` console script (what a user runs), beside this interpreter or on PATH."""
    beside = Path(sys.executable).parent / "dicomnode"
    exe = str(beside) if beside.exists() else shutil.which("dicomnode")
    assert exe, "the dicomnode console script is not installed: pip install -e ."
    return exe


def run_cli(*args: str, cwd: Path | str, timeout: float = 300, env: dict | None = None,
            input: str | None = None) -> subprocess.CompletedProcess:
    """Run the real ``dicomnode`` command as a user would, from ``cwd``; stdout/stderr captured as text."""
    return subprocess.run([dicomnode_exe(), *map(str, args)], cwd=str(cwd), capture_output=True, text=True,
                          timeout=timeout, env=env, input=input)


class UserNode:
    """``dicomnode serve --config FILE`` run from ``cwd`` with the console script, as a user starts it.

    Its own session, so :meth:`stop` and :meth:`kill` also end the worker pool it leaves in its process group.
    """

    def __init__(self, config_path: Path, cwd: Path, port: int, *extra_args: str, env: dict | None = None) -> None:
        self.config_path, self.cwd, self.port, self.extra_args, self.env = config_path, cwd, port, extra_args, env
        self.log_path = config_path.with_suffix(".log")
        self.proc: subprocess.Popen | None = None

    def start(self, *, wait: bool = True) -> "UserNode":
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([dicomnode_exe(), "serve", "--config", str(self.config_path),
                                          *self.extra_args], cwd=str(self.cwd), stdout=log, stderr=subprocess.STDOUT,
                                         env=self.env, start_new_session=True)
        if wait:
            try:
                wait_for_port(self.port, timeout_s=60)
            except TimeoutError:
                self.kill()
                raise AssertionError(f"node did not start:\n{self.log()}") from None
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return run_cli(*args, "--config", str(self.config_path), cwd=self.cwd, timeout=timeout, env=self.env)

    def stop(self) -> int | None:
        import signal
        rc = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(60)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        return rc if rc is not None else (self.proc.returncode if self.proc else None)

    def kill(self) -> None:
        import signal
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            pass


def stored_instance(src: Path, folder: Path):
    """A shared DICOM file copied into ``folder`` as the receive side stores it, and its StoredInstance (what the
    node indexes)."""
    import pydicom

    from dicomnode.store.spool import StoredInstance

    ds = pydicom.dcmread(src, stop_before_pixels=True)
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, path)
    return StoredInstance(path=path, sop_instance_uid=str(ds.SOPInstanceUID), sop_class_uid=str(ds.SOPClassUID),
                          study_uid=str(ds.StudyInstanceUID), series_uid=str(ds.SeriesInstanceUID),
                          modality=str(ds.Modality), transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
                          size_bytes=path.stat().st_size, calling_ae="PACS", peer_host="127.0.0.1",
                          received_at=time.time(), duplicate=False)
