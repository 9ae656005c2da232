"""The node's one HTTP server: uvicorn running the console's ASGI app in a thread of the node's process.

:class:`WebServer` binds its socket in :meth:`~WebServer.start` (so a port in use fails the start, not later),
serves from its own event loop in a daemon thread, and :meth:`~WebServer.stop` asks uvicorn to finish the requests
in flight (at most ``graceful_seconds``) and joins the thread.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

log = logging.getLogger(__name__)


class WebServerError(OSError):
    """The HTTP server could not start (its port, its TLS files); the message names the key and the fix."""


class WebServer:
    def __init__(self, app: Any, *, bind: str, port: int, certificate: str = "", private_key: str = "",
                 key: str = "http.port", graceful_seconds: float = 5.0) -> None:
        self._app = app
        self.bind = bind
        self.port = port
        self._certificate = certificate
        self._private_key = private_key
        self._key = key
        self._graceful = graceful_seconds
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def tls(self) -> bool:
        return bool(self._certificate)

    @property
    def url(self) -> str:
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> int:
        """Bind and serve; returns the port (useful with port 0). Raises :class:`WebServerError`."""
        import uvicorn

        infos = socket.getaddrinfo(self.bind or None, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, addr = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as e:
            sock.close()
            raise WebServerError(f"{self._key} {self.port}: cannot listen on {self.bind}:{self.port} ({e.strerror});"
                                 " choose a free port") from None
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self._app, log_config=None, access_log=False, lifespan="off",
                                ssl_certfile=self._certificate or None, ssl_keyfile=self._private_key or None,
                                timeout_graceful_shutdown=int(self._graceful) or 1, server_header=False,
                                proxy_headers=False)
        try:
            config.load()  # the TLS files are read here: a bad one fails the start with its name
        except Exception as e:  # noqa: BLE001 - ssl.SSLError, OSError: named
            sock.close()
            raise WebServerError(f"cannot use the HTTPS certificate {self._certificate} / key {self._private_key}: "
                                 f"{e}; give PEM files, the key matching the certificate") from None
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # its start-up chatter; errors still logged
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="dicomnode-http", daemon=True)
        self._thread.start()
        def _wait() -> bool:
            import time
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if self._server.started:
                    return True
                if not self._thread.is_alive():
                    return False
                time.sleep(0.02)
            return False

        if not _wait():
            self.stop()
            raise WebServerError(f"the HTTP server on {self.bind}:{self.port} did not start")
        log.info("http server started", extra={"url": self.url})
        return self.port

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._server is None:
            return
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(timeout_s)
        self._server = None
        self._thread = None
        log.info("http server stopped")


def node_http_server(node: Any) -> WebServer | None:
    """The HTTP server a node's config asks for: the console (``[http] enabled``: pages, API, ``/metrics``,
    ``/healthz``), or as before the console ``/metrics`` and ``/healthz`` alone on ``[metrics] port`` (public); None
    when neither is set. Not started."""
    from dicomnode.web.app import create_app

    cfg = node.config
    registry = node.metrics.registry
    if cfg.http.enabled:
        http = cfg.http
        cert = (http.certificate or cfg.node.tls.certificate) if http.tls else ""
        key = (http.private_key or cfg.node.tls.private_key) if http.tls else ""
        app = create_app(node, metrics_registry=registry, console=True, tls=http.tls,
                         metrics_public=cfg.metrics.public)
        return WebServer(app, bind=http.bind, port=http.port, certificate=cert, private_key=key, key="http.port")
    if cfg.metrics.port:
        app = create_app(node, metrics_registry=registry, console=False)
        return WebServer(app, bind=cfg.metrics.bind, port=cfg.metrics.port, key="metrics.port")
    return None
