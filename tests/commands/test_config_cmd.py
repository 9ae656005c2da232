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


def test_profile_extends_with_per_step_overrides(tmp_path):
    """A trained model in a profile without copying the whole shipped one (issue 16, item 13)."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('[profiles.mine]\nextends = "ct"\nversion = "7"\n[profiles.mine.scene]\nmodel = "scene"\n'
                   '[profiles.mine.detect]\nmax_findings = 3\n'
                   '[profiles.lean]\nextends = "mine"\nsteps = ["denoise", "segment", "detect"]\n')
    ok = run_cli("config", "check", cfg, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    shown = tomllib.loads(run_cli("config", "show", cfg, cwd=tmp_path).stdout)
    mine, ct, lean = shown["profiles"]["mine"], shown["profiles"]["ct"], shown["profiles"]["lean"]
    assert mine["extends"] == "ct" and mine["version"] == "7" and mine["steps"] == ct["steps"]
    assert mine["detect"] == {**ct["detect"], "max_findings": 3}  # only the named key changed
    assert mine["denoise"] == ct["denoise"] and mine["scene"]["model"] == "scene"
    assert lean["steps"] == ["denoise", "segment", "detect"] and lean["detect"]["max_findings"] == 3
    assert "scene" not in lean and lean["version"] == "7"


def test_profile_extends_errors_are_named(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[profiles.a]\nextends = "nope"\n'
                   '[profiles.b]\nextends = "c"\n[profiles.c]\nextends = "b"\n'
                   '[profiles.d]\nextends = "ct"\n[profiles.d.teleport]\nx = 1\n'
                   '[profiles.e]\nextends = "ct"\nsteps = ["segment", "beam"]\n')
    p = run_cli("config", "check", cfg, cwd=tmp_path)
    assert p.returncode == 2
    errors = [ln.strip() for ln in p.stderr.splitlines() if ln.strip().startswith("- ")]
    text = "\n".join(errors)
    assert "profiles.a.extends = 'nope': no such profile; extend one of" in text
    assert "profiles.c.extends = 'b'" in text and "circle (b -> c -> b)" in text
    assert "profiles.d.teleport" in text and "not in profiles.d.steps" in text
    assert "profiles.e.steps[1] = 'beam': unknown step" in text
    assert len(errors) == 4, text


def test_process_runs_an_extended_profile(tmp_path):
    from helpers import STS_CT
    cfg = tmp_path / "c.toml"
    cfg.write_text('[profiles.base]\nsteps = ["foreground", "measure"]\n[profiles.base.foreground]\nthreshold = -500\n'
                   '[profiles.tight]\nextends = "base"\n[profiles.tight.foreground]\nthreshold = 200\n')
    outs = {}
    for name in ("base", "tight"):
        p = run_cli("process", STS_CT, "--out", tmp_path / name, "--profile", name, "-q", "--config", cfg,
                    cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        outs[name] = json.loads((tmp_path / name / "results.json").read_text())
    assert outs["tight"]["profile"] == "tight"
    vol = {n: outs[n]["segments"][0]["volume_ml"] for n in outs}
    assert vol["tight"] < vol["base"]  # the override reached the step: a higher threshold, less foreground
