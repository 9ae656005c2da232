"""What ``dicomnode status`` shows (and what a web page of the node's state shows): one dict, JSON-ready.

:func:`status_dict` reads the index (and asks the Dask scheduler when that is the back end); it changes nothing.
"""

from __future__ import annotations

import time
from typing import Any


def _series_entry(s: Any, cfg: Any, now: float) -> dict[str, Any]:
    from dicomnode.admin import series_view  # the console's series list shows the same
    return series_view(s, cfg, now)


def status_dict(cfg: Any, db: Any) -> dict[str, Any]:
    """The node (AE, port, data folder), counts, the last 100 series and jobs, dead letters, the cluster, a summary."""
    series = db.list_series(limit=100)
    jobs = db.list_jobs(limit=100)
    exports = db.list_exports(limit=200)
    from dicomnode.store.db import ExportState, JobState
    now = time.time()
    return {
        "node": {"ae_title": cfg.node.ae_title, "port": cfg.node.port, "data_dir": str(cfg.node.data_dir),
                 "quiet_seconds": cfg.series.quiet_seconds},
        "instances": db.count_instances(),
        "series": [_series_entry(s, cfg, now) for s in series],
        "jobs": {"counts": db.count_jobs(),
                 "recent": [{"id": j.id, "series_uid": j.series_uid, "state": j.state.value, "profile": j.label,
                             "attempts": j.attempts, "seconds": j.seconds, "error": j.error,
                             "result_dir": j.result_dir, "results": list(j.results)} for j in jobs]},
        "outbox": {"counts": db.count_exports(),
                   "dead": [{"id": e.id, "destination": e.destination, "sop_instance_uid": e.sop_instance_uid,
                             "attempts": e.attempts, "error": e.last_error}
                            for e in exports if e.state is ExportState.DEAD]},
        "failed_jobs": [j.id for j in jobs if j.state is JobState.FAILED],
        **_cluster(cfg, db),
        "summary": _summary(cfg, db),
    }


def _summary(cfg: Any, db: Any) -> dict[str, Any]:
    from dicomnode.obs.metrics import metrics_summary
    return metrics_summary(db, cfg)


def _cluster(cfg: Any, db: Any) -> dict[str, Any]:
    if cfg.workers.backend != "dask":
        return {}
    from dicomnode.jobs.executors import cluster_status
    addr = cfg.workers.scheduler or db.get_meta("dask_scheduler") or ""
    if not addr:
        return {"cluster": {"backend": "dask", "error": "no scheduler address known (is the node running?)"}}
    return {"cluster": cluster_status(addr, timeout_seconds=3)}
