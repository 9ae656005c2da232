"""The node: wires the stages, starts and stops them, recovers unfinished work on start.

Data flow (see ``docs/architecture.md``)::

    net.scp --(durable file = commit point)--> queue --> index writer (store.db rows; routes new series)
    router: a new series' first header --> routing, once --> the decision kept with the series (series.route)
    series monitor: store.series triggers (quiet period) --> the route's jobs row (same transaction)
    jobs.dispatcher --> jobs.executors (process pool or Dask) --> jobs.kinds.run --> result files
    --> exports rows --> export.Outbox --> net.scu C-STORE

Recovery on start: instances on disk but missing from the index (the node died between the acknowledgement and the
index write) are indexed again from the spool; jobs left running go back to pending; exports left sending go back
to pending; open series get a whole quiet period from the start (their senders could not send meanwhile).
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from dicomnode.config import NodeConfig
from dicomnode.errors import ConfigError
from dicomnode.jobs.executors import Executor, executor_for
from dicomnode.export.outbox import Outbox
from dicomnode.io.headers import (HeaderReadError, is_image_storage, is_region_storage, read_tags,
                                  referenced_series_uid)
from dicomnode.jobs import kinds
from dicomnode.jobs.kinds import series_route
from dicomnode.jobs.dispatcher import Dispatcher
from dicomnode.obs.metrics import NodeMetrics
from dicomnode.routing import RouteDecision, quiet_seconds, route
from dicomnode.store import series
from dicomnode.store.db import Database, InstanceRecord, SeriesRow, SeriesState
from dicomnode.store.series import SeriesRoute
from dicomnode.store.retention import RetentionReport, run_retention
from dicomnode.store.spool import Spool, StoredInstance
from dicomnode.uids import is_valid_uid

log = logging.getLogger(__name__)

DB_NAME = "index.sqlite"


def _record(s: StoredInstance) -> InstanceRecord:
    return InstanceRecord(s.sop_instance_uid, s.series_uid, s.study_uid, s.sop_class_uid, s.modality,
                          s.transfer_syntax, str(s.path), s.size_bytes, s.calling_ae, s.peer_host, s.received_at)


def open_database(config: NodeConfig) -> Database:
    return Database(Path(config.node.data_dir) / DB_NAME)


def _port_error(key: str, host: str, port: int, how: str) -> ConfigError | None:
    """Try to bind ``host:port`` as a server would (SO_REUSEADDR); the error naming ``key``, or None if it is free."""
    if port == 0:
        return None
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        return ConfigError(key.replace("port", "bind"), host, f"cannot resolve this address ({e.strerror}); use an "
                           "address of this machine, e.g. 0.0.0.0 (all) or 127.0.0.1")
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            where = f"{host}:{port}"
            if e.errno == errno.EADDRINUSE:
                return ConfigError(key, port, f"{where} is in use by another program; stop it, or choose a free "
                                   f"port ({how})")
            if e.errno == errno.EACCES:
                return ConfigError(key, port, f"no permission to listen on {where} (ports below 1024 need "
                                   "privileges); use a port >= 1024 such as 11112, or grant CAP_NET_BIND_SERVICE")
            if e.errno == errno.EADDRNOTAVAIL:
                return ConfigError(key.replace("port", "bind"), host, f"{host} is not an address of this machine; "
                                   "use 0.0.0.0 (all) or one of its addresses")
            return ConfigError(key, port, f"cannot listen on {where}: {e.strerror}")
    return None


def _folder_error(key: str, folder: Path) -> ConfigError | None:
    """Whether the node can create and write ``folder`` (nothing is created); the error naming ``key``, or None."""
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        what = "is a file" if probe == folder else f"cannot be created: {probe} is a file"
        return ConfigError(key, str(folder), f"{what}; give a folder (it is created if missing), e.g. "
                           "/var/lib/dicomnode")
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "is not writable" if probe == folder else f"cannot be created: {probe} is not writable"
        return ConfigError(key, str(folder), f"{what} (read-only file system or no permission); give a folder "
                           "the node's user can write, e.g. /var/lib/dicomnode, or fix its permissions")
    db = folder / DB_NAME
    if db.exists() and not os.access(db, os.R_OK | os.W_OK):
        return ConfigError(key, str(folder), f"{db} is not writable; fix its permissions or use another folder")
    return None


def preflight(config: NodeConfig, *, port_hint: str = "node.port, or serve --port") -> list[ConfigError]:
    """What would stop the node from starting, found before anything is created: ports in use, data folder.

    Each error names its key and the fix (``serve`` and ``config check --runtime`` print them, exit 2).
    """
    errors = []
    for e in (_folder_error("node.data_dir", config.node.data_dir),
              _port_error("node.port", config.node.bind, config.node.port, port_hint),
              _port_error("metrics.port", config.metrics.bind, config.metrics.port, "metrics.port, or 0 for none")
              if config.metrics.port and not config.http.enabled else None,
              _port_error("http.port", config.http.bind, config.http.port, "http.port")
              if config.http.enabled else None):
        if e is not None:
            errors.append(e)
    return errors


class Node:
    """A running node. ``start()`` returns once it accepts associations; ``stop()`` shuts down cleanly."""

    def __init__(self, config: NodeConfig, *, executor: Executor | None = None,
                 reload: Callable[[], NodeConfig] | None = None,
                 http: Callable[["Node"], Any] | None = None) -> None:
        self._config = config
        self._http = http      # makes the node's HTTP server (see _start_http)
        self._reload = reload  # how the config file is read again (SIGHUP, the console's reload)
        self.data_dir = Path(config.node.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = open_database(config)
        self.spool = Spool(self.data_dir / "instances")
        self._inbox: "queue.Queue[StoredInstance]" = queue.Queue()
        # acknowledged instances not yet in the index, per series: such a series never completes
        self._unindexed: dict[str, int] = {}
        self._unindexed_lock = threading.Lock()
        self._retry: list[StoredInstance] = []   # instances whose index write failed: written again until it works
        self._index_error = ""                   # why the last index write failed ("" when it worked)
        # new series are routed by their own thread, so that reading a header never holds up the index writer
        self._route_queue: "queue.Queue[tuple[str, str, str]]" = queue.Queue()
        self._unrouted: set[str] = set()         # opened, not routed yet: such a series does not complete
        self._route_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._executor = executor
        self.scp = None
        self.dispatcher: Dispatcher | None = None
        self.outbox: Outbox | None = None
        self._config_lock = threading.Lock()
        self.metrics = NodeMetrics(self.db, lambda: self.config, self.data_dir)
        self.web: Any = None  # the one HTTP server (console and/or /metrics), dicomnode.web.server.WebServer

    # -- configuration ----------------------------------------------------------------------------------------
    @property
    def config(self) -> NodeConfig:
        with self._config_lock:
            return self._config

    def replace_config(self, config: NodeConfig, *, actor: str = "SIGHUP") -> None:
        """Swap rules, peers, destinations and profiles (SIGHUP). Network and storage settings need a restart."""
        with self._config_lock:
            old = self._config
            self._config = config
        if self.scp is not None and hasattr(self.scp, "set_peers"):
            from dicomnode.net.scp import PeerRule
            self.scp.set_peers([PeerRule(p.ae_title, p.host) for p in config.peers])
        self._reroute_open_series()  # the new rules decide for the series that are not complete yet
        if (old.node.port, old.node.bind, old.node.data_dir) != (config.node.port, config.node.bind,
                                                                 config.node.data_dir):
            log.warning("node.port, node.bind and node.data_dir changes take effect after a restart")
        if old.node.tls != config.node.tls or old.metrics != config.metrics or old.workers != config.workers:
            log.warning("[node.tls] (receiving side), [metrics] and [workers] changes take effect after a restart")
        if (old.http.enabled, old.http.bind, old.http.port, old.http.tls) != (
                config.http.enabled, config.http.bind, config.http.port, config.http.tls):
            log.warning("http.enabled, http.bind, http.port and http.tls changes take effect after a restart; "
                        "accounts and tokens are in force now")
        self.db.audit("config reloaded", actor=actor,
                      detail={"source": config.source, "peers": [p.ae_title for p in config.peers],
                              "destinations": [d.address for d in config.destinations],
                              "rules": [r.name for r in config.rules]})

    # -- life cycle -------------------------------------------------------------------------------------------
    def recover(self) -> dict[str, int]:
        """Bring the index in line with the disk and requeue unfinished work."""
        now = time.time()
        previous = self.db.get_meta("clean_shutdown")
        first_start = previous is None
        clean = previous == "1" or first_start  # an empty folder has nothing to recover
        self.db.set_meta("clean_shutdown", "0")
        reindexed = 0
        if not clean:  # killed, or stopped with instances it could not index: every file must have its row
            known = self.db.known_instance_paths()
            missing = list(self.spool.scan(skip=known))
            if missing:
                self._pending(missing, +1)
                if self._try_index(missing):
                    reindexed = len(missing)
                else:
                    self._retry = missing
        jobs = self.db.release_running_jobs(now=now)
        exports = self.db.release_sending_exports(now)
        self.db.restart_quiet_periods(now)
        for s in self.db.list_series(SeriesState.OPEN, limit=100_000):
            if s.route is None:  # opened just before the node stopped (or by a dicomnode before schema 2): route it
                paths = self.db.instance_paths(s.series_uid)
                if paths:
                    with self._route_lock:
                        self._unrouted.add(s.series_uid)
                    self._route_queue.put((s.series_uid, paths[0], s.sop_class_uid))
        summary = {"reindexed_instances": reindexed, "requeued_jobs": len(jobs), "requeued_exports": len(exports),
                   "open_series": len(self.db.list_series(SeriesState.OPEN))}
        if first_start:
            log.info("first start: a new data folder", extra={"data_dir": str(self.data_dir)})
        elif clean:
            log.info("recovered", extra={**summary, "clean_shutdown": True})
        else:
            log.warning("recovered after an unclean stop (killed or crashed): index checked against the disk",
                        extra={**summary, "clean_shutdown": False})
        return summary

    def start(self) -> None:
        from dicomnode.net.scp import PeerRule, StorageSCP

        cfg = self.config
        self.recover()
        executor = self._executor or executor_for(cfg.workers)
        if getattr(executor, "scheduler_address", None):
            self.db.set_meta("dask_scheduler", str(executor.scheduler_address))
        self.outbox = Outbox(self.db, lambda: self.config, metrics=self.metrics)
        self.dispatcher = Dispatcher(self.db, lambda: self.config, executor, on_done=self.outbox.wake)
        for name, target in (("indexer", self._index_loop), ("router", self._route_loop),
                             ("series-monitor", self._monitor_loop), ("retention", self._retention_loop)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        self.dispatcher.start()
        self.outbox.start()
        ssl_context = None
        if cfg.node.tls.enabled:
            from dicomnode.net.tls import server_context
            ssl_context = server_context(cfg.node.tls)
        self.scp = StorageSCP(ae_title=cfg.node.ae_title, bind=cfg.node.bind, port=cfg.node.port, spool=self.spool,
                              sink=self._received, peers=[PeerRule(p.ae_title, p.host) for p in cfg.peers],
                              max_pdu_bytes=cfg.node.max_pdu_bytes, ssl_context=ssl_context, admit=self._admit,
                              max_associations=cfg.node.max_associations,
                              max_associations_per_peer=cfg.node.max_associations_per_peer,
                              network_timeout_s=cfg.node.idle_timeout_seconds,
                              artim_timeout_s=cfg.node.artim_timeout_seconds,
                              fast_receive=cfg.node.fast_receive,
                              on_event=self.metrics.scp_event)
        self._start_http(cfg)  # before the DICOM port opens: once a peer can connect, /metrics and the console answer
        self.scp.start()
        log.info("node started", extra={"ae_title": cfg.node.ae_title, "bind": cfg.node.bind, "port": self.scp.port,
                                        "data_dir": str(self.data_dir), "workers": executor.capacity,
                                        "quiet_seconds": cfg.series.quiet_seconds,
                                        "rules_quiet_seconds": {r.name: r.quiet_seconds for r in cfg.rules
                                                                if r.quiet_seconds is not None}})
        for w in cfg.warnings:
            log.warning("configuration: %s", w)
        log.info(f"a series is processed once no instance has arrived for {cfg.series.quiet_seconds:g} s "
                 "(series.quiet_seconds)" + "".join(f"; rule {r.name}: {r.quiet_seconds:g} s" for r in cfg.rules
                                                    if r.quiet_seconds is not None))

    def _start_http(self, cfg: NodeConfig) -> None:
        """The one HTTP server, made by the ``http`` factory the node was given (``dicomnode serve`` gives
        :func:`dicomnode.web.server.node_http_server`: the console, or ``/metrics`` alone on ``[metrics] port``);
        none without a factory or when the factory returns None. The web layer sits above the node, so the node
        never imports it."""
        if self._http is None:
            return
        self.web = self._http(self)
        if self.web is not None:
            self.web.start()
            if not cfg.http.enabled:
                self.metrics.port = self.web.port

    def reload_config(self, *, actor: str) -> NodeConfig:
        """Read the configuration file again and put it in force (SIGHUP, the console's reload); the running one
        is kept when the file is invalid (:class:`~dicomnode.errors.ConfigError`)."""
        if self._reload is not None:
            config = self._reload()
        elif self.config.source.startswith("<"):
            raise ConfigError("--config", self.config.source, "the node runs on the embedded defaults: there is no "
                              "file to reload; start it with --config FILE")
        else:
            from dicomnode.config import load_config
            config = load_config(self.config.source)
        self.replace_config(config, actor=actor)
        return config

    def force_complete(self, series_uid: str, *, actor: str) -> list[int]:
        """Complete an open series now, as if its quiet period had ended (an operator's "force completion"):
        routed, and its job queued, by the same code. Returns the job ids queued (none when no rule runs one)."""
        from dicomnode.admin import NotFoundError, StateError
        s = self.db.get_series(series_uid)
        if s is None:
            raise NotFoundError(f"no series {series_uid} in this node's index")
        if s.state is not SeriesState.OPEN:
            raise StateError(f"series {series_uid} is {s.state.value}, not open; to analyse it again use reprocess")
        with self._unindexed_lock:
            if series_uid in self._unindexed:
                raise StateError(f"series {series_uid} has received instances not indexed yet; try again in a "
                                 "second")
        with self._route_lock:
            if series_uid in self._unrouted:
                raise StateError(f"series {series_uid} is being routed; try again in a second")
        ids = self.complete_due(time.time(), triggers=(series.Forced(series_uid),))
        after = self.db.get_series(series_uid)
        if after is not None and after.state is SeriesState.OPEN:
            raise StateError(f"series {series_uid} received an instance meanwhile and stays open; try again")
        self.db.audit("forced completion", actor=actor, series_uid=series_uid,
                      detail={"instances": s.instance_count, "job_ids": ids})
        return ids

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop accepting, finish the stores in flight, index them, stop the workers (the queue stays)."""
        if self.web is not None:
            self.web.stop()
        if self.scp is not None:
            self.scp.stop(timeout_s)
        self._stop.set()
        for t in self._threads:
            t.join(timeout_s)
        indexed = self._drain()
        if self.dispatcher is not None:
            self.dispatcher.stop(timeout_s)
        if self.outbox is not None:
            self.outbox.stop(timeout_s)
        self.metrics.close()
        if indexed:
            self.db.set_meta("clean_shutdown", "1")
            log.info("node stopped")
        else:  # the next start rescans the spool and indexes what is missing
            log.error("node stopped with acknowledged instances not in the index; the next start indexes them",
                      extra={"instances": len(self._retry), "error": self._index_error})

    @property
    def port(self) -> int:
        return self.scp.port if self.scp is not None else self.config.node.port

    # -- admission --------------------------------------------------------------------------------------------
    def _admit(self) -> str | None:
        if self._index_error:
            return f"the index cannot be written ({self._index_error}); free disk space in node.data_dir"
        min_mb = self.config.node.min_free_disk_mb
        if min_mb <= 0:
            return None
        free_mb = shutil.disk_usage(self.data_dir).free / 2**20
        if free_mb < min_mb:
            return f"free disk space {free_mb:.0f} MB is below node.min_free_disk_mb = {min_mb}"
        return None

    def _received(self, stored: StoredInstance) -> None:
        """The SCP's sink (called once an instance is committed): count it, queue it for the index writer."""
        self.metrics.received(stored.size_bytes, stored.duplicate)
        self._pending([stored], +1)
        self._inbox.put(stored)

    # -- retention --------------------------------------------------------------------------------------------
    def _retention_loop(self) -> None:
        last = float("-inf")
        while not self._stop.wait(1.0):
            policy = self.config.retention
            if policy.delete_received_after_days <= 0 or time.monotonic() - last < policy.check_interval_seconds:
                continue
            last = time.monotonic()
            try:
                self.apply_retention()
            except Exception:  # noqa: BLE001
                log.exception("retention pass failed")

    def apply_retention(self, now: float | None = None) -> RetentionReport:
        """One retention pass under the current ``[retention]`` policy (see :mod:`dicomnode.store.retention`)."""
        report = run_retention(self.db, self.spool, self.config.retention, now=now,
                               results_root=self.data_dir / "results")
        self.metrics.retention_deleted.inc(report.instances)
        return report

    # -- index writer -----------------------------------------------------------------------------------------
    def _index_loop(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._inbox.get(timeout=0.2)
            except queue.Empty:
                if self._retry:
                    self._try_index([])
                    self._stop.wait(1.0)
                continue
            batch = [first]
            deadline = time.monotonic() + 0.05
            while len(batch) < 1000 and time.monotonic() < deadline:
                try:
                    batch.append(self._inbox.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            if not self._try_index(batch):
                self._stop.wait(1.0)

    def _try_index(self, batch: list[StoredInstance]) -> bool:
        """Index ``batch`` and whatever failed before; on failure keep them all for the next try. True if done.

        An index write can fail after the commit point (e.g. "database or disk is full"): the instances are
        acknowledged and on disk, so they are written again until it works, their series cannot complete
        meanwhile, new associations are refused (transient) and a stop does not count as clean (the next start
        rescans the spool).
        """
        todo = self._retry + batch
        try:
            self._index(todo)
        except Exception as e:  # noqa: BLE001 - the files are on disk: keep them and try again
            self._retry = todo
            if not self._index_error:
                log.error("index write failed; %d acknowledged instances will be indexed once it works: %s",
                          len(todo), e, extra={"instances": len(todo), "error": str(e)})
            self._index_error = str(e)
            return False
        self._retry = []
        if self._index_error:
            log.info("index writes work again", extra={"instances": len(todo)})
            self._index_error = ""
        self._pending(todo, -1)
        return True

    def _pending(self, stored: list[StoredInstance], delta: int) -> None:
        with self._unindexed_lock:
            for s in stored:
                n = self._unindexed.get(s.series_uid, 0) + delta
                if n > 0:
                    self._unindexed[s.series_uid] = n
                else:
                    self._unindexed.pop(s.series_uid, None)

    def _drain(self) -> bool:
        """Index what is still queued (at stop); False when some acknowledged instances could not be indexed."""
        batch = []
        while True:
            try:
                batch.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        if batch or self._retry:
            return self._try_index(batch)
        return True

    def _index(self, stored: list[StoredInstance]) -> None:
        # resends too: a file whose row is missing gets it, and a resend keeps its open series open
        fresh = stored
        if not fresh:
            return
        new_series: dict[str, StoredInstance] = {}
        for s in fresh:
            if s.series_uid in new_series or self.db.get_series(s.series_uid) is not None:
                continue
            new_series[s.series_uid] = s
        with self._route_lock:  # before the rows exist, so that the monitor never sees them unrouted
            self._unrouted.update(new_series)
        try:
            added, reopened = self.db.add_instances([_record(s) for s in fresh])
        except BaseException:
            with self._route_lock:
                self._unrouted.difference_update(new_series)
            raise
        # routed by the router thread (headers are read there): a new series once; a reopened one again, under the
        # rules in force now (as it would be if it were new)
        again = {uid: next(x for x in fresh if x.series_uid == uid) for uid in reopened}
        with self._route_lock:
            self._unrouted.update(again)
        for uid, first in {**new_series, **again}.items():
            self._route_queue.put((uid, str(first.path), first.sop_class_uid))
        for uid in reopened:
            log.info("series reopened: instances arrived after completion", extra={"series_uid": uid})
        for uid in new_series:
            log.info("series opened", extra={"series_uid": uid})

    def _route_loop(self) -> None:
        while not self._stop.is_set():
            try:
                uid, path, sop_class = self._route_queue.get(timeout=0.2)
            except queue.Empty:
                continue
            self.route_series(uid, path, sop_class)

    def route_series(self, uid: str, path: str, sop_class: str) -> None:
        """Route a new series once (from its first file) and keep the decision with it in the index."""
        try:
            cfg = self.config
            decision, route_, frame = self._route(cfg, path, sop_class)
            self.db.set_series_routing(uid, route_.rule, quiet_seconds(cfg, decision), route_.to_json(),
                                       frame_of_reference_uid=frame)
        except Exception:  # noqa: BLE001 - the monitor routes it at completion instead
            log.exception("routing a new series failed; it is routed at completion", extra={"series_uid": uid})
        finally:
            with self._route_lock:
                self._unrouted.discard(uid)

    @staticmethod
    def _read_tags(path: str) -> dict[str, str]:
        try:
            return read_tags(path)  # bounded: top-level values only, sequences walked to a nesting cap, no pixels
        except HeaderReadError as e:
            log.warning("header unreadable for routing; routing on the SOP class alone: %s", e)
            return {}

    def _route(self, cfg: NodeConfig, path: str, sop_class_uid: str
               ) -> tuple[RouteDecision, SeriesRoute, str | None]:
        """Route a series once, from the header of its first file: the decision, what completing it does, and its
        FrameOfReferenceUID (None when absent or not a valid UID: the series then lends and borrows no anatomy)."""
        tags = self._read_tags(path)
        sop_class = tags.get("SOPClassUID", sop_class_uid)
        region = is_region_storage(sop_class)
        decision = route(cfg, tags, is_image=is_image_storage(sop_class), is_region=region)
        images = referenced_series_uid(path) if decision.radiomics is not None else None
        frame = tags.get("FrameOfReferenceUID", "").rstrip("\x00 ")
        return decision, series_route(decision, image_series_uid=images), frame if is_valid_uid(frame) else None

    def _reroute_open_series(self) -> None:
        """Route every open series again (after a reload: the new rules apply to series not complete yet)."""
        for s in self.db.list_series(SeriesState.OPEN, limit=100_000):
            paths = self.db.instance_paths(s.series_uid)
            if paths:
                with self._route_lock:
                    self._unrouted.add(s.series_uid)
                self._route_queue.put((s.series_uid, paths[0], s.sop_class_uid))

    # -- series completion ------------------------------------------------------------------------------------
    def _monitor_loop(self) -> None:
        while not self._stop.wait(self.config.series.check_interval_seconds):
            try:
                self.complete_due(time.time())
            except Exception:  # noqa: BLE001
                log.exception("series completion pass failed")

    def complete_due(self, now: float, *, triggers: Sequence[series.Trigger] | None = None) -> list[int]:
        """Close every open series a completion trigger fires for (the ``[series]`` ones, or ``triggers``); queue
        the job its route names."""
        job_ids = []
        active = series.triggers(self.config.series) if triggers is None else triggers
        for s, trigger in series.due(self.db, now, active):
            with self._unindexed_lock:
                if s.series_uid in self._unindexed:
                    continue  # an acknowledged instance of it is not in the index yet
            with self._route_lock:
                if s.series_uid in self._unrouted:
                    continue  # its quiet period may depend on the rule it matches
            route_ = series.stored_route(s)
            if route_ is None:  # routing failed when it opened: route it now
                paths = self.db.instance_paths(s.series_uid)
                if not paths:
                    continue
                route_ = self._route(self.config, paths[0], s.sop_class_uid)[1]  # (its frame is not kept)
            done = series.complete(self.db, s, route_, trigger, now)
            if done.job_id is not None and route_.job is not None:
                job = route_.job
                queued_job = kinds.queued(job.kind, job.params)
                what = queued_job.describe(job.depends_on)
                job_ids.append(done.job_id)
                self._audit_received(s, "job")
                self.db.audit("series complete", series_uid=s.series_uid,
                              detail={"instances": s.instance_count, "rule": job.rule, **what,
                                      "job_id": done.job_id, "calling_ae": s.calling_ae})
                log.info(queued_job.completed_message,
                         extra={"series_uid": s.series_uid, "instances": s.instance_count, "trigger": done.trigger,
                                "rule": job.rule, **what, "job_id": done.job_id})
            elif route_.job is None:
                if done.closed:
                    self._audit_received(s, route_.state.value)
                log.info("series complete, no job", extra={"series_uid": s.series_uid, "reason": route_.reason,
                                                           "instances": s.instance_count})
        if job_ids and self.dispatcher is not None:
            self.dispatcher.wake()
        return job_ids

    def _audit_received(self, s: SeriesRow, outcome: str) -> None:
        """Audit "received": who sent the series (AE titles, addresses, counts; UIDs only, no PHI)."""
        self.metrics.series_completed.labels(outcome=outcome).inc()
        senders = self.db.series_senders(s.series_uid)
        self.db.audit("received", actor=",".join(sorted({x["calling_ae"] for x in senders})),
                      series_uid=s.series_uid,
                      detail={"study_uid": s.study_uid, "modality": s.modality, "sop_class_uid": s.sop_class_uid,
                              "instances": sum(x["instances"] for x in senders),
                              "bytes": sum(x["bytes"] for x in senders), "senders": senders,
                              "outcome": outcome, "generation": s.generation + 1})


def run_forever(config: NodeConfig, *, reload: Callable[[], NodeConfig] | None = None,
                http: Callable[[Node], Any] | None = None) -> int:
    """``dicomnode serve``: start, wait for SIGTERM/SIGINT (stop) or SIGHUP (reload), stop cleanly."""
    import signal

    node = Node(config, reload=reload, http=http)
    stop = threading.Event()
    hup = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if reload is not None:
        signal.signal(signal.SIGHUP, lambda *_: hup.set())
    node.start()
    try:
        while not stop.is_set():
            stop.wait(0.5)
            if hup.is_set():
                hup.clear()
                try:
                    node.reload_config(actor="SIGHUP")
                    log.info("configuration reloaded")
                except Exception as e:  # noqa: BLE001 - keep the old config
                    log.error("configuration reload refused; keeping the running configuration: %s", e)
    finally:
        node.stop()
    return 0
