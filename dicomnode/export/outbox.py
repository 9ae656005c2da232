"""The persistent outbox: results queued in the index are sent to their destinations, with retries.

Each export row is one (destination, SOP instance). A worker claims the oldest due rows of one destination, sends
them over one association and marks each sent as its C-STORE response arrives (one durable row update per response,
so a node killed mid-batch sends at most the instance in flight again), or schedules a retry with exponential backoff
(``export.retry_backoff_seconds``); after ``export.max_attempts`` the row is dead-lettered: listed by
``dicomnode status`` / ``dicomnode exports list`` and requeued by ``dicomnode exports retry ID``. Because result
UIDs are deterministic, "already sent" means done: the index never queues a sent (destination, UID) again.

The outbox does not speak to the network itself: a :class:`~dicomnode.export.senders.Sender` for the destination's
``kind`` moves the files (DIMSE C-STORE for ``dicom``, the default); ``Outbox(..., senders=...)`` replaces how
senders are chosen.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Callable

from dicomnode.config import Destination, NodeConfig
from dicomnode.export.senders import Sender, SendResult, sender_for, tls_context
from dicomnode.store.db import Database, ExportRow, ExportState

if TYPE_CHECKING:
    from dicomnode.obs.metrics import NodeMetrics

__all__ = ["Outbox", "backoff_s", "tls_context"]

log = logging.getLogger(__name__)


def backoff_s(schedule: tuple[float, ...], attempt: int) -> float:
    """Delay before attempt ``attempt + 1`` (attempt counts from 1); the last step repeats."""
    return schedule[min(max(attempt, 1), len(schedule)) - 1]


class Outbox:
    """Sends due exports in a background thread until stopped."""

    def __init__(self, db: Database, config: Callable[[], NodeConfig], *, poll_s: float = 0.5,
                 metrics: "NodeMetrics | None" = None,
                 senders: Callable[[Destination, NodeConfig], Sender] = sender_for) -> None:
        self.db = db
        self._senders = senders
        self._metrics = metrics
        self._config = config
        self._poll_s = poll_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        self.db.durable_commits()  # "sent" must outlive a power cut as well as a kill
        while not self._stop.is_set():
            try:
                busy = self.send_due()
            except Exception:  # noqa: BLE001 - the outbox must keep running
                log.exception("outbox pass failed")
                busy = False
            if not busy:
                self._wake.wait(self._poll_s)
                self._wake.clear()

    def send_due(self, now: float | None = None, batch: int = 200) -> bool:
        """Send one batch of due exports (same destination); True if anything was attempted."""
        now = time.time() if now is None else now
        first = self.db.claim_export(now)
        if first is None:
            return False
        rows = [first] + self.db.claim_exports_for(first.destination, now, batch - 1)
        cfg = self._config()
        try:
            dest = cfg.destination(first.destination)
        except KeyError:
            for r in rows:
                self._failed(r, cfg, f"no [[destinations]] named {r.destination} in the config any more", final=True)
            return True
        by_path = {r.path: r for r in rows}
        recorded: set[str] = set()

        def on_sent(res: SendResult) -> None:
            # one durable row update per C-STORE response, before the next instance goes: after a kill, at most
            # the instance in flight is sent again
            recorded.add(res.path)
            self._record(by_path[res.path], res, dest, cfg)

        try:
            self._senders(dest, cfg).send(dest, list(by_path), on_sent=on_sent)
        except Exception as e:  # noqa: BLE001 - no association at all: every row not yet answered retries
            for r in rows:
                if r.path not in recorded:
                    self._failed(r, cfg, str(e))
        return True

    def _record(self, r: ExportRow, res: SendResult, dest: Destination, cfg: NodeConfig) -> None:
        if res.ok:
            self.db.export_sent(r.id, time.time())
            if self._metrics is not None:
                self._metrics.exports_sent.labels(destination=dest.name).inc()
            self.db.audit("result sent", actor=dest.address, series_uid=r.series_uid,
                          detail={"sop_instance_uid": r.sop_instance_uid, "export_id": r.id,
                                  "status": res.status})
            log.info("result sent", extra={"export_id": r.id, "sop_instance_uid": r.sop_instance_uid,
                                           "destination": dest.address, "status": res.status})
        else:
            self._failed(r, cfg, res.error)

    def _failed(self, r: ExportRow, cfg: NodeConfig, error: str, final: bool = False) -> None:
        now = time.time()
        retry_at = None
        if not final and r.attempts < cfg.export.max_attempts:
            retry_at = now + backoff_s(cfg.export.retry_backoff_seconds, r.attempts)
        state = self.db.export_failed(r.id, now, error=error, retry_at=retry_at)
        if self._metrics is not None:
            self._metrics.exports_failed.labels(destination=r.destination).inc()
            if state is ExportState.DEAD:
                self._metrics.exports_dead.labels(destination=r.destination).inc()
        if state is ExportState.DEAD:
            log.error("result dead-lettered", extra={"export_id": r.id, "sop_instance_uid": r.sop_instance_uid,
                                                     "destination": r.destination, "attempts": r.attempts,
                                                     "error": error})
            self.db.audit("result dead-lettered", actor=r.destination, series_uid=r.series_uid,
                          detail={"export_id": r.id, "error": error})
        else:
            log.warning("send failed; will retry", extra={"export_id": r.id, "destination": r.destination,
                                                          "attempt": r.attempts, "retry_in_s": round(retry_at - now, 1)
                                                          if retry_at else None, "error": error})

