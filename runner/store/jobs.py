"""The job status store: one Postgres row per job, moved only along the allowed transitions.

Every write is a single guarded upsert (`... WHERE status = ANY(allowed)`), so a late or repeated write
cannot move a job backwards, and a job that reached Redis without a row (enqueued by plain arq, or the
API died between row and enqueue) still gets one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from runner.status import TERMINAL, JobStatus, allowed_sources

__all__ = [
    "Applied", "Connection", "JobRow", "JobStore", "PendingJob", "Transition", "attempt_records", "collapse", "has_nul",
]  # fmt: skip

# A connection a caller holds (its transaction), plain or borrowed from a pool.
Connection = asyncpg.Connection | PoolConnectionProxy

_TERMINAL = sorted(TERMINAL)
_REOPENABLE = [JobStatus.FAILED.value, JobStatus.CANCELLED.value]
# Every transition is allowed from the same statuses (see runner.status), so one guard serves a batch.
_MOVABLE_FROM = allowed_sources(JobStatus.PROCESSING)
assert all(allowed_sources(s) == _MOVABLE_FROM for s in JobStatus if s is not JobStatus.PENDING)

_INSERT_PENDING = """
INSERT INTO runner_jobs (job_id, name, queue, args, status, max_tries, parent_id)
VALUES ($1, $2, $3, $4::jsonb, 'pending', $5, $6)
ON CONFLICT (job_id) DO NOTHING
"""

# A debounced job took new arguments (runner/unique.py): its row, still pending, shows them; if the first
# enqueue's insert has not landed yet, this writes the row and that insert does nothing. Debounces from
# several processes reach Postgres in any order: the takeover number ($7, from the enqueue script) keeps the
# arguments of the last one Redis ran.
_REPLACE_PENDING = """
INSERT INTO runner_jobs AS j (job_id, name, queue, args, status, max_tries, parent_id, args_takeover)
VALUES ($1, $2, $3, $4::jsonb, 'pending', $5, $6, $7)
ON CONFLICT (job_id) DO UPDATE SET args = EXCLUDED.args, args_takeover = EXCLUDED.args_takeover, updated_at = now()
WHERE j.status = 'pending' AND j.args_takeover < EXCLUDED.args_takeover
"""

_FORGET_ENDED = """
WITH gone AS (
    DELETE FROM runner_jobs WHERE job_id IN (
        SELECT job_id FROM runner_jobs
        WHERE queue = $1 AND finished_at < $2 AND status = ANY($3::text[])
        ORDER BY finished_at LIMIT $4
    ) RETURNING job_id
), attempts AS (
    DELETE FROM runner_job_attempts WHERE job_id IN (SELECT job_id FROM gone)
)
SELECT count(*) FROM gone
"""

_REOPEN = """
UPDATE runner_jobs SET status = 'pending', error = NULL, result = NULL, finished_at = NULL, updated_at = now()
WHERE job_id = ANY($1::text[]) AND status = ANY($2::text[])
RETURNING *
"""

# One statement for a whole batch of transitions (one per job: see `collapse`). Every transition is
# allowed from the same active statuses and none leaves a terminal one, so one guard serves all rows.
# The same statement records the attempts (see `attempt_records`): a start opens one, an end closes it
# (or writes it whole when both come in one batch), whether or not the guard let the job's row move.
# The rows come as one JSON array each ($1, $4), not one array parameter a column: encoding a batch that way
# costs the worker half the CPU, and the JSON values (result, args) go in as they are.
_TRANSITIONS = """
WITH moved AS (
    INSERT INTO runner_jobs AS j
        (job_id, name, queue, status, attempts, max_tries, worker, error, result, args, started_at, finished_at,
         parent_id)
    SELECT t.job_id, t.name, t.queue, t.status, t.attempts, t.max_tries, t.worker, t.error, t.result,
           COALESCE(t.args, '{}'::jsonb),
           CASE WHEN t.started THEN now() END,
           CASE WHEN t.status = ANY($2::text[]) THEN now() END,
           t.parent_id
    FROM json_to_recordset($1::json)
         AS t(job_id text, name text, queue text, status text, attempts int, max_tries int, worker text, error text,
              result jsonb, args jsonb, started bool, parent_id text)
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
    WHERE j.status = ANY($3::text[])
    RETURNING j.job_id, j.status, j.result, j.error
), attempts AS (
    INSERT INTO runner_job_attempts AS a (job_id, attempt, started_at, worker, finished_at, outcome, error, traceback)
    SELECT r.job_id, r.attempt, to_timestamp(r.started_at), r.worker,
           CASE WHEN r.outcome IS NOT NULL THEN now() END, r.outcome, r.error, r.traceback
    FROM json_to_recordset($4::json)
         AS r(job_id text, attempt int, started_at float8, worker text, outcome text, error text, traceback text)
    ON CONFLICT (job_id, attempt, started_at) DO UPDATE SET
        finished_at = EXCLUDED.finished_at, outcome = EXCLUDED.outcome, error = EXCLUDED.error,
        traceback = EXCLUDED.traceback
    WHERE a.outcome IS NULL
), ended AS (
    -- A group member's end (runner.store.groups), in the statement that makes its row final: counted once.
    UPDATE runner_group_members AS m
    SET status = mv.status, result = mv.result, error = mv.error, ended_at = now()
    FROM moved AS mv
    WHERE m.job_id = mv.job_id AND mv.status = ANY($2::text[]) AND m.status IS NULL
    RETURNING m.group_id
)
SELECT (SELECT count(*) FROM moved) AS moved, ARRAY(SELECT DISTINCT group_id FROM ended) AS groups
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
    parent_id: str | None = None  # the job that enqueued this one

    def cte(self, first_param: int, name: str = "pending_job") -> str:
        n = first_param
        return (
            f"{name} AS (INSERT INTO runner_jobs (job_id, name, queue, args, status, max_tries, parent_id) "
            f"VALUES (${n}, ${n + 1}, ${n + 2}, ${n + 3}::jsonb, 'pending', ${n + 4}, ${n + 5}) "
            "ON CONFLICT (job_id) DO NOTHING)"
        )

    @property
    def params(self) -> list[Any]:
        return [self.job_id, self.name, self.queue, orjson.dumps(self.args).decode(), self.max_tries, self.parent_id]


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
    parent_id: str | None = None

    @classmethod
    def from_record(cls, record: asyncpg.Record) -> JobRow:
        # Only the columns named here: a later release's migration may add others, which an older process
        # still running beside it (a rolling upgrade) must read past.
        values = {name: record[name] for name in _JOB_ROW_FIELDS if name in record}
        values["args"] = orjson.loads(values["args"])
        values["result"] = orjson.loads(values["result"]) if values["result"] is not None else None
        values["status"] = JobStatus(values["status"])
        return cls(**values)


_JOB_ROW_FIELDS = tuple(JobRow.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class Applied:
    """What a batch of transitions did: rows moved, and groups whose members ended (runner.store.groups)."""

    moved: int
    ended_groups: list[str]


@dataclass(slots=True)  # not frozen: two are made a job, see runner.broker.queue.ClaimedJob
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
    # The attempt's record: when this run started (epoch s; None: no attempt, e.g. the sweeper's moves),
    # how it ended (None while it runs; else a status, or `deferred`/`released` for a run given back).
    run_started: float | None = None
    outcome: str | None = None
    traceback: str | None = None
    parent_id: str | None = None  # written only when the row is created by this transition

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

    async def replace_pending(self, job: PendingJob, *, takeover: int) -> bool:
        """Write a pending job's new arguments (or its row, if none yet), those of its `takeover`-th debounce;
        False if it has left `pending` or a later debounce's arguments are there already."""
        status = await self._pool.execute(_REPLACE_PENDING, *job.params, takeover)
        return bool(status == "INSERT 0 1")

    async def move(self, t: Transition) -> bool:
        """Apply one transition if the row's status allows it; True if it was applied."""
        return await self.move_many([t]) == 1

    async def move_many(self, transitions: Sequence[Transition]) -> int:
        """Apply a batch of transitions in one statement; return how many rows moved."""
        return (await self.apply(transitions)).moved

    async def apply(self, transitions: Sequence[Transition]) -> Applied:
        """Apply a batch of transitions in one statement: how many rows moved, and the groups a member of
        which ended here (their joins are then written by runner.store.groups.GroupStore.write_joins)."""
        rows = _json([_row(t) for t in collapse(transitions)])
        attempts = _json([dict(zip(_ATTEMPT_FIELDS, r, strict=True)) for r in attempt_records(transitions)])
        record = await self._pool.fetchrow(_TRANSITIONS, rows, _TERMINAL, _MOVABLE_FROM, attempts)
        assert record is not None
        return Applied(record["moved"], list(record["groups"]))

    async def forget_pending(self, job_id: str, conn: Connection | None = None) -> bool:
        """Delete a row that never left `pending` (its enqueue was undone); True if one was deleted."""
        executor = conn if conn is not None else self._pool
        status = await executor.execute("DELETE FROM runner_jobs WHERE job_id = $1 AND status = 'pending'", job_id)
        return bool(status == "DELETE 1")

    async def get(self, job_id: str) -> JobRow | None:
        record = await self._pool.fetchrow("SELECT * FROM runner_jobs WHERE job_id = $1", job_id)
        return JobRow.from_record(record) if record is not None else None

    async def forget_ended(self, queue: str, before: datetime, limit: int) -> int:
        """Delete up to `limit` of `queue`'s jobs that ended before `before`, with their attempts (result
        retention); how many were deleted."""
        deleted: int = await self._pool.fetchval(_FORGET_ENDED, queue, before, _TERMINAL, limit)
        return deleted

    async def reopen(self, job_ids: Sequence[str]) -> list[JobRow]:
        """Send ended jobs back to `pending` for another run (an operator's retry): the one move out of a
        final status, taken only from `failed` or `cancelled`, never by a worker. The rows that moved."""
        records = await self._pool.fetch(_REOPEN, list(job_ids), _REOPENABLE)
        return [JobRow.from_record(r) for r in records]


def collapse(transitions: Sequence[Transition]) -> list[Transition]:
    """One transition per job with the effect of applying them in order: the last status wins unless
    an earlier one was terminal (the guard would refuse what follows it); a start is remembered."""
    merged: dict[str, Transition] = {}
    for t in transitions:
        if t.status is JobStatus.PROCESSING and not t.started:
            t = replace(t, started=True)
        prev = merged.get(t.job_id)
        if prev is None:
            merged[t.job_id] = t
        elif prev.status not in TERMINAL:
            # Built directly: dataclasses.replace walks the fields, and this runs for most jobs of a busy batch.
            merged[t.job_id] = Transition(
                t.job_id, t.status, t.name, t.queue,
                attempt=max(prev.attempt, t.attempt),
                max_tries=t.max_tries,
                worker=t.worker or prev.worker,
                error=t.error if t.error is not None or t.status is JobStatus.COMPLETED else prev.error,
                result=t.result if t.result is not None else prev.result,
                args=prev.args if prev.args is not None else t.args,
                started=prev.started or t.started,
                run_started=t.run_started, outcome=t.outcome, traceback=t.traceback,
                parent_id=prev.parent_id or t.parent_id,
            )  # fmt: skip
    return list(merged.values())


def _row(t: Transition) -> dict[str, Any]:
    return {
        "job_id": t.job_id, "name": t.name, "queue": t.queue, "status": t.status.value, "attempts": t.attempt,
        "max_tries": t.max_tries, "worker": t.worker, "error": t.error, "result": t.result, "args": t.args,
        "started": t.started, "parent_id": t.parent_id,
    }  # fmt: skip


# An attempt record's fields, as the statement's second JSON array names them (see `attempt_records`).
_ATTEMPT_FIELDS = ("job_id", "attempt", "started_at", "worker", "outcome", "error", "traceback")
# A JSON \u0000 escape not itself escaped (an odd number of backslashes before the "u").
_NUL_ESCAPE = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")


def has_nul(data: bytes) -> bool:
    """Whether JSON text (as orjson writes it) holds a NUL character, which Postgres text and jsonb refuse."""
    return b"\\u0000" in data and _NUL_ESCAPE.search(data) is not None


def _json(rows: list[dict[str, Any]]) -> str:
    """The rows as one JSON array. Postgres text and jsonb cannot hold NUL, so a NUL a job put in its error or
    result is stored as U+FFFD: one such text must not fail the whole batch's write."""
    data = orjson.dumps(rows)
    if has_nul(data):
        data = _NUL_ESCAPE.sub(rb"\1\\ufffd", data)
    return data.decode()


def attempt_records(transitions: Sequence[Transition]) -> list[tuple[Any, ...]]:
    """One attempt record per run (job id and start) among `transitions`, its latest word winning: a start
    alone opens it, an end closes it. A batch may hold two runs of one job (a retry started at once)."""
    runs: dict[tuple[str, float], tuple[Any, ...]] = {}
    for t in transitions:
        if t.run_started is None:
            continue
        prev = runs.get((t.job_id, t.run_started))
        if prev is not None and prev[4] is not None and t.outcome is None:
            continue  # an end is never reopened
        runs[(t.job_id, t.run_started)] = (
            t.job_id,
            t.attempt,
            t.run_started,
            t.worker,
            t.outcome,
            t.error,
            t.traceback,
        )
    return list(runs.values())
