"""Who is asking, and may they: sessions, API tokens, roles, CSRF and login rate limiting.

* A browser logs in at ``/login`` (form POST) and gets a session cookie (``dicomnode_session``: random, HttpOnly,
  SameSite=Strict, Secure under TLS; the session lives in the node's memory, so a restart logs everyone out).
* A program sends ``Authorization: Bearer <token>`` (``dicomnode token add NAME --role R`` prints a token once).
* Every unsafe request (POST, PUT, PATCH, DELETE) made with a session cookie carries the session's CSRF token, as the
  form field ``csrf_token`` or the header ``X-CSRF-Token``; :func:`require` checks it for every route, so a page
  cannot forget. Bearer requests need none (a browser never adds that header by itself).
* Roles: :class:`~dicomnode.web.settings.Role` (viewer < operator < admin). ``Depends(require(Role.OPERATOR))``, or
  the annotated shortcuts :data:`Viewer`, :data:`Operator`, :data:`Admin` as a parameter type.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable

from fastapi import Depends, HTTPException, Request

from dicomnode.web.settings import DUMMY_HASH, HttpSection, Role, token_sha256, verify_password

SESSION_COOKIE = "dicomnode_session"
LOGIN_CSRF_COOKIE = "dicomnode_login_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Principal:
    """The account behind a request: its name, role, and how it proved it (``session`` or ``token``)."""

    name: str
    role: Role
    via: str
    csrf_token: str = ""  # the session's CSRF token ("" for a token)
    client: str = ""      # the client's address

    def audit_detail(self) -> dict[str, str]:
        return {"role": self.role.value, "via": self.via, "client": self.client}


@dataclass(slots=True)
class Session:
    id: str
    user: str
    csrf_token: str
    expires_at: float
    created_at: float = field(default_factory=time.time)


class SessionStore:
    """Sessions in memory (the node's process): id -> user, CSRF token, expiry."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, user: str, lifetime_seconds: float, now: float | None = None) -> Session:
        now = time.time() if now is None else now
        s = Session(secrets.token_urlsafe(32), user, secrets.token_urlsafe(32), now + lifetime_seconds, now)
        with self._lock:
            self._sessions = {k: v for k, v in self._sessions.items() if v.expires_at > now}
            self._sessions[s.id] = s
        return s

    def get(self, session_id: str, now: float | None = None) -> Session | None:
        now = time.time() if now is None else now
        with self._lock:
            s = self._sessions.get(session_id)
            if s is not None and s.expires_at <= now:
                del self._sessions[session_id]
                return None
            return s

    def delete(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)


class LoginLimiter:
    """Failed logins per name and per client address within ``window_seconds``: ``max_failures`` for one name, or
    4 x ``max_failures`` from one address (many names tried, or several people behind one proxy), block further
    attempts of that name or address until the oldest failure leaves the window."""

    ADDRESS_FACTOR = 4

    def __init__(self, max_failures: int, window_seconds: float) -> None:
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, keys: list[str], now: float | None = None) -> float:
        """Seconds until ``keys`` may try again (0: now)."""
        now = time.time() if now is None else now
        wait = 0.0
        with self._lock:
            for k in keys:
                q = self._failures.get(k)
                if not q:
                    continue
                while q and q[0] <= now - self.window_seconds:
                    q.popleft()
                limit = self.max_failures * (self.ADDRESS_FACTOR if k.startswith("addr:") else 1)
                if len(q) >= limit:
                    wait = max(wait, q[-limit] + self.window_seconds - now)
        return wait

    def failed(self, keys: list[str], now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._lock:
            if len(self._failures) > 100_000:  # bounded memory under a spray of names
                self._failures.clear()
            for k in keys:
                self._failures.setdefault(k, deque()).append(now)

    def succeeded(self, name_key: str) -> None:
        with self._lock:
            self._failures.pop(name_key, None)


def check_login(http: HttpSection, name: str, password: str) -> Role | None:
    """The role of ``name`` if ``password`` is its password (the same work is done for an unknown name)."""
    user = http.user(name)
    ok = verify_password(password, user.password_hash if user else DUMMY_HASH)
    return user.role if (ok and user is not None) else None


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


def _token_principal(http: HttpSection, token: str, client: str) -> Principal | None:
    digest = token_sha256(token)
    for t in http.tokens:
        if hmac.compare_digest(t.token_sha256, digest):
            return Principal(t.name, t.role, "token", client=client)
    return None


def _session_principal(request: Request) -> Principal | None:
    sid = request.cookies.get(SESSION_COOKIE)
    if not sid:
        return None
    console = request.app.state.console
    s = console.sessions.get(sid)
    if s is None:
        return None
    user = console.config().http.user(s.user)  # a reload may have removed the account or changed its role
    if user is None:
        console.sessions.delete(sid)
        return None
    return Principal(user.name, user.role, "session", s.csrf_token, client_address(request))


def authenticate(request: Request) -> Principal | None:
    """The principal of a request (bearer token, else session cookie), or None."""
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    http = request.app.state.console.config().http
    auth = request.headers.get("authorization", "")
    p: Principal | None = None
    if auth[:7].lower() == "bearer ":
        p = _token_principal(http, auth[7:].strip(), client_address(request))
        if p is None:
            raise HTTPException(401, "invalid API token", headers={"WWW-Authenticate": "Bearer"})
    else:
        p = _session_principal(request)
    if p is not None:
        request.state.principal = p
        request.state.csrf_token = p.csrf_token
    return p


async def check_csrf(request: Request, principal: Principal) -> None:
    """Refuse (403) an unsafe request made with a session cookie whose CSRF token is missing or wrong."""
    if request.method in SAFE_METHODS or principal.via != "session":
        return
    sent = request.headers.get(CSRF_HEADER, "")
    if not sent and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()  # cached by Starlette: the route reads the same form
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else ""
    if not sent or not hmac.compare_digest(sent, principal.csrf_token):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and submit the form again")


def require(role: Role) -> Callable[[Request], Any]:
    """A dependency: the request's :class:`Principal` if it has ``role`` (or more); 401 if not logged in, 403 if
    the role is too low or the CSRF token of an unsafe request is missing or wrong."""

    async def dependency(request: Request) -> Principal:
        p = authenticate(request)
        if p is None:
            raise HTTPException(401, "log in, or send an API token as Authorization: Bearer <token>",
                                headers={"WWW-Authenticate": "Bearer"})
        if not p.role.allows(role):
            raise HTTPException(403, f"this needs the {role.value} role; {p.name} is {p.role.value}")
        await check_csrf(request, p)
        return p

    dependency.__name__ = f"require_{role.value}"
    return dependency


_VIEWER, _OPERATOR, _ADMIN = require(Role.VIEWER), require(Role.OPERATOR), require(Role.ADMIN)
Viewer = Annotated[Principal, Depends(_VIEWER)]
Operator = Annotated[Principal, Depends(_OPERATOR)]
Admin = Annotated[Principal, Depends(_ADMIN)]
#: for ``APIRouter(dependencies=[...])``: every route of the router needs at least a viewer
VIEWER_DEPENDENCY = Depends(_VIEWER)
