"""Shadowed rules and `dicomnode rules test` (issue 16, item 8), through the CLI on real files."""

from __future__ import annotations

from helpers import SHARED_DATA, run_cli
from dicomnode.config import parse_config

CHEST = SHARED_DATA / "chest-ct" / "A0002_B40f" / "1-01.dcm"
STS = SHARED_DATA / "sts" / "STS_002"

RULES = """
[[destinations]]
name = "PACS"
ae_title = "PACS"
host = "127.0.0.1"
port = 104
[[rules]]
name = "all-ct"
match = { Modality = "CT" }
[[rules]]
name = "chest"
match = { Modality = "CT", BodyPartExamined = "CHEST" }
destinations = ["PACS"]
[[rules]]
name = "mr-t1"
match = { Modality = "MR", SeriesDescription = "T1*" }
[[rules]]
name = "mr"
match = { Modality = ["MR", "PT"] }
profile = "generic"
"""


def test_config_check_warns_about_a_rule_that_never_fires(tmp_path):
    cfg = tmp_path / "r.toml"
    cfg.write_text(RULES)
    p = run_cli("config", "check", cfg, cwd=tmp_path)
    assert p.returncode == 0, p.stderr  # a warning, not an error
    warnings = [ln for ln in p.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1, p.stderr
    assert "rules[1] (chest) never fires: rules[0] (all-ct) comes first" in warnings[0]


def test_shadowing_is_per_value_and_glob():
    def warns(rules):
        return parse_config({"rules": rules}).warnings
    assert not warns([{"name": "a", "match": {"Modality": "CT", "BodyPartExamined": "CHEST"}},
                      {"name": "b", "match": {"Modality": "CT"}}])
    assert warns([{"name": "a", "match": {"Modality": ["CT", "MR"]}}, {"name": "b", "match": {"Modality": "MR"}}])
    assert warns([{"name": "a", "match": {"SeriesDescription": "T1*"}},
                  {"name": "b", "match": {"SeriesDescription": "T1 AX", "Modality": "MR"}}])
    assert not warns([{"name": "a", "match": {"SeriesDescription": "T1*"}},
                      {"name": "b", "match": {"SeriesDescription": "T2*"}}])
    assert warns([{"name": "a", "match": {}}, {"name": "b", "match": {"Modality": "PT"}}])
    assert not warns([{"name": "img", "match": {}},  # a radiomics rule is tried on regions only
                      {"name": "rad", "match": {"Modality": "RTSTRUCT"}, "radiomics": "ibsi-config-C"}])


def test_rules_test_shows_the_rule_that_fires_and_why_earlier_ones_did_not(tmp_path):
    cfg = tmp_path / "r.toml"
    cfg.write_text(RULES)
    p = run_cli("rules", "test", CHEST, STS / "MR_T1" / "000000.dcm", "--config", cfg, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    chest, mr = out.split(f"{STS / 'MR_T1' / '000000.dcm'}:")
    assert "rules[0] all-ct: FIRES" in chest and "-> rule all-ct: profile ct" in chest
    assert "rules[0] all-ct: no: Modality is 'MR', not CT" in mr
    assert "rules[2] mr-t1: no: SeriesDescription is 'IBSI_1_STS_002_MR_T1_image', not T1*" in mr
    assert "rules[3] mr: FIRES" in mr and "-> rule mr: profile generic" in mr
    bad = run_cli("rules", "test", tmp_path / "missing.dcm", "--config", cfg, cwd=tmp_path)
    assert bad.returncode == 2 and "no such file" in bad.stderr
