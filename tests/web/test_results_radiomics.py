"""The Results page of a radiomics job (issue 17): the regions, the settings and the features table.

A real node with the console and a rule sending RTSTRUCTs to radiomics; a real CT and its RTSTRUCT (STS_001) go in
by DCMTK storescu, both series are completed by hand, the job runs in the worker pool. Its Results page lists the
regions and every feature of ``radiomics.csv``; its job page shows the worker's step line; the key-slice picture,
which a radiomics job does not have, is a 404 that says why, not a server error.
"""

from __future__ import annotations

import csv
import html
import re
from contextlib import closing
from pathlib import Path

from console_helpers import complete_by_hand, start_console
from helpers import SHARED_DATA, storescu, wait_until

STS = SHARED_DATA / "sts" / "STS_001"
SETTINGS = "ibsi-config-C"


def test_results_page_of_a_radiomics_job(tmp_path):
    rules = [{"name": "contours", "match": {"Modality": "RTSTRUCT"}, "radiomics": SETTINGS,
              "roi_names": ["GTV*"], "destinations": ["DEST"]}]
    c = start_console(tmp_path, extra={"rules": rules})
    try:
        assert storescu(c.dicom_port, [STS / "CT_rtstruct"], extra=["-R"]).returncode == 0
        assert storescu(c.dicom_port, [STS / "CT"]).returncode == 0
        with c.client("operator") as op:
            series = wait_until(lambda: (lambda s: s if len(s) == 2 else None)(op.get("/api/v1/series").json()),
                                timeout_s=60, what="both series indexed")
            by_modality = {s["modality"]: s["series_uid"] for s in series}
            done = complete_by_hand(op, by_modality["RTSTRUCT"])
            assert done.status_code == 200, done.text
            (job_id,) = done.json()["ids"]
            assert complete_by_hand(op, by_modality["CT"]).status_code == 200  # what it waits for
            wait_until(lambda: op.get(f"/api/v1/jobs/{job_id}").json()["state"] in ("done", "failed"),
                       timeout_s=300, what="the radiomics job finished")
            job = op.get(f"/api/v1/jobs/{job_id}").json()
            assert job["state"] == "done", job
        viewer, _ = c.login("viewer")
        with closing(viewer):
            r = viewer.get(f"/jobs/{job_id}/results")
            assert r.status_code == 200, r.text
            page = html.unescape(r.text)
            job_page = html.unescape(viewer.get(f"/jobs/{job_id}").text)
            png = viewer.get(f"/jobs/{job_id}/keyslices.png")
        rows = list(csv.DictReader((Path(job["result_dir"]) / "radiomics.csv").open()))
    finally:
        c.node.stop()
        c.dest.stop()

    assert 'id="keyslices"' not in page  # no SEG to outline: no picture
    assert SETTINGS in page and by_modality["CT"] in page  # the settings, the image series measured
    rois = re.search(r'<table id="rois">(.*?)</table>', page, re.S).group(1)
    assert "GTV_Mass" in rois and f"<td>{len(rows)}</td>" in rois
    table = re.search(r'<table id="features">(.*?)</table>', page, re.S).group(1)
    shown = re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td><td class=\"num\">(.*?)</td></tr>",
                       table)
    assert len(rows) > 100 and len(shown) == len(rows)
    for row, (roi, family, feature, aggregation, value) in zip(rows, shown):
        assert (roi, family, feature, aggregation) == (row["roi"], row["family"], row["feature"], row["aggregation"])
        assert value == f"{float(row['value']):.6g}"
    assert any(f == "volume (mesh)" and float(v) > 0 for _, _, f, _, v in shown)
    # the job's page: the worker's own step line (item 1); the picture it does not have: 404, saying why
    assert "step done step=radiomics " in job_page, job_page
    assert png.status_code == 404, png.status_code
