"""Jobs as an operator looks for them: filters combined, newest first, a keyset page at a time."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from runner.broker.connection import RedisClient
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


# Only the filters given become clauses, so each combination is planned on its own and the partial indexes
# of runner/store/sql/0004_job_list_indexes.sql (rows that went wrong) can be proved usable. Values are $n
# parameters; the LIMIT is an int and the statuses JobStatus literals, and an argument's name is a literal only
# when identifier-like (so jobs/sql/0003_job_list_story_index.sql's `args ->> 'story_id'` index serves it).
_FIND = """
SELECT * FROM runner_jobs
WHERE {where}
ORDER BY enqueued_at DESC, job_id DESC
LIMIT {limit}
"""
# An error text is first looked for among the newest rows that may have it: an ordered index scan of at most
# _SCAN_FIRST rows, cheap however common the text. Postgres would often plan worse: it takes a status and
# "has an error" as independent (they are not: a failed job has one) and a text's matches as spread evenly
# (they come in bursts). When those rows do not fill the page, the rest is planned after the last of them
# as Postgres sees fit: walking on when the text is common, the trigram index when it is rare.
_NEWEST_ERRORS = """
SELECT * FROM (
    SELECT * FROM runner_jobs
    WHERE {where}
    ORDER BY enqueued_at DESC, job_id DESC
    LIMIT {scan}
) AS newest
WHERE error ILIKE {pattern}
ORDER BY enqueued_at DESC, job_id DESC
LIMIT {limit}
"""
_LAST_SCANNED = """
SELECT enqueued_at, job_id FROM runner_jobs
WHERE {where}
ORDER BY enqueued_at DESC, job_id DESC
OFFSET {skip} LIMIT 1
"""
_SCAN_FIRST = 1000
_ERROR_STATUSES = frozenset({JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.RETRYING})  # they come with one
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class _Clauses:
    """SQL conditions joined by AND, each value a $n parameter."""

    def __init__(self) -> None:
        self.sql: list[str] = []
        self.params: list[Any] = []

    def add(self, condition: str, *values: Any) -> _Clauses:
        self.params.extend(values)
        first = len(self.params) - len(values) + 1
        self.sql.append(condition.format(*(f"${first + i}" for i in range(len(values)))))
        return self


def _clauses(where: JobFilter, after: Cursor | None, *, or_no_error: bool = False) -> _Clauses:
    """Every condition of `where` but the error text, and the keyset cursor.

    `or_no_error` writes the statuses as `(status IN (...) OR error IS NULL)`, for a query that also asks for
    an error text: no row with a NULL error has one, so the rows are the same, but Postgres no longer takes a
    failed job and a text in its error as independent (it would expect 20 times too few rows and plan for it).
    """
    found = _Clauses().add("queue = {}", where.queue)
    if where.statuses:
        statuses = "status IN (" + ", ".join(f"'{JobStatus(s).value}'" for s in where.statuses) + ")"
        found.add(f"({statuses} OR error IS NULL)" if or_no_error else statuses)
    if where.name is not None:
        found.add("name = {}", where.name)
    if where.field is not None:
        key, value = where.field
        if _IDENTIFIER.fullmatch(key):
            found.add(f"args ->> '{key}' = {{}}", value)
        else:
            found.add("args ->> {} = {}", key, value)
    if where.since is not None:
        found.add("enqueued_at >= {}", where.since)
    if where.until is not None:
        found.add("enqueued_at < {}", where.until)
    if after is not None:
        found.add("(enqueued_at, job_id) < ({}, {}::text)", after.created_at, after.id)
    return found


async def find_jobs(db: asyncpg.Pool, where: JobFilter, *, limit: int = 50, cursor: str | None = None) -> JobPage:
    after, want = Cursor.decode(cursor) if cursor else None, int(limit) + 1  # an int: it is written into the SQL
    if where.error_contains:
        rows = await _with_error(db, where, after, contains_pattern(where.error_contains), want)
    else:
        found = _clauses(where, after)
        rows = await db.fetch(_FIND.format(where=" AND ".join(found.sql), limit=want), *found.params)
    jobs = [JobRow.from_record(r) for r in rows[:limit]]
    more = len(rows) > limit and jobs
    return JobPage(jobs, Cursor(jobs[-1].enqueued_at, jobs[-1].job_id).encode() if more else None)


async def _with_error(
    db: asyncpg.Pool, where: JobFilter, after: Cursor | None, pattern: str, want: int
) -> list[asyncpg.Record]:
    """Up to `want` rows of `where` whose error matches `pattern`, newest first."""
    # The rows that may match: those of the statuses asked for when each of them comes with an error, else
    # those with an error (not both: Postgres would take them as independent, as above).
    with_errors = bool(where.statuses) and set(where.statuses) <= _ERROR_STATUSES
    scan = _clauses(where, after) if with_errors else _clauses(where, after).add("error IS NOT NULL")
    scanned = " AND ".join(scan.sql)
    newest = _NEWEST_ERRORS.format(where=scanned, scan=_SCAN_FIRST, pattern=f"${len(scan.params) + 1}", limit=want)
    rows = await db.fetch(newest, *scan.params, pattern)
    if len(rows) == want:
        return rows
    last = await db.fetchrow(_LAST_SCANNED.format(where=scanned, skip=_SCAN_FIRST - 1), *scan.params)
    if last is None:  # fewer rows may match than were scanned: that was all of them
        return rows
    older = Cursor(last["enqueued_at"], last["job_id"])
    rest = _clauses(where, older, or_no_error=with_errors).add("error ILIKE {}", pattern)
    more = await db.fetch(_FIND.format(where=" AND ".join(rest.sql), limit=want - len(rows)), *rest.params)
    return [*rows, *more]


async def cancel_job(redis: RedisClient, db: asyncpg.Pool, job_id: str) -> JobRow | None:
    """Ask the workers to stop `job_id` unless it has ended; its row as it is now (None: no such job)."""
    row = await get_job(db, job_id)
    if row is not None and row.status not in TERMINAL:
        await request_abort(redis, row.queue, job_id)
    return row


async def get_job(db: asyncpg.Pool, job_id: str) -> JobRow | None:
    record = await db.fetchrow("SELECT * FROM runner_jobs WHERE job_id = $1", job_id)
    return JobRow.from_record(record) if record is not None else None
