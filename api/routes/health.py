"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.deps import State
from runner.fleet.metrics import read_live, render
from runner.servers import check_servers

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is up and serving (says nothing of Redis or Postgres: see /ready)."""
    return {"status": "ok"}


@router.get(
    "/ready", responses={503: {"description": "Redis or Postgres does not answer or refuses; `checks` says which"}}
)
async def ready(state: State) -> JSONResponse:
    """200 only when Redis and Postgres both answer and Redis takes the queues' writes (each of QUEUES, else
    QUEUE_NAME); else 503 naming the one that is down ("down: ...") or that refuses ("refused: WRONGTYPE key ...
    holds a list ...", OOM, READONLY, ...)."""
    resources = state.resources
    checks = await check_servers(resources.redis, resources.db, queues=resources.settings.queue_names)
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ok else "not ready", "checks": checks}, status_code=200 if ok else 503)


@router.get("/metrics", response_class=Response)
async def metrics(state: State) -> Response:
    """Prometheus metrics: every process of this fleet (multiprocess mode), plus what is read live: each
    server up or not, and each queue's depth, oldest waiting job and live workers (each of QUEUES, else
    QUEUE_NAME). Always 200: with Redis down, `runner_server_up{server="redis"}` is 0 and the queues' numbers
    are left out."""
    resources = state.resources
    live = await read_live(resources.redis, resources.db, resources.settings.queue_names)
    return Response(render(live), media_type=CONTENT_TYPE_LATEST)
