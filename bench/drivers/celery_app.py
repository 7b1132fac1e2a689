# mypy: ignore-errors
"""The old design, for the benchmark only: a Celery app on the Redis broker whose tasks each make a NEW
event loop, run their coroutine with `loop.run_until_complete()` and close the loop.  Runs in its own
virtual environment (bench/.venv-celery, see bench/requirements-celery.txt), never in the project's.

    BENCH_CELERY_QUEUE=q REDIS_URL=redis://... python -m celery -A bench.drivers.celery_app worker \
        --pool prefork -c N --without-gossip --without-mingle --without-heartbeat -Q q --loglevel WARNING

Settings: task_acks_late, worker_prefetch_multiplier 1, JSON, no result backend.  Each queue gets its own
kombu unacked hash (`<queue>:unacked`), so a driver can tell its messages reserved-but-not-acked from
another run's (a killed worker leaves its reserved messages there until the visibility timeout).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Coroutine
from typing import Any

import redis
from celery import Celery

from bench.drivers.common import LATENCY_KEY


def unacked_key(queue: str) -> str:
    return f"{queue}:unacked"


def make_app(queue: str, redis_url: str) -> Celery:
    app = Celery("bench", broker=redis_url)
    app.conf.update(
        task_default_queue=queue,
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "unacked_key": unacked_key(queue),
            "unacked_index_key": f"{queue}:unacked_index",
            "unacked_mutex_key": f"{queue}:unacked_mutex",
        },
    )
    return app


app = make_app(os.environ.get("BENCH_CELERY_QUEUE", "celery"), os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))


def run_async(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """The pattern being replaced: a fresh event loop per task, closed when the task's coroutine returns."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


_redis: redis.Redis | None = None  # one client per pool process, made after the fork


def _client() -> redis.Redis:
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(app.conf.broker_url)
    return _redis


async def _noop() -> None:
    return None


async def _sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def _stamp(enqueued_at: float) -> None:
    delay_ms = (time.time() - enqueued_at) * 1000  # the job's code starts here, inside its new loop
    _client().lpush(LATENCY_KEY, delay_ms)


@app.task(name="bench.noop")
def noop() -> None:
    run_async(_noop())


@app.task(name="bench.sleep")
def sleep(seconds: float) -> None:
    run_async(_sleep(seconds))


@app.task(name="bench.stamp")
def stamp(enqueued_at: float) -> None:
    run_async(_stamp(enqueued_at))
