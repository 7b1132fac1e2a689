"""The job status store: one Postgres row per job, moved only along the allowed transitions.

Every write is a single guarded upsert (`... WHERE status = ANY(allowed)`), so a late or repeated write
cannot move a job backwards, and a job that reached Redis without a row (enqueued by plain arq, or the
API died between row and enqueue) still gets one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from runner.status import TERMINAL, JobStatus, allowed_sources

__all__ = ["Connection", "JobRow", "JobStore", "PendingJob", "Transition", "collapse"]

# A connection a caller holds (its transaction), plain or borrowed from a pool.
Connection = asyncpg.Connection | PoolConnectionProxy

_TERMINAL = sorted(TERMINAL)
# Every transition is allowed from the same statuses (see runner.status), so one guard serves a batch.
_MOVABLE_FROM = allowed_sources(JobStatus.PROCESSING)
assert all(allowed_sources(s) == _MOVABLE_FROM for s in JobStatus if s is not JobStatus.PENDING)

_INSERT_PENDING = """
INSERT INTO runner_jobs (job_id, name, queue, args, status, max_tries)
VALUES ($1, $2, $3, $4::jsonb, 'pending', $5)
ON CONFLICT (job_id) DO NOTHING
"""

# One statement for a whole batch of transitions (one per job: see `collapse`). Every transition is
# allowed from the same active statuses and none leaves a terminal one, so one guard serves all rows.
_TRANSITIONS = """
INSERT INTO runner_jobs AS j
    (job_id, name, queue, status, attempts, max_tries, worker, error, result, args, started_at, finished_at)
SELECT t.job_id, t.name, t.queue, t.status, t.attempts, t.max_tries, t.worker, t.error, t.result::jsonb,
       COALESCE(t.args::jsonb, '{}'::jsonb),
       CASE WHEN t.started THEN now() END,
       CASE WHEN t.status = ANY($12::text[]) THEN now() END
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::int[], $7::text[], $8::text[],
            $9::text[], $10::text[], $11::bool[])
     AS t(job_id, name, queue, status, attempts, max_tries, worker, error, result, args, started)
ON CONFLICT (job_id) DO UPDATE SET
    status      = EXCLUDED.status,
    attempts    = GREATEST(j.attempts, EXCLUDED.attempts),
    max_tries   = EXCLUDED.max_tries,
    worker      = COALESCE(EXCLUDED.worker, j.worker),
    error       = CASE WHEN EXCLUDED.status = 'completed' THEN NULL ELSE COALESCE(EXCLUDED.error, j.error) END,
    result      = COALESCE(EXCLUDED.result, j.result),
    started_at  = COALESCE(EXCLUDED.started_at, j.started_at),
    finished_at = EXCLUDED.finished_at,
    updated_at  = now()
WHERE j.status = ANY($13::text[])
"""


@dataclass(frozen=True, slots=True)
class PendingJob:
    """A pending job row to write in the same statement as the caller's own insert (one round trip,
    atomic): `WITH {job.cte(n)} INSERT INTO my_table ...`, with `job.params` as parameters $n onwards."""

    job_id: str
    name: str
    queue: str
    args: dict[str, Any]
    max_tries: int

    def cte(self, first_param: int, name: str = "pending_job") -> str:
        n = first_param
        return (
            f"{name} AS (INSERT INTO runner_jobs (job_id, name, queue, args, status, max_tries) "
            f"VALUES (${n}, ${n + 1}, ${n + 2}, ${n + 3}::jsonb, 'pending', ${n + 4}) ON CONFLICT (job_id) DO NOTHING)"
        )

    @property
    def params(self) -> list[Any]:
        return [self.job_id, self.name, self.queue, orjson.dumps(self.args).decode(), self.max_tries]


@dataclass(frozen=True, slots=True)
class JobRow:
    job_id: str
    name: str
    queue: str
    args: dict[str, Any]
    status: JobStatus
    attempts: int
    max_tries: int
    worker: str | None
    error: str | None
    result: Any
    enqueued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> JobRow:
        values = dict(record)
        values["args"] = orjson.loads(values["args"])
        values["result"] = orjson.loads(values["result"]) if values["result"] is not None else None
        values["status"] = JobStatus(values["status"])
        return cls(**values)


@dataclass(frozen=True)
class Transition:
    """A status move for one job, with what is known about it at that moment."""

    job_id: str
    status: JobStatus
    name: str = "<unknown>"
    queue: str = ""
    attempt: int = 0
    max_tries: int = 1
    worker: str | None = None
    error: str | None = None
    result: Any = None
    args: dict[str, Any] | None = None  # written only when the row is created by this transition
    started: bool = False  # the job (re)started: stamp started_at (set for PROCESSING, kept by collapse)

    def __post_init__(self) -> None:
        if self.status is JobStatus.PENDING:
            raise ValueError("a job enters `pending` only by insert_pending, never by a transition")


class JobStore:
    """Reads and guarded writes of `runner_jobs`. Borrows the pool; the pool's opener closes it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def insert_pending(self, job: PendingJob, conn: Connection | None = None) -> bool:
        """Record a new pending job; False if a row with this id exists already (it is left as it is)."""
        executor = conn if conn is not None else self._pool
        status = await executor.execute(_INSERT_PENDING, *job.params)
        return bool(status == "INSERT 0 1")

    async def move(self, t: Transition) -> bool:
        """Apply one transition if the row's status allows it; True if it was applied."""
        return await self.move_many([t]) == 1

    async def move_many(self, transitions: Sequence[Transition]) -> int:
        """Apply a batch of transitions in one statement; return how many rows moved."""
        rows = collapse(transitions)
        columns = list(zip(*(_row(t) for t in rows), strict=True))
        status = await self._pool.execute(_TRANSITIONS, *columns, _TERMINAL, _MOVABLE_FROM)
        return int(status.rsplit(" ", 1)[-1])

    async def forget_pending(self, job_id: str, conn: Connection | None = None) -> bool:
        """Delete a row that never left `pending` (its enqueue was undone); True if one was deleted."""
        executor = conn if conn is not None else self._pool
        status = await executor.execute("DELETE FROM runner_jobs WHERE job_id = $1 AND status = 'pending'", job_id)
        return bool(status == "DELETE 1")

    async def get(self, job_id: str) -> JobRow | None:
        record = await self._pool.fetchrow("SELECT * FROM runner_jobs WHERE job_id = $1", job_id)
        return JobRow.from_record(record) if record is not None else None


def collapse(transitions: Sequence[Transition]) -> list[Transition]:
    """One transition per job with the effect of applying them in order: the last status wins unless
    an earlier one was terminal (the guard would refuse what follows it); a start is remembered."""
    merged: dict[str, Transition] = {}
    for t in transitions:
        t = replace(t, started=t.started or t.status is JobStatus.PROCESSING)
        prev = merged.get(t.job_id)
        if prev is None:
            merged[t.job_id] = t
        elif prev.status not in TERMINAL:
            merged[t.job_id] = replace(
                t,
                attempt=max(prev.attempt, t.attempt),
                started=prev.started or t.started,
                worker=t.worker or prev.worker,
                error=t.error if t.error is not None or t.status is JobStatus.COMPLETED else prev.error,
                result=t.result if t.result is not None else prev.result,
                args=prev.args if prev.args is not None else t.args,
            )
    return list(merged.values())


def _row(t: Transition) -> tuple[Any, ...]:
    return (
        t.job_id, t.name, t.queue, t.status.value, t.attempt, t.max_tries, t.worker, t.error,
        None if t.result is None else orjson.dumps(t.result).decode(),
        None if t.args is None else orjson.dumps(t.args).decode(),
        t.started,
    )  # fmt: skip
