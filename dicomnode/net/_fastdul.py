"""A faster receive path for pynetdicom associations (acceptor side).

pynetdicom stays the DICOM stack: its state machine negotiates, releases and aborts associations,
and its service classes remain the fallback. What this module replaces is the hot loop of an
established association:

* :class:`FastDUL` is a ``DULServiceProvider`` whose reactor waits on the socket and on a wake-up
  socket pair with ``select`` instead of polling with a 1 ms sleep, and reads PDUs with
  ``recv_into`` into one reused buffer instead of 4 KiB ``recv`` calls and copies.
* While the association is established (state Sta6) it hands every P-DATA-TF PDU to a
  :class:`MessageReceiver`, which reads whole DIMSE messages straight from that buffer: the small
  command set is parsed by hand, the data set is passed on as a stream of buffer views (for
  C-STORE: written straight into the spool's temp file), and the response is encoded by hand and
  sent from the same thread. No P-DATA primitive, PDU object or pydicom ``Dataset`` is built.
* :class:`FastAssociation` polls its (now idle) reactor every 5 ms instead of every 1 ms.

Every other PDU (A-ASSOCIATE, A-RELEASE, A-ABORT, and P-DATA outside Sta6) goes through pynetdicom's
own decoding and state machine unchanged.

This path reaches into pynetdicom's private names (``Association._run_reactor``, ``_kill``, ``_is_paused``,
``_reactor_checkpoint``, ``_serve_request``; ``DULServiceProvider._kill_thread``, ``_idle_timer``,
``_process_recv_primitive``, ``_decode_pdu``...; ``RequestHandler._create_association``, ``AE._servers``) and
copies two of its methods, as written in :data:`PYNETDICOM_VERSION`. :func:`fast_path_refusal` says why it must not
run on another release; :class:`~dicomnode.net.scp.StorageSCP` then logs that reason once and receives through
pynetdicom's stock path (``[node] fast_receive = false`` chooses that path outright).
"""

from __future__ import annotations

import logging
import queue
import select
import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ

if TYPE_CHECKING:  # pragma: no cover
    from pynetdicom.transport import AssociationSocket

__all__ = [
    "PYNETDICOM_VERSION",
    "fast_path_refusal",
    "Command",
    "FastAssociation",
    "FastDUL",
    "MessageReceiver",
    "PeerGone",
    "ProtocolError",
    "Interrupted",
    "encode_response",
]

log = logging.getLogger(__name__)

_PDATA = 0x04
_MAX_COMMAND_BYTES = 1 << 20
# Largest PDU body accepted per PDU type before anything is buffered (PS3.8 9.3). An A-ASSOCIATE-RQ/AC with 128
# presentation contexts of 40 transfer syntaxes each stays below 400 kB; A-ASSOCIATE-RJ, A-RELEASE and A-ABORT have
# 4-byte bodies. A P-DATA-TF is capped by the maximum length we announced (see FastDUL.max_pdata_bytes).
MAX_PDU_BYTES_BY_TYPE = {0x01: 1 << 20, 0x02: 1 << 20, 0x03: 4, 0x05: 4, 0x06: 4, 0x07: 4}
_PDATA_OUTSIDE_TRANSFER_BYTES = 1 << 20  # a P-DATA-TF before or after the association is read only to refuse it
_BUFFER_BYTES = 1 << 20
_IDLE_WAIT_S = 0.05

#: the pynetdicom release whose private names and methods this module (and scp's request handler) mirror
PYNETDICOM_VERSION = "3.0.4"

#: (pynetdicom module, class, attribute) the fast path relies on; checked at start with the version
_PRIVATE_NAMES = (
    ("pynetdicom.association", "Association", "_run_reactor"),
    ("pynetdicom.association", "Association", "_serve_request"),
    ("pynetdicom.dul", "DULServiceProvider", "_decode_pdu"),
    ("pynetdicom.dul", "DULServiceProvider", "_process_recv_primitive"),
    ("pynetdicom.dul", "DULServiceProvider", "_is_transport_event"),
    ("pynetdicom.transport", "RequestHandler", "_create_association"),
)


def fast_path_refusal(version: str | None = None) -> str | None:
    """Why the fast receive path must not run with the installed pynetdicom (``None``: it may).

    Parameters
    ----------
    version : str, optional
        The pynetdicom version to judge; default the installed one (``pynetdicom.__version__``).
    """
    import importlib

    import pynetdicom

    found = pynetdicom.__version__ if version is None else version
    if found != PYNETDICOM_VERSION:
        return (f"it was written for pynetdicom {PYNETDICOM_VERSION} and pynetdicom {found} is installed; install "
                f"pynetdicom=={PYNETDICOM_VERSION}, or set [node] fast_receive = false to silence this")
    for module, cls, name in _PRIVATE_NAMES:
        if not hasattr(getattr(importlib.import_module(module), cls, None), name):
            return f"pynetdicom {found} has no {cls}.{name}; reinstall pynetdicom=={PYNETDICOM_VERSION}"
    return None


# DIMSE command fields
C_STORE_RQ = 0x0001
C_ECHO_RQ = 0x0030
C_CANCEL_RQ = 0x0FFF
_NO_DATASET = 0x0101


class PeerLogLimit:
    """At most ``lines`` log lines per peer address in ``window_s`` seconds, then one line saying more were
    dropped: a hostile peer cannot grow the log by more than a few lines per connection."""

    def __init__(self, lines: int = 5, window_s: float = 60.0) -> None:
        self.lines = lines
        self.window_s = window_s
        self._seen: dict[str, tuple[float, int]] = {}

    def allow(self, peer: str) -> bool:
        now = time.monotonic()
        start, n = self._seen.get(peer, (now, 0))
        if now - start > self.window_s:
            start, n = now, 0
        if len(self._seen) > 4096:  # many addresses: forget the old windows
            self._seen = {k: v for k, v in self._seen.items() if now - v[0] <= self.window_s}
        self._seen[peer] = (start, n + 1)
        if n == self.lines:
            log.warning("further protocol errors from %s are not logged for %.0f s", peer, self.window_s,
                        extra={"peer": peer})
        return n < self.lines


peer_log_limit = PeerLogLimit()


class PeerGone(Exception):
    """The connection broke or was closed by the peer (deliberately not an ``OSError``)."""


class ProtocolError(Exception):
    """The peer sent something that breaks the DICOM upper layer or DIMSE protocol."""


class Interrupted(Exception):
    """A PDU other than P-DATA-TF arrived in the middle of a DIMSE message (e.g. an A-ABORT)."""


class SocketReader:
    """Buffered reads from a (possibly TLS) socket into one reused ``bytearray``.

    Parameters
    ----------
    sock : socket.socket
        Connected socket; a timeout set on it bounds every read.
    buffer_bytes : int
        Size of the reused buffer.
    """

    def __init__(self, sock: socket.socket, buffer_bytes: int = _BUFFER_BYTES) -> None:
        self._sock = sock
        self._buf = bytearray(buffer_bytes)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self._is_tls = isinstance(sock, ssl.SSLSocket)

    def buffered(self) -> int:
        """Number of bytes read from the socket but not yet consumed."""
        return self._end - self._start

    def has_input(self) -> bool:
        """Whether a read would not block (buffered or TLS-pending bytes; the socket is not polled)."""
        if self._end > self._start:
            return True
        return self._is_tls and cast(ssl.SSLSocket, self._sock).pending() > 0

    def _fill(self, need_contiguous: int = 1) -> None:
        size = len(self._buf)
        if self._start == self._end:
            self._start = self._end = 0
        elif size - self._start < need_contiguous or size - self._end < 65536:
            n = self._end - self._start
            self._buf[:n] = self._view[self._start : self._end]
            self._start, self._end = 0, n
        try:
            got = self._sock.recv_into(self._view[self._end :])
        except (OSError, ValueError) as exc:  # timeout, reset, closed socket
            raise PeerGone(f"connection lost: {exc}") from exc
        if not got:
            raise PeerGone("connection closed by the peer")
        self._end += got

    def peek(self, n: int) -> memoryview:
        """Return a view of the next `n` bytes (``n`` <= buffer size) without consuming them."""
        while self._end - self._start < n:
            self._fill(n)
        return self._view[self._start : self._start + n]

    def skip(self, n: int) -> None:
        """Consume `n` bytes that are already buffered."""
        self._start += n

    def read(self, n: int) -> bytes:
        """Read exactly `n` bytes (any size) and return a copy."""
        if n <= len(self._buf):
            data = bytes(self.peek(n))
            self._start += n
            return data
        out = bytearray()
        while len(out) < n:
            out += self.take(n - len(out))
        return bytes(out)

    def take(self, n: int) -> memoryview:
        """Consume and return between 1 and `n` bytes as a view, valid until the next read."""
        if self._start == self._end:
            self._fill()
        k = min(n, self._end - self._start)
        view = self._view[self._start : self._start + k]
        self._start += k
        return view


@dataclass(frozen=True, slots=True)
class Command:
    """The fields of a DIMSE request command set this receiver cares about."""

    command_field: int
    message_id: int
    sop_class_uid: str
    sop_instance_uid: str
    has_dataset: bool
    move_originator_ae: str


def _ui(raw: bytes) -> str:
    return raw.decode("ascii", "replace").rstrip("\x00 ")


def parse_command(raw: bytes | bytearray) -> Command:
    """Parse an implicit VR little endian command set (group 0000).

    Raises
    ------
    ProtocolError
        If the bytes are not a command set or lack the Command Field.
    """
    pos = 0
    end = len(raw)
    fields: dict[int, bytes] = {}
    while pos + 8 <= end:
        group, elem, length = struct.unpack_from("<HHL", raw, pos)
        pos += 8
        if group != 0x0000 or pos + length > end:
            raise ProtocolError(f"malformed command set at byte {pos - 8}")
        fields[elem] = bytes(raw[pos : pos + length])
        pos += length
    if pos != end or 0x0100 not in fields:
        raise ProtocolError("command set without a Command Field")

    def us(elem: int, default: int = 0) -> int:
        value = fields.get(elem)
        return struct.unpack("<H", value[:2])[0] if value and len(value) >= 2 else default

    return Command(
        command_field=us(0x0100),
        message_id=us(0x0110),
        sop_class_uid=_ui(fields.get(0x0002, b"")),
        sop_instance_uid=_ui(fields.get(0x1000, b"")),
        has_dataset=us(0x0800, _NO_DATASET) != _NO_DATASET,
        move_originator_ae=_ui(fields.get(0x1030, b"")),
    )


def _cmd_element(elem: int, value: bytes) -> bytes:
    return struct.pack("<HHL", 0x0000, elem, len(value)) + value


def _pad_ui(uid: str) -> bytes:
    raw = uid.encode("ascii", "replace")  # a non-ASCII UID (answered 0xC212) is echoed with '?'
    return raw + b"\x00" if len(raw) % 2 else raw


def encode_response(
    *,
    context_id: int,
    command_field: int,
    message_id: int,
    status: int,
    sop_class_uid: str,
    sop_instance_uid: str = "",
    error_comment: str = "",
) -> bytes:
    """Encode a DIMSE-C response as one complete P-DATA-TF PDU.

    Parameters
    ----------
    context_id : int
        Presentation context of the request.
    command_field : int
        Response command field (request | 0x8000).
    message_id : int
        Message ID of the request (sent as Message ID Being Responded To).
    status : int
        DIMSE status.
    sop_class_uid, sop_instance_uid : str
        Affected SOP Class / Instance UIDs (the instance is omitted when empty).
    error_comment : str, optional
        Error Comment (0000,0902), at most 64 characters, on failures.

    Returns
    -------
    bytes
        The PDU, ready to send.
    """
    parts = [
        _cmd_element(0x0002, _pad_ui(sop_class_uid)),
        _cmd_element(0x0100, struct.pack("<H", command_field)),
        _cmd_element(0x0120, struct.pack("<H", message_id)),
        _cmd_element(0x0800, struct.pack("<H", _NO_DATASET)),
        _cmd_element(0x0900, struct.pack("<H", status)),
    ]
    if error_comment:
        comment = error_comment.encode("ascii", "replace")[:64]
        parts.append(_cmd_element(0x0902, comment + b" " if len(comment) % 2 else comment))
    if sop_instance_uid:
        parts.append(_cmd_element(0x1000, _pad_ui(sop_instance_uid)))
    body = b"".join(parts)
    command = _cmd_element(0x0000, struct.pack("<L", len(body))) + body
    pdv = struct.pack(">LBB", len(command) + 2, context_id, 0x03) + command
    return struct.pack(">BBL", _PDATA, 0x00, len(pdv)) + pdv


# A handler gets (context id, command, data set stream or None) and returns (status, error comment).
MessageHandler = Callable[[int, Command, "Iterator[memoryview] | None"], tuple[int, str]]


class MessageReceiver:
    """Reads DIMSE messages from P-DATA-TF PDUs and answers them.

    Parameters
    ----------
    reader : SocketReader
        The association's buffered socket reader.
    send : callable
        Sends a complete PDU (bytes) to the peer.
    handlers : dict
        ``{command field: handler}``; requests without a handler get status 0x0211
        (unrecognised operation).
    on_pdu : callable
        Called once per P-DATA-TF PDU read (restarts the network idle timer).
    """

    def __init__(
        self,
        reader: SocketReader,
        send: Callable[[bytes], None],
        handlers: dict[int, MessageHandler],
        on_pdu: Callable[[], None],
    ) -> None:
        self._reader = reader
        self._send = send
        self._handlers = handlers
        self._on_pdu = on_pdu
        self._pdu_left = 0
        self.max_pdu_bytes = 0  # largest P-DATA-TF body accepted; 0 = any

    def _next_pdv(self) -> tuple[int, int, int] | None:
        """Return (context id, message control header, data length) of the next PDV.

        ``None`` when the next PDU is not a P-DATA-TF (it is left unread).
        """
        reader = self._reader
        if self._pdu_left == 0:
            pdu_type, _, pdu_length = struct.unpack(">BBL", reader.peek(6))
            if pdu_type != _PDATA:
                return None
            if self.max_pdu_bytes and pdu_length > self.max_pdu_bytes:
                raise ProtocolError(f"P-DATA-TF of {pdu_length} bytes, more than the {self.max_pdu_bytes} announced")
            reader.skip(6)
            self._on_pdu()
            self._pdu_left = pdu_length
        if self._pdu_left < 6:
            raise ProtocolError(f"P-DATA-TF with {self._pdu_left} trailing bytes, too short for a PDV")
        item_length, context_id, control = struct.unpack(">LBB", reader.peek(6))
        reader.skip(6)
        if item_length < 2 or item_length + 4 > self._pdu_left:
            raise ProtocolError(f"PDV length {item_length} does not fit the P-DATA-TF PDU")
        self._pdu_left -= 4 + item_length
        return context_id, control, item_length - 2

    def _dataset(self, context_id: int) -> Iterator[memoryview]:
        reader = self._reader
        left = 0
        last = False
        while True:
            if left == 0:
                if last:
                    return
                pdv = self._next_pdv()
                if pdv is None:
                    raise Interrupted("a PDU other than P-DATA-TF arrived inside a data set")
                ctx, control, left = pdv
                if control & 0x01:
                    raise ProtocolError("command fragment inside a data set")
                if ctx != context_id:
                    raise ProtocolError(f"data set fragment on context {ctx}, command was on {context_id}")
                last = bool(control & 0x02)
                continue
            view = reader.take(left)
            left -= len(view)
            yield view

    def serve(self) -> None:
        """Handle DIMSE messages until the current P-DATA-TF PDU is used up.

        Raises
        ------
        PeerGone
            The connection broke.
        ProtocolError
            The peer broke the protocol (the caller aborts the association).
        Interrupted
            Another PDU arrived mid-message; it is left unread for pynetdicom.
        """
        while True:
            self._one_message()
            if self._pdu_left == 0:
                return

    def _one_message(self) -> None:
        command_bytes = bytearray()
        context_id = -1
        while True:
            pdv = self._next_pdv()
            if pdv is None:
                raise Interrupted("a PDU other than P-DATA-TF arrived inside a command set")
            ctx, control, length = pdv
            if not control & 0x01:
                raise ProtocolError("data set fragment without a command")
            if context_id not in (-1, ctx):
                raise ProtocolError("command fragments on different presentation contexts")
            context_id = ctx
            if len(command_bytes) + length > _MAX_COMMAND_BYTES:
                raise ProtocolError(f"command set larger than {_MAX_COMMAND_BYTES} bytes")
            command_bytes += self._reader.read(length)
            if control & 0x02:
                break
        command = parse_command(command_bytes)
        stream = self._dataset(context_id) if command.has_dataset else None
        handler = self._handlers.get(command.command_field)
        try:
            if handler is None:
                status, comment = 0x0211, "unrecognised operation"
            else:
                status, comment = handler(context_id, command, stream)
        finally:
            if stream is not None:
                for _ in stream:  # keep in step: consume what the handler left
                    pass
        if command.command_field == C_CANCEL_RQ:
            return
        self._send(
            encode_response(
                context_id=context_id,
                command_field=command.command_field | 0x8000,
                message_id=command.message_id,
                status=status,
                sop_class_uid=command.sop_class_uid,
                sop_instance_uid=command.sop_instance_uid if command.command_field == C_STORE_RQ else "",
                error_comment=comment if status not in (0x0000,) and status & 0xF000 != 0xB000 else "",
            )
        )


class FastDUL(DULServiceProvider):
    """A DUL service provider that waits on the socket instead of polling, with a fast P-DATA path.

    Parameters
    ----------
    assoc : Association
        The parent association (acceptor).
    make_handlers : callable
        Called once the association is established; returns the ``{command field: handler}`` map
        for :class:`MessageReceiver`.
    stopping : callable
        Returns ``True`` when the server is shutting down: an idle established association is then
        aborted (the message in progress, if any, is finished and answered first).
    """

    def __init__(
        self,
        assoc: Association,
        make_handlers: Callable[[Association], dict[int, MessageHandler]],
        stopping: Callable[[], bool],
    ) -> None:
        super().__init__(assoc)
        self._make_handlers = make_handlers
        self._stopping = stopping
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._reader: SocketReader | None = None
        self._receiver: MessageReceiver | None = None
        self.max_pdata_bytes = 0  # largest P-DATA-TF body accepted (our announced maximum length); 0 = any

    # -- waking the reactor --------------------------------------------------------------------

    def wake(self) -> None:
        """Interrupt the reactor's wait (thread-safe)."""
        try:
            self._wake_w.send(b"\x00")
        except OSError:
            pass

    def send_pdu(self, primitive) -> None:  # type: ignore[no-untyped-def]  # noqa: ANN001 - pynetdicom's signature
        super().send_pdu(primitive)
        self.wake()

    def kill_dul(self) -> None:
        super().kill_dul()
        self.wake()

    def stop_dul(self) -> bool:
        if self.state_machine.current_state == "Sta1":
            self._kill_thread = True
            self.wake()
            self.join()
            return True
        return False

    # -- the reactor ---------------------------------------------------------------------------

    def _raw_socket(self) -> socket.socket | None:
        assoc_sock = cast("AssociationSocket | None", self.socket)
        if assoc_sock is None or not assoc_sock._is_connected:
            return None
        return assoc_sock.socket

    def _readable(self) -> bool:
        raw = self._raw_socket()
        if raw is None or self._reader is None:
            return False
        if self._reader.has_input():
            return True
        try:
            ready, _, _ = select.select([raw], [], [], 0)
        except (OSError, ValueError):
            cast("AssociationSocket", self.socket).close()
            return False
        return bool(ready)

    def _wait(self) -> None:
        if self._reader is not None and self._reader.has_input():
            return
        fds: list[socket.socket] = [self._wake_r]
        raw = self._raw_socket()
        if raw is not None:
            fds.append(raw)
        try:
            ready, _, _ = select.select(fds, [], [], _IDLE_WAIT_S)
        except (OSError, ValueError):
            return
        if self._wake_r in ready:
            try:
                while self._wake_r.recv(4096):
                    pass
            except OSError:
                pass

    def _is_transport_event(self) -> bool:
        assoc_sock = cast("AssociationSocket", self.socket)
        if self.state_machine.current_state == "Sta13":
            # our A-ABORT (or A-RELEASE-RP) is sent: whatever the peer still sends is not read, not decoded and
            # not logged; the connection is closed (pynetdicom would answer each further PDU with an A-ABORT)
            assoc_sock.close()
            return True
        if self._readable():
            self._read_pdu_data()
            return True
        return False

    def _connection_lost(self, exc: BaseException) -> None:
        log.debug("association %s: %s", self.assoc.name, exc)
        assoc_sock = cast("AssociationSocket", self.socket)
        if assoc_sock.socket is not None and assoc_sock._is_connected:
            assoc_sock.close()  # queues Evt17
        else:
            self.event_queue.put("Evt17")

    def _read_pdu_data(self) -> None:
        reader = cast(SocketReader, self._reader)
        try:
            header = bytes(reader.peek(6))
        except PeerGone as exc:
            self._connection_lost(exc)
            return
        pdu_type, _, pdu_length = struct.unpack(">BBL", header)
        if pdu_type not in (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07):
            reader.skip(6)
            self._refuse_pdu(f"unknown PDU type 0x{pdu_type:02X}")
            return
        in_transfer = self.state_machine.current_state == "Sta6"
        if pdu_type == _PDATA:
            cap = self.max_pdata_bytes if in_transfer else _PDATA_OUTSIDE_TRANSFER_BYTES
        else:
            cap = MAX_PDU_BYTES_BY_TYPE[pdu_type]
        if cap and pdu_length > cap:
            reader.skip(6)
            self._refuse_pdu(f"PDU type 0x{pdu_type:02X} of {pdu_length} bytes, more than the {cap} allowed")
            return
        if pdu_type == _PDATA and in_transfer:
            self._serve_pdata(reader)
            return
        reader.skip(6)
        try:
            body = reader.read(pdu_length)
        except PeerGone as exc:
            self._connection_lost(exc)
            return
        try:
            pdu, event = self._decode_pdu(bytearray(header + body))
        except Exception as exc:  # noqa: BLE001 - pynetdicom's own READ_PDU_EXC_F handling
            self._refuse_pdu(f"undecodable PDU (type 0x{pdu_type:02X}): {exc}")
            return
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)

    def _peer(self) -> str:
        try:
            return str(self.assoc.requestor.address)
        except Exception:  # noqa: BLE001
            return "?"

    def _refuse_pdu(self, why: str) -> None:
        """A PDU that breaks the protocol: one (rate-limited) log line, A-ABORT, then the connection closes."""
        peer = self._peer()
        if peer_log_limit.allow(peer):
            log.error("association %s from %s: %s; aborting", self.assoc.name, peer, why, extra={"peer": peer})
        self.event_queue.put("Evt19")

    def _serve_pdata(self, reader: SocketReader) -> None:
        if self._receiver is None:
            raw = cast(socket.socket, self._raw_socket())
            self._receiver = MessageReceiver(
                reader, raw.sendall, self._make_handlers(self.assoc), self._idle_timer.restart
            )
            self._receiver.max_pdu_bytes = self.max_pdata_bytes
        try:
            self._receiver.serve()
        except PeerGone as exc:
            self._connection_lost(exc)
        except Interrupted as exc:
            # the message is abandoned (nothing was committed); pynetdicom reads the PDU next
            log.warning("association %s: %s; the message in progress was discarded", self.assoc.name, exc)
            self._receiver = None
        except (ProtocolError, OSError) as exc:
            self._receiver = None
            self._refuse_pdu(f"protocol error ({exc})")

    def run_reactor(self) -> None:
        """Run the DUL reactor: event-driven, one PDU (or DIMSE message) at a time."""
        self._idle_timer.start()
        raw = self._raw_socket()
        if raw is not None:
            self._reader = SocketReader(raw)
        self.assoc._dul_ready.set()
        aborting = False
        try:
            while not self._kill_thread:
                if self.artim_timer.expired:
                    self.event_queue.put("Evt18")
                if (
                    not aborting
                    and self._stopping()
                    and self.state_machine.current_state == "Sta6"
                    and not self.assoc._sent_abort
                ):
                    aborting = True
                    log.info("association %s: node stopping, aborting the idle association", self.assoc.name)
                    self.assoc.abort(block=False)
                try:
                    if self._process_recv_primitive():
                        pass
                    elif self._is_transport_event():
                        self._idle_timer.restart()
                except Exception as exc:  # noqa: BLE001 - same recovery as pynetdicom's reactor
                    log.error("exception in the DUL reactor, aborting the association: %s", exc)
                    log.debug("DUL reactor exception", exc_info=True)
                    self._hard_abort()
                    return
                try:
                    event = self.event_queue.get(block=False)
                except queue.Empty:
                    self._wait()
                    continue
                before = self.state_machine.current_state
                self.state_machine.do_action(event)
                if before != "Sta1" and self.state_machine.current_state == "Sta1" and not self.assoc.is_established:
                    # the connection ended before an association was established: release the acceptor
                    # thread waiting for an A-ASSOCIATE-RQ now instead of after the ACSE timeout
                    self.to_user_queue.put(None)  # type: ignore[arg-type]
        finally:
            self._wake_r.close()
            self._wake_w.close()

    def _hard_abort(self) -> None:
        abort_pdu = A_ABORT_RQ()
        abort_pdu.source = 0x02
        abort_pdu.reason_diagnostic = 0x00
        raw = self._raw_socket()
        if raw is not None:
            try:
                raw.sendall(abort_pdu.encode())
            except OSError:
                pass
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        self.assoc._kill = True
        self._kill_thread = True


class FastAssociation(Association):
    """An acceptor ``Association`` whose idle reactor polls every 5 ms instead of every 1 ms.

    With :class:`FastDUL` doing all the DIMSE work in its own thread, this reactor only watches for
    release, abort, the DUL ending and the network timeout; polling it 1000 times a second per
    association only costs CPU and GIL hand-offs.
    """

    poll_s = 0.005

    def _run_reactor(self) -> None:  # mirrors pynetdicom 3.0.4 Association._run_reactor
        self._is_paused = False
        while not self._kill:
            time.sleep(self.poll_s)
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False

            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                self._serve_request(msg, cast(int, context_id))

            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                log.debug("association %s released", self.name)
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return

            if self.acse.is_aborted():
                self.dul.receive_pdu(wait=False)
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return

            if not self.dul.is_alive():
                self.kill()
                return

            if self.dul.idle_timer_expired():
                log.error("association %s: network timeout reached, aborting", self.name)
                self.abort()
                self.kill()
                return
