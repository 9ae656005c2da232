"""The Results page's key-slice PNG, drawn from what a real chain run stored (results.json, seg.dcm, the instances)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dicomnode.chain import JobSpec, run_chain
from dicomnode.config import Profile
from dicomnode.web.keyslices import KEYSLICES_PNG, KeySlicesError, keyslices_png
from helpers import STS_CT

# segment + detect: a SEG with anatomy and one finding (the thigh tumour of STS_001) in a few seconds
PROFILE = Profile(name="console-test", steps=("segment", "correct", "detect"),
                  params={"correct": {"min_volume_ml": 0.5}, "detect": {"method": "auto", "max_findings": 3}},
                  outputs=("seg",))


@pytest.fixture(scope="module")
def stored_job(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    inst = data / "instances" / "series"
    inst.mkdir(parents=True)
    for p in sorted(STS_CT.iterdir()):
        shutil.copy(p, inst / p.name)
    files = sorted(str(p) for p in inst.iterdir())
    out = data / "results" / "series" / "7"
    outcome = run_chain(JobSpec(files=tuple(files), profile=PROFILE, out_dir=str(out), uid_root="2.25.", job_id=7))
    return data, str(Path(outcome.results_json).parent), files


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(path.read_bytes())).convert("RGB")).astype(int)


def test_key_slices_show_the_image_the_seg_outlines_and_the_findings(stored_job):
    data, folder, files = stored_job
    results = json.loads((Path(folder) / "results.json").read_text())
    assert results["findings"], results["notes"]  # the profile found the tumour: there is something to mark
    png = keyslices_png(data, folder, files, job_id=7)
    assert png == Path(folder) / KEYSLICES_PNG
    rgb = _rgb(png)
    grey = rgb[30:, :, 0][(rgb[30:, :, 0] == rgb[30:, :, 1]) & (rgb[30:, :, 1] == rgb[30:, :, 2])]
    assert grey.size > 50_000 and grey.std() > 20, "the CT slices are not there (blank or flat)"
    green = np.all(rgb == (40, 220, 60), axis=2).sum()
    red = np.all(rgb == (255, 50, 50), axis=2).sum()
    assert green > 200, "no SEG outline drawn"
    assert red > 20, "no finding marked"
    assert not Image.open(png).text, "no text chunks (nothing about the patient) in the PNG"


def test_key_slices_are_cached_and_redrawn_on_request(stored_job):
    data, folder, files = stored_job
    first = keyslices_png(data, folder, files, job_id=7)
    t = first.stat().st_mtime_ns
    assert keyslices_png(data, folder, files, job_id=7).stat().st_mtime_ns == t
    assert keyslices_png(data, folder, files, job_id=7, refresh=True).stat().st_mtime_ns >= t


def test_paths_outside_the_data_folder_are_refused(stored_job, tmp_path):
    data, folder, files = stored_job
    with pytest.raises(KeySlicesError, match="not inside the node's DATA/results"):
        keyslices_png(data, str(data / "results" / ".." / ".." / ".."), files, job_id=7)
    elsewhere = tmp_path / "x.dcm"
    shutil.copy(files[0], elsewhere)
    (Path(folder) / KEYSLICES_PNG).unlink(missing_ok=True)
    with pytest.raises(KeySlicesError, match="not inside the node's DATA/instances"):
        keyslices_png(data, folder, [*files, str(elsewhere)], job_id=7)
    with pytest.raises(KeySlicesError, match="no results yet"):
        keyslices_png(data, None, files, job_id=7)
    (data / "results" / "series" / "8").mkdir()
    with pytest.raises(KeySlicesError, match="results.json is missing"):
        keyslices_png(data, str(data / "results" / "series" / "8"), files, job_id=8)
