"""The console's pages (owned by the UI work: replace this placeholder). See the package docstring."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from dicomnode.web.auth import Viewer
from dicomnode.web.templating import render

router = APIRouter()


@router.get("/", include_in_schema=False)
def overview(request: Request, user: Viewer) -> HTMLResponse:
    return render(request, "base.html")
