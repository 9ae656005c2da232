"""TLS configuration for the sending side: destination keys, the client context the outbox uses."""

from __future__ import annotations

import ssl

import pytest

from dicomnode.config import parse_config
from dicomnode.errors import ConfigErrors
from dicomnode.export.outbox import tls_context


def _dest(**kw):
    return {"destinations": [{"name": "PACS", "ae_title": "PACS", "host": "127.0.0.1", "port": 104, **kw}]}


def test_plain_destination_has_no_tls_context():
    cfg = parse_config(_dest())
    assert tls_context(cfg, cfg.destination("PACS")) is None


def test_tls_destination_verifies_the_peer(tmp_path):
    cfg = parse_config(_dest(tls=True))
    ctx = tls_context(cfg, cfg.destination("PACS"))
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_missing_files_are_named(tmp_path):
    with pytest.raises(ConfigErrors) as e:
        parse_config({**_dest(tls=True, ca_certificates=str(tmp_path / "nope.pem")),
                      "node": {"tls": {"certificate": str(tmp_path / "node.pem")}}})
    text = str(e.value)
    assert "destinations[0].ca_certificates" in text and "node.tls.certificate" in text
