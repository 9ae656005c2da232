"""commands/radiomics.py: ``dicomnode radiomics`` on RTSTRUCT and SEG regions, CSV and JSON, single and batch."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from dicomnode.io.load import load_series
from dicomnode.io.roi import read_region
from dicomnode.commands.radiomics import BATCH_COLUMNS, COLUMNS, run
from helpers import SHARED_DATA

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
STS = SHARED_DATA / "sts"
CT2, RS2 = STS / "STS_002" / "CT", STS / "STS_002" / "CT_rtstruct" / "RS.dcm"
CT3, RS3 = STS / "STS_003" / "CT", STS / "STS_003" / "CT_rtstruct" / "RS.dcm"


@pytest.fixture(scope="module")
def fast_settings(tmp_path_factory) -> Path:
    """Config C without the slowest families, for the batch runs."""
    path = tmp_path_factory.mktemp("settings") / "fast.toml"
    path.write_text('name = "fast"\n[interpolation]\nmethod = "linear"\nspacing_mm = 3.0\nround_intensities = true\n'
                    '[features]\nfamilies = ["intensity statistics", "GLCM"]\n')
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_rtstruct_to_csv_and_json(tmp_path: Path) -> None:
    out_csv, out_json = tmp_path / "f.csv", tmp_path / "f.json"
    assert run([str(CT2), "--roi", str(RS2), "--roi-name", "GTV_Mass", "--settings", "ibsi-config-C",
                "--out", str(out_csv)]) == 0
    assert run([str(CT2), "--roi", str(RS2), "--settings", "ibsi-config-C", "--out", str(out_json)]) == 0
    with out_csv.open(encoding="utf-8") as f:
        assert f.readline().strip() == ",".join(COLUMNS)
    rows = read_csv(out_csv)
    data = json.loads(out_json.read_text(encoding="utf-8"))
    assert [tuple(r) for r in data] == [COLUMNS] * len(data)
    assert len(rows) == len(data) == 213  # all families, 3D aggregations
    for r, d in zip(rows, data):
        assert (r["family"], r["feature"], r["aggregation"]) == (d["family"], d["feature"], d["aggregation"])
        assert float(r["value"]) == d["value"]  # full precision in both
    # names exactly as in the IBSI reference table
    with (SHARED_DATA / "ibsi" / "digital_phantom_reference.tsv").open(encoding="utf-8") as f:
        reference = {(r["family"], r["feature"], r["aggregation"]) for r in csv.DictReader(f, delimiter="\t")}
    ours = {(r["family"], r["feature"], r["aggregation"]) for r in rows}
    assert {k for k in reference if k[2] in ("", "3D", "3D, averaged", "3D, merged")} <= ours
    assert ours - reference <= {("morphology", "volume density (OMBB)", ""), ("morphology", "area density (OMBB)", ""),
                                ("intensity-volume histogram", "area under the IVH curve", "")}
    volume = next(float(r["value"]) for r in rows if r["feature"] == "volume (voxel counting)")
    assert 40_000 < volume < 70_000  # mm3


def test_seg_region(tmp_path: Path) -> None:
    from dicomnode.analysis.volume import CATEGORY_MORPHOLOGICALLY_ABNORMAL, Code, LabelMap, SegmentInfo
    from dicomnode.results.seg import build_seg
    from dicomnode.results.uids import ResultUids

    series = load_series(sorted(CT2.glob("*.dcm")))
    mask = read_region(RS2, series, name="GTV_Mass").mask
    labels = LabelMap().add(SegmentInfo(1, "gtv", CATEGORY_MORPHOLOGICALLY_ABNORMAL,
                                        Code("108369006", "SCT", "Tumor")), mask)
    seg_path = tmp_path / "seg.dcm"
    build_seg(series, labels, ResultUids.for_series(None, series.series_uid, "cli-test", "1")).save_as(seg_path)
    rt_out, seg_out = tmp_path / "rt.csv", tmp_path / "seg.csv"
    assert run([str(CT2), "--roi", str(RS2), "--settings", "ibsi-config-A", "--out", str(rt_out)]) == 0
    assert run([str(CT2), "--roi", str(seg_path), "--roi-name", "gtv", "--settings", "ibsi-config-A",
                "--out", str(seg_out)]) == 0
    assert read_csv(rt_out) == read_csv(seg_out)  # the same region, whatever the file


def test_errors_and_usage(tmp_path: Path, capsys) -> None:
    assert run([str(CT2), "--roi", str(RS2), "--roi-name", "Liver", "--out", str(tmp_path / "x.csv")]) == 1
    err = capsys.readouterr().err
    assert "no ROI named 'Liver'" in err and "GTV_Mass_CT" in err and str(RS2) in err
    assert run([str(CT2), "--roi", str(RS2), "--out", str(tmp_path / "x.txt")]) == 2
    bad = tmp_path / "bad.toml"
    bad.write_text('[discretisation]\nmethod = "fixed_bin_size"\n')
    assert run([str(CT2), "--roi", str(RS2), "--settings", str(bad), "--out", str(tmp_path / "x.csv")]) == 2
    assert "discretisation.bin_size" in capsys.readouterr().err
    assert run(["--out", str(tmp_path / "x.csv")]) == 2
    assert not (tmp_path / "x.csv").exists()


def test_batch_with_one_bad_row(tmp_path: Path, fast_settings: Path, capsys) -> None:
    cases = tmp_path / "cases.csv"
    cases.write_text(
        "case,image_dir,roi_file,roi_name\n"
        f"s2,{CT2},{RS2},GTV_Mass\n"
        f"bad,{CT2},{RS2},NoSuchROI\n"
        f"s3,{CT3},{RS3},GTV\n"
    )
    out = tmp_path / "all.csv"
    code = run(["--batch", str(cases), "--out", str(out), "--workers", "2", "--settings", str(fast_settings), "-q"])
    assert code == 1  # one case failed ...
    err = capsys.readouterr().err
    assert "2 of 3 case(s) done" in err and "case bad" in err and "NoSuchROI" in err
    rows = read_csv(out)  # ... and the others are written
    with out.open(encoding="utf-8") as f:
        assert f.readline().strip() == ",".join(BATCH_COLUMNS)
    assert {r["case"] for r in rows} == {"s2", "s3"}
    per_case = {c: [r for r in rows if r["case"] == c] for c in ("s2", "s3")}
    assert len(per_case["s2"]) == len(per_case["s3"]) == 18 + 50
    assert per_case["s3"][0]["roi_name"] == "GTV" and per_case["s3"][0]["image_dir"] == str(CT3)
    # the batch row equals a single run
    single = tmp_path / "single.json"
    assert run([str(CT3), "--roi", str(RS3), "--roi-name", "GTV", "--settings", str(fast_settings),
                "--out", str(single)]) == 0
    expected = json.loads(single.read_text())
    assert [float(r["value"]) for r in per_case["s3"]] == [d["value"] for d in expected]
    assert all(math.isfinite(float(r["value"])) for r in rows)


def test_batch_json_relative_paths_no_header(tmp_path: Path, fast_settings: Path) -> None:
    link = tmp_path / "data"
    link.symlink_to(STS / "STS_002")
    cases = tmp_path / "cases.csv"
    cases.write_text("data/CT,data/CT_rtstruct/RS.dcm,GTV_Mass\n")
    out = tmp_path / "all.json"
    assert run(["--batch", str(cases), "--out", str(out), "--workers", "1", "--settings", str(fast_settings),
                "-q"]) == 0
    data = json.loads(out.read_text())
    assert tuple(data[0]) == BATCH_COLUMNS and data[0]["case"] == "1" and data[0]["roi_file"] == "data/CT_rtstruct/RS.dcm"
    assert np.isfinite([d["value"] for d in data]).all()


def _ibsi1_statistics_names() -> list[str]:
    with (SHARED_DATA / "ibsi" / "digital_phantom_reference.tsv").open(encoding="utf-8") as f:
        return [r["feature"] for r in csv.DictReader(f, delimiter="\t") if r["family"] == "intensity statistics"]


def test_ibsi2_config_through_the_console_script(tmp_path: Path) -> None:
    """`dicomnode radiomics --settings ibsi2-config-3B` (a subprocess, as a user runs it): the CSV of today, 18 rows
    of intensity statistics named as IBSI-1, of the LoG response (not the unfiltered image of config 1B)."""
    import os
    import subprocess

    from helpers import dicomnode_exe

    values = {}
    for config in ("ibsi2-config-3B", "ibsi2-config-1B"):
        out = tmp_path / f"{config}.csv"
        proc = subprocess.run([dicomnode_exe(), "radiomics", str(CT2), "--roi", str(RS2), "--roi-name", "GTV_Mass",
                               "--settings", config, "--out", str(out), "-q"],
                              capture_output=True, text=True, timeout=300, env=dict(os.environ))
        assert proc.returncode == 0, proc.stderr
        with out.open(encoding="utf-8") as f:
            assert f.readline().strip() == ",".join(COLUMNS)
        rows = read_csv(out)
        assert [r["family"] for r in rows] == ["intensity statistics"] * 18
        assert [r["feature"] for r in rows] == _ibsi1_statistics_names()
        assert all(r["aggregation"] == "" and math.isfinite(float(r["value"])) for r in rows)
        values[config] = {r["feature"]: float(r["value"]) for r in rows}
    log, plain = values["ibsi2-config-3B"], values["ibsi2-config-1B"]
    assert -1000 <= plain["minimum"] and plain["maximum"] <= 400  # re-segmented HU
    assert abs(log["mean"]) < abs(plain["mean"])  # a band-pass response: small mean in a soft-tissue mass
    assert log["variance"] > 0


def test_ibsi2_config_in_batch(tmp_path: Path) -> None:
    cases = tmp_path / "cases.csv"
    cases.write_text(f"case,image_dir,roi_file,roi_name\ns2,{CT2},{RS2},GTV_Mass\ns3,{CT3},{RS3},GTV\n")
    out = tmp_path / "all.csv"
    assert run(["--batch", str(cases), "--out", str(out), "--workers", "2", "--settings", "ibsi2-config-6A",
                "-q"]) == 0
    rows = read_csv(out)
    assert [r["case"] for r in rows] == ["s2"] * 18 + ["s3"] * 18
    assert {r["family"] for r in rows} == {"intensity statistics"}
    single = tmp_path / "s3.json"
    assert run([str(CT3), "--roi", str(RS3), "--roi-name", "GTV", "--settings", "ibsi2-config-6A",
                "--out", str(single)]) == 0
    assert [float(r["value"]) for r in rows[18:]] == [d["value"] for d in json.loads(single.read_text())]
    assert [r["unit"] for r in rows[18:]] == [d["unit"] for d in json.loads(single.read_text())]
    assert {r["unit"] for r in rows} == {"[hnsf'U]", "[hnsf'U]2", "1"}  # batch rows carry the units too


def test_units_through_the_console_script(tmp_path: Path) -> None:
    """`dicomnode radiomics` as a user runs it (a subprocess) on STS_002's CT and RTSTRUCT: the CSV's ``unit`` column
    and the JSON's ``unit`` key give each value's UCUM unit, the SR's convention (HU is ``[hnsf'U]``)."""
    import os
    import subprocess

    settings = tmp_path / "units.toml"
    settings.write_text('name = "units"\n[interpolation]\nmethod = "linear"\nspacing_mm = 3.0\n'
                        'round_intensities = true\n[features]\nfamilies = ["morphology", "intensity statistics", '
                        '"intensity histogram", "GLCM"]\n')
    tables = {}
    for suffix in ("csv", "json"):
        out = tmp_path / f"units.{suffix}"
        proc = subprocess.run(["dicomnode", "radiomics", str(CT2), "--roi", str(RS2), "--roi-name", "GTV_Mass",
                               "--settings", str(settings), "--out", str(out), "-q"],
                              capture_output=True, text=True, timeout=300, env=dict(os.environ))
        assert proc.returncode == 0, proc.stderr
        tables[suffix] = read_csv(out) if suffix == "csv" else json.loads(out.read_text(encoding="utf-8"))
    with (tmp_path / "units.csv").open(encoding="utf-8") as f:
        assert f.readline().strip() == "family,feature,aggregation,value,unit"
    rows, data = tables["csv"], tables["json"]
    assert [tuple(d) for d in data] == [("family", "feature", "aggregation", "value", "unit")] * len(data)
    assert [r["unit"] for r in rows] == [d["unit"] for d in data]
    units = {(r["family"], r["feature"], r["aggregation"]): r["unit"] for r in rows}
    assert units["morphology", "volume (mesh)", ""] == "mm3"
    assert units["morphology", "surface area (mesh)", ""] == "mm2"
    assert units["morphology", "maximum 3D diameter", ""] == "mm"
    assert units["morphology", "sphericity", ""] == "1"
    assert units["intensity statistics", "mean", ""] == "[hnsf'U]"
    assert units["intensity statistics", "variance", ""] == "[hnsf'U]2"
    assert units["intensity statistics", "skewness", ""] == "1"
    assert units["intensity histogram", "mean", ""] == "1"  # grey levels (bins), IBSI 4.3
    glcm = [k for k in units if k[0] == "GLCM"]
    assert ("GLCM", "contrast", "3D, merged") in glcm
    assert {units[k] for k in glcm} == {"1"}
    assert all(r["unit"] for r in rows)  # no value without a unit
    # the mean is a CT number of soft tissue, in HU as the unit says
    mean = next(float(r["value"]) for r in rows if (r["family"], r["feature"]) == ("intensity statistics", "mean"))
    assert -100 < mean < 200


def test_image_unit_spelled_in_ucum() -> None:
    from dicomnode.analysis.radiomics import image_unit_ucum

    assert image_unit_ucum("HU") == "[hnsf'U]"
    assert image_unit_ucum("SUV") == "{SUVbw}g/ml"
    assert image_unit_ucum("Bq/mL") == "Bq/ml"
    assert image_unit_ucum("") == "1"  # MR: arbitrary units
