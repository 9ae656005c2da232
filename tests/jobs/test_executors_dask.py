"""The Dask executor against real clusters: an in-process LocalCluster, and `dask scheduler`/`dask worker` processes.

The profile is the smallest that makes a SEG and an SR (foreground + measure): the point is the plumbing.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import Future
from pathlib import Path

import dask
import pytest

from helpers import STS_CT, free_port, wait_for_port, wait_until
from dicomnode.jobs.chain import run_chain
from dicomnode.jobs.spec import ChainSpec
from dicomnode.config import parse_config
from dicomnode.errors import SeriesLoadError
from dicomnode.jobs.executors import (DaskExecutor, RequeueJob, WorkerMemoryError, cluster_status, executor_for,
                                      make_executor)
from dicomnode.io.headers import is_dicom_file
from dicomnode.jobs.dispatcher import Dispatcher
from dicomnode.jobs.remote import job_context
from dicomnode.jobs.spec import ChainJob, new_job
from dicomnode.store.db import Database, InstanceRecord, JobState, SeriesState

CONFIG = parse_config({"profiles": {"quick": {"steps": ["foreground", "measure"]}}})
QUICK = CONFIG.profiles["quick"]
STS_FILES = tuple(sorted(str(p) for p in STS_CT.iterdir() if p.is_file()))
DASK = str(Path(sys.executable).with_name("dask"))


def _spec(out: Path, job_id: int = 1, files=STS_FILES) -> ChainSpec:
    return ChainSpec(files=files, profile=QUICK, out_dir=str(out), uid_root="2.25.", job_id=job_id)


def _comparable(results_json: str) -> dict:
    d = json.loads(Path(results_json).read_text())
    d.pop("steps")
    d.pop("job_id")
    return d


def _same(a, b) -> bool:
    """Equal, floats to 1e-9 relative: a float sum may differ in its last bit between processes (SIMD alignment)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


@pytest.fixture(scope="module")
def local_cluster():
    ex = DaskExecutor(2, dashboard_address=":0")
    yield ex
    ex.shutdown(wait=True)


def test_shared_and_bytes_transfer_give_the_local_results(local_cluster, tmp_path):
    here = run_chain(_spec(tmp_path / "here"))
    shared = local_cluster.submit(_spec(tmp_path / "shared", job_id=11)).result(120)
    as_bytes = DaskExecutor(1, local_cluster.scheduler_address, transfer="bytes")
    try:
        sent = as_bytes.submit(_spec(tmp_path / "bytes", job_id=12)).result(120)
    finally:
        as_bytes.shutdown(wait=True)
    for o in (shared, sent):
        assert o.series_uid == here.series_uid
        assert o.sop_instance_uids == here.sop_instance_uids  # deterministic result UIDs, wherever it ran
        assert _same(_comparable(o.results_json), _comparable(here.results_json))
    # bytes: the result files were written on this side, into the job's out_dir
    assert [Path(f).parent for f in sent.files] == [tmp_path / "bytes"] * 2
    assert all(is_dicom_file(f) for f in sent.files)
    assert Path(sent.results_json) == tmp_path / "bytes" / "results.json"


def test_bytes_transfer_ships_a_radiomics_jobs_region_object_and_settings(local_cluster, tmp_path):
    """transfer = "bytes": the RTSTRUCT and the settings TOML travel with the task (the worker need not see the node's
    disk), and the SR is the one the job makes locally (same UIDs: same names and bytes on the worker)."""
    import shutil

    import pydicom

    from dicomnode.jobs.radiomics import run_radiomics
    from dicomnode.jobs.spec import RadiomicsSpec
    from helpers import SHARED_DATA

    ct, rs = SHARED_DATA / "sts" / "STS_002" / "CT", SHARED_DATA / "sts" / "STS_002" / "CT_rtstruct" / "RS.dcm"
    node_side = tmp_path / "node"
    node_side.mkdir()
    settings = node_side / "fast.toml"
    settings.write_text('name = "fast"\n[interpolation]\nmethod = "linear"\nspacing_mm = 4.0\n'
                        '[features]\nfamilies = ["intensity statistics"]\n')
    roi = node_side / f"{pydicom.dcmread(rs, stop_before_pixels=True).SOPInstanceUID}.dcm"  # as the spool names it
    shutil.copy(rs, roi)

    def spec(out: str, job_id: int) -> RadiomicsSpec:
        return RadiomicsSpec(files=tuple(map(str, sorted(ct.iterdir()))), roi_files=(str(roi),),
                             settings=str(settings), out_dir=str(tmp_path / out), uid_root="2.25.", job_id=job_id,
                             roi_names=("GTV_Mass_CT",))

    here = run_radiomics(spec("here", 21))
    as_bytes = DaskExecutor(1, local_cluster.scheduler_address, transfer="bytes")
    try:
        fut = as_bytes.submit(spec("bytes", 22))
        shutil.rmtree(node_side)  # read at submit: from now on only the shipped copies exist
        sent = fut.result(180)
    finally:
        as_bytes.shutdown(wait=True)
    assert sent.sop_instance_uids == here.sop_instance_uids
    assert [Path(f).parent for f in sent.files] == [tmp_path / "bytes"]
    a, b = (pydicom.dcmread(o.files[0]) for o in (here, sent))
    assert (a.SeriesInstanceUID, a.ContentSequence[-1].ConceptNameCodeSequence[0].CodeMeaning) == \
        (b.SeriesInstanceUID, b.ContentSequence[-1].ConceptNameCodeSequence[0].CodeMeaning)


def test_side_files_are_plain_names_and_refused_otherwise(tmp_path):
    from dicomnode.jobs.remote import SideFile, _unpack_side_files
    from dicomnode.jobs.spec import RadiomicsSpec

    spec = RadiomicsSpec(files=(), roi_files=("/node/a.dcm",), settings="default", out_dir="o", uid_root="2.25.")
    moved = _unpack_side_files(spec, (SideFile("roi", "1.2.3.dcm", b"x"),), tmp_path)
    assert moved.roi_files == (str(tmp_path / "roi" / "1.2.3.dcm"),) and moved.settings == "default"
    for bad in ("../evil.dcm", "/etc/passwd", "a/b.dcm", ".."):
        with pytest.raises(ValueError, match="plain file name"):
            _unpack_side_files(spec, (SideFile("roi", bad, b"x"),), tmp_path)
    assert not (tmp_path.parent / "evil.dcm").exists()


def test_bad_input_keeps_its_error_type(local_cluster, tmp_path):
    fut = local_cluster.submit(_spec(tmp_path / "o", files=STS_FILES[:1]))
    with pytest.raises(SeriesLoadError, match="only one slice"):
        fut.result(120)


def test_worker_logs_reach_the_node_with_job_id_and_series_uid(local_cluster, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="dicomnode")
    out = local_cluster.submit(_spec(tmp_path / "o", job_id=4242)).result(120)

    def forwarded():
        return [r for r in caplog.records if r.name == "dicomnode.remote" and getattr(r, "job_id", None) == 4242]
    recs = wait_until(forwarded, timeout_s=30, what="forwarded worker log records")
    assert all(r.series_uid == out.series_uid for r in recs)
    assert all(str(r.worker).startswith("tcp://127.0.0.1:") for r in recs)
    chain = wait_until(lambda: [r for r in caplog.records if r.name == "dicomnode.chain"
                                and getattr(r, "job_id", None) == 4242], timeout_s=30, what="chain record")
    assert chain[0].series_uid == out.series_uid


def test_cluster_status_lists_workers_and_the_dashboard(local_cluster):
    st = local_cluster.cluster_status()
    assert st["backend"] == "dask" and st["n_workers"] == 2 and st["threads"] == 2
    assert st["tasks_in_flight"] == 0 and st["local_cluster"] is True
    assert st["dashboard"] is None or st["dashboard"].startswith("http://")
    outside = cluster_status(local_cluster.scheduler_address)
    assert outside["n_workers"] == 2 and {w["nthreads"] for w in outside["workers"]} == {1}
    assert "error" in cluster_status(f"tcp://127.0.0.1:{free_port()}", timeout_seconds=1)


def test_make_executor_and_config():
    with pytest.raises(ValueError, match="use \"local\" or \"dask\""):
        make_executor("ray", 1)
    cfg = parse_config({"workers": {"backend": "local", "count": 1}})
    ex = executor_for(cfg.workers)
    try:
        assert ex.capacity == 1
    finally:
        ex.shutdown(wait=True)


def test_memory_error_in_a_job_names_the_series_and_the_limit():
    with pytest.raises(WorkerMemoryError, match=r"series 1\.2\.3 \(job 5\) ran out of memory.*memory limit"):
        with job_context(5, "1.2.3"):
            raise MemoryError


def test_worker_killed_by_its_memory_limit_fails_the_job_with_series_and_limit(tmp_path):
    # A worker may use 160 MiB; the chain on the STS CT peaks above 200 MB: the nanny kills the worker.
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        ex = DaskExecutor(1, memory_limit_mb=160, dashboard_address="")
    try:
        fut = ex.submit(_spec(tmp_path / "o", job_id=77))
        with pytest.raises(WorkerMemoryError) as e:
            fut.result(120)
    finally:
        ex.shutdown(wait=True)
    msg = str(e.value)
    assert "1.3.6.1.4.1.14519.5.2.1.5168.1900.449841255123215696894565592289" in msg and "job 77" in msg
    assert "160 MB per worker" in msg


def _popen(args, log: Path):
    return subprocess.Popen(args, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def _end(procs):
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


def test_lost_scheduler_requeues_the_job_instead_of_failing_it(tmp_path):
    port = free_port()
    addr = f"tcp://127.0.0.1:{port}"
    sched = _popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                   tmp_path / "scheduler.log")
    procs = [sched]
    try:
        wait_for_port(port)
        procs.append(_popen([DASK, "worker", addr, "--nthreads", "1", "--no-dashboard"], tmp_path / "worker.log"))
        ex = DaskExecutor(1, addr, connect_timeout_seconds=2)
        ex._client.wait_for_workers(1, timeout=60)
        fut = ex.submit(_spec(tmp_path / "o"))
        os.killpg(sched.pid, signal.SIGKILL)
        sched.wait(10)
        with pytest.raises(RequeueJob, match="scheduler-connection-lost"):
            fut.result(60)
        # while the scheduler is away, a new job is not lost either: it is handed back to be queued again
        later = ex.submit(_spec(tmp_path / "o2"))
        with pytest.raises(RequeueJob):
            later.result(60)
        ex.shutdown(wait=True)
    finally:
        _end(procs)


class _RequeueingExecutor:
    capacity = 1

    def submit(self, spec):
        f: Future = Future()
        f.set_exception(RequeueJob("worker lost", delay_seconds=0.0))
        return f

    def shutdown(self, *, wait):
        pass


def test_requeued_job_goes_back_to_pending_without_counting_an_attempt(tmp_path):
    db = Database(tmp_path / "i.sqlite")
    db.add_instances([InstanceRecord("1.1", "1.2.3", "1.2", "1.2.840.10008.5.1.4.1.1.2", "CT",
                                     "1.2.840.10008.1.2.1", str(tmp_path / "x.dcm"), 10, "SCU", "127.0.0.1", 1.0)])
    job_id = db.complete_series("1.2.3", SeriesState.COMPLETE, 20, expected_last=1.0,
                                job=new_job(ChainJob("quick"), rule="r", destinations=[]))
    d = Dispatcher(db, lambda: CONFIG, _RequeueingExecutor())  # not started: one job by hand
    job = db.claim_job(d.worker_name, 60, time.time())
    assert job.attempts == 1
    d._submit(job, CONFIG)
    row = db.get_job(job_id)
    assert row.state is JobState.PENDING and row.attempts == 0 and row.error in (None, "", "worker lost")


PROBE = '''
import time
from dicomnode.obs.logs import setup_logging
from dicomnode.jobs.executors import DaskExecutor

def work():
    from dicomnode.jobs.remote import job_context
    with job_context(7, "1.2.3") as jlog:
        jlog.warning("probe warning from the worker")
    return 1

if __name__ == "__main__":
    setup_logging("text")
    ex = DaskExecutor(1, dashboard_address="")
    try:
        assert ex._client.submit(work, pure=False).result(120) == 1
        time.sleep(3)  # forwarded records arrive after the result
    finally:
        ex.shutdown(wait=True)
'''


def test_a_local_cluster_workers_warning_is_printed_once_on_the_nodes_stderr(tmp_path):
    """The LocalCluster's workers share the node's stderr: a record reaches it forwarded, not also printed there."""
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert p.returncode == 0, p.stderr[-3000:]
    lines = [ln for ln in p.stderr.splitlines() if "probe warning from the worker" in ln]
    assert len(lines) == 1, p.stderr[-3000:]
    assert "job_id=7" in lines[0]
