"""Errors as HTTP answers, and the statuses each route documents in the OpenAPI schema.

A server that is down is a JSON 503 naming it, never a 500: Redis errors (redis-py wraps all of them)
and Postgres's connection errors are answered here, once, for every route. A Redis that is up but refuses
(WRONGTYPE, OOM, READONLY, ...; runner.broker.server_errors) is a 503 that says so: `error` is the kind,
`keys` the keys of a wrong type, `advice` what to do; never "unavailable".
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

from runner.broker.keys import QueueKeys
from runner.broker.server_errors import Refusal, RefusalKind, RefusalLog, classify, explain
from runner.fleet.metrics import REDIS_REFUSALS
from runner.servers import POSTGRES_DOWN, unavailable_server

__all__ = ["BAD_BODY", "CONFLICT", "NOT_FOUND", "SERVER_DOWN", "ErrorOut", "ServerDownOut", "install_error_handlers"]

log = structlog.get_logger("api.errors")


class ErrorOut(BaseModel):
    detail: str


class ServerDownOut(BaseModel):
    detail: str
    server: str
    error: str | None = None  # Redis is up but refused: WRONGTYPE, OOM, READONLY, NOSCRIPT, MISCONF, BUSY, ...
    keys: list[str] | None = None  # a WRONGTYPE's keys that hold another type than the runner keeps there
    advice: str | None = None  # what an operator does about the refusal


_NAMES = {"redis": "Redis (the job queue)", "postgres": "Postgres (the database)"}

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut, "description": "No such id"}}
CONFLICT: dict[int | str, dict[str, Any]] = {409: {"model": ErrorOut, "description": "The job already ended"}}
BAD_BODY: dict[int | str, dict[str, Any]] = {400: {"model": ErrorOut, "description": "The body could not be read"}}
SERVER_DOWN: dict[int | str, dict[str, Any]] = {
    503: {
        "model": ServerDownOut,
        "description": "Redis or Postgres is unavailable, or Redis refused (`error` says how); `server` names which",
    }
}


async def _server_down(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, RedisError) and (refusal := await _refusal(request, exc)) is not None:
        return _refused(request, refusal)
    server = unavailable_server(exc) or "postgres"
    log.error("server_unavailable", server=server, path=request.url.path, error=repr(exc))
    detail = f"{_NAMES[server]} is unavailable ({type(exc).__name__}: {exc}); nothing was saved, please retry"
    return JSONResponse({"detail": detail, "server": server}, status_code=503, headers={"Retry-After": "5"})


async def _refusal(request: Request, exc: RedisError) -> Refusal | None:
    """What Redis refused; a WRONGTYPE that does not name its key yet is looked up in the queue's shared keys."""
    refusal = classify(exc)
    state = getattr(request.app.state, "storymimi", None)
    if refusal is None or refusal.kind is not RefusalKind.WRONGTYPE or refusal.wrong_keys or state is None:
        return refusal
    return await explain(exc, state.resources.redis, QueueKeys.of(state.settings.queue_name).shared)


def _refused(request: Request, refusal: Refusal) -> JSONResponse:
    REDIS_REFUSALS.labels(refusal.kind).inc()
    refusals: RefusalLog = request.app.state.redis_refusals
    if refusals.due(refusal):  # once per distinct refusal (then each minute), not once per request
        log.error("redis_refused", what="request", path=request.url.path, **refusal.log_fields())
    then = "please retry" if refusal.transient else "retrying will not help until it is fixed"
    detail = f"{_NAMES['redis']} refused the request: {refusal.describe()}; nothing was saved, {then}"
    body = {"detail": detail, "server": "redis", "error": str(refusal.kind), "keys": refusal.keys,
            "advice": refusal.advice}  # fmt: skip
    return JSONResponse(body, status_code=503, headers={"Retry-After": "5" if refusal.transient else "30"})


async def _invalid_request(request: Request, exc: Exception) -> Response:
    """FastAPI's 422, rendered with ASCII escapes: the echoed input may hold a lone surrogate, which
    cannot be encoded as UTF-8 (FastAPI's own handler then fails with a 500)."""
    assert isinstance(exc, RequestValidationError)
    body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True)
    return Response(body, status_code=422, media_type="application/json")


def install_error_handlers(app: FastAPI) -> None:
    app.state.redis_refusals = RefusalLog()
    app.add_exception_handler(RequestValidationError, _invalid_request)
    down: tuple[type[Exception], ...] = (RedisError, *POSTGRES_DOWN)
    for exc_type in down:
        app.add_exception_handler(exc_type, _server_down)
