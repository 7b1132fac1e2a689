"""The workers page: each live worker's state, jobs, memory, event-loop lag (highlighted when high) and
heartbeat age, refreshed in place; Drain asks one to finish its jobs and exit (its supervisor starts a
fresh one)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from runner.dashboard.dashboard import Dashboard
from runner.dashboard.overview import REFRESH_S
from runner.ops.actions import drain_worker
from runner.ops.workers import list_workers
from runner.worker.presence import PRESENCE_S

__all__ = ["LAG_HIGH_MS", "LAG_WARN_MS", "routes"]

LAG_WARN_MS = 100.0  # a job holding the loop this long delays every other job of the worker
LAG_HIGH_MS = 1000.0  # LOOP_BLOCKED_LOG_S's default: the worker logs the stack it is stuck in
HEARTBEAT_STALE_S = PRESENCE_S * 2  # a report missed: the worker may be blocked or gone


def routes(dash: Dashboard) -> APIRouter:
    router = APIRouter()

    @router.get("/workers", name=dash.route("workers"), response_class=HTMLResponse)
    async def workers(request: Request) -> HTMLResponse:
        res = dash.resources(request)
        found = await list_workers(res.redis, res.settings.queue_name)
        template = "_workers.html" if dash.is_htmx(request) else "workers.html"
        return dash.render(
            request, template, workers=found, refresh_s=REFRESH_S, lag_warn_ms=LAG_WARN_MS, lag_high_ms=LAG_HIGH_MS,
            stale_s=HEARTBEAT_STALE_S, drained=request.query_params.get("drained"),
            gone=request.query_params.get("gone"),
        )  # fmt: skip

    @router.post("/workers/{worker_id:path}/drain", name=dash.route("drain"))
    async def drain(request: Request, worker_id: str) -> Response:
        res = dash.resources(request)
        found = await drain_worker(res.redis, res.settings.queue_name, worker_id)
        query = {"drained" if found else "gone": worker_id}
        return RedirectResponse(dash.url(request, "workers", query), status_code=303)

    return router
