"""The overview page: the queue's numbers and its live workers, refreshed in place every few seconds
(htmx asks for the same URL and gets the fragment)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from runner.dashboard.dashboard import Dashboard
from runner.dashboard.job_query import JobQuery
from runner.ops.overview import queue_overview
from runner.ops.workers import list_workers
from runner.status import JobStatus

__all__ = ["REFRESH_S", "routes"]

REFRESH_S = 3


def routes(dash: Dashboard) -> APIRouter:
    router = APIRouter()

    @router.get("/", name=dash.route("overview"), response_class=HTMLResponse)
    async def overview(request: Request) -> HTMLResponse:
        res = dash.resources(request)
        queue = res.settings.queue_name
        summary = await queue_overview(res.redis, res.db, queue)
        workers = await list_workers(res.redis, queue)
        now = datetime.now(UTC)
        failed = {
            "hour": JobQuery((JobStatus.FAILED,), since=now - timedelta(hours=1)).params(),
            "day": JobQuery((JobStatus.FAILED,), since=now - timedelta(days=1)).params(),
        }
        template = "_overview.html" if dash.is_htmx(request) else "overview.html"
        return dash.render(request, template, overview=summary, workers=workers, failed=failed, refresh_s=REFRESH_S)

    return router
