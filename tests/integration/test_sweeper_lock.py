"""One sweeper at a time: every worker runs one, and a short Redis lock lets only one of them lead each
period (runner.worker.sweeper)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest

from runner.broker.keys import QueueKeys
from runner.broker.queue import RedisQueue
from runner.resources import Resources
from runner.settings import Settings
from runner.store.jobs import JobStore
from runner.worker.execution import JobExecutor
from runner.worker.sweeper import Sweeper
from tests.conftest import MakeSettings
from tests.integration.test_worker import REGISTRY

pytestmark = pytest.mark.also_on_cluster  # the broker's behaviour, again on Redis Cluster

INTERVAL_S = 0.4


@pytest.fixture
def lock_settings(make_settings: MakeSettings) -> Settings:
    return make_settings(sweep_interval_s=INTERVAL_S)


@pytest.fixture
async def sweepers(lock_settings: Settings) -> AsyncIterator[list[Sweeper]]:
    """Four sweepers of one queue, each as its own worker would build it (own pools, own id)."""
    from runner.resources import open_resources

    async with AsyncExitStack() as stack:
        made = []
        for n in range(4):
            res = await stack.enter_async_context(open_resources(lock_settings))
            queue = RedisQueue(res.redis, queue=lock_settings.queue_name, worker_id=f"w{n}", lease_ttl_s=30)
            executor = await stack.enter_async_context(
                JobExecutor(res, None, REGISTRY.resolved(lock_settings), queue, JobStore(res.db))
            )
            made.append(Sweeper(res, executor, worker_id=f"w{n}"))
        yield made


async def leaders(sweepers: list[Sweeper]) -> list[int]:
    """Which sweepers won the lock when all asked at the same moment."""
    won = await asyncio.gather(*(s._lead() for s in sweepers))
    return [n for n, ok in enumerate(won) if ok]


async def test_only_one_sweeper_leads_each_period(
    resources: Resources, lock_settings: Settings, sweepers: list[Sweeper]
) -> None:
    """Four sweepers asking at once: one leads; nobody else does until the period is over; then one
    leads again, and the lock names the leader."""
    key = QueueKeys.of(lock_settings.queue_name).sweeper
    first = await leaders(sweepers)
    assert len(first) == 1, first
    assert await resources.redis.get(key) == f"w{first[0]}".encode()
    await asyncio.sleep(INTERVAL_S / 2)
    assert await leaders(sweepers) == [], "a second sweeper led within the same period"
    ttl_ms = await resources.redis.pttl(key)
    assert 0 < ttl_ms <= INTERVAL_S * 1000
    await asyncio.sleep(ttl_ms / 1000 + 0.05)
    second = await leaders(sweepers)
    assert len(second) == 1, second


async def test_running_sweepers_take_turns_one_per_period(
    resources: Resources, lock_settings: Settings, sweepers: list[Sweeper]
) -> None:
    """Four sweepers running as workers run them, for six periods: the lock is taken about once a
    period, never by two at once (each new leader finds the previous lock gone)."""
    key = QueueKeys.of(lock_settings.queue_name).sweeper
    taken: list[float] = []  # when a new lock appeared (absent before, or its TTL jumped back up)
    loop = asyncio.get_running_loop()
    tasks = [asyncio.create_task(s.run_forever()) for s in sweepers]
    try:
        last_ttl, deadline = -2, loop.time() + INTERVAL_S * 6
        while loop.time() < deadline:
            ttl = await resources.redis.pttl(key)
            if ttl > 0 and (last_ttl <= 0 or ttl > last_ttl + 20):
                taken.append(loop.time())
            last_ttl = ttl
            await asyncio.sleep(0.002)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(taken)]
    assert 4 <= len(taken) <= 7, gaps
    assert all(gap > INTERVAL_S * 0.9 for gap in gaps), gaps
