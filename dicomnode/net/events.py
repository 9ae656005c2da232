"""What the SCP reports besides stored instances: refusals, as typed events (never read back from log text).

:class:`~dicomnode.net.scp.StorageSCP` calls its ``on_event`` callback with one of these for each refusal, from the
association's thread, right where it logs the refusal; the log line is for people, the event for counters
(:mod:`dicomnode.obs.metrics`) and, later, other listeners. A callback must be fast and must not raise (an exception
is logged and ignored: a listener never changes what the peer is answered).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["AssociationRefused", "RefusalKind", "ScpEvent", "StoreRefused"]


class RefusalKind(str, Enum):
    """Why a connection was not served."""

    PERMANENT = "permanent"  # A-ASSOCIATE-RJ permanent: peer policy, wrong called AE title
    TRANSIENT = "transient"  # A-ASSOCIATE-RJ transient: disk watermark, association limits, stopping
    TLS = "tls"              # the TLS handshake failed (no or an untrusted client certificate, a plain peer)


@dataclass(frozen=True, slots=True)
class AssociationRefused:
    """A connection refused before any DIMSE message: an A-ASSOCIATE-RJ, or a failed TLS handshake."""

    kind: RefusalKind
    peer: str              # "address:port"
    reason: str            # the same reason as the log line's
    calling_ae: str = ""   # empty for a failed TLS handshake (no A-ASSOCIATE-RQ was read)
    called_ae: str = ""


@dataclass(frozen=True, slots=True)
class StoreRefused:
    """A C-STORE answered with a failure status (nothing of it was kept)."""

    status: int            # the DIMSE status sent, a :class:`~dicomnode.net.scp.StoreStatus`
    calling_ae: str
    peer_host: str
    reason: str


ScpEvent = AssociationRefused | StoreRefused
