"""The pages' JSON twins, for scripts: `api/overview`, `api/workers`, `api/jobs` (the jobs page's filters
and cursor), `api/jobs/{id}` (with attempts and children), and POST `api/jobs/{id}/retry` and `/cancel`.
Same authentication and same-origin rule as the pages (a script sends no Sec-Fetch-Site nor Origin)."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request, Response

from runner.dashboard.dashboard import Dashboard
from runner.dashboard.job_query import JobQuery, QueryError, page_size
from runner.ops.actions import retry_jobs
from runner.ops.history import job_detail
from runner.ops.jobs import CursorError, cancel_job, find_jobs
from runner.ops.overview import queue_overview
from runner.ops.workers import list_workers
from runner.status import TERMINAL

__all__ = ["routes"]


def routes(dash: Dashboard) -> APIRouter:
    router = APIRouter(prefix="/api")

    @router.get("/overview", name=dash.route("api_overview"))
    async def overview(request: Request) -> Response:
        res = dash.resources(request)
        return _json(await queue_overview(res.redis, res.db, res.settings.queue_name))

    @router.get("/workers", name=dash.route("api_workers"))
    async def workers(request: Request) -> Response:
        res = dash.resources(request)
        return _json({"workers": await list_workers(res.redis, res.settings.queue_name)})

    @router.get("/jobs", name=dash.route("api_jobs"))
    async def jobs(request: Request) -> Response:
        res, params = dash.resources(request), request.query_params
        try:
            where = JobQuery.parse(params).where(res.settings.queue_name)
            page = await find_jobs(res.db, where, limit=page_size(params), cursor=params.get("cursor") or None)
        except (QueryError, CursorError) as exc:
            raise HTTPException(400, str(exc)) from None
        return _json(page)

    @router.get("/jobs/{job_id:path}", name=dash.route("api_job"))
    async def job(request: Request, job_id: str) -> Response:
        detail = await job_detail(dash.resources(request).db, job_id)
        if detail is None:
            raise HTTPException(404, f"job {job_id!r} not found")
        attempts = [dataclasses.asdict(a) | {"duration_s": a.duration_s} for a in detail.attempts]
        return _json(dataclasses.asdict(detail) | {"attempts": attempts})

    @router.post("/jobs/{job_id:path}/retry", name=dash.route("api_job_retry"))
    async def retry(request: Request, job_id: str) -> Response:
        res = dash.resources(request)
        return _json({"job_id": job_id, "retried": bool(await retry_jobs(res.redis, res.db, [job_id]))})

    @router.post("/jobs/{job_id:path}/cancel", name=dash.route("api_job_cancel"))
    async def cancel(request: Request, job_id: str) -> Response:
        res = dash.resources(request)
        row = await cancel_job(res.redis, res.db, job_id)
        if row is None:
            raise HTTPException(404, f"job {job_id!r} not found")
        requested = row.status not in TERMINAL
        return _json({"job_id": job_id, "status": row.status.value, "cancel_requested": requested})

    return router


def _json(value: Any) -> Response:
    """Dataclasses, datetimes and enums as JSON (orjson knows them all)."""
    body = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    return Response(body, media_type="application/json", headers={"Cache-Control": "no-store",
                                                                   "X-Content-Type-Options": "nosniff"})  # fmt: skip
