"""The console's ASGI app: :func:`create_app` builds it over a running node (see the package docstring)."""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol
from urllib.parse import quote

from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from dicomnode import __version__
from dicomnode.config import NodeConfig
from dicomnode.store.db import Database
from dicomnode.web.auth import (LOGIN_CSRF_COOKIE, SESSION_COOKIE, VIEWER_DEPENDENCY, LoginLimiter, SessionStore,
                                Viewer, authenticate, check_login, client_address)
from dicomnode.web.settings import Role
from dicomnode.web.templating import STATIC_DIR, render

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
OPENAPI_PATH = f"{API_PREFIX}/openapi.json"
SHIPPED_OPENAPI = Path(__file__).parent / "openapi.json"
MAX_BODY_BYTES = 80 * 2**20  # the largest request: a rule test's upload of one DICOM file (at most 64 MiB) and its form
MAX_FORM_BYTES = 2**20  # any other request: a login or action form, a small JSON body
UPLOAD_PATHS = frozenset({"/rules/test", f"{API_PREFIX}/rules/test"})  # the routes that take a file


def body_limit_for(path: str) -> int:
    """The most bytes a request body to ``path`` may hold: :data:`MAX_BODY_BYTES` for an upload route,
    :data:`MAX_FORM_BYTES` for any other."""
    return MAX_BODY_BYTES if path.rstrip("/") in UPLOAD_PATHS else MAX_FORM_BYTES


class _BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over {_size(limit)}")


def _size(n: int) -> str:
    return f"{n // 2**20} MiB" if n >= 2**20 else f"{n // 1024} KiB"


class BodyLimit:
    """ASGI middleware (the outermost of the app's own): no request body beyond :func:`body_limit_for` its path.

    A declared ``Content-Length`` over the limit is answered 413 before anything reads the body. A body without one
    (``Transfer-Encoding: chunked``) is counted as the server hands it over, chunk by chunk: the read that passes
    the limit raises a 413 HTTPException inside the app (so a form or upload parser, and Starlette's spooling of an
    upload, stop there), and the answer is 413 whatever the route made of that. The 413 says ``Connection: close``:
    uvicorn then closes the connection instead of reading (and dropping) the rest of the body. uvicorn itself stops
    reading the socket while a request's unread body is over 64 KiB, so nothing buffers more than that.
    """

    def __init__(self, app: Any, *, limit_for: Callable[[str], int] = body_limit_for, tls: bool = False) -> None:
        self.app, self.limit_for, self.tls = app, limit_for, tls

    async def _refuse(self, scope: dict, receive: Any, send: Any, limit: int) -> None:
        response = JSONResponse({"detail": f"request body over {_size(limit)}"}, status_code=413,
                                headers={"Connection": "close"})
        _security_headers(response, self.tls, scope.get("path", ""))
        await response(scope, receive, send)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        declared = next((v for k, v in scope.get("headers", ()) if k.lower() == b"content-length"), b"")
        if declared.strip().isdigit() and int(declared) > limit:  # before anything reads (or spools) the body
            await self._refuse(scope, receive, send, limit)
            return
        received = 0
        over = started = False

        async def limited_receive() -> dict:
            nonlocal received, over
            if over:
                raise _BodyTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    raise _BodyTooLarge(limit)
            return message

        async def guarded_send(message: dict) -> None:
            nonlocal started
            if over and not started:
                if message["type"] != "http.response.start" or message.get("status") != 413:
                    return  # the route's answer to a body it could not read whole: ours replaces it
                message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not over or started:
                raise
        if over and not started:
            await self._refuse(scope, receive, send, limit)


class NodeHandle(Protocol):
    """What the console needs of the node (:class:`dicomnode.node.Node` is one)."""

    @property
    def config(self) -> NodeConfig: ...

    db: Database
    data_dir: Path

    def reload_config(self, *, actor: str) -> NodeConfig: ...

    def force_complete(self, series_uid: str, *, actor: str) -> list[int]: ...


class Console:
    """The app's state (``request.app.state.console``): the node, sessions, the login limiter."""

    def __init__(self, node: NodeHandle, *, metrics_registry: Any = None, tls: bool = False) -> None:
        self.node = node
        self.db = node.db
        self.metrics_registry = metrics_registry
        self.tls = tls
        self.sessions = SessionStore()
        http = node.config.http
        self.limiter = LoginLimiter(http.login_max_failures, http.login_window_seconds)

    def config(self) -> NodeConfig:
        return self.node.config

    def audit(self, event: str, principal: Any, *, series_uid: str = "", **detail: Any) -> None:
        """An action into the audit trail, with the user who did it."""
        self.db.audit(event, actor=principal.name, series_uid=series_uid,
                      detail={**detail, **principal.audit_detail()})


def _wants_html(request: Request) -> bool:
    return (not request.url.path.startswith(API_PREFIX + "/") and request.url.path != "/metrics"
            and "text/html" in request.headers.get("accept", ""))


def _safe_next(target: str | None) -> str:
    """A local path to go to after login (never another site: ``//evil``, ``https://...``, backslashes)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _security_headers(response: Response, tls: bool, path: str) -> None:
    h = response.headers
    h.setdefault("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; object-src 'none'; "
                 "base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("Referrer-Policy", "no-referrer")
    if not path.startswith("/static/"):
        h.setdefault("Cache-Control", "no-store")
    if tls:
        h.setdefault("Strict-Transport-Security", "max-age=31536000")


def create_app(node: NodeHandle, *, metrics_registry: Any = None, console: bool = True, tls: bool = False,
               metrics_public: bool | None = None) -> FastAPI:
    """The ASGI app over ``node``.

    ``console=False`` (``[metrics] port`` without ``[http]``): ``/healthz`` and a public ``/metrics`` only, as the
    node served before the console existed. ``console=True``: login, pages, the REST API under ``/api/v1``,
    ``/metrics`` (needing a login or token unless ``[metrics] public``) and ``/healthz``.
    """
    app = FastAPI(title="dicomnode console API", version=__version__, openapi_url=None, docs_url=None,
                  redoc_url=None, swagger_ui_oauth2_redirect_url=None,
                  description="The REST API of a dicomnode (the same functions as the `dicomnode` CLI). "
                              "Authenticate with `Authorization: Bearer <token>` (`dicomnode token add NAME --role "
                              "R`). Roles: viewer (read), operator (retry, requeue, reprocess, force completion, "
                              "echo), admin (reload the configuration).")
    state = Console(node, metrics_registry=metrics_registry, tls=tls)
    app.state.console = state

    public = (not console) if metrics_public is None else metrics_public
    open_paths = {"/healthz", "/login"} | ({"/metrics"} if public else set())

    @app.middleware("http")
    async def gate(request: Request, call_next: Callable[[Request], Any]) -> Response:
        """Defence in depth: nothing but /healthz, /login, /static/ (and a public /metrics) answers an anonymous
        request, not even with a 404; the routes' own dependencies check roles and CSRF."""
        path = request.url.path
        if console and path not in open_paths and not path.startswith("/static/"):
            try:
                anonymous = authenticate(request) is None
            except HTTPException as e:
                response = await http_error(request, e)
                _security_headers(response, tls, path)
                return response
            if anonymous:
                response = await http_error(request, HTTPException(
                    401, "log in, or send an API token as Authorization: Bearer <token>",
                    headers={"WWW-Authenticate": "Bearer"}))
                _security_headers(response, tls, path)
                return response
        response = await call_next(request)
        _security_headers(response, tls, path)
        return response

    app.add_middleware(BodyLimit, tls=tls)  # added last: outside the gate, it sees the body first

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        extra = dict(exc.headers or {})
        if _wants_html(request):
            if exc.status_code == 401:
                return _login_page(request, status_code=401, next_path=request.url.path)
            return render(request, "error.html", {"status": exc.status_code, "message": str(exc.detail)},
                          status_code=exc.status_code, headers=extra)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=extra)

    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(StarletteHTTPException)
    async def starlette_error(request: Request, exc: StarletteHTTPException) -> Response:  # 404s of unknown paths
        return await http_error(request, HTTPException(exc.status_code, exc.detail, headers=exc.headers))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> Response:
        """Liveness without login: the node runs and its index answers."""
        try:
            state.db.get_meta("schema_version")
        except Exception as e:  # noqa: BLE001 - the index is the node's heart
            log.error("healthz: the index does not answer: %s", e)
            return JSONResponse({"status": "index unreadable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    if metrics_registry is not None:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        def metrics() -> Response:
            return Response(generate_latest(metrics_registry), media_type=CONTENT_TYPE_LATEST)

        app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False,
                          dependencies=[] if public else [VIEWER_DEPENDENCY])
    if not console:
        return app

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _login_routes(app, state)

    from dicomnode.web.api import router as api_router
    app.include_router(api_router, prefix=API_PREFIX, dependencies=[VIEWER_DEPENDENCY])

    @app.get(OPENAPI_PATH, include_in_schema=False)
    def openapi(_: Viewer) -> JSONResponse:
        return JSONResponse(openapi_document(app))

    from dicomnode.web.pages import router as pages_router
    app.include_router(pages_router, dependencies=[VIEWER_DEPENDENCY])
    return app


@dataclass(frozen=True, slots=True)
class RouteInfo:
    """One route of the app, as a request sees it: full path, methods, and the least role it needs (None: open)."""

    path: str
    methods: frozenset[str]
    role: Role | None
    in_schema: bool


def _role_of(dependant: Any) -> Role | None:
    """The highest role any ``require(...)`` dependency of a route asks for (the dependency tree, walked)."""
    best: Role | None = None
    stack = [dependant]
    while stack:
        d = stack.pop()
        name = getattr(getattr(d, "call", None), "__name__", "")
        if name.startswith("require_"):
            r = Role.parse(name.removeprefix("require_"))
            best = r if best is None or r.allows(best) else best
        stack.extend(getattr(d, "dependencies", ()))
    return best


def iter_routes(app: FastAPI) -> list[RouteInfo]:
    """Every route of ``app`` (included routers expanded; the static mount left out): the security tests walk
    these, so a page or endpoint added later is checked without a test naming it."""
    from fastapi.routing import APIRoute
    out = []
    for r in app.routes:
        contexts = getattr(r, "effective_route_contexts", None)  # FastAPI >= 0.16x includes routers lazily
        if contexts is not None:
            for c in contexts():
                out.append(RouteInfo(c.path, frozenset(c.methods or ()), _role_of(c.dependant), c.include_in_schema))
        elif isinstance(r, APIRoute):
            out.append(RouteInfo(r.path, frozenset(r.methods or ()), _role_of(r.dependant), r.include_in_schema))
    return out


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document of the API (what ``/api/v1/openapi.json`` serves and ``openapi.json`` ships); each
    operation names the least role it needs in ``x-dicomnode-role``."""
    if app.openapi_schema is None:
        doc = app.openapi()
        for info in iter_routes(app):
            for method in info.methods:
                op = doc.get("paths", {}).get(info.path, {}).get(method.lower())
                if op is not None and info.role is not None:
                    op["x-dicomnode-role"] = info.role.value
        doc.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
            "type": "http", "scheme": "bearer",
            "description": "an API token from `dicomnode token add NAME --role R`"}
        doc["security"] = [{"bearer": []}]
        doc["servers"] = [{"url": "/"}]
        app.openapi_schema = doc
    return app.openapi_schema


def openapi_text(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def _login_page(request: Request, *, status_code: int = 200, next_path: str = "/", error: str = "") -> Response:
    token = secrets.token_urlsafe(32)
    response = render(request, "login.html", {"login_csrf": token, "next": _safe_next(next_path), "error": error},
                      status_code=status_code)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict",
                        secure=request.app.state.console.tls, path="/login")
    return response


def _login_routes(app: FastAPI, state: Console) -> None:
    @app.get("/login", include_in_schema=False)
    def login_form(request: Request, next: str = "/") -> Response:  # noqa: A002 - the query parameter's name
        if authenticate(request) is not None:
            return RedirectResponse(_safe_next(next), status_code=303)
        return _login_page(request, next_path=next)

    @app.post("/login", include_in_schema=False)
    def login(request: Request, username: str = Form(""), password: str = Form(""), csrf_token: str = Form(""),
              next: str = Form("/")) -> Response:  # noqa: A002
        cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        if not cookie or not csrf_token or not secrets.compare_digest(cookie, csrf_token):
            raise HTTPException(403, "missing or wrong CSRF token: reload the login page and try again")
        client = client_address(request)
        keys = [f"addr:{client}", f"name:{username}"]
        wait = state.limiter.retry_after(keys)
        if wait > 0:
            state.db.audit("login refused", actor=username[:64], detail={"client": client, "reason": "rate limit"})
            raise HTTPException(429, f"too many failed logins; try again in {wait:.0f} s",
                                headers={"Retry-After": str(int(wait) + 1)})
        role = check_login(state.config().http, username, password)
        if role is None:
            state.limiter.failed(keys)
            state.db.audit("login failed", actor=username[:64], detail={"client": client})
            log.warning("console login failed", extra={"client": client})
            return _login_page(request, status_code=401, next_path=next, error="wrong name or password")
        state.limiter.succeeded(f"name:{username}")
        session = state.sessions.create(username, state.config().http.session_seconds)
        state.db.audit("login", actor=username, detail={"client": client, "role": role.value})
        response = RedirectResponse(_safe_next(next), status_code=303)
        response.set_cookie(SESSION_COOKIE, session.id, httponly=True, samesite="strict", secure=state.tls, path="/",
                            max_age=int(state.config().http.session_seconds))
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
        return response

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request, user: Viewer) -> Response:
        sid = request.cookies.get(SESSION_COOKIE)
        if sid:
            state.sessions.delete(sid)
        state.audit("logout", user)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response


def safe_path(root: Path | str, *parts: str) -> Path:
    """``root/parts...`` if it stays inside ``root`` (no ``..``, no absolute part, no link leading out), else a 404.

    For every route that serves a file from the data folder (result images...)."""
    base = Path(root).resolve()
    for p in parts:
        if not p or p in (".", "..") or "/" in p or "\\" in p or "\0" in p or Path(p).is_absolute():
            raise HTTPException(404, "no such file")
    target = base.joinpath(*parts).resolve()
    if target != base and base not in target.parents:
        raise HTTPException(404, "no such file")
    return target


def login_url(next_path: str) -> str:
    return f"/login?next={quote(_safe_next(next_path))}"


__all__ = ["API_PREFIX", "Console", "NodeHandle", "RouteInfo", "create_app", "iter_routes", "openapi_document",
           "safe_path"]
