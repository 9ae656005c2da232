"""Issue "Radiomics" item 5: a study bringing an RTSTRUCT gets a radiomics SR back from the node."""

from __future__ import annotations

import csv
import subprocess
import sys

import highdicom as hd
import pydicom
import pytest

from helpers import SHARED_DATA, dciodvfy, storescu, wait_until

STS = SHARED_DATA / "sts" / "STS_001"


@pytest.mark.parametrize("settings", ["ibsi-config-C", "ibsi2-config-3B"])  # IBSI-1 and an IBSI-2 filter (LoG, 3D)
def test_rtstruct_and_ct_give_a_radiomics_sr_with_the_cli_numbers(make_node, storescp, tmp_path, settings):
    dest = storescp()
    node = make_node({
        "destinations": [{"name": "DEST", "ae_title": "DEST", "host": "127.0.0.1", "port": dest.port}],
        "rules": [{"name": "contours", "match": {"Modality": "RTSTRUCT"}, "radiomics": settings,
                   "roi_names": ["GTV*"], "destinations": ["DEST"]}],
    })
    # the contour arrives first: its job must wait for the CT it references
    assert storescu(node.port, [STS / "CT_rtstruct"], extra=["-R"]).returncode == 0
    wait_until(lambda: node.status()["jobs"]["counts"].get("pending") == 1, timeout_s=60, what="a waiting job")
    assert node.status()["jobs"]["counts"] == {"pending": 1}
    assert storescu(node.port, [STS / "CT"]).returncode == 0
    files = wait_until(lambda: dest.files(), timeout_s=180, what="the radiomics SR at the destination")
    st = node.status()
    assert st["jobs"]["counts"] == {"done": 1}, st   # the CT matched no image rule: no chain job, no loop
    (sr_path,) = files
    n, out = dciodvfy(sr_path)
    assert n == 0, out
    sr = hd.sr.srread(sr_path)
    assert pydicom.dcmread(sr_path).Modality == "SR"
    groups = sr.content.get_volumetric_roi_measurement_groups() + sr.content.get_planar_roi_measurement_groups()
    assert len(groups) == 1
    by_name = {m.name.meaning: float(m.value) for m in groups[0].get_measurements()}
    # the same numbers as the offline CLI with the same settings
    table = tmp_path / "cli.csv"
    roi_file = next((STS / "CT_rtstruct").iterdir())
    p = subprocess.run([sys.executable, "-m", "dicomnode", "radiomics", str(STS / "CT"), "--roi", str(roi_file),
                        "--roi-name", "GTV_Mass", "--settings", settings, "--out", str(table)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    rows = list(csv.DictReader(table.open()))
    cli = {(r["family"], r["feature"], r["aggregation"]): float(r["value"]) for r in rows}
    if settings.startswith("ibsi2"):  # the 18 intensity statistics of the LoG response, the filter as modifier
        assert len(rows) == len(by_name) == 18
        for (family, feature, _), value in cli.items():
            assert abs(by_name[f"{family}: {feature}"] - value) <= 1e-9 * max(abs(value), 1.0), feature
        methods = {m.method.meaning for m in groups[0].get_measurements()}
        assert len(methods) == 1 and methods.pop().startswith("laplacian_of_gaussian(3D, mirror, sigma_mm=1.5")
        return
    assert len(rows) == len(by_name) > 100
    vol_mesh = cli[("morphology", "volume (mesh)", "")]
    sr_vol = [v for k, v in by_name.items() if "volume (mesh)" in k]
    assert sr_vol and abs(sr_vol[0] - vol_mesh) <= 1e-6 * vol_mesh
    contrast = cli[("GLCM", "contrast", "3D, merged")]
    sr_contrast = [v for k, v in by_name.items() if "GLCM" in k and "contrast" in k and "3D, merged" in k]
    assert sr_contrast and abs(sr_contrast[0] - contrast) <= 1e-6 * abs(contrast)
