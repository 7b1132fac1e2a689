"""The dashboard's own files (static/): its stylesheet, its script and htmx, vendored (no CDN, no build
step). Only the files shipped in the package are served, by name."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from runner.dashboard.dashboard import Dashboard

__all__ = ["STATIC", "routes"]

STATIC = Path(__file__).parent / "static"
_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".txt": "text/plain"}
_FILES = {p.name: p for p in STATIC.iterdir() if p.suffix in _TYPES}


def routes(dash: Dashboard) -> APIRouter:
    router = APIRouter()

    @router.get("/static/{name}", name=dash.route("static"))
    async def asset(name: str) -> FileResponse:
        path = _FILES.get(name)
        if path is None:
            raise HTTPException(404, f"no dashboard file {name!r}")
        headers = {"Cache-Control": "private, max-age=300", "X-Content-Type-Options": "nosniff"}
        return FileResponse(path, media_type=_TYPES[path.suffix], headers=headers)

    return router
