"""The deployment files: the systemd unit verifies, the examples are valid configuration."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dicomnode.config import load_config

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
UNIT = DEPLOY / "dicomnode.service"


def _unit_here(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this environment's `dicomnode` (the only change)."""
    exe = shutil.which("dicomnode") or str(Path(sys.executable).with_name("dicomnode"))
    assert Path(exe).exists(), "the dicomnode script is not installed: pip install -e ."
    out = tmp_path / UNIT.name
    out.write_text(UNIT.read_text().replace("/opt/dicomnode/bin/dicomnode", exe))
    return out


def test_unit_is_hardened():
    text = UNIT.read_text()
    for directive in ("User=dicomnode", "ProtectSystem=strict", "ReadWritePaths=/var/lib/dicomnode",
                      "NoNewPrivileges=yes", "PrivateTmp=yes", "Restart=on-failure",
                      "ExecReload=/bin/kill -HUP $MAINPID", "StateDirectory=dicomnode", "CapabilityBoundingSet="):
        assert re.search(rf"^{re.escape(directive)}\s*$", text, re.MULTILINE), directive


def test_systemd_analyze_verify_and_security(tmp_path):
    assert shutil.which("systemd-analyze"), "systemd-analyze is missing: apt-get install -y systemd (.ci/run does)"
    unit = _unit_here(tmp_path)
    p = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and not p.stderr.strip(), p.stdout + p.stderr
    p = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)], capture_output=True, text=True,
                       timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", p.stdout + p.stderr)
    if m is None:
        pytest.skip(f"this systemd-analyze has no offline security check: {p.stderr.strip()[:200]}")
    assert float(m.group(1)) <= 2.5, p.stdout


def test_container_and_orthanc_examples_are_valid():
    cfg = load_config(DEPLOY / "docker" / "dicomnode.toml")
    assert cfg.destination("ORTHANC").host == "orthanc" and cfg.metrics.port == 9108
    for f in (DEPLOY / "docker" / "orthanc.json", DEPLOY / "orthanc" / "orthanc.json"):
        doc = json.loads(f.read_text())
        assert doc["DicomModalities"]["dicomnode"]["AET"] == cfg.node.ae_title
        assert doc["LuaScripts"] == ["/etc/orthanc/dicomnode-autoroute.lua"]
    lua = (DEPLOY / "orthanc" / "autoroute.lua").read_text()
    assert "local TARGET = 'dicomnode'" in lua and f"local NODE_AET = '{cfg.node.ae_title}'" in lua
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "USER dicomnode" in dockerfile and "deploy/docker/dicomnode.toml" in dockerfile
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert set(compose["services"]) == {"dicomnode", "orthanc"}
    for svc in compose["services"].values():
        for vol in svc["volumes"]:
            src = vol.split(":")[0]
            if src.startswith("."):
                assert (DEPLOY / src).exists(), vol
