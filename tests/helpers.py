"""Helpers shared by the tests: real tools, free ports, shared data paths."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
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
