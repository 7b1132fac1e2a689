"""Job status rows."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path

from api.deps import State
from api.errors import CONFLICT, NOT_FOUND, SERVER_DOWN
from api.schemas import CancelOut, JobOut, RetryOut
from runner.ops.actions import retry_jobs
from runner.status import TERMINAL

__all__ = ["router"]

router = APIRouter(prefix="/jobs", tags=["jobs"], responses={**NOT_FOUND, **SERVER_DOWN})
JobId = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[^\x00]+$")]


@router.get("/{job_id}", response_model=JobOut)
async def get_job(state: State, job_id: JobId) -> JobOut:
    row = await state.client.get(job_id)
    if row is None:
        raise HTTPException(404, f"job {job_id!r} not found")
    return JobOut.model_validate(row, from_attributes=True)


@router.post("/{job_id}/cancel", status_code=202, response_model=CancelOut, responses=CONFLICT)
async def cancel_job(state: State, job_id: JobId) -> CancelOut:
    """Stop a pending or running job. A worker moves it to `cancelled` within a second or
    so, and its failure hook runs (a story job's story becomes `failed` with reason `cancelled`)."""
    row = await state.client.request_cancel(job_id)
    if row is None:
        raise HTTPException(404, f"job {job_id!r} not found")
    if row.status in TERMINAL:
        raise HTTPException(409, f"job {job_id!r} already ended as {row.status.value}; nothing to cancel")
    return CancelOut(job_id=job_id, status=row.status.value, cancel_requested=True)


@router.post("/{job_id}/retry", status_code=202, response_model=RetryOut, responses=CONFLICT)
async def retry_job(state: State, job_id: JobId) -> RetryOut:
    """Send a failed or cancelled job back to the queue under its id; it gets its full tries again, and its
    attempts are numbered on after the old ones (409 for a job that has not failed or been cancelled)."""
    if await retry_jobs(state.resources.redis, state.resources.db, [job_id]):
        return RetryOut(job_id=job_id, status="pending")
    row = await state.client.get(job_id)
    if row is None:
        raise HTTPException(404, f"job {job_id!r} not found")
    raise HTTPException(409, f"job {job_id!r} is {row.status.value}; only failed or cancelled jobs can be retried")
