"""The jobs page (filters combined, newest first, a keyset page at a time with a link to the next) and
"Retry all matching": first the count of failed or cancelled jobs that match, then a confirm that posts
that count back; if the set changed meanwhile, the new count is shown to confirm again."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from runner.dashboard.dashboard import Dashboard
from runner.dashboard.forms import confirmed_count
from runner.dashboard.job_query import JobQuery, QueryError, page_size
from runner.ops.actions import RETRYABLE, ConfirmationError, retry_matching
from runner.ops.jobs import CursorError, find_jobs
from runner.status import JobStatus

__all__ = ["routes"]


def routes(dash: Dashboard) -> APIRouter:
    router = APIRouter()

    @router.get("/jobs", name=dash.route("jobs"), response_class=HTMLResponse)
    async def jobs(request: Request) -> HTMLResponse:
        res, params = dash.resources(request), request.query_params
        page: dict[str, Any] = {"form": params, "statuses": list(JobStatus), "retryable": RETRYABLE}
        try:
            query = JobQuery.parse(params)
            limit = page_size(params)
            found = await find_jobs(res.db, query.where(res.settings.queue_name), limit=limit,
                                    cursor=params.get("cursor") or None)  # fmt: skip
        except (QueryError, CursorError) as exc:
            return dash.render(request, "jobs.html", status_code=400, problem=str(exc), jobs=[], query=None, **page)
        following = {**query.params(), "limit": str(limit), "cursor": found.next_cursor} if found.next_cursor else None
        return dash.render(request, "jobs.html", problem=None, jobs=found.jobs, query=query, next_query=following,
                           first_page=bool(params.get("cursor")), **page)  # fmt: skip

    @router.get("/retry-matching", name=dash.route("retry_matching"), response_class=HTMLResponse)
    async def count_matching(request: Request) -> HTMLResponse:
        res = dash.resources(request)
        try:
            query = JobQuery.parse(request.query_params)
        except QueryError as exc:
            return dash.render(request, "retry_matching.html", status_code=400, problem=str(exc), query=None)
        count, _ = await retry_matching(res.redis, res.db, query.where(res.settings.queue_name), confirm=None)
        return dash.render(request, "retry_matching.html", problem=None, query=query, count=count, retried=None)

    @router.post("/retry-matching", name=dash.route("retry_matching_confirmed"), response_class=HTMLResponse)
    async def retry_all(request: Request) -> HTMLResponse:
        res = dash.resources(request)
        try:
            query = JobQuery.parse(request.query_params)
        except QueryError as exc:
            return dash.render(request, "retry_matching.html", status_code=400, problem=str(exc), query=None)
        where = query.where(res.settings.queue_name)
        confirm = await confirmed_count(request)
        try:
            count, retried = await retry_matching(res.redis, res.db, where, confirm=confirm)
        except ConfirmationError as exc:
            count, _ = await retry_matching(res.redis, res.db, where, confirm=None)
            return dash.render(request, "retry_matching.html", status_code=409, problem=str(exc), query=query,
                               count=count, retried=None)  # fmt: skip
        return dash.render(request, "retry_matching.html", problem=None, query=query, count=count, retried=retried)

    return router
