"""The job `make bench-foreign` sends through the intakes: it notes how long after its producer sent it
it started (same host, same clock). Run as `--registry bench.foreign_jobs:registry`."""

from __future__ import annotations

import time

from runner.context import JobContext
from runner.registry import Registry, job

STARTED_KEY = "bench:foreign:{origin}"  # a list of seconds from send to start, one per job


@job("bench.stamp", positional=("origin", "sent"))
async def stamp(ctx: JobContext, *, origin: str, sent: float) -> None:
    await ctx.redis.execute_command("RPUSH", STARTED_KEY.format(origin=origin), time.time() - sent)


registry = Registry(specs=(stamp,))
