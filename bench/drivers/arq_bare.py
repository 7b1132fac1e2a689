"""Driver for bare arq 0.28, as its users run it: `enqueue_job` from `arq.create_pool`, one or two
`python -m bench.drivers.arq_jobs` worker processes (see there for what the two variants change).

    python -m bench.drivers.arq_bare --variant {default|tuned} --workload ... (common.parse_args)

noop / sleep: all jobs enqueued before the worker starts; the clock runs from the first job's
`arq:in-progress:<id>` key appearing to the queue's sorted set being empty (arq removes a job from it when
the job finishes).  latency: one idle worker (max_jobs 10), its health-check key seen, 5 warm-up jobs, then
one job every 1/RATE s, each LPUSHing enqueue -> start in ms.  starvation: a first worker holds
CONCURRENCY 60 s jobs, then the same latency probes go to a second, idle worker.  arq's poll reads only the
oldest `queue_read_limit` ids (100 for max_jobs 10), all of them the busy jobs, so the probes may never
start: the wait is bounded (BENCH_START_WAIT_S, 15 s) and notes["started"] counts those that did.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from typing import Any

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.constants import health_check_key_suffix, in_progress_key_prefix

from bench.drivers.arq_jobs import LOOP_KEY, TUNED_POLL_DELAY_S, VARIANTS
from bench.drivers.common import LATENCY_KEY, Result, emit, parse_args, percentiles, spawn, stop, tree_rss_mib

IDLE_MAX_JOBS = 10  # the idle worker of latency / starvation, as in the storymimi driver
START_WAIT_S = float(os.environ.get("BENCH_START_WAIT_S", "15"))


def worker(variant: str, args: argparse.Namespace, max_jobs: int) -> list[str]:
    return [sys.executable, "-m", "bench.drivers.arq_jobs", variant, args.queue, str(max_jobs), args.redis_url]


def notes(variant: str, max_jobs: int, loop: bytes | None) -> dict[str, float | str]:
    return {"variant": variant, "max_jobs": max_jobs, "queue_read_limit": max(max_jobs * 5, 100),
            "poll_delay_s": TUNED_POLL_DELAY_S if variant == "tuned" else 0.5,
            "loop": loop.decode() if loop else "unknown"}  # fmt: skip


async def enqueue_many(redis: ArqRedis, queue: str, name: str, ids: list[str], **kwargs: Any) -> None:
    for start in range(0, len(ids), 256):
        await asyncio.gather(*(redis.enqueue_job(name, _job_id=i, _queue_name=queue, **kwargs)
                               for i in ids[start : start + 256]))  # fmt: skip


async def throughput(variant: str, args: argparse.Namespace, redis: ArqRedis, name: str, **kwargs: Any) -> Result:
    ids = [f"{args.queue}:{n}" for n in range(args.jobs)]
    await enqueue_many(redis, args.queue, name, ids, **kwargs)
    process = spawn(worker(variant, args, args.concurrency), {})
    try:
        first = ids[: min(len(ids), 200)]
        deadline = time.monotonic() + 60
        while not any(await asyncio.gather(*(redis.exists(in_progress_key_prefix + i) for i in first))):
            if time.monotonic() > deadline or process.poll() is not None:
                sys.exit("benchmark: no arq job started within 60 s")
            await asyncio.sleep(0.001)
        started = time.monotonic()
        while await redis.zcard(args.queue):
            await asyncio.sleep(0.002)
        seconds = time.monotonic() - started
        rss = tree_rss_mib(process.pid)
    finally:
        stop(process)
    return Result(f"arq-{variant}", name, args.jobs, args.concurrency, seconds, args.jobs / seconds,
                  worker_rss_mib=rss, notes=notes(variant, args.concurrency, await redis.get(LOOP_KEY + args.queue)))  # fmt: skip


async def stamp_jobs(redis: ArqRedis, queue: str, count: int, rate: float, wait_s: float) -> list[float]:
    await redis.delete(LATENCY_KEY)
    for _ in range(count):
        await redis.enqueue_job("stamp", _job_id=uuid.uuid4().hex, _queue_name=queue, enqueued_at=time.time())
        await asyncio.sleep(1 / rate)
    deadline = time.monotonic() + wait_s
    while await redis.llen(LATENCY_KEY) < count and time.monotonic() < deadline:  # type: ignore[misc]  # redis-py types list commands as sync|async
        await asyncio.sleep(0.01)
    return [float(x) for x in await redis.lrange(LATENCY_KEY, 0, -1)]  # type: ignore[misc]


async def latency(variant: str, args: argparse.Namespace, redis: ArqRedis, busy_jobs: int = 0) -> Result:
    busy = spawn(worker(variant, args, busy_jobs), {}) if busy_jobs else None
    idle = None
    try:
        if busy is not None:  # one worker holds `busy_jobs` long jobs before the idle one starts
            ids = [uuid.uuid4().hex for _ in range(busy_jobs)]
            await enqueue_many(redis, args.queue, "sleep", ids, seconds=60.0)
            deadline = time.monotonic() + 60
            while sum(await asyncio.gather(*(redis.exists(in_progress_key_prefix + i) for i in ids))) < busy_jobs:
                if time.monotonic() > deadline:
                    sys.exit(f"benchmark: the busy worker did not start {busy_jobs} jobs within 60 s")
                await asyncio.sleep(0.01)
        health_key = args.queue + health_check_key_suffix  # written on the worker's first poll
        await redis.delete(health_key)
        idle = spawn(worker(variant, args, IDLE_MAX_JOBS), {})
        deadline = time.monotonic() + 60
        while not await redis.exists(health_key):
            if time.monotonic() > deadline:
                sys.exit("benchmark: the idle arq worker did not start polling within 60 s")
            await asyncio.sleep(0.005)
        await stamp_jobs(redis, args.queue, 5, 10, min(START_WAIT_S, 5))  # warm-up
        values = await stamp_jobs(redis, args.queue, args.jobs, args.rate, START_WAIT_S)
        rss = tree_rss_mib(idle.pid)
    finally:
        for process in (idle, busy):
            if process is not None:
                stop(process, timeout=5)
    p50, p99 = percentiles(values) if values else (None, None)
    extra = notes(variant, IDLE_MAX_JOBS, await redis.get(LOOP_KEY + args.queue))
    extra |= {"started": len(values), "busy_jobs": busy_jobs} if busy_jobs else {"started": len(values)}
    return Result(f"arq-{variant}", "starvation" if busy_jobs else "latency", args.jobs, args.concurrency,
                  p50_ms=p50, p99_ms=p99, worker_rss_mib=rss, notes=extra)  # fmt: skip


async def main() -> None:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--variant", choices=VARIANTS, default="default")
    known, rest = pre.parse_known_args()
    variant: str = known.variant
    sys.argv = [sys.argv[0], *rest]
    args = parse_args(f"arq-{variant}")
    redis = await create_pool(RedisSettings.from_dsn(args.redis_url), default_queue_name=args.queue)
    try:
        if args.workload == "noop":
            result = await throughput(variant, args, redis, "noop")
        elif args.workload == "sleep":
            result = await throughput(variant, args, redis, "sleep", seconds=args.sleep_s)
        elif args.workload == "latency":
            result = await latency(variant, args, redis)
        else:
            result = await latency(variant, args, redis, busy_jobs=args.concurrency)
    finally:
        await redis.aclose()
    emit(result)


if __name__ == "__main__":
    asyncio.run(main())
