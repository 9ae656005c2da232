"""DICOM TLS contexts for the SCP (receiving) and the SCU (sending)."""

from __future__ import annotations

import ssl

from dicomnode.config import TlsConfig


def server_context(tls: TlsConfig) -> ssl.SSLContext:
    """A server context with our certificate; peers must present one signed by ``ca_certificates`` if required."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(tls.certificate, tls.private_key)
    if tls.ca_certificates:
        ctx.load_verify_locations(tls.ca_certificates)
    ctx.verify_mode = ssl.CERT_REQUIRED if tls.require_peer_certificate else ssl.CERT_OPTIONAL
    if not tls.ca_certificates:
        ctx.verify_mode = ssl.CERT_NONE if not tls.require_peer_certificate else ssl.CERT_REQUIRED
    return ctx


def client_context(*, ca_certificates: str = "", certificate: str = "", private_key: str = "",
                   check_hostname: bool = False) -> ssl.SSLContext:
    """A client context that verifies the server against ``ca_certificates`` and presents our certificate."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_certificates or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = check_hostname
    if certificate:
        ctx.load_cert_chain(certificate, private_key or None)
    return ctx
