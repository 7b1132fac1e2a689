"""Errors as HTTP answers, and the statuses each route documents in the OpenAPI schema.

A server that is down is a JSON 503 naming it, never a 500: Redis errors (redis-py wraps all of them)
and Postgres's connection errors are answered here, once, for every route.
"""

from __future__ import annotations

import json
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from redis.exceptions import RedisError

from runner.servers import POSTGRES_DOWN, unavailable_server

__all__ = ["BAD_BODY", "CONFLICT", "NOT_FOUND", "SERVER_DOWN", "ErrorOut", "ServerDownOut", "install_error_handlers"]

log = structlog.get_logger("api.errors")


class ErrorOut(BaseModel):
    detail: str


class ServerDownOut(BaseModel):
    detail: str
    server: str


_NAMES = {"redis": "Redis (the job queue)", "postgres": "Postgres (the database)"}

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut, "description": "No such id"}}
CONFLICT: dict[int | str, dict[str, Any]] = {409: {"model": ErrorOut, "description": "The job already ended"}}
BAD_BODY: dict[int | str, dict[str, Any]] = {400: {"model": ErrorOut, "description": "The body could not be read"}}
SERVER_DOWN: dict[int | str, dict[str, Any]] = {
    503: {"model": ServerDownOut, "description": "Redis or Postgres is unavailable; `server` names which"}
}


async def _server_down(request: Request, exc: Exception) -> JSONResponse:
    server = unavailable_server(exc) or "postgres"
    log.error("server_unavailable", server=server, path=request.url.path, error=repr(exc))
    detail = f"{_NAMES[server]} is unavailable ({type(exc).__name__}: {exc}); nothing was saved, please retry"
    return JSONResponse({"detail": detail, "server": server}, status_code=503, headers={"Retry-After": "5"})


async def _invalid_request(request: Request, exc: Exception) -> Response:
    """FastAPI's 422, rendered with ASCII escapes: the echoed input may hold a lone surrogate, which
    cannot be encoded as UTF-8 (FastAPI's own handler then fails with a 500)."""
    assert isinstance(exc, RequestValidationError)
    body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True)
    return Response(body, status_code=422, media_type="application/json")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _invalid_request)
    down: tuple[type[Exception], ...] = (RedisError, *POSTGRES_DOWN)
    for exc_type in down:
        app.add_exception_handler(exc_type, _server_down)
