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


def test_node_fast_receive_key():
    from dicomnode.errors import ConfigErrors

    assert parse_config({}).node.fast_receive is True
    assert parse_config({"node": {"fast_receive": False}}).node.fast_receive is False
    with pytest.raises(ConfigErrors) as e:
        parse_config({"node": {"fast_receive": "yes"}})
    assert "node.fast_receive" in str(e.value) and "true or false" in str(e.value)


@pytest.mark.parametrize("section,key,bad", [
    ("node", "port", 70000), ("node", "max_associations", 0), ("node", "idle_timeout_seconds", 0),
    ("node", "log_format", "xml"), ("node", "fast_receive", "yes"), ("series", "quiet_seconds", 0),
    ("workers", "count", 0), ("workers", "backend", "ray"), ("workers", "lease_seconds", 0),
    ("workers", "max_attempts", 0), ("workers", "retry_backoff_seconds", []), ("export", "timeout_seconds", 0),
    ("export", "max_attempts", 2.5), ("metrics", "port", -1), ("retention", "delete_received_after_days", -1),
    ("retention", "keep_failed", 1),
])
def test_sections_check_themselves_as_the_file_parser_does(section, key, bad):
    """Each section is valid from birth: built in code with a bad value it refuses itself, naming the same key the
    file parser names for the same value."""
    from dicomnode.config import node as cfgmod

    cls = {"node": cfgmod.NodeSection, "series": cfgmod.SeriesSection, "workers": cfgmod.WorkersSection,
           "export": cfgmod.ExportSection, "metrics": cfgmod.MetricsSection,
           "retention": cfgmod.RetentionSection}[section]
    with pytest.raises(ConfigErrors) as made:
        cls(**{key: bad})
    with pytest.raises(ConfigErrors) as parsed:
        parse_config({section: {key: bad}})
    assert [e.key for e in made.value.errors] == [f"{section}.{key}"] == [e.key for e in parsed.value.errors]
    assert made.value.errors[0].fix


def test_destination_checks_itself():
    from dicomnode.config import Destination

    assert Destination("PACS", "PACS", "10.0.0.1", 104).kind.value == "dicom"
    with pytest.raises(ConfigErrors) as e:
        Destination("PACS", "A" * 17, "", 0)
    assert {x.key for x in e.value.errors} == {"destinations.PACS.port", "destinations.PACS.ae_title",
                                               "destinations.PACS.host"}


def test_profile_step_parameters_are_checked_at_config_check(tmp_path):
    cfg = tmp_path / "node.toml"
    cfg.write_text('[profiles.mine]\nextends = "ct"\n[profiles.mine.denoise]\nsigmamm = 2\n'
                   '[profiles.mine.detect]\nprobability_threshold = 1.5\nmax_findings = "3"\n'
                   '[profiles.two]\nsteps = ["segment", "classify"]\n[profiles.two.segment]\nmethod = "kmeans"\n')
    proc = subprocess.run([sys.executable, "-m", "dicomnode", "config", "check", str(cfg)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr
    assert str(cfg) in err
    for key, fix in (("profiles.mine.denoise.sigmamm", "unknown parameter of step denoise"),
                     ("profiles.mine.detect.probability_threshold", "must be <= 1"),
                     ("profiles.mine.detect.max_findings", "must be a whole number"),
                     ("profiles.two.segment.method", "use one of: auto, ct, generic, foreground"),
                     ("profiles.two.classify.model", "required by step classify")):
        line = next((x for x in err.splitlines() if key in x), None)
        assert line is not None and fix in line, (key, err)
    assert "allowed: max_anisotropy, optional, sigma_mm" in err  # the fix names the keys that would do


def test_loading_a_config_imports_no_model_library(tmp_path):
    """`config check`, `status` and the node load configs often: scikit-learn, skops and dask stay unimported."""
    cfg = tmp_path / "node.toml"
    cfg.write_text('[workers]\nbackend = "dask"\n[profiles.mine]\nextends = "ct"\n'
                   '[profiles.mine.scene]\nmodel = "scene"\n[profiles.cls]\nsteps = ["features", "classify"]\n'
                   '[profiles.cls.classify]\nmodel = "findings"\n')
    code = ("import sys; from dicomnode.config import load_config; load_config(sys.argv[1]); "
            f"load_config({str(REPO / 'conf' / 'dicomnode.toml')!r}); "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'skops', 'dask', 'distributed'));"
            "print(','.join(bad))")
    proc = subprocess.run([sys.executable, "-c", code, str(cfg)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"loading a config imported {proc.stdout.strip()}"
