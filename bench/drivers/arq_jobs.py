"""Bare arq 0.28 worker for the benchmark: the same three jobs as storymimi_jobs, as arq users write them.

    python -m bench.drivers.arq_jobs {default|tuned} QUEUE MAX_JOBS REDIS_URL

default: arq's WorkerSettings defaults (poll_delay 0.5 s, pickle, asyncio loop, queue_read_limit
max(5 * max_jobs, 100)) with max_jobs=MAX_JOBS.  tuned: the same with poll_delay 0.01 s, under uvloop.
On start-up the worker writes its event loop's class to `bench:arq:loop:<QUEUE>` so the driver can check it.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from arq import run_worker
from arq.connections import RedisSettings

from bench.drivers.common import LATENCY_KEY

VARIANTS = ("default", "tuned")
TUNED_POLL_DELAY_S = 0.01
LOOP_KEY = "bench:arq:loop:"  # + queue name: the worker's event loop class, e.g. "uvloop.Loop"


async def noop(ctx: dict[str, Any]) -> None:
    return None


async def sleep(ctx: dict[str, Any], seconds: float) -> None:
    await asyncio.sleep(seconds)


async def stamp(ctx: dict[str, Any], enqueued_at: float) -> None:
    await ctx["redis"].lpush(LATENCY_KEY, (time.time() - enqueued_at) * 1000)


def worker_settings(variant: str, queue: str, max_jobs: int, redis_url: str) -> dict[str, Any]:
    """Keyword arguments for arq.Worker: arq's defaults except what the variant changes."""

    async def on_startup(ctx: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        await ctx["redis"].set(LOOP_KEY + queue, f"{type(loop).__module__}.{type(loop).__name__}", ex=3600)

    settings: dict[str, Any] = {
        "functions": [noop, sleep, stamp],
        "queue_name": queue,
        "max_jobs": max_jobs,
        "redis_settings": RedisSettings.from_dsn(redis_url),
        "on_startup": on_startup,
    }
    if variant == "tuned":
        settings["poll_delay"] = TUNED_POLL_DELAY_S
    return settings


def main(argv: list[str]) -> None:
    variant, queue, max_jobs, redis_url = argv
    if variant not in VARIANTS:
        sys.exit(f"variant must be one of {VARIANTS}, not {variant!r}")
    if variant == "tuned":
        import uvloop

        # arq's Worker takes its loop in __init__ (asyncio.get_event_loop()), so the policy goes in first.
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    settings = worker_settings(variant, queue, int(max_jobs), redis_url)
    run_worker(settings)


if __name__ == "__main__":
    main(sys.argv[1:])
