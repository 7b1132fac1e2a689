"""The sweeper: nothing stays stuck. It finds status rows left active with no job in Redis behind them
(the API died between writing the row and enqueuing; Redis lost data) and re-enqueues or fails them.

Every worker runs it; a short Redis lock lets one of them sweep each period. A row counts as stuck only
when it has not moved for SWEEP_STALE_AFTER_S *and* Redis has neither its job nor its result:
    result in Redis   -> the job finished but its status write was lost: the row takes the result's outcome
    tries left        -> enqueued again under the same id, with the arguments kept on the row
    no tries left     -> failed with a reason, and the job's failure hook runs (its story says failed)
It also forgets, a batch a sweep, the jobs that ended longer ago than RESULT_RETENTION_S (rows and attempts),
and writes the join of any group whose last member ended while its writer died (runner.worker.joins).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import structlog
from redis.exceptions import RedisError

from runner.broker.enqueue import Enqueuer
from runner.broker.keys import QueueKeys
from runner.resources import Resources
from runner.status import ACTIVE, JobStatus
from runner.store.groups import GroupStore
from runner.store.jobs import JobStore, Transition
from runner.worker.execution import JobExecutor
from runner.worker.joins import Joins

__all__ = ["SweepReport", "Sweeper"]

log = structlog.get_logger("runner.worker.sweeper")

_STUCK = """
SELECT job_id, name, args, status, attempts, max_tries FROM runner_jobs
WHERE queue = $1 AND status = ANY($2::text[]) AND updated_at < now() - make_interval(secs => $3)
ORDER BY updated_at LIMIT $4
"""


@dataclass
class SweepReport:
    checked: int = 0
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    forgotten: int = 0  # ended jobs past RESULT_RETENTION_S, deleted with their attempts
    joined: list[str] = field(default_factory=list)  # joins written here: their group's writer had died


class Sweeper:
    """Periodic repair of stuck rows for one queue, run by the worker that holds the sweep lock."""

    def __init__(
        self, resources: Resources, executor: JobExecutor, *, worker_id: str, queue: str | None = None, batch: int = 500
    ) -> None:
        settings = resources.settings
        self._resources = resources
        self._executor = executor
        self._queue = queue or settings.queue_name
        self._keys = QueueKeys.of(self._queue)
        self._worker_id = worker_id
        self._interval_s = settings.sweep_interval_s
        self._stale_s = settings.sweep_stale_after_s
        self._batch = batch
        self._enqueuer = Enqueuer(resources.redis)
        self._joins = Joins(resources, outage_s=settings.outage_retry_s, priorities=executor.priorities)

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s * random.uniform(0.8, 1.2))
            try:
                if await self._lead():
                    await self.sweep_once()
            except (RedisError, OSError) as exc:
                log.warning("sweep_failed", error=repr(exc))
            except Exception as exc:  # a sweep must never take its worker down
                log.exception("sweep_failed", error=repr(exc))

    async def _lead(self) -> bool:
        key = self._keys.sweeper
        lock_ms = int(self._interval_s * 1000)
        return bool(await self._resources.redis.set(key, self._worker_id, nx=True, px=lock_ms))

    async def sweep_once(self) -> SweepReport:
        report = SweepReport()
        report.forgotten = await self._forget_old_results()
        report.joined = await self._joins.repair(self._queue, self._batch)
        if report.joined:
            log.warning("sweep_joined", joins=report.joined)
        rows = await self._resources.db.fetch(_STUCK, self._queue, sorted(ACTIVE), self._stale_s, self._batch)
        report.checked = len(rows)
        if not rows:
            return report
        async with self._resources.redis.pipeline(transaction=False) as pipe:
            for row in rows:
                pipe.exists(self._keys.job(row["job_id"]))
                pipe.get(self._keys.result(row["job_id"]))
            found = await pipe.execute()
        for row, has_job, result in zip(rows, found[::2], found[1::2], strict=True):
            if not has_job:
                await self._repair(dict(row), result, report)
        if report.requeued or report.failed or report.resolved:
            log.warning("sweep_repaired", checked=report.checked, requeued=report.requeued,
                        failed=report.failed, resolved=report.resolved)  # fmt: skip
        return report

    async def _forget_old_results(self) -> int:
        """Result retention: delete a batch of this queue's ended jobs older than RESULT_RETENTION_S."""
        retention_s = self._resources.settings.result_retention_s
        if not retention_s:
            return 0
        before = datetime.now(UTC) - timedelta(seconds=retention_s)
        forgotten = await JobStore(self._resources.db).forget_ended(self._queue, before, self._batch)
        await GroupStore(self._resources.db).forget_joined(self._queue, before, self._batch)
        if forgotten:
            log.info("results_forgotten", jobs=forgotten, older_than_s=retention_s)
        return forgotten

    async def _repair(self, row: dict[str, Any], result: bytes | None, report: SweepReport) -> None:
        job_id, args = row["job_id"], orjson.loads(row["args"])
        if result is not None:
            await self._take_result(row, orjson.loads(result))
            report.resolved.append(job_id)
        elif row["attempts"] < row["max_tries"] and self._executor.knows(row["name"]):
            await self._enqueuer.enqueue(self._queue, job_id, row["name"], args)
            note = "re-enqueued by the sweeper: its job was missing from Redis"
            await self._executor.store.move(
                Transition(job_id, JobStatus.RETRYING, name=row["name"], queue=self._queue,
                           attempt=row["attempts"], max_tries=row["max_tries"], error=note)
            )  # fmt: skip
            report.requeued.append(job_id)
        else:
            reason = f"lost from the queue after {row['attempts']} of {row['max_tries']} tries; not run again"
            await self._executor.fail_orphan(job_id=job_id, queue=self._queue, name=row["name"], kwargs=args,
                                             attempt=row["attempts"], error=reason)  # fmt: skip
            report.failed.append(job_id)

    async def _take_result(self, row: dict[str, Any], envelope: dict[str, Any]) -> None:
        success = bool(envelope.get("s"))
        status = JobStatus.COMPLETED if success else JobStatus.FAILED
        applied = await self._executor.store.apply([Transition(
            row["job_id"], status, name=row["name"], queue=self._queue, attempt=int(envelope.get("t") or 0),
            max_tries=row["max_tries"], result=envelope.get("r") if success else None,
            error=None if success else str(envelope.get("r")),
        )])  # fmt: skip
        await self._joins.after_members_ended(applied.ended_groups)
