from dicomnode.config import parse_config
from dicomnode.routing import route

CT = "1.2.840.10008.5.1.4.1.1.2"


def _cfg(rules=None, dests=None):
    doc = {}
    if dests:
        doc["destinations"] = dests
    if rules:
        doc["rules"] = rules
    return parse_config(doc)


def test_no_rules_runs_modality_default_profile():
    d = route(_cfg(), {"Modality": "MR", "SeriesInstanceUID": "1.2.3"}, is_image=True)
    assert d.runs_job and d.profile.name == "mr" and d.destinations == ()
    d = route(_cfg(), {"Modality": "US", "SeriesInstanceUID": "1.2.3"}, is_image=True)
    assert d.profile.name == "generic"


def test_first_matching_rule_applies():
    dests = [{"name": "A", "ae_title": "A", "host": "h", "port": 1}, {"name": "B", "ae_title": "B", "host": "h", "port": 2}]
    cfg = _cfg([{"name": "ct", "match": {"Modality": "CT"}, "destinations": ["A"]},
                {"name": "all", "match": {}, "destinations": ["B"], "profile": "generic"}], dests)
    d = route(cfg, {"Modality": "CT", "SeriesInstanceUID": "1.2.3"}, is_image=True)
    assert d.rule.name == "ct" and d.destinations == ("A",) and d.profile.name == "ct"
    d = route(cfg, {"Modality": "MR", "SeriesInstanceUID": "1.2.3"}, is_image=True)
    assert d.rule.name == "all" and d.profile.name == "generic"


def test_no_match_no_job():
    cfg = _cfg([{"name": "ct", "match": {"Modality": "CT"}}])
    d = route(cfg, {"Modality": "MR", "SeriesInstanceUID": "1.2.3"}, is_image=True)
    assert not d.runs_job and d.reason == "no rule matched"


def test_non_images_and_own_objects_never_start_a_job():
    cfg = _cfg([{"name": "all", "match": {}}])
    assert not route(cfg, {"Modality": "SEG", "SeriesInstanceUID": "1.2.3"}, is_image=False).runs_job
    d = route(cfg, {"Modality": "CT", "SeriesInstanceUID": "2.25.1", "Manufacturer": "dicomnode"}, is_image=True)
    assert not d.runs_job and "made by this node" in d.reason
    # 2.25 is everybody's root: a UUID-derived UID from a scanner is processed
    assert route(cfg, {"Modality": "CT", "SeriesInstanceUID": "2.25.1"}, is_image=True).runs_job
    own = parse_config({"node": {"uid_root": "1.2.3.4."}, "rules": [{"name": "all", "match": {}}]})
    assert not route(own, {"Modality": "CT", "SeriesInstanceUID": "1.2.3.4.5"}, is_image=True).runs_job


def test_radiomics_rules_match_regions_only():
    cfg = _cfg([{"name": "contours", "match": {"Modality": "RTSTRUCT"}, "radiomics": "ibsi-config-C"},
                {"name": "ct", "match": {"Modality": "CT"}}])
    d = route(cfg, {"Modality": "RTSTRUCT", "SeriesInstanceUID": "1.2"}, is_image=False, is_region=True)
    assert d.runs_job and d.radiomics.endswith("ibsi-config-C") and d.profile is None
    d = route(cfg, {"Modality": "CT", "SeriesInstanceUID": "1.2"}, is_image=True)
    assert d.rule.name == "ct" and d.radiomics is None
    d = route(cfg, {"Modality": "SEG", "SeriesInstanceUID": "1.2"}, is_image=False, is_region=True)
    assert not d.runs_job and "no radiomics rule" in d.reason
    # our own SEG never starts a radiomics job
    d = route(cfg, {"Modality": "RTSTRUCT", "Manufacturer": "dicomnode", "SeriesInstanceUID": "1.2"},
              is_image=False, is_region=True)
    assert not d.runs_job


def test_radiomics_rule_errors_name_the_key():
    import pytest

    from dicomnode.errors import ConfigErrors
    with pytest.raises(ConfigErrors) as ei:
        parse_config({"rules": [{"name": "r", "match": {}, "radiomics": "no-such-settings", "profile": "ct"}]})
    keys = [e.key for e in ei.value.errors]
    assert keys.count("rules[0].radiomics") == 2
    assert "ibsi-config-C" in str(ei.value)
