# mypy: ignore-errors
# (runs in bench/.venv-saq, where SAQ is installed; this project's venv has no SAQ)
"""SAQ worker settings for the benchmark: the same three jobs as the other systems, as SAQ's README writes
them (a settings dict), run by SAQ's own CLI, one worker process:

    BENCH_SAQ_QUEUE=q BENCH_CONCURRENCY=100 REDIS_URL=redis://... python -m saq bench.drivers.saq_jobs.settings

SAQ's CLI makes its loop with asyncio.new_event_loop(); the uvloop policy set here (at import, before that)
puts the worker on uvloop, as arq-tuned and the other peers run.  `stamp` LPUSHes its enqueue -> start delay
(ms) through the queue's own Redis client.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import redis.asyncio as aioredis
import uvloop
from saq.queue.redis import RedisQueue

from bench.drivers.common import LATENCY_KEY

asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
EXTRA_CONNECTIONS = 50


async def noop(ctx: dict[str, Any]) -> None:
    return None


async def sleep(ctx: dict[str, Any], *, seconds: float) -> None:
    await asyncio.sleep(seconds)


async def stamp(ctx: dict[str, Any], *, enqueued_at: float) -> None:
    delay_ms = (time.time() - enqueued_at) * 1000
    await ctx["worker"].queue.redis.lpush(LATENCY_KEY, delay_ms)


def make_queue(name: str, redis_url: str, concurrency: int = 10) -> RedisQueue:
    """SAQ's queue on its own Redis client: each of the worker's `concurrency` dequeue loops holds a
    connection in BLMOVE, so the pool gets that many plus room for enqueues, timers and pub/sub (redis-py
    8's asyncio pool otherwise stops at 100: "Too many connections" at concurrency 500)."""
    return RedisQueue(aioredis.from_url(redis_url, max_connections=concurrency + EXTRA_CONNECTIONS), name=name)


CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "10"))
settings = {
    "queue": make_queue(
        os.environ.get("BENCH_SAQ_QUEUE", "default"), os.environ.get("REDIS_URL", "redis://127.0.0.1"), CONCURRENCY
    ),
    "functions": [noop, sleep, stamp],
    "concurrency": CONCURRENCY,
}
