"""A registry for acceptance tests that need real worker processes: a job holding a slot of a shared
pool (recording in Redis how many hold one at once), and a no-op. Run as `--registry
tests.acceptance.probe_jobs:registry`."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from runner.broker.slots import SlotHolder, SlotPool
from runner.context import JobContext
from runner.registry import Registry, job
from runner.resources import Resources

# KEYS[1] the number holding a slot now; KEYS[2] the list of what each holder saw. ARGV[1] "<pid>".
_ENTER = """
local now = redis.call('INCR', KEYS[1])
redis.call('RPUSH', KEYS[2], ARGV[1] .. ':' .. now)
return now
"""


def holding_key(pool: str) -> str:
    return f"test:probe:{{{pool}}}:holding"


def seen_key(pool: str) -> str:
    """A list of "<pid>:<holders at once, this one included>", one item per call."""
    return f"test:probe:{{{pool}}}:seen"


@asynccontextmanager
async def open_probe_services(resources: Resources) -> AsyncIterator[SlotHolder]:
    async with SlotHolder(resources.redis, prefix=resources.settings.slot_prefix) as holder:
        yield holder


@job("probe.hold_slot")
async def hold_slot(ctx: JobContext, *, pool: str, concurrency: int, hold_s: float) -> int:
    """Take a slot of `pool` (shared by every worker process), count the holders while holding it."""
    holder: SlotHolder = ctx.services
    async with holder.hold(SlotPool(pool, concurrency=concurrency, max_wait_s=60)):
        now: int = await ctx.redis.eval(_ENTER, 2, holding_key(pool), seen_key(pool), str(os.getpid()))  # type: ignore[misc]  # redis-py types eval as sync|async
        try:
            await asyncio.sleep(hold_s)
        finally:
            await ctx.redis.decr(holding_key(pool))
    return now


@job("probe.noop")
async def noop(ctx: JobContext) -> None:
    return None


registry = Registry(specs=(hold_slot, noop), services=open_probe_services)
