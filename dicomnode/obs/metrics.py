"""Prometheus metrics, served at ``/metrics`` by the node's one HTTP server (:mod:`dicomnode.web`): the console's
when ``[http] enabled`` (login or token needed unless ``[metrics] public``), else alone on ``[metrics] port``,
``bind`` (public, as before the console; port 0 = off).

Two kinds of series, both on the node's own registry (no global state, so two nodes in one process do not mix):

* **Counters of this process** (reset at restart, as Prometheus expects of counters), fed by the node:
  ``dicomnode_instances_received_total``, ``dicomnode_instances_duplicate_total``,
  ``dicomnode_received_bytes_total``, ``dicomnode_associations_refused_total{kind}`` (kind ``permanent``: peer
  policy, wrong called AE; ``transient``: disk watermark, stopping; ``tls``: failed TLS handshake, e.g. no or an
  untrusted client certificate, or a plain peer on a TLS port), ``dicomnode_series_completed_total{outcome}``
  (``job``, ``unrouted``, ``ignored``), ``dicomnode_exports_sent_total{destination}``,
  ``dicomnode_exports_failed_total{destination}`` (failed attempts, each retried or dead-lettered),
  ``dicomnode_exports_dead_lettered_total{destination}``, ``dicomnode_retention_deleted_instances_total``.
* **Read from the index at scrape time** (so they survive restarts and agree with ``dicomnode status``):
  ``dicomnode_jobs{state}``, ``dicomnode_exports{state}``, ``dicomnode_series{state}``, ``dicomnode_instances``,
  ``dicomnode_job_duration_seconds`` (histogram of done jobs by profile), ``dicomnode_disk_free_bytes`` and
  ``dicomnode_disk_free_watermark_bytes`` (``node.min_free_disk_mb``).

Labels carry AE-level names only (destinations, profiles, states); never UIDs, never PHI.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from dicomnode.config import NodeConfig
from dicomnode.store.db import Database

log = logging.getLogger(__name__)

JOB_SECONDS_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


class _IndexCollector(Collector):
    """Gauges and the job-duration histogram, read from the index and the disk at each scrape."""

    def __init__(self, db: Database, config: Callable[[], NodeConfig], data_dir: Path) -> None:
        self._db = db
        self._config = config
        self._data_dir = data_dir

    def collect(self) -> Iterator[Any]:
        db = self._db
        for name, doc, counts in (
            ("dicomnode_jobs", "Jobs in the index by state", db.count_jobs()),
            ("dicomnode_exports", "Result exports (outbox rows) in the index by state", db.count_exports()),
            ("dicomnode_series", "Series in the index by state", db.count_series()),
        ):
            g = GaugeMetricFamily(name, doc, labels=["state"])
            for state, n in sorted(counts.items()):
                g.add_metric([state], n)
            yield g
        yield GaugeMetricFamily("dicomnode_instances", "Received instances held (index rows)",
                                value=db.count_instances())
        h = HistogramMetricFamily("dicomnode_job_duration_seconds", "Wall time of done jobs, by profile",
                                  labels=["profile"])
        for profile, (cumulative, total, n) in sorted(db.job_duration_histogram(JOB_SECONDS_BUCKETS).items()):
            buckets = [(repr(b), c) for b, c in zip(JOB_SECONDS_BUCKETS, cumulative)] + [("+Inf", n)]
            h.add_metric([profile], buckets, total)
        yield h
        try:
            free = shutil.disk_usage(self._data_dir).free
        except OSError:
            free = float("nan")
        yield GaugeMetricFamily("dicomnode_disk_free_bytes", "Free space on the data folder's file system",
                                value=free)
        yield GaugeMetricFamily("dicomnode_disk_free_watermark_bytes",
                                "New associations are refused below this free space (0 = off)",
                                value=self._config().node.min_free_disk_mb * 2**20)


class _RefusalCounter(logging.Handler):
    """Counts the SCP's "association rejected" log records (the SCP reports refusals through its log only)."""

    def __init__(self, counter: Counter) -> None:
        super().__init__(logging.WARNING)
        self._counter = counter

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, str) and record.msg.startswith("association rejected"):
            kind = "permanent" if getattr(record, "permanent", False) else "transient"
            self._counter.labels(kind=kind).inc()
        elif isinstance(record.msg, str) and record.msg.startswith("TLS handshake failed"):
            self._counter.labels(kind="tls").inc()


class NodeMetrics:
    """The node's metrics: counters it feeds, index gauges, and the HTTP endpoint."""

    def __init__(self, db: Database, config: Callable[[], NodeConfig], data_dir: Path) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.instances_received = Counter("dicomnode_instances_received", "New instances stored", registry=r)
        self.instances_duplicate = Counter("dicomnode_instances_duplicate",
                                           "Instances received again (already stored; acknowledged, kept once)",
                                           registry=r)
        self.received_bytes = Counter("dicomnode_received_bytes", "Bytes of new instances stored", registry=r)
        self.associations_refused = Counter("dicomnode_associations_refused", "Associations rejected",
                                            ["kind"], registry=r)
        self.series_completed = Counter("dicomnode_series_completed", "Series completed, by outcome",
                                        ["outcome"], registry=r)
        self.exports_sent = Counter("dicomnode_exports_sent", "Result instances sent", ["destination"], registry=r)
        self.exports_failed = Counter("dicomnode_exports_failed", "Failed send attempts", ["destination"],
                                      registry=r)
        self.exports_dead = Counter("dicomnode_exports_dead_lettered", "Results dead-lettered", ["destination"],
                                    registry=r)
        self.retention_deleted = Counter("dicomnode_retention_deleted_instances",
                                         "Received instances deleted by retention", registry=r)
        for kind in ("permanent", "transient", "tls"):
            self.associations_refused.labels(kind=kind)
        for outcome in ("job", "unrouted", "ignored"):
            self.series_completed.labels(outcome=outcome)
        r.register(_IndexCollector(db, config, data_dir))
        self._refusals = _RefusalCounter(self.associations_refused)
        self.port: int | None = None  # the port /metrics is served on alone ([metrics] port without [http])

    # -- feeding ----------------------------------------------------------------------------------------------
    def received(self, size_bytes: int, duplicate: bool) -> None:
        if duplicate:
            self.instances_duplicate.inc()
        else:
            self.instances_received.inc()
            self.received_bytes.inc(size_bytes)

    def watch_refusals(self, logger_name: str = "dicomnode.net.scp") -> None:
        logging.getLogger(logger_name).addHandler(self._refusals)

    # -- endpoint: served by the node's one HTTP server (dicomnode.web), from self.registry --------------------
    def close(self) -> None:
        logging.getLogger("dicomnode.net.scp").removeHandler(self._refusals)


def metrics_summary(db: Database, config: NodeConfig, *, now: float | None = None) -> dict[str, Any]:
    """The same figures at a glance, for ``dicomnode status`` (read from the index and the disk only)."""
    now = time.time() if now is None else now
    data_dir = Path(config.node.data_dir)
    try:
        free_mb = shutil.disk_usage(data_dir).free / 2**20
    except OSError:
        free_mb = None
    min_mb = config.node.min_free_disk_mb
    dead = db.count_exports().get("dead", 0)
    return {
        "disk": {"free_mb": None if free_mb is None else round(free_mb), "min_free_disk_mb": min_mb,
                 "accepting": free_mb is None or min_mb <= 0 or free_mb >= min_mb},
        "last_hour": db.activity_since(now - 3600),
        "last_24h": db.activity_since(now - 86400),
        "series": db.count_series(),
        "jobs": db.count_jobs(),
        "exports": db.count_exports(),
        "dead_letters": dead,
        "metrics_url": _metrics_url(config),
        "retention_days": config.retention.delete_received_after_days or None,
    }


def _metrics_url(config: NodeConfig) -> str | None:
    """Where ``/metrics`` is served: by the console's server when ``[http]`` is on, else on ``[metrics] port``."""
    http = config.http
    if http.enabled:
        host = f"[{http.bind}]" if ":" in http.bind else http.bind
        return f"{'https' if http.tls else 'http'}://{host}:{http.port}/metrics"
    if config.metrics.port:
        return f"http://{config.metrics.bind}:{config.metrics.port}/metrics"
    return None
