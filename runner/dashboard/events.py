"""Live updates of one job over Server-Sent Events: an `job` event whenever its row moves (status,
attempts), then `end` once it has ended (the page's script closes the stream then; the browser would
otherwise reconnect). The row is read every POLL_S; a comment line keeps idle proxies from closing the
stream, and a stream lasts at most MAX_STREAM_S (the browser reconnects by itself)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from runner.dashboard.dashboard import Dashboard
from runner.ops.jobs import get_job
from runner.status import TERMINAL
from runner.store.jobs import JobRow

__all__ = ["MAX_STREAM_S", "POLL_S", "routes", "version"]

POLL_S = 0.5
KEEPALIVE_S = 10.0
MAX_STREAM_S = 300.0
RECONNECT_MS = 2000


def version(row: JobRow) -> str:
    """What the page shows of a job changes exactly when this does."""
    return f"{row.status.value}:{row.attempts}:{row.updated_at.timestamp()}"


def routes(dash: Dashboard) -> APIRouter:
    router = APIRouter()

    @router.get("/jobs/{job_id:path}/events", name=dash.route("job_events"))
    async def job_events(request: Request, job_id: str) -> StreamingResponse:
        db = dash.resources(request).db
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no", "X-Content-Type-Options": "nosniff"}
        return StreamingResponse(changes(db, job_id), media_type="text/event-stream", headers=headers)

    return router


async def changes(db: asyncpg.Pool, job_id: str) -> AsyncIterator[str]:
    """The stream's lines: the job now, each change of it, and `end` once it has ended or is gone."""
    loop = asyncio.get_running_loop()
    started = last_sent = loop.time()
    yield f"retry: {RECONNECT_MS}\n\n"
    seen = None
    while loop.time() - started < MAX_STREAM_S:
        row = await get_job(db, job_id)
        if row is None:
            yield _event("end", {"job_id": job_id, "status": None})
            return
        if version(row) != seen:
            seen = version(row)
            yield _event("job", {"job_id": job_id, "status": row.status.value, "attempts": row.attempts,
                                 "version": seen})  # fmt: skip
            last_sent = loop.time()
        if row.status in TERMINAL:
            yield _event("end", {"job_id": job_id, "status": row.status.value})
            return
        if loop.time() - last_sent >= KEEPALIVE_S:
            yield ": still here\n\n"
            last_sent = loop.time()
        await asyncio.sleep(POLL_S)


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {orjson.dumps(data).decode()}\n\n"
