"""Job status rows."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path

from api.deps import State
from api.schemas import JobOut

__all__ = ["router"]

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get("/{job_id}", response_model=JobOut)
async def get_job(state: State, job_id: Annotated[str, Path(min_length=1, max_length=200)]) -> JobOut:
    row = await state.jobs.get(job_id)
    if row is None:
        raise HTTPException(404, f"job {job_id!r} not found")
    return JobOut.model_validate(row, from_attributes=True)
