"""Shared limits hold across clients, free a dead holder's slot, and give up with RetryLaterError."""

from __future__ import annotations

import asyncio
import time

import pytest

from runner.broker.keys import SlotKeys
from runner.broker.slots import SlotHolder, SlotPool
from runner.errors import RetryLaterError
from runner.resources import Resources, connect_redis
from runner.settings import Settings

pytestmark = pytest.mark.also_on_cluster  # the broker's behaviour, again on Redis Cluster


async def test_concurrency_limit_holds_across_separate_connections(resources: Resources, settings: Settings):
    """Two Redis pools (as two processes would have) never hold more than `concurrency` slots at once."""
    other = await connect_redis(settings)
    limit = SlotPool(f"test-conc-{settings.queue_name}", concurrency=3, max_wait_s=10)
    holding, peak = 0, 0

    async def call(holder: SlotHolder) -> None:
        nonlocal holding, peak
        async with holder.hold(limit):
            holding += 1
            peak = max(peak, holding)
            await asyncio.sleep(0.05)
            holding -= 1

    try:
        async with SlotHolder(resources.redis) as first, SlotHolder(other) as second:
            await asyncio.gather(*(call((first, second)[i % 2]) for i in range(12)))
    finally:
        await other.aclose()
    assert peak == 3


async def test_per_minute_limit_defers_with_a_retry_hint(resources: Resources, settings: Settings):
    """Past the per-minute budget the caller is told to retry later, with the wait until a call frees."""
    limit = SlotPool(f"test-rpm-{settings.queue_name}", concurrency=10, per_minute=2, max_wait_s=0.2)
    async with SlotHolder(resources.redis) as holder:
        for _ in range(2):
            async with holder.hold(limit):
                pass
        with pytest.raises(RetryLaterError, match="2 a minute") as caught:
            async with holder.hold(limit):
                pass
    assert caught.value.retry_after_s is not None and 50 < caught.value.retry_after_s <= 60


async def test_slot_of_a_dead_holder_frees_when_its_hold_expires(resources: Resources, settings: Settings):
    """A slot taken by a process that died (so never renewed) is free again after its hold."""
    limit = SlotPool(f"test-dead-{settings.queue_name}", concurrency=1, max_wait_s=2)
    await resources.redis.zadd(
        SlotKeys.of("runner:slots", limit.name).held, {"dead-holder": int(time.time() * 1000) + 300}
    )
    started = time.monotonic()
    async with SlotHolder(resources.redis) as holder, holder.hold(limit):
        waited = time.monotonic() - started
    assert 0.2 < waited < 1.5


async def test_a_live_holder_keeps_its_slot_past_the_hold(resources: Resources, settings: Settings):
    """A call that runs longer than the hold keeps its slot: the holder renews it."""
    limit = SlotPool(f"test-long-{settings.queue_name}", concurrency=1, max_wait_s=0.2)
    async with SlotHolder(resources.redis, hold_s=0.3) as holder:
        async with holder.hold(limit):
            await asyncio.sleep(1.0)  # three holds long
            with pytest.raises(RetryLaterError):
                async with holder.hold(limit):
                    pass
        async with holder.hold(limit):  # released on exit: free at once
            pass
