# mypy: ignore-errors
# (runs in bench/.venv-pgqueuer, where pgqueuer is installed; this project's venv has no pgqueuer)
"""pgqueuer worker for the benchmark: the same three jobs as the other systems, as pgqueuer's README writes
them (a factory yielding a PgQueuer), run as `pgq run` runs it (`pgqueuer.run`, on uvloop):

    PGQUEUER_PREFIX=bench_ BENCH_PGQ_DSN=postgresql://... REDIS_URL=redis://... \
        python -m bench.drivers.pgqueuer_jobs BATCH_SIZE MAX_CONCURRENT_TASKS

(`pgq run` itself, pgqueuer 1.6.0's CLI, fails on start-up with typer 0.29: its --log-level parser hands
setup_fancy_logger a str.)  Payloads are JSON bytes.
Only `stamp` touches Redis: it LPUSHes its enqueue -> start delay (ms) for the driver, as in the other
systems; the queue itself is pgqueuer's tables (prefix `bench_`) on the benchmark's Postgres.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import asyncpg
import pgqueuer
import redis.asyncio as aioredis
import uvloop
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job

from bench.drivers.common import LATENCY_KEY


@asynccontextmanager
async def create() -> AsyncIterator[PgQueuer]:
    connection = await asyncpg.connect(os.environ["BENCH_PGQ_DSN"])
    pgq = PgQueuer(AsyncpgDriver(connection))
    stamps = aioredis.Redis.from_url(os.environ["REDIS_URL"])

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        return None

    @pgq.entrypoint("sleep")
    async def sleep(job: Job) -> None:
        await asyncio.sleep(json.loads(job.payload or b"{}")["seconds"])

    @pgq.entrypoint("stamp")
    async def stamp(job: Job) -> None:
        delay_ms = (time.time() - json.loads(job.payload or b"{}")["enqueued_at"]) * 1000
        await stamps.lpush(LATENCY_KEY, delay_ms)

    try:
        yield pgq
    finally:
        await stamps.aclose()
        await connection.close()


def main(argv: list[str]) -> None:
    batch_size, max_concurrent_tasks = (int(x) for x in argv)
    uvloop.run(pgqueuer.run("bench.drivers.pgqueuer_jobs:create", batch_size=batch_size,
                            max_concurrent_tasks=max_concurrent_tasks, dequeue_timeout=timedelta(seconds=30)))  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
