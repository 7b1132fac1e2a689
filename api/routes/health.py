"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.deps import State
from runner.broker.queue import queue_depth
from runner.fleet.metrics import render
from runner.servers import check_servers

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is up and serving (says nothing of Redis or Postgres: see /ready)."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "Redis or Postgres does not answer; `checks` says which"}})
async def ready(state: State) -> JSONResponse:
    """200 only when Redis and Postgres both answer; else 503 naming the one that is down."""
    checks = await check_servers(state.resources.redis, state.resources.db)
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ok else "not ready", "checks": checks}, status_code=200 if ok else 503)


@router.get("/metrics", response_class=Response)
async def metrics(state: State) -> Response:
    """Prometheus metrics: every process of this fleet (multiprocess mode), plus live queue depth."""
    queue = state.resources.settings.queue_name
    depth = await queue_depth(state.resources.redis, queue)
    return Response(render(queue, depth.total, depth.due), media_type=CONTENT_TYPE_LATEST)
