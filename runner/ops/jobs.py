"""Jobs as an operator looks for them: filters combined, newest first, a keyset page at a time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg
from redis.asyncio import Redis

from runner.broker.queue import request_abort
from runner.status import TERMINAL, JobStatus
from runner.store.jobs import JobRow
from runner.store.keyset import Cursor, CursorError, contains_pattern

__all__ = ["CursorError", "JobFilter", "JobPage", "cancel_job", "find_jobs", "get_job"]


@dataclass(frozen=True, slots=True)
class JobFilter:
    queue: str
    statuses: tuple[JobStatus, ...] = ()
    name: str | None = None
    field: tuple[str, str] | None = None  # an argument and its value, e.g. ("story_id", "...")
    since: datetime | None = None
    until: datetime | None = None
    error_contains: str | None = None


@dataclass(frozen=True, slots=True)
class JobPage:
    jobs: list[JobRow]
    next_cursor: str | None


_FIND = """
SELECT * FROM runner_jobs
WHERE queue = $1
  AND (cardinality($2::text[]) = 0 OR status = ANY($2::text[]))
  AND ($3::text IS NULL OR name = $3)
  AND ($4::text IS NULL OR args ->> $4 = $5)
  AND ($6::timestamptz IS NULL OR enqueued_at >= $6)
  AND ($7::timestamptz IS NULL OR enqueued_at < $7)
  AND ($8::text IS NULL OR error ILIKE $8)
  AND ($9::timestamptz IS NULL OR (enqueued_at, job_id) < ($9, $10::text))
ORDER BY enqueued_at DESC, job_id DESC
LIMIT $11
"""


async def find_jobs(db: asyncpg.Pool, where: JobFilter, *, limit: int = 50, cursor: str | None = None) -> JobPage:
    after = Cursor.decode(cursor) if cursor else None
    key, value = where.field if where.field else (None, None)
    pattern = contains_pattern(where.error_contains) if where.error_contains else None
    rows = await db.fetch(
        _FIND, where.queue, [s.value for s in where.statuses], where.name, key, value, where.since, where.until,
        pattern, after.created_at if after else None, after.id if after else None, limit + 1,
    )  # fmt: skip
    jobs = [JobRow.from_record(r) for r in rows[:limit]]
    more = len(rows) > limit and jobs
    return JobPage(jobs, Cursor(jobs[-1].enqueued_at, jobs[-1].job_id).encode() if more else None)


async def cancel_job(redis: Redis, db: asyncpg.Pool, job_id: str) -> JobRow | None:
    """Ask the workers to stop `job_id` unless it has ended; its row as it is now (None: no such job)."""
    row = await get_job(db, job_id)
    if row is not None and row.status not in TERMINAL:
        await request_abort(redis, row.queue, job_id)
    return row


async def get_job(db: asyncpg.Pool, job_id: str) -> JobRow | None:
    record = await db.fetchrow("SELECT * FROM runner_jobs WHERE job_id = $1", job_id)
    return JobRow.from_record(record) if record is not None else None
