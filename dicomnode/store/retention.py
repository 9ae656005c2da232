"""Retention: delete received instances some days after their series was handled, never before.

``[retention] delete_received_after_days = N`` (0 = keep for ever, the default). A series is deleted when all of
these hold, judged in the same transaction that deletes its rows (:meth:`Database.purging`):

* it is not open, and its last instance, its completion, the end of each of its jobs (and of jobs that read it,
  such as radiomics on its images) and the sending of each of its results are all older than N days;
* no job of it, or reading it, is pending or running, and no result of it waits to be sent;
* with ``keep_failed = true`` (default): its latest job did not fail and none of its results was dead-lettered
  (``dicomnode jobs retry`` / ``dicomnode exports retry`` first; once handled, the clock starts again).

What goes: the instance files (and their series folder when it becomes empty), their index rows, and the result
folders of jobs whose results were all sent to their destinations. What stays: the series row (instance count 0,
so a late instance re-opens it and is processed as a new generation), job and export rows, the audit trail, and
results that were never sent anywhere (with no destination, the data folder is where results live).
Every deleted series is one log line and one ``retention deleted`` audit event.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from dicomnode.config import RetentionSection
from dicomnode.store.db import Database
from dicomnode.store.spool import Spool

log = logging.getLogger(__name__)

DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class RetentionReport:
    series: int = 0
    instances: int = 0
    bytes: int = 0
    result_dirs: int = 0


def run_retention(db: Database, spool: Spool, policy: RetentionSection, *, now: float | None = None,
                  results_root: Path | None = None, batch: int = 1000) -> RetentionReport:
    """One retention pass; returns what was deleted. Does nothing when ``delete_received_after_days`` is 0."""
    if policy.delete_received_after_days <= 0:
        return RetentionReport()
    now = time.time() if now is None else now
    before = now - policy.delete_received_after_days * DAY_S
    series = instances = size = dirs = 0
    for uid in db.retention_candidates(before, keep_failed=policy.keep_failed, limit=batch):
        note = f"instances deleted by retention at {time.strftime('%Y-%m-%dT%H:%M:%S', time.localtime(now))}"
        try:
            with db.purging(uid, before, keep_failed=policy.keep_failed, note=note) as plan:
                if plan is None:
                    continue
                for p in plan.instance_paths:
                    spool.remove(Path(p))
                removed_dirs = 0
                for d in plan.result_dirs:
                    if _inside(Path(d), results_root):
                        shutil.rmtree(d, ignore_errors=True)
                        removed_dirs += 1
                    else:
                        log.warning("not removing result folder outside the data folder", extra={"path": d})
        except Exception:  # noqa: BLE001 - one bad series must not stop the pass; the index is unchanged
            log.exception("retention of series %s failed; it is kept and tried again at the next pass", uid)
            continue
        if plan is None:
            continue
        series += 1
        instances += len(plan.instance_paths)
        size += plan.bytes
        dirs += removed_dirs
        detail = {"instances": len(plan.instance_paths), "bytes": plan.bytes, "result_dirs": removed_dirs,
                  "after_days": policy.delete_received_after_days}
        db.audit("retention deleted", actor="retention", series_uid=uid, detail=detail, now=now)
        log.info("retention deleted series", extra={"series_uid": uid, **detail})
    report = RetentionReport(series, instances, size, dirs)
    if series:
        log.info("retention pass done", extra={"series": series, "instances": instances, "bytes": size,
                                               "result_dirs": dirs})
    return report


def _inside(path: Path, root: Path | None) -> bool:
    if root is None:
        return True
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True
