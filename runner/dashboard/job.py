"""The job page: arguments, result, error, the attempts timeline (worker, start, end, duration, outcome,
each attempt's traceback) and the jobs it enqueued; Retry and Cancel. While the job is active the page
follows it over SSE (runner.dashboard.events) and swaps in the fresh fragment, so it changes in place.

Retry and Cancel answer htmx with the fragment (and a line saying what happened); a plain form post
(no script) is sent back to the page."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from runner.dashboard.dashboard import Dashboard
from runner.dashboard.events import version
from runner.ops.actions import retry_jobs
from runner.ops.history import job_detail
from runner.ops.jobs import cancel_job
from runner.status import TERMINAL

__all__ = ["routes"]


def routes(dash: Dashboard) -> APIRouter:
    router = APIRouter()

    async def show(request: Request, job_id: str, notice: str | None = None) -> HTMLResponse:
        detail = await job_detail(dash.resources(request).db, job_id)
        if detail is None:
            return dash.render(request, "missing.html", status_code=404, job_id=job_id)
        template = "_job.html" if dash.is_htmx(request) else "job.html"
        return dash.render(request, template, detail=detail, job=detail.job, live=detail.job.status not in TERMINAL,
                           version=version(detail.job), notice=notice)  # fmt: skip

    async def answer(request: Request, job_id: str, notice: str) -> Response:
        if dash.is_htmx(request):
            return await show(request, job_id, notice)
        return RedirectResponse(dash.url(request, "job", job_id=job_id), status_code=303)

    @router.get("/jobs/{job_id:path}", name=dash.route("job"), response_class=HTMLResponse)
    async def job(request: Request, job_id: str) -> HTMLResponse:
        return await show(request, job_id)

    @router.post("/jobs/{job_id:path}/retry", name=dash.route("job_retry"))
    async def retry(request: Request, job_id: str) -> Response:
        res = dash.resources(request)
        retried = await retry_jobs(res.redis, res.db, [job_id])
        notice = "Sent back to the queue." if retried else "Not retried: only a failed or cancelled job can be."
        return await answer(request, job_id, notice)

    @router.post("/jobs/{job_id:path}/cancel", name=dash.route("job_cancel"))
    async def cancel(request: Request, job_id: str) -> Response:
        res = dash.resources(request)
        row = await cancel_job(res.redis, res.db, job_id)
        if row is not None and row.status in TERMINAL:
            notice = f"Not cancelled: it had already ended ({row.status.value})."
        else:
            notice = "Cancel requested: a worker stops it within a second or so."
        return await answer(request, job_id, notice)

    return router
