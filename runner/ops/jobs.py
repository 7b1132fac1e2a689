"""Jobs as an operator looks for them: filters combined, newest first, a keyset page at a time."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from runner.status import JobStatus
from runner.store.jobs import JobRow

__all__ = ["JobFilter", "JobPage", "find_jobs", "get_job"]


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


class CursorError(ValueError):
    """A cursor these lists did not give out."""


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
    after = _decode(cursor) if cursor else None
    key, value = where.field if where.field else (None, None)
    pattern = f"%{_escape_like(where.error_contains)}%" if where.error_contains else None
    rows = await db.fetch(
        _FIND, where.queue, [s.value for s in where.statuses], where.name, key, value, where.since, where.until,
        pattern, after[0] if after else None, after[1] if after else None, limit + 1,
    )  # fmt: skip
    jobs = [JobRow.from_record(r) for r in rows[:limit]]
    more = len(rows) > limit and jobs
    return JobPage(jobs, _encode(jobs[-1].enqueued_at, jobs[-1].job_id) if more else None)


async def get_job(db: asyncpg.Pool, job_id: str) -> JobRow | None:
    record = await db.fetchrow("SELECT * FROM runner_jobs WHERE job_id = $1", job_id)
    return JobRow.from_record(record) if record is not None else None


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _encode(when: datetime, job_id: str) -> str:
    return base64.urlsafe_b64encode(f"{when.isoformat()}|{job_id}".encode()).decode().rstrip("=")


def _decode(cursor: str) -> tuple[datetime, str]:
    try:
        when, _, job_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().partition("|")
        return datetime.fromisoformat(when), job_id
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise CursorError(f"cursor {cursor[:40]!r} was not given out by a job list; use a page's next cursor") from None
