"""What an operator does: retry jobs (one, or all that match a filter after seeing how many), purge a
queue (after seeing how many), drain a worker. Cancel one is `runner.ops.jobs.cancel_job`.

Each acts through the runner's own mechanisms, so nothing is left stuck: a retried job is enqueued like
any other (its attempts numbered after the old ones, with a fresh set of tries); a purge asks the workers
to cancel each queued job, so its row ends `cancelled` and its failure hook runs; a drained worker
finishes what it runs and is replaced by its supervisor, like a recycled one.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

import asyncpg

from runner.broker import queue as broker
from runner.broker.connection import RedisClient
from runner.broker.enqueue import Enqueuer
from runner.ops.jobs import JobFilter, find_jobs
from runner.ops.workers import list_workers
from runner.status import JobStatus
from runner.store.jobs import JobStore

__all__ = ["RETRYABLE", "ConfirmationError", "drain_worker", "matching_retryable", "purge_queue", "retry_jobs",
           "retry_matching"]  # fmt: skip

RETRYABLE = (JobStatus.FAILED, JobStatus.CANCELLED)
_CHUNK = 500


class ConfirmationError(ValueError):
    """The operator confirmed a different count than what the action would now touch."""


async def retry_jobs(redis: RedisClient, db: asyncpg.Pool, job_ids: Sequence[str]) -> list[str]:
    """Send failed or cancelled jobs back to the queue; the ids that went (others are left as they are)."""
    retried: list[str] = []
    for start in range(0, len(job_ids), _CHUNK):
        rows = await JobStore(db).reopen(job_ids[start : start + _CHUNK])
        enqueuer = Enqueuer(redis)
        enqueues = []
        for queue in {r.queue for r in rows}:
            mine = [r for r in rows if r.queue == queue]
            free = await broker.reopen(redis, queue, [(r.job_id, r.attempts) for r in mine])
            # A job still in the queue (free False) runs as it is; its row is pending again meanwhile.
            enqueues += [enqueuer.enqueue(queue, r.job_id, r.name, r.args, first_try=r.attempts + 1,
                                          meta={"parent": r.parent_id} if r.parent_id else None)
                         for r, ok in zip(mine, free, strict=True) if ok]  # fmt: skip
        await asyncio.gather(*enqueues)  # together: they share round trips (group commit)
        retried += [r.job_id for r in rows]
    return retried


async def matching_retryable(db: asyncpg.Pool, where: JobFilter) -> list[str]:
    """The ids of the failed or cancelled jobs that `where` matches (its other statuses are ignored)."""
    wanted = tuple(s for s in where.statuses if s in RETRYABLE) if where.statuses else RETRYABLE
    if not wanted:
        return []
    where = dataclasses.replace(where, statuses=wanted)
    ids: list[str] = []
    cursor = None
    while True:
        page = await find_jobs(db, where, limit=1000, cursor=cursor)
        ids += [j.job_id for j in page.jobs]
        if page.next_cursor is None:
            return ids
        cursor = page.next_cursor


async def retry_matching(
    redis: RedisClient, db: asyncpg.Pool, where: JobFilter, *, confirm: int | None
) -> tuple[int, int]:
    """(how many match, how many were retried). Without `confirm`, only counts; with it, retries them if
    the count is still `confirm`, else raises ConfirmationError (look again: the set changed)."""
    ids = await matching_retryable(db, where)
    if confirm is None:
        return len(ids), 0
    if confirm != len(ids):
        raise ConfirmationError(f"{len(ids)} jobs match now, not the {confirm} confirmed: look again and confirm")
    return len(ids), len(await retry_jobs(redis, db, ids))


async def purge_queue(redis: RedisClient, queue: str, *, confirm: int | None) -> int:
    """Cancel every queued job nobody runs (through the workers: rows end `cancelled`, hooks run). Without
    `confirm`, only counts; with it, purges if the count is still `confirm` (else ConfirmationError)."""
    count = await broker.purge(redis, queue, dry_run=True)
    if confirm is None:
        return count
    if confirm != count:
        raise ConfirmationError(f"{count} queued jobs now, not the {confirm} confirmed: look again and confirm")
    return await broker.purge(redis, queue, dry_run=False)


async def drain_worker(redis: RedisClient, queue: str, worker_id: str) -> bool:
    """Ask a live worker to finish its jobs and exit (its supervisor starts a fresh one); False if no live
    worker has that id."""
    if worker_id not in {w.worker_id for w in await list_workers(redis, queue)}:
        return False
    await broker.request_drain(redis, queue, worker_id)
    return True
