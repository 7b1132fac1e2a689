"""One queue at a glance: RedisClient for the live numbers, one Postgres query for the counts."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from runner.broker.connection import RedisClient
from runner.broker.queue import oldest_waiting_age_s, queue_depth
from runner.ops.workers import list_workers

__all__ = ["QueueOverview", "queue_overview"]


@dataclass(frozen=True, slots=True)
class QueueOverview:
    queue: str
    depth: int  # jobs in the queue, running and deferred included
    due: int  # of them, due now
    oldest_due_age_s: float  # how long the oldest due job that nobody runs has waited (0: none waits)
    pending: int
    running: int
    retrying: int
    completed_last_minute: int  # throughput
    failed_last_hour: int
    failed_last_day: int
    workers: int  # live workers (presence reports)


_COUNTS = """
SELECT count(*) FILTER (WHERE status = 'pending')    AS pending,
       count(*) FILTER (WHERE status = 'processing') AS running,
       count(*) FILTER (WHERE status = 'retrying')   AS retrying,
       count(*) FILTER (WHERE status = 'completed' AND finished_at > now() - interval '1 minute') AS completed_minute,
       count(*) FILTER (WHERE status = 'failed' AND finished_at > now() - interval '1 hour') AS failed_hour,
       count(*) FILTER (WHERE status = 'failed' AND finished_at > now() - interval '1 day') AS failed_day
FROM (
    SELECT status, finished_at FROM runner_jobs
    WHERE queue = $1 AND status IN ('pending', 'processing', 'retrying')
    UNION ALL
    SELECT status, finished_at FROM runner_jobs
    WHERE queue = $1 AND finished_at > now() - interval '1 day'
) AS recent
"""


async def queue_overview(redis: RedisClient, db: asyncpg.Pool, queue: str) -> QueueOverview:
    depth = await queue_depth(redis, queue)
    oldest = await oldest_waiting_age_s(redis, queue)
    row = await db.fetchrow(_COUNTS, queue)
    assert row is not None
    workers = await list_workers(redis, queue)
    return QueueOverview(
        queue=queue, depth=depth.total, due=depth.due,
        oldest_due_age_s=round(oldest, 3),
        pending=row["pending"], running=row["running"], retrying=row["retrying"],
        completed_last_minute=row["completed_minute"], failed_last_hour=row["failed_hour"],
        failed_last_day=row["failed_day"], workers=len(workers),
    )  # fmt: skip
