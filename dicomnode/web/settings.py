"""The ``[http]`` section: the console's server, its accounts and API tokens (no web library imported here).

::

    [http]
    enabled = true               # off by default
    bind = "127.0.0.1"           # default: loopback only
    port = 8104
    tls = true                   # HTTPS with [node.tls] certificate and private_key (or the two keys below)
    # certificate = "http.pem"   # same key names as [node.tls]; default: those of [node.tls]
    # private_key = "http.key"
    session_seconds = 28800      # a login lasts this long (8 h)
    login_max_failures = 5       # failed logins from one address or for one name within login_window_seconds
    login_window_seconds = 300   # ... before further attempts are refused (HTTP 429) until the window passes
    viewer_url = ""              # a study in an external viewer, e.g.
                                 # "https://ohif.example/viewer?StudyInstanceUIDs={study_uid}"

    [[http.users]]               # written by `dicomnode user add NAME --role R`
    name = "alice"
    role = "operator"            # viewer | operator | admin
    password_hash = "scrypt$16384$8$1$<salt>$<hash>"

    [[http.tokens]]              # written by `dicomnode token add NAME --role R` (the token is printed once)
    name = "prometheus"
    role = "viewer"
    token_sha256 = "<hex>"

Passwords are hashed with scrypt (:func:`hash_password`); API tokens are 256-bit random strings, stored as their
SHA-256 (a token is never guessable, so a slow hash adds nothing).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1  # 16 MiB, ~50 ms per check: the OWASP minimum for scrypt
TOKEN_PREFIX = "dn_"


class Role(str, enum.Enum):
    """What an account may do; each role includes the ones below it (compare with :meth:`allows`)."""

    VIEWER = "viewer"      # read: status, series, jobs, outbox, audit, config (redacted), rule tests
    OPERATOR = "operator"  # + retry, requeue, reprocess, force completion, echo
    ADMIN = "admin"        # + reload the configuration

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, needed: "Role") -> bool:
        """Whether this role may do what ``needed`` may."""
        return self.rank >= needed.rank

    @classmethod
    def parse(cls, text: str) -> "Role":
        try:
            return cls(str(text).lower())
        except ValueError:
            raise ValueError(f"unknown role {text!r}; use viewer, operator or admin") from None


_RANK = {Role.VIEWER: 1, Role.OPERATOR: 2, Role.ADMIN: 3}


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role
    password_hash: str


@dataclass(frozen=True, slots=True)
class ApiToken:
    name: str
    role: Role
    token_sha256: str


@dataclass(frozen=True, slots=True)
class HttpSection:
    """The console's HTTP server (see the module docstring). Off unless ``enabled``."""

    enabled: bool = False
    bind: str = "127.0.0.1"
    port: int = 8104
    tls: bool = False
    certificate: str = ""  # PEM; "" = [node.tls] certificate
    private_key: str = ""  # PEM; "" = [node.tls] private_key
    session_seconds: float = 8 * 3600.0
    login_max_failures: int = 5
    login_window_seconds: float = 300.0
    viewer_url: str = ""
    users: tuple[User, ...] = ()
    tokens: tuple[ApiToken, ...] = field(default_factory=tuple)

    def user(self, name: str) -> User | None:
        return next((u for u in self.users if u.name == name), None)


# -- hashing --------------------------------------------------------------------------------------------------
def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii").rstrip("=")


def _unb64(s: str) -> bytes:
    return base64.b64decode(s + "=" * (-len(s) % 4))


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64, no padding) of ``password``."""
    if not password:
        raise ValueError("an empty password cannot be used")
    salt = salt or secrets.token_bytes(16)
    h = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(h)}"


def valid_password_hash(text: str) -> bool:
    parts = text.split("$")
    return (len(parts) == 6 and parts[0] == "scrypt" and all(p.isdigit() for p in parts[1:4])
            and all(re.fullmatch(r"[A-Za-z0-9+/]+", p) for p in parts[4:]))


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (constant-time compare)."""
    if not valid_password_hash(stored):
        return False
    _, n, r, p, salt, want = stored.split("$")
    n_, r_, p_ = int(n), int(r), int(p)
    if n_ > 2**20 or r_ > 32 or p_ > 16:  # a hand-edited hash must not make a login take minutes
        return False
    got = hashlib.scrypt(password.encode("utf-8"), salt=_unb64(salt), n=n_, r=r_, p=p_, dklen=len(_unb64(want)),
                         maxmem=min(2**31 - 1, 129 * r_ * (n_ + p_ + 2) + 2**20))
    return hmac.compare_digest(got, _unb64(want))


DUMMY_HASH = hash_password("not a password", salt=b"0123456789abcdef")  # equal work for unknown names


def new_token() -> str:
    """A new API token (printed once; only its SHA-256 is stored)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# -- parsing --------------------------------------------------------------------------------------------------
HTTP_KEYS = {"enabled", "bind", "port", "tls", "certificate", "private_key", "session_seconds",
             "login_max_failures", "login_window_seconds", "viewer_url", "users", "tokens"}


def parse_http(c: Any, doc: Mapping[str, Any], base_dir: Path, *, node: Any, metrics: Any) -> HttpSection:
    """``[http]`` of a parsed TOML document, errors into the config collector ``c`` (see ``dicomnode.config``)."""
    t = c.table(doc, "http")
    c.unknown(t, "http", HTTP_KEYS)
    d = HttpSection()
    enabled = c.boolean(t, "enabled", "http", d.enabled)
    tls = c.boolean(t, "tls", "http", d.tls)

    def pem(key: str) -> str:
        v = c.string(t, key, "http", "") or ""
        if v and not Path(v).is_absolute():
            v = str(base_dir / v)
        if v and not Path(v).is_file():
            c.err(f"http.{key}", v, "no such file; give the path of a PEM file (or leave it out to use "
                  f"[node.tls] {key})")
        return v

    certificate, private_key = pem("certificate"), pem("private_key")
    if enabled and tls:
        for key, own in (("certificate", certificate), ("private_key", private_key)):
            if not own and not getattr(node.tls, key):
                c.err(f"http.{key}", "", f"HTTPS needs a PEM {key.replace('_', ' ')}: set [node.tls] {key} (the "
                      f"DICOM TLS one is reused) or http.{key}")
    viewer_url = c.string(t, "viewer_url", "http", "") or ""
    if viewer_url and not re.match(r"^https?://", viewer_url):
        c.err("http.viewer_url", viewer_url, "an http(s) URL with {study_uid} where the Study Instance UID goes, "
              "e.g. \"http://ohif.local/viewer?StudyInstanceUIDs={study_uid}\"")
        viewer_url = ""
    users = _accounts(c, t, "users", "password_hash",
                      lambda v: valid_password_hash(v), "a scrypt hash written by `dicomnode user add NAME --role R`",
                      lambda name, role, h: User(name, role, h))
    tokens = _accounts(c, t, "tokens", "token_sha256",
                       lambda v: bool(re.fullmatch(r"[0-9a-f]{64}", v)),
                       "the SHA-256 (64 hex digits) written by `dicomnode token add NAME --role R`",
                       lambda name, role, h: ApiToken(name, role, h))
    port = c.number(t, "port", "http", d.port, minimum=0, maximum=65535, integer=True, example="8104")
    http = HttpSection(
        enabled=enabled, bind=c.string(t, "bind", "http", d.bind) or d.bind, port=port, tls=tls,
        certificate=certificate, private_key=private_key,
        session_seconds=float(c.number(t, "session_seconds", "http", d.session_seconds, minimum=60,
                                       example="28800 (8 h)")),
        login_max_failures=c.number(t, "login_max_failures", "http", d.login_max_failures, minimum=1, integer=True,
                                    example="5"),
        login_window_seconds=float(c.number(t, "login_window_seconds", "http", d.login_window_seconds, minimum=1,
                                            example="300")),
        viewer_url=viewer_url, users=users, tokens=tokens)
    if enabled:
        if port and port == node.port:
            c.err("http.port", port, "is node.port (DICOM) too; use another port, e.g. 8104")
        if metrics.port and metrics.port != port:
            c.err("metrics.port", metrics.port, f"the node runs one HTTP server: with [http] enabled it serves "
                  f"/metrics on http.port ({port}); remove metrics.port or set it to {port}")
    return http


def _accounts(c: Any, t: Mapping[str, Any], key: str, hash_key: str, hash_ok: Callable[[str], bool], hash_fix: str,
              make: Callable[[str, Role, str], Any]) -> tuple[Any, ...]:
    v = t.get(key, [])
    if not isinstance(v, list) or any(not isinstance(x, dict) for x in v):
        c.err(f"http.{key}", "...", f"use [[http.{key}]] tables")
        return ()
    out: list[Any] = []
    for i, u in enumerate(v):
        p = f"http.{key}[{i}]"
        c.unknown(u, p, {"name", "role", hash_key})
        name = c.string(u, "name", p, required=True)
        role_text = c.string(u, "role", p, required=True)
        h = c.string(u, hash_key, p, required=True)
        role = None
        if role_text is not None:
            try:
                role = Role.parse(role_text)
            except ValueError as e:
                c.err(f"{p}.role", role_text, str(e))
        if name is not None and not NAME_RE.match(name):
            c.err(f"{p}.name", name, "1 to 64 letters, digits and . _ @ -, starting with a letter or digit")
            name = None
        if name is not None and any(x.name == name for x in out):
            c.err(f"{p}.name", name, f"duplicate name in [[http.{key}]]; names must be unique")
            name = None
        if h is not None and not hash_ok(h):
            c.err(f"{p}.{hash_key}", "<redacted>", hash_fix)
            h = None
        if name and role and h:
            out.append(make(name, role, h))
    return tuple(out)
