"""The [http] section, password and token hashing, and `dicomnode user|token add` writing the node's file."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dicomnode.config import effective_config, load_config, parse_config, to_toml
from dicomnode.errors import ConfigErrors
from dicomnode.web.settings import (HttpSection, Role, hash_password, token_sha256, valid_password_hash,
                                    verify_password)


def test_defaults_are_off_and_loopback():
    http = parse_config({}).http
    assert http == HttpSection() and not http.enabled and http.bind == "127.0.0.1" and http.users == ()


def test_scrypt_hash_round_trip_and_no_plaintext():
    h = hash_password("correct horse")
    assert valid_password_hash(h) and h.startswith("scrypt$16384$8$1$") and "correct" not in h
    assert verify_password("correct horse", h) and not verify_password("correct horsE", h)
    assert hash_password("correct horse") != h  # salted
    assert not verify_password("x", "plain-text") and not verify_password("x", "scrypt$99999999$8$1$AA$AA")


def test_roles_are_ordered():
    assert Role.ADMIN.allows(Role.OPERATOR) and Role.OPERATOR.allows(Role.VIEWER)
    assert not Role.VIEWER.allows(Role.OPERATOR) and not Role.OPERATOR.allows(Role.ADMIN)
    with pytest.raises(ValueError, match="viewer, operator or admin"):
        Role.parse("root")


def test_every_error_names_the_key_and_the_fix(tmp_path):
    doc = {"node": {"port": 11112}, "metrics": {"port": 9108},
           "http": {"enabled": True, "port": 11112, "tls": True, "viewer_url": "ftp://x", "colour": "blue",
                    "users": [{"name": "a b", "role": "root", "password_hash": "hunter2"},
                              {"name": "ok", "role": "viewer", "password_hash": hash_password("p4ssword")},
                              {"name": "ok", "role": "viewer", "password_hash": hash_password("p4ssword")}],
                    "tokens": [{"name": "t", "role": "viewer", "token_sha256": "abc"}]}}
    with pytest.raises(ConfigErrors) as e:
        parse_config(doc, base_dir=tmp_path)
    text = str(e.value)
    for needle in ("http.port", "is node.port (DICOM) too", "metrics.port", "one HTTP server",
                   "http.certificate", "[node.tls] certificate", "http.viewer_url", "http.colour",
                   "http.users[0].name", "http.users[0].role", "http.users[0].password_hash",
                   "dicomnode user add", "http.users[2].name", "duplicate", "http.tokens[0].token_sha256"):
        assert needle in text, needle
    assert "hunter2" not in text  # a (wrong) secret is not echoed


def test_config_show_redacts_hashes_and_keeps_names():
    cfg = parse_config({"http": {"users": [{"name": "ann", "role": "admin", "password_hash": hash_password("pw")}],
                                 "tokens": [{"name": "prom", "role": "viewer",
                                             "token_sha256": token_sha256("dn_x")}]}})
    doc = effective_config(cfg)
    assert doc["http"]["users"] == [{"name": "ann", "role": "admin", "password_hash": "<redacted>"}]
    assert doc["http"]["tokens"][0]["name"] == "prom" and doc["http"]["tokens"][0]["token_sha256"] == "<redacted>"
    assert "scrypt$" not in to_toml(doc)


def _cli(*args, input=None):
    return subprocess.run([sys.executable, "-m", "dicomnode", *args], capture_output=True, text=True, input=input,
                          timeout=120)


def test_user_add_writes_a_hash_keeps_the_file_and_replaces(tmp_path):
    cfg = tmp_path / "node.toml"
    cfg.write_text("# my node\n[node]\nport = 11112  # DICOM\n\n[http]\nenabled = true\n")
    cfg.chmod(0o640)
    r = _cli("user", "add", "ann", "--role", "operator", "--password-stdin", "-c", str(cfg), input="s3cret-pass\n")
    assert r.returncode == 0, r.stderr
    text = cfg.read_text()
    assert text.startswith("# my node\n[node]\nport = 11112  # DICOM\n") and "s3cret-pass" not in text
    assert (cfg.stat().st_mode & 0o777) == 0o640
    user = load_config(cfg).http.user("ann")
    assert user.role is Role.OPERATOR and verify_password("s3cret-pass", user.password_hash)
    r = _cli("user", "add", "ann", "--role", "admin", "--password-stdin", "-c", str(cfg), input="n3w-password\n")
    assert r.returncode == 0 and "updated" in r.stdout
    users = load_config(cfg).http.users
    assert len(users) == 1 and users[0].role is Role.ADMIN and verify_password("n3w-password", users[0].password_hash)
    short = _cli("user", "add", "bob", "--role", "viewer", "--password-stdin", "-c", str(cfg), input="short\n")
    assert short.returncode == 2 and "8 characters" in short.stderr
    assert _cli("user", "list", "-c", str(cfg)).stdout == "ann\tadmin\n"
    assert _cli("user", "remove", "ann", "-c", str(cfg)).returncode == 0 and load_config(cfg).http.users == ()


def test_token_add_prints_it_once_and_stores_its_digest(tmp_path):
    cfg = tmp_path / "node.toml"
    cfg.write_text("[http]\nenabled = true\n")
    r = _cli("token", "add", "prometheus", "--role", "viewer", "-c", str(cfg))
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert token.startswith("dn_") and len(token) > 40 and token not in cfg.read_text()
    (t,) = load_config(cfg).http.tokens
    assert t.token_sha256 == token_sha256(token) and t.role is Role.VIEWER


def test_an_invalid_file_is_left_untouched(tmp_path):
    cfg = tmp_path / "node.toml"
    before = "[http]\nusers = []\n"  # an inline array: [[http.users]] cannot be added to it
    cfg.write_text(before)
    r = _cli("user", "add", "ann", "--role", "viewer", "--password-stdin", "-c", str(cfg), input="long-enough\n")
    assert r.returncode == 1 and "left as it was" in r.stderr or "not valid TOML" in r.stderr, r.stderr
    assert cfg.read_text() == before
    assert _cli("user", "add", "ann", "--role", "viewer", "--password-stdin", input="long-enough\n").returncode == 2


def test_config_check_runtime_names_a_busy_http_port(tmp_path):
    import socket
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = tmp_path / "node.toml"
        cfg.write_text(f'[node]\nport = 0\ndata_dir = "data"\n[http]\nenabled = true\nport = {port}\n')
        r = _cli("config", "check", "--runtime", str(cfg))
    assert r.returncode == 2 and f"http.port = {port}" in r.stderr and "in use" in r.stderr, r.stderr
