"""One job in full: its row, every attempt (worker, start, end, outcome, error, traceback) and the jobs
it enqueued. Attempts come from `runner_job_attempts`, so the history survives restarts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from runner.status import TERMINAL, JobStatus
from runner.store.jobs import JobRow

__all__ = ["Attempt", "JobDetail", "job_detail"]


@dataclass(frozen=True, slots=True)
class Attempt:
    attempt: int
    worker: str | None
    started_at: datetime
    finished_at: datetime | None
    # completed, failed, retrying, cancelled; deferred or released (given back without using a try);
    # running; lost (its worker stopped without reporting: killed, or its host lost).
    outcome: str
    error: str | None
    traceback: str | None

    @property
    def duration_s(self) -> float | None:
        return None if self.finished_at is None else round((self.finished_at - self.started_at).total_seconds(), 3)


@dataclass(frozen=True, slots=True)
class JobDetail:
    job: JobRow
    attempts: list[Attempt]
    children: list[JobRow]  # the first `children_limit`, oldest first
    children_total: int


_ATTEMPTS = """
SELECT attempt, worker, started_at, finished_at, outcome, error, traceback FROM runner_job_attempts
WHERE job_id = $1 ORDER BY started_at, attempt
"""
_CHILDREN = """
SELECT *, count(*) OVER () AS total FROM runner_jobs WHERE parent_id = $1 ORDER BY enqueued_at, job_id LIMIT $2
"""


async def job_detail(db: asyncpg.Pool, job_id: str, *, children_limit: int = 100) -> JobDetail | None:
    record = await db.fetchrow("SELECT * FROM runner_jobs WHERE job_id = $1", job_id)
    if record is None:
        return None
    job = JobRow.from_record(record)
    rows = await db.fetch(_ATTEMPTS, job_id)
    attempts = [_attempt(r, job, last=i == len(rows) - 1) for i, r in enumerate(rows)]
    children = await db.fetch(_CHILDREN, job_id, children_limit)
    total = children[0]["total"] if children else 0
    kids = [JobRow.from_record({k: v for k, v in r.items() if k != "total"}) for r in children]  # type: ignore[arg-type]
    return JobDetail(job, attempts, kids, total)


def _attempt(r: asyncpg.Record, job: JobRow, *, last: bool) -> Attempt:
    outcome = r["outcome"]
    if outcome is None:  # no end reported: running now, or its worker died with it
        running = last and job.status is JobStatus.PROCESSING and job.status not in TERMINAL
        outcome = "running" if running else "lost"
    return Attempt(r["attempt"], r["worker"], r["started_at"], r["finished_at"], outcome, r["error"], r["traceback"])
