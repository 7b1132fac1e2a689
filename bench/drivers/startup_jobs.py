"""The start-up benchmark's job: it notes which process started it and when, then holds its slot a while.
Run as `--registry bench.drivers.startup_jobs:registry` (bench.startup)."""

from __future__ import annotations

import asyncio
import os
import time

from runner.context import JobContext
from runner.registry import Registry, job

STARTS_KEY = "bench:startup:starts"  # "<pid> <unix time the job started>", one item per job


@job("bench.note_start")
async def note_start(ctx: JobContext, *, hold_s: float) -> None:
    await ctx.redis.rpush(STARTS_KEY, f"{os.getpid()} {time.time()}")  # type: ignore[misc]  # redis-py types list commands as sync|async
    await asyncio.sleep(hold_s)


registry = Registry(specs=(note_start,))
