"""Server-rendered pages: one Jinja2 environment (autoescaping on for every template), templates from
``dicomnode/web/templates/``, static files from ``dicomnode/web/static/`` (shipped in the package, no CDN).

Every template gets these globals from :func:`render`: ``request``, ``user`` (the :class:`~dicomnode.web.auth.Principal`
or None), ``csrf_token`` (the session's), ``csrf_field()`` (the hidden ``<input>`` a form needs), ``version``,
``nav`` (the pages of the menu the user may see), ``viewer_url(study_uid)`` ("" when ``[http] viewer_url`` is unset)
and ``static(path)`` (the URL of a shipped static file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping
from urllib.parse import quote

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape

from dicomnode import __version__
from dicomnode.web.settings import Role

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"

#: the menu: (path, label, least role that sees it). Pages live in dicomnode/web/pages.py.
NAV: tuple[tuple[str, str, Role], ...] = (
    ("/", "Overview", Role.VIEWER),
    ("/series", "Series", Role.VIEWER),
    ("/jobs", "Jobs", Role.VIEWER),
    ("/outbox", "Outbox", Role.VIEWER),
    ("/rules", "Rules", Role.VIEWER),
    ("/destinations", "Destinations", Role.VIEWER),
    ("/audit", "Audit", Role.VIEWER),
    ("/config", "Config", Role.VIEWER),
)

env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)), autoescape=True,
                         undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
templates = Jinja2Templates(env=env)


def _static(path: str) -> str:
    return "/static/" + quote(path.lstrip("/"))


env.globals.update(version=__version__, static=_static)


def viewer_link(request: Request, study_uid: str) -> str:
    """The external viewer's URL for a study (``[http] viewer_url`` with ``{study_uid}``), or ""."""
    pattern = request.app.state.console.config().http.viewer_url
    return pattern.replace("{study_uid}", quote(study_uid, safe="")) if pattern and study_uid else ""


def render(request: Request, name: str, context: Mapping[str, Any] | None = None, *, status_code: int = 200,
           headers: Mapping[str, str] | None = None) -> HTMLResponse:
    """Render ``templates/<name>`` (autoescaped) with the globals listed in the module docstring."""
    from dicomnode.web.auth import authenticate

    try:
        user = authenticate(request)
    except Exception:  # noqa: BLE001 - an invalid bearer token on an error page: render it logged out
        user = None
    token = user.csrf_token if user is not None else ""
    ctx: dict[str, Any] = {
        "request": request, "user": user, "csrf_token": token,
        "csrf_field": lambda: Markup(f'<input type="hidden" name="csrf_token" value="{escape(token)}">'),
        "nav": [(path, label) for path, label, role in NAV if user is not None and user.role.allows(role)],
        "viewer_url": lambda study_uid: viewer_link(request, study_uid),
        "Role": Role,
    }
    ctx.update(context or {})
    return templates.TemplateResponse(request, name, ctx, status_code=status_code, headers=dict(headers or {}))
