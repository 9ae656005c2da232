"""Radiomics settings declare the modality and unit they are for; a mismatch is refused unless --force (issue 16,
item 12). Through the CLI on the sts PET, whose intensities (Bq/ml or SUV) all fall into one 25-HU bin of config C."""

from __future__ import annotations

import csv

from helpers import SHARED_DATA, run_cli
from dicomnode.config.radiomics import builtin_settings, settings_scope

STS3 = SHARED_DATA / "sts" / "STS_003"


def test_shipped_settings_declare_their_scope():
    for name in builtin_settings():
        scope = settings_scope(name)
        if name.startswith(("ibsi-config-", "ibsi2-config-")):
            assert scope.modalities == ("CT",) and scope.intensity_unit == "HU", name
    assert settings_scope("default").modalities == ()  # bins by number: any modality


def test_hu_settings_on_a_pet_are_refused_unless_forced(tmp_path):
    roi = next((STS3 / "PET_rtstruct").glob("*.dcm"))
    out = tmp_path / "pet.csv"
    p = run_cli("radiomics", STS3 / "PET", "--roi", roi, "--settings", "ibsi-config-C", "--out", out, "-q",
                cwd=tmp_path)
    assert p.returncode == 2 and not out.exists()
    assert "settings ibsi-config-C are for CT images (intensities in HU), this image is PT" in p.stderr
    assert "--force" in p.stderr
    forced = run_cli("radiomics", STS3 / "PET", "--roi", roi, "--settings", "ibsi-config-C", "--out", out, "-q",
                     "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    with open(out, newline="") as f:
        assert list(csv.DictReader(f))


def test_a_settings_file_with_a_bad_scope_is_named(tmp_path):
    bad = tmp_path / "s.toml"
    bad.write_text('name = "x"\nmodalities = "CT"\nintensity_unit = 5\n')
    p = run_cli("radiomics", STS3 / "CT", "--roi", next((STS3 / "CT_rtstruct").glob("*.dcm")), "--settings", bad,
                "--out", tmp_path / "o.csv", cwd=tmp_path)
    assert p.returncode == 2 and "modalities" in p.stderr and "intensity_unit" in p.stderr
