"""How results leave the node: the :class:`Sender` protocol and the senders behind it, one per destination kind.

The outbox (:mod:`dicomnode.export.outbox`) owns the queue, the retries and the dead letters; a sender only moves
files to one destination and reports each file as it is answered. Today there is one kind, ``dicom`` (DIMSE
C-STORE, :class:`DimseSender`); another kind (a folder, DICOMweb STOW-RS...) is a class with the same ``send``
method and one entry in :data:`SENDERS`, plus its ``kind`` value in the config.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Callable, Mapping, Protocol, Sequence, runtime_checkable

from dicomnode.config import Destination, DestinationKind, NodeConfig
from dicomnode.net.scu import SendResult

__all__ = ["DimseSender", "SENDERS", "SendResult", "Sender", "sender_for", "tls_context"]


@runtime_checkable
class Sender(Protocol):
    """Moves result files to one destination.

    ``send`` calls ``on_sent`` once per file, in the order the answers come, as soon as each is answered (the
    outbox makes each answer durable before the next file goes, so a node killed mid-batch sends at most the file
    in flight again). A file that fails alone is reported through ``on_sent`` with ``ok=False``; ``send`` raises
    (:class:`~dicomnode.errors.SendError` or ``OSError``) only when nothing could be sent at all (destination
    unreachable), and the outbox then retries every file not yet answered.
    """

    def send(self, destination: Destination, paths: Sequence[Path | str], *,
             on_sent: Callable[[SendResult], None]) -> None: ...


class DimseSender:
    """DICOM C-STORE (DIMSE) to ``destination.ae_title@host:port``, over TLS when ``destination.tls``.

    The calling AE title is ``[node] ae_title``; the time-out is ``[export] timeout_seconds``.
    """

    def __init__(self, config: NodeConfig) -> None:
        self._config = config

    def send(self, destination: Destination, paths: Sequence[Path | str], *,
             on_sent: Callable[[SendResult], None]) -> None:
        from dicomnode.net.scu import send_files

        cfg = self._config
        send_files(list(paths), host=destination.host, port=destination.port, ae_title=destination.ae_title,
                   calling_ae=cfg.node.ae_title, timeout_s=cfg.export.timeout_seconds,
                   ssl_context=tls_context(cfg, destination), on_sent=on_sent)


#: destination kind -> the sender for it, built from the configuration in force
SENDERS: Mapping[DestinationKind, Callable[[NodeConfig], Sender]] = {DestinationKind.DICOM: DimseSender}


def sender_for(destination: Destination, config: NodeConfig) -> Sender:
    """The sender of ``destination``'s kind (every kind the config accepts has one)."""
    return SENDERS[destination.kind](config)


def tls_context(cfg: NodeConfig, dest: Destination) -> ssl.SSLContext | None:
    """The client TLS context for a destination with ``tls = true`` (None otherwise).

    The destination is verified against its own ``ca_certificates``, else ``[node.tls] ca_certificates``, else the
    system's CAs; the node presents ``[node.tls] certificate`` / ``private_key`` when they are set. Host names are
    not checked (DICOM peers are usually addressed by IP): the CA is what is trusted.
    """
    if not dest.tls:
        return None
    from dicomnode.net.tls import client_context

    t = cfg.node.tls
    return client_context(ca_certificates=dest.ca_certificates or t.ca_certificates, certificate=t.certificate,
                          private_key=t.private_key)
