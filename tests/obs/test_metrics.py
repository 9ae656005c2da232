"""The node's metrics registry: index gauges, the job-duration histogram, counters, and the status summary."""

from __future__ import annotations

import logging

from prometheus_client import generate_latest

from dicomnode.config import parse_config
from dicomnode.obs.metrics import NodeMetrics, metrics_summary
from dicomnode.jobs.spec import ChainJob, new_job
from dicomnode.store.db import Database, InstanceRecord, SeriesState


def _db_with_a_done_job(tmp_path) -> Database:
    db = Database(tmp_path / "index.sqlite")
    db.add_instances([InstanceRecord("1.1", "1.2", "1.3", "1.2.840.10008.5.1.4.1.1.2", "CT", "1.2.840.10008.1.2",
                                     "/x", 1000, "PACS", "10.0.0.1", 100.0)])
    job = db.complete_series("1.2", SeriesState.COMPLETE, 200.0, expected_last=100.0, job=new_job(ChainJob("ct"), rule="r", destinations=["D"]))
    db.claim_job("w", 60, 201.0)
    db.finish_job(job, 204.0, result_dir="/r", results=["/r/seg.dcm"], seconds=3.0, exports=[("D", "/r/seg.dcm", "9")])
    return db


def test_registry_exposes_index_gauges_histogram_and_counters(tmp_path):
    db = _db_with_a_done_job(tmp_path)
    cfg = parse_config({"node": {"data_dir": str(tmp_path), "min_free_disk_mb": 10}})
    m = NodeMetrics(db, lambda: cfg, tmp_path)
    m.received(500, duplicate=False)
    m.received(500, duplicate=True)
    m.watch_refusals("test.scp")
    logging.getLogger("test.scp").warning("association rejected: %s", "x", extra={"permanent": False})
    logging.getLogger("test.scp").warning("something else")
    logging.getLogger("test.scp").warning("TLS handshake failed from %s:%s: %s; connection closed", "10.0.0.9", 4,
                                          "CERTIFICATE_VERIFY_FAILED")
    m.close()
    text = generate_latest(m.registry).decode()
    for line in ("dicomnode_instances_received_total 1.0", "dicomnode_instances_duplicate_total 1.0",
                 "dicomnode_received_bytes_total 500.0", 'dicomnode_jobs{state="done"} 1.0',
                 'dicomnode_exports{state="pending"} 1.0', 'dicomnode_series{state="complete"} 1.0',
                 'dicomnode_job_duration_seconds_bucket{le="2.5",profile="ct"} 0.0',
                 'dicomnode_job_duration_seconds_bucket{le="5.0",profile="ct"} 1.0',
                 'dicomnode_job_duration_seconds_sum{profile="ct"} 3.0',
                 "dicomnode_disk_free_watermark_bytes 1.048576e+07"):
        assert line in text, line
    for kind, n in (("transient", 1.0), ("permanent", 0.0), ("tls", 1.0)):
        assert f'dicomnode_associations_refused_total{{kind="{kind}"}} {n}' in text, kind


def test_metrics_summary_for_status(tmp_path):
    db = _db_with_a_done_job(tmp_path)
    cfg = parse_config({"node": {"data_dir": str(tmp_path)}, "metrics": {"port": 9108},
                        "retention": {"delete_received_after_days": 30}})
    s = metrics_summary(db, cfg, now=300.0)
    assert s["disk"]["accepting"] and s["jobs"] == {"done": 1} and s["exports"] == {"pending": 1}
    assert s["last_hour"]["instances"] == 1 and s["last_hour"]["jobs_done"] == 1
    assert s["metrics_url"] == "http://127.0.0.1:9108/metrics" and s["retention_days"] == 30


def test_metrics_config_is_checked():
    import pytest

    from dicomnode.errors import ConfigErrors
    with pytest.raises(ConfigErrors, match="metrics.port"):
        parse_config({"metrics": {"port": 70000}})
    with pytest.raises(ConfigErrors, match="metrics.port"):
        parse_config({"node": {"port": 11112}, "metrics": {"port": 11112}})
