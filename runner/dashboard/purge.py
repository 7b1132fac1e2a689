"""Purge the queue: first how many queued jobs nobody runs, then a confirm that posts that count back.
Each purged job is cancelled through the workers (its row ends `cancelled`, its failure hook runs)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from runner.dashboard.dashboard import Dashboard
from runner.dashboard.forms import confirmed_count
from runner.ops.actions import ConfirmationError, purge_queue

__all__ = ["routes"]


def routes(dash: Dashboard) -> APIRouter:
    router = APIRouter()

    @router.get("/purge", name=dash.route("purge"), response_class=HTMLResponse)
    async def count_queued(request: Request) -> HTMLResponse:
        res = dash.resources(request)
        count = await purge_queue(res.redis, res.settings.queue_name, confirm=None)
        return dash.render(request, "purge.html", queue=res.settings.queue_name, count=count, purged=None, problem=None)

    @router.post("/purge", name=dash.route("purge_confirmed"), response_class=HTMLResponse)
    async def purge(request: Request) -> HTMLResponse:
        res = dash.resources(request)
        queue = res.settings.queue_name
        confirm = await confirmed_count(request)
        try:
            purged = await purge_queue(res.redis, queue, confirm=confirm)
        except ConfirmationError as exc:
            count = await purge_queue(res.redis, queue, confirm=None)
            return dash.render(request, "purge.html", status_code=409, queue=queue, count=count, purged=None,
                               problem=str(exc))  # fmt: skip
        return dash.render(request, "purge.html", queue=queue, count=purged, purged=purged, problem=None)

    return router
