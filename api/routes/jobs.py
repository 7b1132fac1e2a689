"""Job status rows."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path

from api.deps import State
from api.schemas import CancelOut, JobOut
from runner.status import TERMINAL

__all__ = ["router"]

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get("/{job_id}", response_model=JobOut)
async def get_job(state: State, job_id: Annotated[str, Path(min_length=1, max_length=200)]) -> JobOut:
    row = await state.jobs.get(job_id)
    if row is None:
        raise HTTPException(404, f"job {job_id!r} not found")
    return JobOut.model_validate(row, from_attributes=True)


@router.post("/{job_id}/cancel", status_code=202, response_model=CancelOut)
async def cancel_job(state: State, job_id: Annotated[str, Path(min_length=1, max_length=200)]) -> CancelOut:
    """Stop a pending or running job (arq's abort). A worker moves it to `cancelled` within a second or
    so, and its failure hook runs (a story job's story becomes `failed` with reason `cancelled`)."""
    row = await state.jobs.request_cancel(job_id)
    if row is None:
        raise HTTPException(404, f"job {job_id!r} not found")
    if row.status in TERMINAL:
        raise HTTPException(409, f"job {job_id!r} already ended as {row.status.value}; nothing to cancel")
    return CancelOut(job_id=job_id, status=row.status.value, cancel_requested=True)
