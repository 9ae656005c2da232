"""C-STORE and C-ECHO as a service user: sending results (and ``dicomnode send``) to a destination AE.

Presentation contexts are built from the files themselves: each (SOP class, transfer syntax) pair is proposed
exactly as stored, so no object is decoded and re-encoded on the way out; uncompressed files also propose the other
little-endian syntaxes as fallbacks. A success or warning status (0x0000, 0xB000, 0xB006, 0xB007) counts as sent;
anything else, a rejected or aborted association, or a time-out raises or reports a :class:`SendError`.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from dicomnode.errors import SendError

log = logging.getLogger(__name__)

SUCCESS_STATUSES = {0x0000, 0xB000, 0xB006, 0xB007}
_UNCOMPRESSED = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}
_MAX_CONTEXTS = 128


@dataclass(frozen=True, slots=True)
class SendResult:
    path: str
    sop_instance_uid: str
    status: int | None      # DIMSE status, None when no response came
    ok: bool
    error: str = ""


def _file_info(path: Path) -> tuple[str, str, str]:
    ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"])
    meta = ds.file_meta
    sop_class = str(meta.get("MediaStorageSOPClassUID", "") or ds.get("SOPClassUID", ""))
    sop_inst = str(meta.get("MediaStorageSOPInstanceUID", "") or ds.get("SOPInstanceUID", ""))
    ts = str(meta.get("TransferSyntaxUID", "") or ImplicitVRLittleEndian)
    if not sop_class or not sop_inst:
        raise SendError(f"{path}: no SOP Class/Instance UID in its file meta or dataset; not a DICOM object to send")
    return sop_class, sop_inst, ts


def _ae(calling_ae: str, timeout_s: float) -> AE:
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = timeout_s
    ae.dimse_timeout = timeout_s
    ae.network_timeout = timeout_s
    ae.connection_timeout = timeout_s
    return ae


def _tls_args(ssl_context: ssl.SSLContext | None, host: str) -> dict:
    return {} if ssl_context is None else {"tls_args": (ssl_context, host)}


def echo(host: str, port: int, *, ae_title: str = "ANY-SCP", calling_ae: str = "DICOMNODE",
         timeout_s: float = 10.0, ssl_context: ssl.SSLContext | None = None) -> int:
    """C-ECHO; returns the status (0x0000 on success) or raises SendError saying what failed."""
    ae = _ae(calling_ae, timeout_s)
    ae.add_requested_context(Verification)
    assoc, why = _associate(ae, host, port, ae_title, ssl_context)
    if not assoc.is_established:
        raise SendError(f"association with {ae_title}@{host}:{port} was {why}")
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if not status or "Status" not in status:
        raise SendError(f"no C-ECHO response from {ae_title}@{host}:{port} within {timeout_s} s")
    return int(status.Status)


class _TransportErrors(logging.Handler):
    """Collects pynetdicom's "TCP Initialisation Error" records (the TLS or socket error of a failed connect),
    which it logs instead of raising; :meth:`of` picks those of one association by thread, so concurrent sends do
    not see each other's."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self._records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, str) and record.msg.startswith("TCP Initialisation Error"):
            self._records.append(record)

    def of(self, assoc) -> str:  # noqa: ANN001
        idents = {getattr(assoc, "ident", None), getattr(getattr(assoc, "dul", None), "ident", None)} - {None}
        msgs = [r.getMessage().split(": ", 1)[-1] for r in self._records if r.thread in idents]
        return msgs[-1] if msgs else ""


def _associate(ae: AE, host: str, port: int, ae_title: str, ssl_context: ssl.SSLContext | None):  # noqa: ANN202
    """``ae.associate`` and, when it failed, why (the connect error pynetdicom only logs)."""
    errors = _TransportErrors()
    transport = logging.getLogger("pynetdicom.transport")
    transport.addHandler(errors)
    try:
        assoc = ae.associate(host, port, ae_title=ae_title, **_tls_args(ssl_context, host))
    finally:
        transport.removeHandler(errors)
    why = "" if assoc.is_established else _why_not(assoc, errors.of(assoc), tls=ssl_context is not None)
    return assoc, why


def _why_not(assoc, connect_error: str = "", *, tls: bool = False) -> str:  # noqa: ANN001
    if connect_error:
        return f"not established: {connect_error}"
    if assoc.is_rejected:
        rj = getattr(assoc.acceptor, "primitive", None)
        if rj is not None and getattr(rj, "result", None) is not None:
            return (f"rejected (result {rj.result}, source {rj.result_source}, reason {rj.diagnostic}: "
                    f"{getattr(rj, 'reason_str', '')})").replace(": )", ")")
        return "rejected"
    if assoc.is_aborted:
        if tls:
            return "aborted (over TLS: the peer may have refused our certificate, or have none we trust; its log says)"
        return "aborted (a peer that requires TLS would drop a plain connection this way)"
    return "not established (no answer: is the destination up, and are host and port right?)"


def send_files(paths: Sequence[Path | str], *, host: str, port: int, ae_title: str,
               calling_ae: str = "DICOMNODE", timeout_s: float = 30.0,
               ssl_context: ssl.SSLContext | None = None,
               on_sent: Callable[[SendResult], None] | None = None) -> list[SendResult]:
    """Send files over as few associations as the 128-context limit allows; one result per file.

    Unreadable files are reported as failures without stopping the others. Raises :class:`SendError` only when no
    association could be established at all.
    """
    results: list[SendResult] = []
    infos: list[tuple[Path, str, str, str]] = []
    for p in map(Path, paths):
        try:
            infos.append((p, *_file_info(p)))
        except Exception as e:  # noqa: BLE001 - reported per file
            r = SendResult(str(p), "", None, False, f"cannot read: {e}")
            results.append(r)
            if on_sent:
                on_sent(r)
    # Group into batches whose distinct (class, syntax) contexts fit into one association.
    batches: list[list[tuple[Path, str, str, str]]] = []
    current: list[tuple[Path, str, str, str]] = []
    ctxs: set[tuple[str, str]] = set()
    for info in infos:
        key = (info[1], info[3])
        extra = 1 if key in ctxs else (3 if info[3] in _UNCOMPRESSED else 1)
        if current and len(ctxs) * 3 + extra > _MAX_CONTEXTS:
            batches.append(current)
            current, ctxs = [], set()
        current.append(info)
        ctxs.add(key)
    if current:
        batches.append(current)

    established_any = not infos
    last_error = ""
    for batch in batches:
        ae = _ae(calling_ae, timeout_s)
        seen: set[tuple[str, str]] = set()
        for _, sop_class, _, ts in batch:
            if (sop_class, ts) in seen:
                continue
            seen.add((sop_class, ts))
            if ts in _UNCOMPRESSED:
                ae.add_requested_context(sop_class, [ts] + [t for t in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
                                                             if t != ts])
            else:
                ae.add_requested_context(sop_class, [ts])
        assoc, why = _associate(ae, host, port, ae_title, ssl_context)
        if not assoc.is_established:
            last_error = f"association with {ae_title}@{host}:{port} was {why}"
            for p, _, sop, _ in batch:
                r = SendResult(str(p), sop, None, False, last_error)
                results.append(r)
                if on_sent:
                    on_sent(r)
            continue
        established_any = True
        try:
            for p, _, sop, _ in batch:
                if not assoc.is_established:
                    r = SendResult(str(p), sop, None, False, "association was aborted by the destination")
                else:
                    try:
                        status = assoc.send_c_store(p)
                        code = int(status.Status) if status and "Status" in status else None
                        if code is None:
                            r = SendResult(str(p), sop, None, False, f"no response within {timeout_s} s")
                        elif code in SUCCESS_STATUSES:
                            r = SendResult(str(p), sop, code, True)
                        else:
                            r = SendResult(str(p), sop, code, False, f"failure status 0x{code:04X}")
                    except Exception as e:  # noqa: BLE001 - reported per file
                        r = SendResult(str(p), sop, None, False, f"{type(e).__name__}: {e}")
                results.append(r)
                if on_sent:
                    on_sent(r)
        finally:
            if assoc.is_established:
                assoc.release()
    if not established_any:
        raise SendError(last_error)
    return results


def parse_address(spec: str) -> tuple[str, str, int]:
    """``AE@HOST:PORT`` -> (ae, host, port); raise ValueError saying what is expected."""
    if "@" not in spec or ":" not in spec.rsplit("@", 1)[1]:
        raise ValueError(f"{spec!r}: expected AE@HOST:PORT, e.g. PACS@10.0.0.5:104")
    ae, hostport = spec.rsplit("@", 1)
    host, _, port = hostport.rpartition(":")
    if not ae or len(ae) > 16 or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{spec!r}: expected AE@HOST:PORT with an AE title of 1-16 characters and a port 1-65535")
    return ae, host.strip("[]"), int(port)


def iter_dicom_files(paths: Iterable[Path | str], skipped: list[Path] | None = None) -> list[Path]:
    """Files named directly, and the DICOM files below named folders (sorted).

    In folders, hidden files and files without the DICOM preamble (READMEs, licences, annotations) are skipped
    and appended to ``skipped``, as DCMTK's ``storescu +sd`` does; a file named directly is always returned, so
    that the caller reports it if it is not DICOM.
    """
    from dicomnode.io.headers import is_dicom_file

    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(f for f in p.rglob("*") if f.is_file()):
                if f.name.startswith(".") or not is_dicom_file(f):
                    if skipped is not None:
                        skipped.append(f)
                    continue
                out.append(f)
        else:
            out.append(p)
    return out
