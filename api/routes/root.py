"""`GET /`: the old backend sent browsers to its web pages; so does this one."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import RedirectResponse

__all__ = ["router"]

router = APIRouter(tags=["pages"])


@router.get("/", response_class=RedirectResponse, status_code=307, include_in_schema=True)
async def root() -> RedirectResponse:
    """The web pages' start (307 to /static/index.html)."""
    return RedirectResponse("/static/index.html", status_code=307)
