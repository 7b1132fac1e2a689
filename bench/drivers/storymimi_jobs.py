"""The benchmark jobs, as this runner's users write them (JSON arguments, status rows, leases)."""

from __future__ import annotations

import asyncio
import time

from bench.drivers.common import LATENCY_KEY
from runner.context import JobContext
from runner.registry import Registry, job


@job("bench.noop")
async def noop(ctx: JobContext) -> None:
    return None


@job("bench.sleep")
async def sleep(ctx: JobContext, *, seconds: float) -> None:
    await asyncio.sleep(seconds)


@job("bench.stamp")
async def stamp(ctx: JobContext, *, enqueued_at: float) -> None:
    await ctx.redis.lpush(LATENCY_KEY, (time.time() - enqueued_at) * 1000)  # type: ignore[misc]  # redis-py types list commands as sync|async


registry = Registry(specs=(noop, sleep, stamp))
