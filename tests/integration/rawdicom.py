"""A minimal DICOM upper-layer client on a raw socket, for tests that must send what no real peer would send.

Only what the hostile-peer tests need: A-ASSOCIATE-RQ with chosen contexts, C-STORE / C-ECHO with arbitrary
command and data set bytes, and reading the answer (A-ASSOCIATE-AC/RJ, A-ABORT, DIMSE status).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"


def _uid(u: str | bytes) -> bytes:
    raw = u.encode("ascii") if isinstance(u, str) else u
    return raw + b"\x00" if len(raw) % 2 else raw


def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(value)) + value


def associate_rq(contexts: list[tuple[int, str, list[str]]], *, called: str = "DICOMNODE",
                 calling: str = "RAWPEER", max_pdu: int = 65536) -> bytes:
    items = _item(0x10, b"1.2.840.10008.3.1.1.1")
    for cid, abstract, syntaxes in contexts:
        sub = _item(0x30, abstract.encode()) + b"".join(_item(0x40, ts.encode()) for ts in syntaxes)
        items += _item(0x20, struct.pack(">BBBB", cid, 0, 0, 0) + sub)
    items += _item(0x50, _item(0x51, struct.pack(">L", max_pdu)) + _item(0x52, b"1.2.826.0.1.3680043.9.7433.1"))
    body = (struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode() + b"\x00" * 32
            + items)
    return struct.pack(">BBL", 0x01, 0, len(body)) + body


def command(elements: dict[int, bytes]) -> bytes:
    body = b"".join(struct.pack("<HHL", 0, e, len(v)) + v for e, v in sorted(elements.items()))
    return struct.pack("<HHL", 0, 0, 4) + struct.pack("<L", len(body)) + body


def store_command(sop_class: str | bytes, sop_instance: str | bytes, message_id: int = 1) -> bytes:
    return command({0x0002: _uid(sop_class), 0x0100: struct.pack("<H", 0x0001),
                    0x0110: struct.pack("<H", message_id), 0x0700: struct.pack("<H", 0),
                    0x0800: struct.pack("<H", 0x0000), 0x1000: _uid(sop_instance)})


def echo_command(message_id: int = 1) -> bytes:
    return command({0x0002: _uid(VERIFICATION), 0x0100: struct.pack("<H", 0x0030),
                    0x0110: struct.pack("<H", message_id), 0x0800: struct.pack("<H", 0x0101)})


def pdata(context_id: int, payload: bytes, *, is_command: bool, last: bool = True) -> bytes:
    control = (0x01 if is_command else 0x00) | (0x02 if last else 0x00)
    pdv = struct.pack(">LBB", len(payload) + 2, context_id, control) + payload
    return struct.pack(">BBL", 0x04, 0, len(pdv)) + pdv


@dataclass
class Pdu:
    kind: int
    body: bytes


class RawPeer:
    """One TCP connection to the node; ``bind`` picks the source address (e.g. 127.0.0.2)."""

    def __init__(self, port: int, *, host: str = "127.0.0.1", bind: str | None = None, timeout_s: float = 30) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if bind:
            self.sock.bind((bind, 0))
        self.sock.settimeout(timeout_s)
        self.sock.connect((host, port))
        self.accepted: dict[int, str] = {}

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "RawPeer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            got = self.sock.recv(n - len(out))
            if not got:
                raise ConnectionError("closed by the node")
            out += got
        return out

    def read_pdu(self) -> Pdu:
        kind, _, length = struct.unpack(">BBL", self._exact(6))
        return Pdu(kind, self._exact(length))

    def closed_by_node(self) -> bool:
        """Read until the node closes the connection (what it sends meanwhile is discarded)."""
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        return True

    def associate(self, contexts: list[tuple[int, str, list[str]]], **kw) -> Pdu:
        self.send(associate_rq(contexts, **kw))
        pdu = self.read_pdu()
        if pdu.kind == 0x02:
            pos = 68
            while pos < len(pdu.body):
                kind, _, length = struct.unpack(">BBH", pdu.body[pos:pos + 4])
                value = pdu.body[pos + 4:pos + 4 + length]
                if kind == 0x21 and value[2] == 0:
                    ts = value[8:8 + struct.unpack(">H", value[6:8])[0]].decode().rstrip("\x00")
                    self.accepted[value[0]] = ts
                pos += 4 + length
        return pdu

    def dimse_status(self) -> int:
        """Read the response command (one or more P-DATA-TF PDUs) and return its Status (0000,0900)."""
        data = b""
        while True:
            pdu = self.read_pdu()
            if pdu.kind != 0x04:
                raise ConnectionError(f"PDU type 0x{pdu.kind:02X} instead of a response")
            pos = 0
            last = False
            while pos < len(pdu.body):
                length, _, control = struct.unpack(">LBB", pdu.body[pos:pos + 6])
                data += pdu.body[pos + 6:pos + 4 + length]
                last = last or bool(control & 0x02)
                pos += 4 + length
            if last:
                break
        pos = 0
        while pos + 8 <= len(data):
            _, elem, length = struct.unpack("<HHL", data[pos:pos + 8])
            if elem == 0x0900:
                return struct.unpack("<H", data[pos + 8:pos + 10])[0]
            pos += 8 + length
        raise ValueError("response without a Status")

    def store(self, context_id: int, sop_class: str | bytes, sop_instance: str | bytes, dataset: bytes,
              message_id: int = 1, *, command_bytes: bytes | None = None) -> int:
        cmd = command_bytes if command_bytes is not None else store_command(sop_class, sop_instance, message_id)
        self.send(pdata(context_id, cmd, is_command=True))
        step = 60000
        for i in range(0, max(len(dataset), 1), step):
            self.send(pdata(context_id, dataset[i:i + step], is_command=False, last=i + step >= len(dataset)))
        return self.dimse_status()

    def echo(self, context_id: int) -> int:
        self.send(pdata(context_id, echo_command(), is_command=True))
        return self.dimse_status()

    def release(self) -> None:
        self.send(struct.pack(">BBL", 0x05, 0, 4) + b"\x00" * 4)
        try:
            self.read_pdu()
        except (ConnectionError, OSError):
            pass
        self.close()
