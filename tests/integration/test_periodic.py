"""Periodic jobs: once per tick across the fleet, a tick still run when a worker dies at it, and ticks missed
while nothing ran skipped or caught up once."""

from __future__ import annotations

import asyncio
import time

import pytest

from runner.broker.keys import QueueKeys
from runner.context import JobContext
from runner.errors import ConfigError
from runner.registry import Registry, job
from runner.resources import Resources
from runner.settings import Settings
from runner.worker.periodic import periodic_job_id
from tests.conftest import RunWorker, wait_for

pytestmark = pytest.mark.also_on_cluster  # the broker's behaviour, again on Redis Cluster

ran: list[str] = []


@pytest.fixture(autouse=True)
def _only_this_tests_runs() -> None:
    ran.clear()  # a tick's job id names no queue: the cluster run of a test must not see the single run's


@job("tick.every_second", cron="* * * * * *")
async def every_second(ctx: JobContext) -> None:
    ran.append(ctx.job_id)


@job("tick.catch_up", cron="* * * * * */10", cron_missed="once")
async def catch_up(ctx: JobContext) -> None:
    ran.append(ctx.job_id)


@job("tick.skip", cron="* * * * * */10")
async def skip(ctx: JobContext) -> None:
    ran.append(ctx.job_id)


def ticks_of(name: str) -> list[int]:
    return sorted(int(j.split("@")[1]) for j in ran if j.startswith(f"{name}@"))


async def test_each_tick_runs_once_across_workers_even_when_one_dies(settings: Settings, run_worker: RunWorker):
    """A worker killed at a tick: the tick's job was enqueued once (by whichever worker came first); if the
    dead one held it, it runs again when its lease lapses (2 s here). Every tick runs, none twice."""
    registry = Registry(specs=(every_second,))
    short_leases = settings.model_copy(update={"lease_ttl_s": 2.0})
    await run_worker(registry, short_leases)
    doomed_task = asyncio.create_task((second := await _worker(short_leases, registry)).run())
    await asyncio.sleep(3.2)
    doomed_task.cancel()  # killed mid-run, right around a tick: the other worker's enqueue covers it
    await asyncio.gather(doomed_task, return_exceptions=True)
    await asyncio.sleep(4.5)  # past the dead worker's leases
    ticks = ticks_of("tick.every_second")
    assert len(ticks) == len(set(ticks)), ticks  # never twice
    assert len(ticks) >= 4 and ticks == list(range(ticks[0], ticks[-1] + 1)), ticks  # none missed
    assert second.worker_id  # it ran


async def test_missed_ticks_are_caught_up_once_or_skipped(
    settings: Settings, resources: Resources, run_worker: RunWorker
):
    """Both jobs last ran 25 s ago; a worker starts: the "once" job runs its latest missed tick at once, the
    "skip" job waits for its next tick."""
    keys = QueueKeys.of(settings.queue_name)
    for name in ("tick.catch_up", "tick.skip"):
        await resources.redis.set(keys.cron(name), time.time() - 25)
    started = time.time()
    await run_worker(Registry(specs=(catch_up, skip)))

    async def caught_up() -> bool:
        return any(t < started for t in ticks_of("tick.catch_up"))

    await wait_for(caught_up, 5)
    [missed] = [t for t in ticks_of("tick.catch_up") if t < started]
    assert started - 10 <= missed < started and periodic_job_id("tick.catch_up", missed) in ran
    assert [t for t in ticks_of("tick.skip") if t < started] == []


def test_a_scheduled_job_must_take_no_arguments_and_a_real_expression():
    @job("tick.bad_args", cron="* * * * *")
    async def needs(ctx: JobContext, *, x: int) -> None: ...

    @job("tick.bad_cron", cron="every tuesday")
    async def never(ctx: JobContext) -> None: ...

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match=r"gets no arguments: give \['x'\] defaults"):
        Registry((needs,)).resolved(settings)
    with pytest.raises(ConfigError, match="is not a cron expression"):
        Registry((never,)).resolved(settings)


async def _worker(settings: Settings, registry: Registry) -> object:
    from runner.worker.worker import Worker

    return Worker(settings, registry)
