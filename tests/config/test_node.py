import subprocess
import sys
from pathlib import Path

import pytest

from dicomnode.config import load_config, parse_config
from dicomnode.errors import ConfigErrors

REPO = Path(__file__).resolve().parents[2]


def test_defaults_match_the_contract():
    cfg = load_config(None)
    assert cfg.node.ae_title == "DICOMNODE"
    assert cfg.node.port == 11112
    assert cfg.node.bind == "0.0.0.0"
    assert str(cfg.node.data_dir) == "dicomnode-data"
    assert cfg.series.quiet_seconds == 30
    assert cfg.destinations == () and cfg.rules == () and cfg.peers == ()
    assert cfg.workers.backend == "local"
    assert {"ct", "mr", "pet", "generic"} <= set(cfg.profiles)


def test_example_file_is_valid_and_complete():
    cfg = load_config(REPO / "conf" / "dicomnode.toml")
    assert cfg.node.ae_title == "DICOMNODE"
    assert [p.ae_title for p in cfg.peers] == ["ORTHANC", "WORKSTATION"]
    assert cfg.peers[0].host == "127.0.0.1" and cfg.peers[1].host is None
    assert cfg.destination("PACS").port == 4242
    assert cfg.rules[0].match["BodyPartExamined"] == ("CHEST", "THORAX", "LUNG")
    assert cfg.rules[0].quiet_seconds == 20
    assert cfg.profiles["quick"].params["foreground"]["threshold"] == -500


def test_every_error_is_reported_with_key_and_fix():
    doc = {
        "node": {"ae_title": "THIS-TITLE-IS-FAR-TOO-LONG", "port": 70000, "colour": "blue"},
        "series": {"quiet_seconds": -1},
        "destinations": [{"name": "PACS1", "ae_title": "P1", "host": "h", "port": 104}],
        "rules": [{"name": "r", "match": {"Modality": "CT", "NotAKeyword": "x"}, "destinations": ["PACS2"],
                   "profile": "nope"}],
        "workers": {"count": 0},
    }
    with pytest.raises(ConfigErrors) as ei:
        parse_config(doc)
    keys = {e.key for e in ei.value.errors}
    assert {"node.ae_title", "node.port", "node.colour", "series.quiet_seconds", "rules[0].match.NotAKeyword",
            "rules[0].destinations[0]", "rules[0].profile", "workers.count"} <= keys
    msg = str(ei.value)
    assert "no [[destinations]] named PACS2" in msg and "PACS1" in msg


def test_match_semantics_glob_list_exact():
    cfg = parse_config({"rules": [{"name": "a", "match": {"Modality": ["CT", "MR"], "SeriesDescription": "*Thorax*"}}]})
    r = cfg.rules[0]
    assert r.matches({"Modality": "CT", "SeriesDescription": "ThoraxRoutine 8.0 B40f"})
    assert not r.matches({"Modality": "PT", "SeriesDescription": "Thorax"})
    assert not r.matches({"Modality": "CT"})


def test_profile_with_unknown_step_is_refused():
    with pytest.raises(ConfigErrors) as ei:
        parse_config({"profiles": {"x": {"steps": ["foreground", "teleport"]}}})
    assert ei.value.errors[0].key == "profiles.x.steps[1]"
    assert "known steps" in ei.value.errors[0].fix


def test_config_check_cli_exit_codes(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[node]\nport = "eleven"\n[[destinations]]\nname = "X"\n')
    proc = subprocess.run([sys.executable, "-m", "dicomnode", "config", "check", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "node.port" in proc.stderr and "destinations[0].ae_title" in proc.stderr
    good = subprocess.run([sys.executable, "-m", "dicomnode", "config", "check", str(REPO / "conf" / "dicomnode.toml")],
                          capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    syntax = tmp_path / "syntax.toml"
    syntax.write_text("[node\n")
    proc = subprocess.run([sys.executable, "-m", "dicomnode", "config", "check", str(syntax)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "not valid TOML" in proc.stderr
