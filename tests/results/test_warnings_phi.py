"""No warning raised while we build results quotes the patient (issue 13, 3).

highdicom warns with the Patient's Name quoted when it has one component (``The string "STS_001" is unlikely to
represent the intended person name``); nearly every shared series has such a name (STS_001, Lung_Dx-A0002, ...).
The node's own logs scrub library warnings (dicomnode/obs/logs.py), but the warning itself came out of our call of
highdicom, into pytest's warnings summary and any caller's handler. The builders catch it
(``results._common.warnings_without_phi``) and log one PHI-free line instead.

Real series, the real chain (SEG, SR, a derived series) and a real radiomics job, with
every warning recorded (``simplefilter("always")``: none hidden by the once-per-place rule).
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import pydicom
import pytest

from dicomnode.config import Profile
from dicomnode.jobs.chain import run_chain
from dicomnode.jobs.radiomics import run_radiomics
from dicomnode.jobs.spec import ChainSpec, RadiomicsSpec
from dicomnode.results._common import PERSON_NAME_WARNING
from helpers import SHARED_DATA

STS2 = SHARED_DATA / "sts" / "STS_002"
CHEST = SHARED_DATA / "chest-ct" / "A0002_B40f"
FAST_RADIOMICS = ('name = "fast"\n[interpolation]\nmethod = "linear"\nspacing_mm = 4.0\n'
                  '[features]\nfamilies = ["intensity statistics"]\n')
PROFILE = Profile(name="phi-test", steps=("segment", "correct", "measure", "synthesize"),
                  params={"correct": {"min_volume_ml": 0.5}, "synthesize": {"projections": ["mip"], "slab_mm": 10}},
                  outputs=("seg", "sr", "derived"))


def _identity(folder: Path) -> list[str]:
    ds = pydicom.dcmread(next(p for p in sorted(folder.iterdir()) if p.suffix == ".dcm"), stop_before_pixels=True)
    values = [str(ds.PatientName), str(ds.PatientID)]
    assert "^" not in values[0]  # a one-component name: the one highdicom quotes
    return values


def _assert_no_identity(records: list[warnings.WarningMessage], identity: list[str]) -> None:
    quoting = [str(w.message) for w in records if any(v in str(w.message) for v in identity)]
    assert not quoting, quoting[:3]
    assert not [w for w in records if PERSON_NAME_WARNING in str(w.message)]


@pytest.mark.parametrize("folder", [STS2 / "CT", CHEST], ids=["sts-ct", "chest-ct"])
def test_the_chain_raises_no_warning_with_the_patients_name(folder, tmp_path, caplog):
    identity = _identity(folder)
    files = tuple(str(p) for p in sorted(folder.glob("*.dcm")))
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        with caplog.at_level(logging.INFO, logger="dicomnode.results._common"):
            outcome = run_chain(ChainSpec(files=files, profile=PROFILE, out_dir=str(tmp_path), uid_root="2.25."))
    out = Path(outcome.results_json).parent
    made = {p.relative_to(out).parts[0] for p in out.rglob("*.dcm")}
    assert {"seg.dcm", "sr.dcm", "derived"} <= made, made
    _assert_no_identity(records, identity)
    withheld = [r for r in caplog.records if r.getMessage() == "library warnings quoting patient data withheld"]
    assert withheld and all(r.series_uid == pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID
                            for r in withheld)
    assert not any(v in r.getMessage() or v in str(r.__dict__) for r in caplog.records for v in identity)
    # the patient is still the source's, as written
    assert str(pydicom.dcmread(out / "sr.dcm", stop_before_pixels=True).PatientName) == identity[0]


def test_a_radiomics_job_raises_no_warning_with_the_patients_name(tmp_path):
    identity = _identity(STS2 / "CT")
    settings = tmp_path / "fast.toml"
    settings.write_text(FAST_RADIOMICS)
    rs = STS2 / "CT_rtstruct" / "RS.dcm"
    roi = tmp_path / "rs.dcm"
    shutil.copy(rs, roi)
    spec = RadiomicsSpec(files=tuple(map(str, sorted((STS2 / "CT").iterdir()))), roi_files=(str(roi),),
                         settings=str(settings), out_dir=str(tmp_path / "job"), uid_root="2.25.", job_id=1,
                         roi_names=("GTV_Mass_CT",))
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        outcome = run_radiomics(spec)
    assert outcome.files
    _assert_no_identity(records, identity)


def test_other_warnings_are_passed_on_once():
    """A library warning that quotes nothing identifying reaches the caller (once), as it came."""
    from dicomnode.results._common import warnings_without_phi

    source = pydicom.dcmread(next(iter(sorted((STS2 / "CT").glob("*.dcm")))), stop_before_pixels=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's own warnings on reading the sts header
        name, patient_id = str(source.PatientName), str(source.PatientID)
        _ = [e for e in source]
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        with warnings_without_phi(source, series_uid="1.2.3", what="test"):
            for _ in range(3):
                warnings.warn("a value of some VR is odd", UserWarning)
            warnings.warn(f'The string "{name}" is unlikely to represent the intended person name',
                          UserWarning)
            warnings.warn(f"value {patient_id} is too long", UserWarning)
    assert [str(w.message) for w in records] == ["a value of some VR is odd"]


def test_threads_building_results_at_once_leave_the_warning_machinery_as_it_was():
    # a threaded Dask worker may build two jobs' results at once: catch_warnings in two threads would restore each
    # other's state out of order; the lock keeps the process's showwarning and filters as they were
    import threading
    import time

    from pydicom.dataset import Dataset

    from dicomnode.results._common import warnings_without_phi

    src = Dataset()
    src.PatientName, src.PatientID = "STS_009", "STS_009"
    before = (warnings.showwarning, list(warnings.filters))
    inside: list[int] = []
    overlap: list[bool] = []

    def build(k: int) -> None:
        for _ in range(5):
            with warnings_without_phi(src, series_uid="1.2.3", what="SR"):
                inside.append(k)
                overlap.append(len(inside) > 1)
                time.sleep(0.002)
                warnings.warn("The string \"STS_009\" is unlikely to represent the intended person name", UserWarning)
                inside.remove(k)

    threads = [threading.Thread(target=build, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not any(overlap)                                     # one block at a time in the process
    assert (warnings.showwarning, list(warnings.filters)) == before
