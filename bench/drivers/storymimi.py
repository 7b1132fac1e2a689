"""Driver for this runner, as users run it: JobClient.enqueue (status row + JSON payload), a real
`python -m runner worker` process with leases and status rows in Postgres."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid

from bench.drivers.common import LATENCY_KEY, Result, emit, parse_args, percentiles, spawn, stop, tree_rss_mib
from bench.drivers.storymimi_jobs import registry
from runner.broker.keys import QueueKeys
from runner.client import JobClient
from runner.resources import Resources, open_resources
from runner.settings import Settings
from runner.store.migrations import apply_migrations

SYSTEM = "storymimi"


def worker(args: object, concurrency: int) -> list[str]:
    return [sys.executable, "-m", "runner", "worker", "--jobs", "bench.drivers.storymimi_jobs:registry"]


def worker_env(args: object, concurrency: int) -> dict[str, str]:
    return {"REDIS_URL": args.redis_url, "DATABASE_URL": args.database_url, "QUEUE_NAME": args.queue,  # type: ignore[attr-defined]
            "WORKER_CONCURRENCY": str(concurrency), "MAX_JOBS_PER_WORKER": "0", "MAX_MEMORY_PER_WORKER_MB": "0",
            "LOG_LEVEL": "WARNING", "LOG_FORMAT": "json"}  # fmt: skip


async def enqueue_many(client: JobClient, name: str, ids: list[str], **kwargs: object) -> None:
    for start in range(0, len(ids), 256):
        await asyncio.gather(*(client.enqueue(name, job_id=i, **kwargs) for i in ids[start : start + 256]))


async def throughput(args: object, res: Resources, client: JobClient, name: str, **kwargs: object) -> Result:
    ids = [f"{args.queue}:{n}" for n in range(args.jobs)]  # type: ignore[attr-defined]
    await enqueue_many(client, name, ids, **kwargs)
    process = spawn(worker(args, args.concurrency), worker_env(args, args.concurrency))  # type: ignore[attr-defined]
    try:
        first = ids[: min(len(ids), 200)]
        keys = QueueKeys.of(args.queue)  # type: ignore[attr-defined]
        while not any(await asyncio.gather(*(res.redis.exists(keys.lease(i)) for i in first))):
            await asyncio.sleep(0.001)
        started = time.monotonic()
        while await res.redis.zcard(keys.jobs):
            await asyncio.sleep(0.002)
        seconds = time.monotonic() - started
        rss = tree_rss_mib(process.pid)
    finally:
        stop(process)
    workload = "noop" if name == "bench.noop" else "sleep"
    return Result(SYSTEM, workload, args.jobs, args.concurrency, seconds, args.jobs / seconds, worker_rss_mib=rss)  # type: ignore[attr-defined]


async def stamp_jobs(client: JobClient, res: Resources, count: int, rate: float) -> list[float]:
    await res.redis.delete(LATENCY_KEY)
    for _ in range(count):
        await client.enqueue("bench.stamp", job_id=uuid.uuid4().hex, enqueued_at=time.time())
        await asyncio.sleep(1 / rate)
    deadline = time.monotonic() + 15
    while await res.redis.llen(LATENCY_KEY) < count and time.monotonic() < deadline:  # type: ignore[misc]
        await asyncio.sleep(0.01)
    return [float(x) for x in await res.redis.lrange(LATENCY_KEY, 0, -1)]  # type: ignore[misc]


async def latency(args: object, res: Resources, client: JobClient, busy_jobs: int = 0) -> Result:
    busy = spawn(worker(args, max(busy_jobs, 1)), worker_env(args, max(busy_jobs, 1))) if busy_jobs else None
    idle = None
    try:
        if busy is not None:  # one worker holds `busy_jobs` long jobs before the idle one starts
            await enqueue_many(client, "bench.sleep", [uuid.uuid4().hex for _ in range(busy_jobs)], seconds=60.0)
            leases = QueueKeys.of(args.queue).lease("*")  # type: ignore[attr-defined]
            while len([k async for k in res.redis.scan_iter(leases, count=1000)]) < busy_jobs:
                await asyncio.sleep(0.01)
        idle = spawn(worker(args, 10), worker_env(args, 10))
        await stamp_jobs(client, res, 5, 10)  # warm-up: the idle worker is up and polling
        values = await stamp_jobs(client, res, args.jobs, args.rate)  # type: ignore[attr-defined]
        rss = tree_rss_mib(idle.pid)
    finally:
        for process in (idle, busy):
            if process is not None:
                stop(process, timeout=5)
    p50, p99 = percentiles(values) if values else (float("inf"), float("inf"))
    workload = "starvation" if busy_jobs else "latency"
    return Result(SYSTEM, workload, args.jobs, args.concurrency, p50_ms=p50, p99_ms=p99, worker_rss_mib=rss,  # type: ignore[attr-defined]
                  notes={"started": len(values)})  # fmt: skip


async def main() -> None:
    args = parse_args(SYSTEM)
    settings = Settings(_env_file=None, redis_url=args.redis_url, database_url=args.database_url, queue_name=args.queue)
    async with open_resources(settings) as res:
        await apply_migrations(res.db, ["runner"])
        client = JobClient(res, registry.resolved(settings))
        if args.workload == "noop":
            result = await throughput(args, res, client, "bench.noop")
        elif args.workload == "sleep":
            result = await throughput(args, res, client, "bench.sleep", seconds=args.sleep_s)
        elif args.workload == "latency":
            result = await latency(args, res, client)
        else:
            result = await latency(args, res, client, busy_jobs=args.concurrency)
    emit(result)


if __name__ == "__main__":
    asyncio.run(main())
