# mypy: ignore-errors
# (runs in bench/.venv-taskiq, where taskiq is installed; this project's venv has no taskiq)
"""taskiq broker and tasks for the benchmark: the same three jobs as the other systems, as taskiq's docs write
them, on Redis streams (taskiq-redis's RedisStreamBroker, its defaults: consumer group `taskiq`, XREADGROUP
of up to 100, acked when done), run by taskiq's own CLI in one worker process:

    BENCH_TASKIQ_QUEUE=q REDIS_URL=redis://... python -m taskiq worker bench.drivers.taskiq_jobs:broker \
        --workers 1 --max-async-tasks 100 --log-level WARNING

taskiq's worker runs on uvloop when it is installed (it is, in bench/.venv-taskiq).  The stream is the
queue's name.  `stamp` LPUSHes its enqueue -> start delay (ms) through the broker's connection pool.
"""

from __future__ import annotations

import asyncio
import os
import time

from redis.asyncio import Redis
from taskiq_redis import RedisStreamBroker

from bench.drivers.common import LATENCY_KEY


def make_broker(queue: str, redis_url: str) -> RedisStreamBroker:
    return RedisStreamBroker(redis_url, queue_name=queue)


broker = make_broker(os.environ.get("BENCH_TASKIQ_QUEUE", "taskiq"), os.environ.get("REDIS_URL", "redis://127.0.0.1"))


@broker.task(task_name="noop")
async def noop() -> None:
    return None


@broker.task(task_name="sleep")
async def sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


@broker.task(task_name="stamp")
async def stamp(enqueued_at: float) -> None:
    delay_ms = (time.time() - enqueued_at) * 1000
    async with Redis(connection_pool=broker.connection_pool) as redis:
        await redis.lpush(LATENCY_KEY, delay_ms)


TASKS = {"noop": noop, "sleep": sleep, "stamp": stamp}
