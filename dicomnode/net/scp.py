"""The receiving edge: a C-ECHO / C-STORE SCP that commits every instance to the spool before answering.

:class:`StorageSCP` runs a pynetdicom association server. pynetdicom negotiates associations
(presentation contexts for every storage SOP class, uncompressed and compressed transfer syntaxes),
and this module adds:

* **Peer policy** (on A-ASSOCIATE-RQ): a wrong called AE title is rejected (permanent, "called AE
  title not recognised"); when ``peers`` is given, an unknown calling AE title or an address that
  does not match the peer's ``host`` is rejected (permanent, "calling AE title not recognised");
  while ``admit()`` returns a reason (e.g. the disk watermark) or the SCP is stopping, new
  associations are rejected as transient ("temporary congestion"). Each refusal is one log line
  naming the calling/called AE, the address and the reason, and one :mod:`~dicomnode.net.events` event
  (``on_event``): counters never depend on log wording.
* **C-STORE**: the header attributes needed to place the instance are read from the raw data set
  bytes (:mod:`dicomnode.net._header`), the UIDs are checked, and the data set is streamed as
  received into :meth:`dicomnode.store.spool.Spool.store` (temp file, fsync, link, fsync folder).
  Only then is ``sink`` called and the success status sent.
* **A fast receive path** (:mod:`dicomnode.net._fastdul`, on by default): PDUs are read with
  ``recv_into`` into a reused buffer and data set fragments go straight to the temp file; pynetdicom's
  stock path (``fast_receive=False``) does the same work through its ``EVT_C_STORE`` handler. The fast
  path mirrors private parts of one pynetdicom release: on another, :meth:`StorageSCP.start` logs
  ``fast receive path refused`` with the reason and uses the stock path (:attr:`StorageSCP.receive_path`).

C-STORE statuses (:class:`StoreStatus`):

========  =========================  ========================================================
status    name                       when
========  =========================  ========================================================
0x0000    SUCCESS                    committed (also for a resent SOP Instance UID: kept once)
0xA700    OUT_OF_RESOURCES           :class:`~dicomnode.errors.SpoolFullError` (disk full, I/O)
0xA900    DATASET_MISMATCH           data set SOP Class / Instance UID differ from the command
0xC210    CANNOT_UNDERSTAND          the data set does not parse to its end (a wrong length, an
                                     element out of order, sequences nested too deep, a deflated
                                     data set that inflates past 200:1); nothing is stored
0xC211    PROCESSING_FAILURE         any other exception (logged); the SCP keeps serving
0xC212    INVALID_UID                a UID (command's Affected SOP Instance UID, data set's
                                     SOP Class / Study / Series / SOP Instance UID) breaks the
                                     UID grammar or is missing; nothing is written
0x0122    SOP_CLASS_NOT_SUPPORTED    the request came on a context that was not accepted, or its SOP Class
                                     UID is not that context's abstract syntax
========  =========================  ========================================================
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import itertools
import logging
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom.uid import AllTransferSyntaxes
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from dicomnode.errors import InvalidUIDError, SpoolFullError
from dicomnode.net._fastdul import (C_ECHO_RQ, C_STORE_RQ, Command, FastAssociation, FastDUL, MessageHandler,
                                   fast_path_refusal, peer_log_limit)
from dicomnode.net._header import HeaderFields, HeaderScanner, check_dataset_file
from dicomnode.net.events import AssociationRefused, RefusalKind, ScpEvent, StoreRefused
from dicomnode.store.spool import Spool, StoredInstance
from dicomnode.uids import check_uid

__all__ = ["PeerRule", "StorageSCP", "StoreStatus", "TRANSFER_SYNTAXES", "main"]

log = logging.getLogger(__name__)

TRANSFER_SYNTAXES: tuple[str, ...] = tuple(str(uid) for uid in AllTransferSyntaxes)
"""Transfer syntaxes accepted for every storage SOP class: implicit / explicit VR little endian,
explicit VR big endian, deflated, JPEG (baseline, extended, lossless P14 and SV1), JPEG-LS
(lossless, near-lossless), JPEG 2000 (lossless, lossy, multi-component), HTJ2K, RLE, MPEG-2/4,
HEVC and SMPTE ST 2110 (pydicom's ``AllTransferSyntaxes``). Instances are stored in the transfer
syntax they were sent in."""


class StoreStatus(IntEnum):
    """C-STORE response statuses sent by :class:`StorageSCP` (see the module docstring)."""

    SUCCESS = 0x0000
    OUT_OF_RESOURCES = 0xA700
    DATASET_MISMATCH = 0xA900
    CANNOT_UNDERSTAND = 0xC210
    PROCESSING_FAILURE = 0xC211
    INVALID_UID = 0xC212
    SOP_CLASS_NOT_SUPPORTED = 0x0122


# A-ASSOCIATE-RJ (result, source, reason)
_RJ_CALLING_AE = (0x01, 0x01, 0x03)  # permanent, service user, calling AE title not recognised
_RJ_CALLED_AE = (0x01, 0x01, 0x07)  # permanent, service user, called AE title not recognised
_RJ_BUSY = (0x02, 0x03, 0x01)  # transient, service provider (presentation), temporary congestion


@dataclass(frozen=True, slots=True)
class PeerRule:
    """A sender allowed to open associations.

    Attributes
    ----------
    ae_title : str
        Calling AE title of the sender.
    host : str or None
        Address the sender must connect from: an IP address, a network in CIDR notation
        (``10.1.2.0/24``) or a host name (resolved on each association request); ``None`` allows
        any address.
    """

    ae_title: str
    host: str | None = None

    def __post_init__(self) -> None:
        title = self.ae_title.strip()
        if not title or len(title) > 16 or "\\" in title:
            raise ValueError(f"PeerRule.ae_title = {self.ae_title!r}: use 1 to 16 characters without a backslash")

    def matches_host(self, address: str) -> bool:
        """Return whether a connection from `address` fits this rule's ``host``."""
        if self.host is None:
            return True
        try:
            peer_ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        try:
            return peer_ip in ipaddress.ip_network(self.host, strict=False)
        except ValueError:
            pass
        try:
            infos = socket.getaddrinfo(self.host, None, proto=socket.IPPROTO_TCP)
        except OSError:
            return False
        return any(ipaddress.ip_address(info[4][0]) == peer_ip for info in infos)


@dataclass(slots=True)
class _AssocStats:
    """Counters of one association, logged when it ends."""

    calling_ae: str
    peer: str
    started: float
    stored: int = 0
    duplicates: int = 0
    failed: int = 0
    bytes_stored: int = 0


class _Server(ThreadedAssociationServer):
    """Association server that uses the fast DUL and does not block its shutdown on threads."""

    daemon_threads = True
    block_on_close = False
    scp: StorageSCP

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept a connection; the TLS handshake happens later, in the association's own thread.

        pynetdicom handshakes in the accept loop, so one slow or silent client would hold up every
        other connection; with ``do_handshake_on_connect=False`` the first read does it instead.
        """
        client, address = self.socket.accept()
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        return client, address


class _FastRequestHandler(RequestHandler):
    """Creates :class:`FastAssociation` / :class:`FastDUL` acceptors with TCP_NODELAY set."""

    server: _Server

    def _create_association(self) -> FastAssociation:  # mirrors pynetdicom 3.0.4 RequestHandler
        scp = self.server.scp
        try:
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        if scp.network_timeout_s is not None:
            self.request.settimeout(scp.network_timeout_s)

        assoc = FastAssociation(self.ae, "acceptor")
        assoc._server = self.server
        assoc.dul = FastDUL(assoc, scp._handlers_for, scp._is_stopping)
        assoc.dul.max_pdata_bytes = scp.max_pdu_bytes
        assoc.network_timeout = assoc.network_timeout  # re-applies the timeout to the new DUL's idle timer
        assoc.acse_timeout = assoc.acse_timeout  # and the ARTIM timeout to its ARTIM timer
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"

        sock = AssociationSocket(assoc, client_socket=self.request)
        assoc.set_socket(sock)
        assoc.acceptor.maximum_length = self.ae.maximum_pdu_size
        assoc.acceptor.ae_title = self.server.ae_title
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = self.ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = self.ae.implementation_version_name
        # shared, not deep-copied as pynetdicom does (27 ms for 171 contexts x 39 transfer syntaxes, per
        # association): negotiate_as_acceptor() only reads them and builds new context objects
        assoc.acceptor.supported_contexts = self.server.contexts
        assoc.requestor.address_info = self.remote
        for event in self.server._handlers:
            if event.is_intervention and self.server._handlers[event]:
                assoc.bind(event, *self.server._handlers[event])
            elif isinstance(event, evt.NotificationEvent):
                for handler in self.server._handlers[event]:
                    assoc.bind(event, handler[0], handler[1])  # type: ignore[index]
        scp._register(assoc)
        return assoc

    def handle(self) -> None:
        if self.server.scp._is_stopping():  # accepted just as stop() began: close instead of serving
            try:
                self.request.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if isinstance(self.request, ssl.SSLSocket) and not self._tls_handshake():
            return
        super().handle()

    def _tls_handshake(self) -> bool:
        """Handshake now, in this association's thread, so that a failure gets a log line saying who and why
        (pynetdicom would only see a dead socket). False when it failed; the connection is then closed."""
        scp = self.server.scp
        address, port = self.client_address[0], self.client_address[1]
        try:
            if scp.network_timeout_s is not None:
                self.request.settimeout(scp.network_timeout_s)
            self.request.do_handshake()
            return True
        except (ssl.SSLError, OSError) as exc:
            if isinstance(exc, ssl.SSLEOFError) or "UNEXPECTED_EOF" in str(exc):
                # connected and closed without a word: a port probe (health check, load balancer), not a peer
                log.debug("connection from %s:%s closed before a TLS handshake", address, port)
                with contextlib.suppress(OSError):
                    self.request.close()
                return False
            why = getattr(exc, "reason", None) or exc.__class__.__name__
            if isinstance(exc, ssl.SSLError) and "WRONG_VERSION_NUMBER" in str(exc):
                why = "not TLS (a plain DICOM peer?)"
            log.warning(
                "TLS handshake failed from %s:%s: %s; connection closed", address, port, why,
                extra={"peer": f"{address}:{port}", "reason": str(why)},
            )
            scp._emit(AssociationRefused(RefusalKind.TLS, f"{address}:{port}", str(why)))
            with contextlib.suppress(OSError):
                self.request.close()
            return False


class _StockRequestHandler(_FastRequestHandler):
    """pynetdicom's own association classes (``fast_receive=False``), with TCP_NODELAY set."""

    def _create_association(self):  # type: ignore[no-untyped-def]  # noqa: ANN202
        try:
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        assoc = RequestHandler._create_association(self)
        self.server.scp._register(assoc)
        return assoc


def _shutdown_socket(assoc: Any) -> None:
    raw = getattr(assoc.dul.socket, "socket", None)
    if raw is not None:
        try:
            raw.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class StorageSCP:
    """C-ECHO and C-STORE SCP committing every received instance to a :class:`Spool`.

    Parameters
    ----------
    ae_title : str
        Our AE title; associations calling another title are rejected.
    bind : str
        Address to listen on (``"0.0.0.0"`` for all IPv4 interfaces).
    port : int
        TCP port; ``0`` picks a free one (see :attr:`port`).
    spool : Spool
        Where instances are committed.
    sink : callable
        Called with each :class:`StoredInstance` after its durable commit and before the success
        status is sent, from the association's receiving thread; it must be fast (put it on a
        queue). Also called for duplicates (``duplicate=True``). If it raises, the sender gets
        0xC211 and will resend (which then arrives as a duplicate).
    peers : sequence of PeerRule, optional
        Allowed senders; empty (default) admits any calling AE from any address.
    max_pdu_bytes : int, optional
        Maximum PDU size we receive; ``0`` (default) = unlimited, which is fastest.
    ssl_context : ssl.SSLContext, optional
        Server-side TLS context; ``None`` = plain TCP.
    admit : callable, optional
        Returns a reason to refuse new associations (e.g. low disk space), or ``None`` to admit.
    max_associations : int, optional
        Concurrent associations before new ones are rejected (transient). Default 32.
    max_associations_per_peer : int, optional
        Concurrent associations from one address before its new ones are rejected (transient), so that one
        peer cannot take every slot. Default 8.
    network_timeout_s : float, optional
        An association silent for this long is aborted. Default 60 s.
    artim_timeout_s : float, optional
        A connection that sends no A-ASSOCIATE-RQ within this time is closed (the ARTIM timer; also the
        time given to release and abort exchanges). Default 30 s.
    fast_receive : bool, optional
        Use the fast receive path (default) or pynetdicom's stock one. The fast path is refused (one warning,
        then the stock path) on a pynetdicom release it was not written for; :attr:`receive_path` says which
        path runs.
    on_event : callable, optional
        Called with an :data:`~dicomnode.net.events.ScpEvent` for each refused association, failed TLS handshake
        and refused C-STORE, from the association's thread; it must be fast. Its exceptions are logged and ignored.
    """

    def __init__(
        self,
        *,
        ae_title: str,
        bind: str,
        port: int,
        spool: Spool,
        sink: Callable[[StoredInstance], None],
        peers: Sequence[PeerRule] = (),
        max_pdu_bytes: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        admit: Callable[[], str | None] | None = None,
        max_associations: int = 32,
        max_associations_per_peer: int = 8,
        network_timeout_s: float | None = 60.0,
        artim_timeout_s: float = 30.0,
        fast_receive: bool = True,
        on_event: Callable[[ScpEvent], None] | None = None,
    ) -> None:
        title = ae_title.strip()
        if not title or len(title) > 16 or "\\" in title:
            raise ValueError(f"ae_title = {ae_title!r}: use 1 to 16 characters without a backslash")
        if max_pdu_bytes < 0:
            raise ValueError(f"max_pdu_bytes = {max_pdu_bytes}: use 0 (unlimited) or a size in bytes")
        if max_associations < 1:
            raise ValueError(f"max_associations = {max_associations}: use 1 or more")
        if max_associations_per_peer < 1:
            raise ValueError(f"max_associations_per_peer = {max_associations_per_peer}: use 1 or more")
        if artim_timeout_s <= 0:
            raise ValueError(f"artim_timeout_s = {artim_timeout_s}: use seconds > 0, e.g. 30")
        self.ae_title = title
        self.bind = bind
        self._requested_port = port
        self.spool = spool
        self.sink = sink
        self.peers = tuple(peers)
        self.max_pdu_bytes = max_pdu_bytes
        self.ssl_context = ssl_context
        self.admit = admit
        self.max_associations = max_associations
        self.max_associations_per_peer = max_associations_per_peer
        self.network_timeout_s = network_timeout_s
        self.artim_timeout_s = artim_timeout_s
        self.fast_receive = fast_receive
        self.receive_path = "fast" if fast_receive else "stock"  # the path in use, settled by start()
        self.on_event = on_event
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._assocs_lock = threading.Lock()
        self._assocs: set[Any] = set()
        self._stats: dict[int, _AssocStats] = {}

    # -- life cycle ----------------------------------------------------------------------------

    def set_peers(self, peers: Sequence[PeerRule]) -> None:
        """Replace the allowed senders (e.g. on a configuration reload); applies to new associations.

        Parameters
        ----------
        peers : sequence of PeerRule
            The new list; empty admits any calling AE from any address.
        """
        self.peers = tuple(peers)  # one assignment: a request sees the old list or the new one
        log.info("peer list replaced", extra={"peers": len(self.peers)})

    @property
    def port(self) -> int:
        """The TCP port actually listened on (useful with ``port=0``)."""
        if self._server is None:
            raise RuntimeError("StorageSCP.port: call start() first")
        return int(self._server.server_address[1])

    def _make_ae(self) -> AE:
        ae = AE(ae_title=self.ae_title)
        ae.maximum_pdu_size = self.max_pdu_bytes
        ae.maximum_associations = self.max_associations + 8  # ours is checked first, with a reason in the log
        ae.network_timeout = self.network_timeout_s
        ae.acse_timeout = self.artim_timeout_s
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, list(TRANSFER_SYNTAXES))
        ae.add_supported_context(Verification)
        return ae

    def start(self) -> None:
        """Bind, listen and serve in background threads; returns at once.

        Raises
        ------
        OSError
            If the address cannot be bound (e.g. the port is in use).
        RuntimeError
            If already started.
        """
        if self._server is not None:
            raise RuntimeError("StorageSCP.start: already started")
        self._stopping.clear()
        fast = self.fast_receive
        if fast:
            refusal = fast_path_refusal()
            if refusal is not None:
                log.warning("fast receive path refused: %s; receiving through pynetdicom's stock path", refusal,
                            extra={"reason": refusal, "receive_path": "stock"})
                fast = False
        self.receive_path = "fast" if fast else "stock"
        ae = self._make_ae()
        handlers = [(evt.EVT_REQUESTED, self._on_requested), (evt.EVT_RELEASED, self._on_ended),
                    (evt.EVT_ABORTED, self._on_ended)]
        if not fast:
            handlers.append((evt.EVT_C_STORE, self._on_stock_c_store))
        server = ae.make_server(
            (self.bind, self._requested_port),
            ae_title=self.ae_title,
            ssl_context=self.ssl_context,
            evt_handlers=handlers,
            server_class=_Server,
            request_handler=_FastRequestHandler if fast else _StockRequestHandler,
        )
        server.scp = self
        self._server = server
        if isinstance(getattr(ae, "_servers", None), list):  # so that ae.shutdown() would find it too
            ae._servers.append(server)
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name=f"StorageSCP@{self.port}", daemon=True
        )
        self._thread.start()
        log.info(
            "storage SCP listening on %s:%d as %s (%s receive path)", self.bind, self.port, self.ae_title,
            self.receive_path,
            extra={"ae_title": self.ae_title, "address": f"{self.bind}:{self.port}",
                   "tls": self.ssl_context is not None, "max_pdu_bytes": self.max_pdu_bytes,
                   "receive_path": self.receive_path},
        )

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop accepting, let stores in flight finish, then shut down.

        New association requests are refused at once; established associations finish the
        message they are receiving (it is committed and answered) and are then aborted, so the
        sender keeps whatever it has not been acknowledged for. After `timeout_s`, connections
        still open are closed.

        Parameters
        ----------
        timeout_s : float, optional
            Seconds to wait for associations to end. Default 30 s.
        """
        server = self._server
        if server is None:
            return
        deadline = time.monotonic() + timeout_s
        self._stopping.set()
        server.shutdown()  # stops the accept loop and closes the listening socket
        if self._thread is not None:
            self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
        for assoc in self._live_assocs():
            dul = assoc.dul
            if not assoc.is_established:  # still negotiating (or silent): nothing in flight to finish
                _shutdown_socket(assoc)
            elif isinstance(dul, FastDUL):
                dul.wake()  # it aborts the association once the message in progress is answered
            else:  # stock path: the abort may cut a message in progress (the sender resends it)
                assoc.abort(block=False)
        for assoc in self._live_assocs():
            assoc.join(timeout=max(0.0, deadline - time.monotonic()))
        for assoc in self._live_assocs():
            log.warning("association %s still open after %.1f s, closing its connection", assoc.name, timeout_s)
            _shutdown_socket(assoc)
            assoc.join(timeout=2.0)
        self._server = None
        self._thread = None
        log.info("storage SCP stopped", extra={"ae_title": self.ae_title})

    def __enter__(self) -> StorageSCP:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- association bookkeeping ---------------------------------------------------------------

    def _is_stopping(self) -> bool:
        return self._stopping.is_set()

    def _emit(self, event: ScpEvent) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(event)
        except Exception:  # noqa: BLE001 - a listener never changes what the peer is answered
            log.exception("SCP event listener failed", extra={"event": type(event).__name__})

    def _refused(self, status: int, calling_ae: str, peer_host: str, reason: str) -> None:
        self._emit(StoreRefused(int(status), calling_ae, peer_host, reason))

    def _register(self, assoc: Any) -> None:
        with self._assocs_lock:
            self._assocs = {a for a in self._assocs if a.is_alive()}
            self._assocs.add(assoc)
        if self._stopping.is_set():
            # registered after stop() took its snapshot: end on our own (the peer sees the connection close)
            _shutdown_socket(assoc)

    def _live_assocs(self) -> list[Any]:
        with self._assocs_lock:
            return [a for a in self._assocs if a.is_alive()]

    def _stats_for(self, assoc: Any) -> _AssocStats:
        stats = self._stats.get(id(assoc))
        if stats is None:
            requestor = assoc.requestor
            primitive = requestor.primitive
            calling = primitive.calling_ae_title if primitive is not None else requestor.ae_title
            stats = _AssocStats(
                calling_ae=str(calling).strip(),
                peer=f"{requestor.address}:{requestor.port}",
                started=time.monotonic(),
            )
            self._stats[id(assoc)] = stats
        return stats

    def _on_ended(self, event: evt.Event) -> None:
        stats = self._stats.pop(id(event.assoc), None)
        if stats is None:
            return
        seconds = time.monotonic() - stats.started
        log.info(
            "association from %s (%s) %s: %d stored, %d duplicates, %d failed, %.1f MB in %.2f s",
            stats.calling_ae, stats.peer, "released" if event.event is evt.EVT_RELEASED else "aborted",
            stats.stored, stats.duplicates, stats.failed, stats.bytes_stored / 1e6, seconds,
            extra={"calling_ae": stats.calling_ae, "peer": stats.peer, "stored": stats.stored,
                   "duplicates": stats.duplicates, "failed": stats.failed, "bytes": stats.bytes_stored,
                   "duration_s": round(seconds, 3), "ended": event.event.name},
        )

    # -- peer policy ---------------------------------------------------------------------------

    def _load(self, address: str, this: Any) -> tuple[int, int]:
        """(associations accepted and still alive, those of them from ``address``), ``this`` not counted."""
        live = [a for a in self._live_assocs() if a is not this and id(a) in self._stats]
        return len(live), sum(1 for a in live if str(a.requestor.address) == address)

    def _refusal(self, calling: str, called: str, address: str,
                 assoc: Any = None) -> tuple[tuple[int, int, int], str] | None:
        if self._stopping.is_set():
            return _RJ_BUSY, "the node is stopping"
        if called != self.ae_title:
            return _RJ_CALLED_AE, f"called AE title {called!r} is not ours ({self.ae_title!r})"
        peers = self.peers
        if peers:
            rules = [rule for rule in peers if rule.ae_title.strip() == calling]
            if not rules:
                return _RJ_CALLING_AE, f"calling AE title {calling!r} is not a configured peer"
            if not any(rule.matches_host(address) for rule in rules):
                hosts = ", ".join(str(rule.host) for rule in rules)
                return _RJ_CALLING_AE, f"calling AE title {calling!r} may only connect from {hosts}"
        total, from_peer = self._load(address, assoc)
        if total >= self.max_associations:
            return _RJ_BUSY, f"{total} associations open (node.max_associations = {self.max_associations})"
        if from_peer >= self.max_associations_per_peer:
            return _RJ_BUSY, (f"{from_peer} associations open from {address} "
                              f"(node.max_associations_per_peer = {self.max_associations_per_peer})")
        if self.admit is not None:
            reason = self.admit()
            if reason:
                return _RJ_BUSY, reason
        return None

    def _on_requested(self, event: evt.Event) -> None:
        assoc = event.assoc
        primitive = assoc.requestor.primitive
        calling = str(primitive.calling_ae_title).strip()
        called = str(primitive.called_ae_title).strip()
        address = str(assoc.requestor.address)
        port = assoc.requestor.port
        try:
            refusal = self._refusal(calling, called, address, assoc)
        except Exception as exc:  # noqa: BLE001 - a broken admit() must not accept by accident
            log.exception("association policy check failed")
            refusal = (_RJ_BUSY, f"policy check failed: {exc}")
        if refusal is None:
            log.info(
                "association accepted from %s (%s:%s) to %s", calling, address, port, called,
                extra={"calling_ae": calling, "called_ae": called, "peer": f"{address}:{port}"},
            )
            self._stats_for(assoc)
            return
        (result, source, reason), why = refusal
        log.warning(
            "association rejected: calling AE %r from %s:%s to called AE %r: %s",
            calling, address, port, called, why,
            extra={"calling_ae": calling, "called_ae": called, "peer": f"{address}:{port}",
                   "reason": why, "permanent": result == 0x01},
        )
        self._emit(AssociationRefused(RefusalKind.PERMANENT if result == 0x01 else RefusalKind.TRANSIENT,
                                      f"{address}:{port}", why, calling, called))
        assoc.acse.send_reject(result, source, reason)
        evt.trigger(assoc, evt.EVT_REJECTED, {})
        assoc.kill()  # waits until the A-ASSOCIATE-RJ is sent and the connection closed

    # -- DIMSE handlers (fast path) ------------------------------------------------------------

    def _handlers_for(self, assoc: Any) -> dict[int, MessageHandler]:
        stats = self._stats_for(assoc)
        contexts = {cx.context_id: cx for cx in assoc.accepted_contexts}
        calling_ae = stats.calling_ae
        peer_host = str(assoc.requestor.address)

        def on_echo(context_id: int, command: Command, stream: Iterator[memoryview] | None) -> tuple[int, str]:
            return 0x0000, ""

        def on_store(context_id: int, command: Command, stream: Iterator[memoryview] | None) -> tuple[int, str]:
            context = contexts.get(context_id)
            if context is None or stream is None:
                stats.failed += 1
                self._refused(StoreStatus.SOP_CLASS_NOT_SUPPORTED, calling_ae, peer_host,
                              "no accepted presentation context or no data set")
                return StoreStatus.SOP_CLASS_NOT_SUPPORTED, "no accepted presentation context or no data set"
            if command.sop_class_uid.strip() != str(context.abstract_syntax):
                stats.failed += 1
                if peer_log_limit.allow(peer_host):
                    log.warning(
                        "C-STORE refused (0x%04X) from %s at %s: SOP Class UID %s sent on the presentation context "
                        "of %s", StoreStatus.SOP_CLASS_NOT_SUPPORTED, calling_ae, peer_host,
                        command.sop_class_uid.encode("ascii", "replace").decode()[:64], context.abstract_syntax,
                        extra={"calling_ae": calling_ae, "peer_host": peer_host,
                               "status": StoreStatus.SOP_CLASS_NOT_SUPPORTED},
                    )
                self._refused(StoreStatus.SOP_CLASS_NOT_SUPPORTED, calling_ae, peer_host,
                              "SOP class differs from its presentation context")
                return StoreStatus.SOP_CLASS_NOT_SUPPORTED, "SOP class differs from its presentation context"
            status, comment = self._store(
                command.sop_class_uid, command.sop_instance_uid, str(context.transfer_syntax[0]),
                stream, calling_ae, peer_host, stats,
            )
            return status, comment

        return {C_ECHO_RQ: on_echo, C_STORE_RQ: on_store}

    # -- the store itself (both paths) ---------------------------------------------------------

    def _store(
        self,
        command_sop_class: str,
        command_sop_instance: str,
        transfer_syntax: str,
        stream: Iterator[bytes | memoryview],
        calling_ae: str,
        peer_host: str,
        stats: _AssocStats,
    ) -> tuple[int, str]:
        """Check, commit, report; returns (status, error comment). Never raises except network errors."""
        from dicomnode.net._fastdul import Interrupted, PeerGone, ProtocolError

        sop = command_sop_instance
        try:
            sop = check_uid(command_sop_instance, "AffectedSOPInstanceUID")
            scanner = HeaderScanner(transfer_syntax)
            fields: HeaderFields | None = None
            iterator = iter(stream)
            while fields is None:
                fragment = next(iterator, None)
                fields = scanner.feed(fragment if fragment is not None else b"", last=fragment is None)
            check_uid(fields.sop_class_uid, "SOPClassUID")
            check_uid(fields.study_uid, "StudyInstanceUID")
            check_uid(fields.series_uid, "SeriesInstanceUID")
            check_uid(fields.sop_instance_uid, "SOPInstanceUID")
            if fields.sop_instance_uid != sop or fields.sop_class_uid != command_sop_class.strip():
                stats.failed += 1
                log.warning(
                    "C-STORE refused (0x%04X): data set SOP Instance/Class UID %s / %s differ from the "
                    "command's %s / %s (from %s at %s)", StoreStatus.DATASET_MISMATCH, fields.sop_instance_uid,
                    fields.sop_class_uid, sop, command_sop_class, calling_ae, peer_host,
                    extra={"sop_instance_uid": sop, "calling_ae": calling_ae, "peer_host": peer_host},
                )
                self._refused(StoreStatus.DATASET_MISMATCH, calling_ae, peer_host,
                              "data set UIDs differ from the command")
                return StoreStatus.DATASET_MISMATCH, "data set UIDs differ from the command"
            stored = self.spool.store(
                sop_class_uid=command_sop_class,
                sop_instance_uid=sop,
                transfer_syntax=transfer_syntax,
                study_uid=fields.study_uid,
                series_uid=fields.series_uid,
                modality=fields.modality,
                dataset_bytes=itertools.chain(scanner.received, iterator),
                calling_ae=calling_ae,
                peer_host=peer_host,
                verify=lambda path, offset: check_dataset_file(path, offset, transfer_syntax),
            )
        except InvalidUIDError as exc:
            stats.failed += 1
            log.warning(
                "C-STORE refused (0x%04X) from %s at %s: %s", StoreStatus.INVALID_UID, calling_ae, peer_host,
                exc, extra={"calling_ae": calling_ae, "peer_host": peer_host, "status": StoreStatus.INVALID_UID},
            )
            self._refused(StoreStatus.INVALID_UID, calling_ae, peer_host, str(exc))
            return StoreStatus.INVALID_UID, "invalid UID"
        except SpoolFullError as exc:
            stats.failed += 1
            log.error(
                "C-STORE refused (0x%04X) for %s from %s: %s", StoreStatus.OUT_OF_RESOURCES, sop, calling_ae, exc,
                extra={"sop_instance_uid": sop, "calling_ae": calling_ae, "status": StoreStatus.OUT_OF_RESOURCES},
            )
            self._refused(StoreStatus.OUT_OF_RESOURCES, calling_ae, peer_host, str(exc))
            return StoreStatus.OUT_OF_RESOURCES, "out of resources: cannot store now"
        except (PeerGone, Interrupted, ProtocolError):
            raise
        except ValueError as exc:
            stats.failed += 1
            log.warning(
                "C-STORE refused (0x%04X) for %s from %s: the data set does not parse: %s",
                StoreStatus.CANNOT_UNDERSTAND, sop, calling_ae, exc,
                extra={"sop_instance_uid": sop, "calling_ae": calling_ae, "status": StoreStatus.CANNOT_UNDERSTAND},
            )
            self._refused(StoreStatus.CANNOT_UNDERSTAND, calling_ae, peer_host, f"the data set does not parse: {exc}")
            return StoreStatus.CANNOT_UNDERSTAND, "the data set does not parse to its end"
        except Exception:  # noqa: BLE001 - the SCP keeps serving whatever happens
            stats.failed += 1
            log.exception(
                "C-STORE failed (0x%04X) for %s from %s", StoreStatus.PROCESSING_FAILURE, sop, calling_ae,
                extra={"sop_instance_uid": sop, "calling_ae": calling_ae, "status": StoreStatus.PROCESSING_FAILURE},
            )
            self._refused(StoreStatus.PROCESSING_FAILURE, calling_ae, peer_host, "internal error")
            return StoreStatus.PROCESSING_FAILURE, "internal error"
        if stored.duplicate:
            stats.duplicates += 1
        else:
            stats.stored += 1
            stats.bytes_stored += stored.size_bytes
        try:
            self.sink(stored)
        except Exception:  # noqa: BLE001
            log.exception(
                "sink failed for %s (committed at %s); answering 0x%04X so the sender resends",
                stored.sop_instance_uid, stored.path, StoreStatus.PROCESSING_FAILURE,
                extra={"sop_instance_uid": stored.sop_instance_uid, "series_uid": stored.series_uid},
            )
            self._refused(StoreStatus.PROCESSING_FAILURE, calling_ae, peer_host, "internal error after commit")
            return StoreStatus.PROCESSING_FAILURE, "internal error after commit"
        return StoreStatus.SUCCESS, ""

    # -- pynetdicom's stock path ---------------------------------------------------------------

    def _on_stock_c_store(self, event: evt.Event) -> int:
        request = event.request
        raw = request.DataSet
        data = raw.getvalue() if isinstance(raw, BytesIO) else bytes(raw or b"")
        stats = self._stats_for(event.assoc)
        status, _ = self._store(
            str(request.AffectedSOPClassUID or ""), str(request.AffectedSOPInstanceUID or ""),
            str(event.context.transfer_syntax), iter((data,)), stats.calling_ae,
            str(event.assoc.requestor.address), stats,
        )
        return int(status)


# -- a small entry point, for benchmarks and manual tests ---------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run a StorageSCP alone: ``python -m dicomnode.net.scp --port P --data-dir D --ae-title A``.

    Instances go to ``<data-dir>/instances``; nothing else of the node runs. Stops on SIGTERM/SIGINT.
    """
    parser = argparse.ArgumentParser(prog="python -m dicomnode.net.scp", description=main.__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--ae-title", default="DICOMNODE")
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--max-pdu-bytes", type=int, default=0)
    parser.add_argument("--stock", action="store_true", help="use pynetdicom's stock receive path")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    scp = StorageSCP(
        ae_title=args.ae_title, bind=args.bind, port=args.port, spool=Spool(args.data_dir / "instances"),
        sink=lambda stored: None, max_pdu_bytes=args.max_pdu_bytes, fast_receive=not args.stock,
    )
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    scp.start()
    try:
        done.wait()
    finally:
        scp.stop(timeout_s=10.0)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
