"""Periodic jobs: each job registered with `cron=` is enqueued once per tick across the whole fleet.

Every worker runs this schedule; at a tick each enqueues the job under the id `<name>@<tick epoch s>`, and
the enqueue script and the row's key refuse every copy but the first. So a tick runs once whether one
worker or fifty are up, and still runs when the worker that would have been first is killed at that
moment. The last tick enqueued is kept in Redis (`runner:{q}:cron:<name>`): a fleet that starts after ticks
went by with nothing running skips them, or, for `cron_missed="once"`, runs the latest of them once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection

import asyncpg
import structlog
from redis.exceptions import RedisError

from runner.broker.keys import QueueKeys
from runner.client import JobClient
from runner.registry import JobSpec

__all__ = ["Periodic", "periodic_job_id"]

log = structlog.get_logger("runner.worker.periodic")

_KEEP_LAST_TICK_MS = 30 * 86_400_000  # how long the last tick is remembered for a catch-up


def periodic_job_id(name: str, tick: float) -> str:
    return f"{name}@{int(tick)}"


class Periodic:
    """The schedule of the periodic jobs among `specs`. Borrows the worker's client."""

    def __init__(self, client: JobClient, redis: object, queues: Collection[str], specs: dict[str, JobSpec]) -> None:
        """Schedules the periodic jobs of `queues` (the worker's): a job is scheduled by the workers that run it."""
        self._client = client
        self._redis = redis
        self.jobs = [spec for spec in specs.values() if spec.cron and spec.queue in queues]

    async def run_forever(self) -> None:
        from croniter import croniter

        now = time.time()
        await self._catch_up(now)
        upcoming = {spec.name: croniter(spec.cron, now).get_next(float) for spec in self.jobs}
        by_name = {spec.name: spec for spec in self.jobs}
        while True:
            name = min(upcoming, key=upcoming.__getitem__)
            tick = upcoming[name]
            await asyncio.sleep(max(tick - time.time(), 0.0))
            await self._fire(by_name[name], tick)
            upcoming[name] = croniter(by_name[name].cron, tick).get_next(float)

    async def _catch_up(self, now: float) -> None:
        """For `cron_missed="once"`: if a tick went by since the last one enqueued, run the latest once."""
        from croniter import croniter

        for spec in self.jobs:
            if spec.cron_missed != "once":
                continue
            try:
                last = await self._redis.get(_cron_key(spec))  # type: ignore[attr-defined]
            except (RedisError, OSError) as exc:
                log.warning("periodic_catch_up_failed", job_name=spec.name, error=repr(exc))
                continue
            latest = croniter(spec.cron, now).get_prev(float)
            if last is not None and latest > float(last):
                log.info("periodic_missed_tick", job_name=spec.name, tick=latest)
                await self._fire(spec, latest)

    async def _fire(self, spec: JobSpec, tick: float) -> None:
        job_id = periodic_job_id(spec.name, tick)
        try:
            result = await self._client.enqueue(spec.name, job_id=job_id)
            await self._redis.set(_cron_key(spec), tick, px=_KEEP_LAST_TICK_MS)  # type: ignore[attr-defined]
        except (RedisError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # The other workers enqueue the same tick; if all fail, the tick is missed (and said so).
            log.warning("periodic_enqueue_failed", job_name=spec.name, job_id=job_id, error=repr(exc))
            return
        if result.queued:
            log.info("periodic_enqueued", job_name=spec.name, job_id=job_id)


def _cron_key(spec: JobSpec) -> str:
    assert spec.queue is not None  # resolved specs name their queue
    return QueueKeys.of(spec.queue).cron(spec.name)
