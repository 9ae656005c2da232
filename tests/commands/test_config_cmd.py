"""`dicomnode config check|show` as a user runs them (issue 16, items 5 and 15)."""

from __future__ import annotations

import json
import tomllib

from helpers import REPO, run_cli
from dicomnode.config import redact


def test_a_destination_with_a_bad_port_is_the_only_error(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[destinations]]\nname = "PACS"\nae_title = "PACS"\nhost = "10.0.0.1"\nport = 70000\n\n'
                   '[[rules]]\nname = "all"\nmatch = { Modality = "CT" }\ndestinations = ["PACS"]\n')
    p = run_cli("config", "check", cfg, cwd=tmp_path)
    assert p.returncode == 2
    errors = [ln for ln in p.stderr.splitlines() if ln.strip().startswith("- ")]
    assert len(errors) == 1, p.stderr
    assert "destinations[0].port = 70000" in errors[0] and "must be <= 65535" in errors[0]
    assert "rules" not in p.stderr


def test_config_show_prints_the_effective_config_that_check_accepts(tmp_path):
    p = run_cli("config", "show", REPO / "conf" / "dicomnode.toml", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    doc = tomllib.loads(p.stdout)
    assert doc["node"]["port"] == 11112 and doc["series"]["quiet_seconds"] == 30
    assert doc["workers"]["max_attempts"] == 3  # a default the file does not set
    assert set(doc["profiles"]) >= {"ct", "mr", "pet", "generic"}
    assert doc["rules"][0]["name"] == "chest-ct"
    doc.pop("source")
    again = tmp_path / "again.toml"
    again.write_text(p.stdout.replace('source = "', '# source = "'))
    ok = run_cli("config", "check", again, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    js = run_cli("config", "show", "--json", cwd=tmp_path)  # no file: the embedded defaults
    assert js.returncode == 0 and json.loads(js.stdout)["node"]["ae_title"] == "DICOMNODE"


def test_secret_values_are_redacted():
    doc = {"node": {"port": 1}, "destinations": [{"name": "X", "password": "hunter2", "api_token": "t"}]}
    out = redact(doc)
    assert out["destinations"][0]["password"] == "<redacted>" and out["destinations"][0]["api_token"] == "<redacted>"
    assert out["node"]["port"] == 1 and out["destinations"][0]["name"] == "X"
