"""Driver for this runner, as users run it: JobClient.enqueue (status row + JSON payload), a real
`python -m runner worker` process with leases and status rows in Postgres.

A worker that exits early fails the run with the tail of its log; after a throughput run the status rows
say how many jobs completed and failed (notes["completed"], notes["failed"]), so a run whose jobs all
failed cannot pass for a fast one."""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.drivers.common import (
    LATENCY_KEY,
    Result,
    emit,
    log_tail,
    parse_args,
    percentiles,
    spawn,
    stop,
    tree_rss_mib,
)
from bench.drivers.storymimi_jobs import registry
from runner.broker.keys import QueueKeys
from runner.client import JobClient
from runner.resources import Resources, open_resources
from runner.settings import Settings
from runner.store.migrations import apply_migrations

SYSTEM = "storymimi"
REGISTRY = "bench.drivers.storymimi_jobs:registry"
START_TIMEOUT_S = 30.0  # well inside bench.run's own timeout for a driver (60 s with --quick), so we say why
PARENT = os.getppid()  # bench.run: if it goes away, so do we (and our workers)
LOGS = Path(tempfile.mkdtemp(prefix="bench-storymimi-"))  # the workers' logs, read when one stops early
atexit.register(shutil.rmtree, LOGS, True)


class WorkerGone(RuntimeError):
    """A worker process exited while the benchmark still needed it."""


def worker(args: object, concurrency: int) -> list[str]:
    return [sys.executable, "-m", "runner", "worker", "--registry", REGISTRY]


def worker_env(args: object, concurrency: int) -> dict[str, str]:
    return {"REDIS_URL": args.redis_url, "DATABASE_URL": args.database_url, "QUEUE_NAME": args.queue,  # type: ignore[attr-defined]
            "WORKER_CONCURRENCY": str(concurrency), "MAX_JOBS_PER_WORKER": "0", "MAX_MEMORY_PER_WORKER_MB": "0",
            "LOG_LEVEL": "WARNING", "LOG_FORMAT": "json"}  # fmt: skip


def start_worker(args: object, concurrency: int, role: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = LOGS / f"{role}.log"
    return spawn(worker(args, concurrency), worker_env(args, concurrency), log), log


def check_alive(process: subprocess.Popen[bytes], log: Path) -> None:
    if process.poll() is not None:
        raise WorkerGone(f"the worker exited with code {process.returncode}: {log_tail(log)}")
    if os.getppid() != PARENT:
        raise WorkerGone("bench.run, which started this driver, is gone")


async def enqueue_many(client: JobClient, name: str, ids: list[str], **kwargs: Any) -> None:
    for start in range(0, len(ids), 256):
        await asyncio.gather(*(client.enqueue(name, job_id=i, **kwargs) for i in ids[start : start + 256]))


async def outcomes(res: Resources, queue: str, expected: int, wait_s: float = 10) -> dict[str, int]:
    """Status rows of the queue by status, once `expected` of them are terminal (or after `wait_s`)."""
    deadline = time.monotonic() + wait_s
    while True:
        rows = await res.db.fetch("SELECT status, count(*) AS n FROM runner_jobs WHERE queue = $1 GROUP BY status",
                                  queue)  # fmt: skip
        counts = {r["status"]: int(r["n"]) for r in rows}
        ended = sum(counts.get(s, 0) for s in ("completed", "failed", "cancelled"))
        if ended >= expected or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.05)


async def throughput(args: object, res: Resources, client: JobClient, name: str, **kwargs: object) -> Result:
    ids = [f"{args.queue}:{n}" for n in range(args.jobs)]  # type: ignore[attr-defined]
    await enqueue_many(client, name, ids, **kwargs)
    process, log = start_worker(args, args.concurrency, "throughput")  # type: ignore[attr-defined]
    try:
        first = ids[: min(len(ids), 200)]
        keys = QueueKeys.of(args.queue)  # type: ignore[attr-defined]
        deadline = time.monotonic() + START_TIMEOUT_S
        while not any(await asyncio.gather(*(res.redis.exists(keys.lease(i)) for i in first))):
            check_alive(process, log)
            if time.monotonic() > deadline:
                raise WorkerGone(f"no job started within {START_TIMEOUT_S:g} s: {log_tail(log)}")
            await asyncio.sleep(0.001)
        started = time.monotonic()
        while await res.redis.zcard(keys.jobs):
            check_alive(process, log)
            await asyncio.sleep(0.002)
        seconds = time.monotonic() - started
        rss = tree_rss_mib(process.pid)
        counts = await outcomes(res, args.queue, args.jobs)  # type: ignore[attr-defined]
    finally:
        stop(process)
    workload = "noop" if name == "bench.noop" else "sleep"
    notes: dict[str, float | str] = {"completed": counts.get("completed", 0), "failed": counts.get("failed", 0)}
    return Result(SYSTEM, workload, args.jobs, args.concurrency, seconds, args.jobs / seconds, worker_rss_mib=rss,  # type: ignore[attr-defined]
                  notes=notes)  # fmt: skip


async def stamp_jobs(
    client: JobClient, res: Resources, count: int, rate: float, worker: tuple[subprocess.Popen[bytes], Path]
) -> list[float]:
    await res.redis.delete(LATENCY_KEY)
    for _ in range(count):
        await client.enqueue("bench.stamp", job_id=uuid.uuid4().hex, enqueued_at=time.time())
        await asyncio.sleep(1 / rate)
    deadline = time.monotonic() + 15
    while await res.redis.llen(LATENCY_KEY) < count and time.monotonic() < deadline:  # type: ignore[misc]
        check_alive(*worker)
        await asyncio.sleep(0.01)
    return [float(x) for x in await res.redis.lrange(LATENCY_KEY, 0, -1)]  # type: ignore[misc]


async def latency(args: object, res: Resources, client: JobClient, busy_jobs: int = 0) -> Result:
    busy = start_worker(args, busy_jobs, "busy") if busy_jobs else None
    idle = None
    try:
        if busy is not None:  # one worker holds `busy_jobs` long jobs before the idle one starts
            await enqueue_many(client, "bench.sleep", [uuid.uuid4().hex for _ in range(busy_jobs)], seconds=60.0)
            leases = QueueKeys.of(args.queue).lease("*")  # type: ignore[attr-defined]
            deadline = time.monotonic() + START_TIMEOUT_S
            while len([k async for k in res.redis.scan_iter(leases, count=1000)]) < busy_jobs:
                check_alive(*busy)
                if time.monotonic() > deadline:
                    raise WorkerGone(f"the busy worker did not start {busy_jobs} jobs: {log_tail(busy[1])}")
                await asyncio.sleep(0.01)
        idle = start_worker(args, 10, "idle")
        await stamp_jobs(client, res, 5, 10, idle)  # warm-up: the idle worker is up and polling
        values = await stamp_jobs(client, res, args.jobs, args.rate, idle)  # type: ignore[attr-defined]
        check_alive(*idle)
        rss = tree_rss_mib(idle[0].pid)
    finally:
        for started in (idle, busy):
            if started is not None:
                stop(started[0], timeout=5)
    p50, p99 = percentiles(values) if values else (None, None)
    workload = "starvation" if busy_jobs else "latency"
    return Result(SYSTEM, workload, args.jobs, args.concurrency, p50_ms=p50, p99_ms=p99, worker_rss_mib=rss,  # type: ignore[attr-defined]
                  notes={"started": len(values)})  # fmt: skip


async def main() -> None:
    args = parse_args(SYSTEM)
    settings = Settings(_env_file=None, redis_url=args.redis_url, database_url=args.database_url, queue_name=args.queue)
    async with open_resources(settings) as res:
        await apply_migrations(res.db, ["runner"])
        client = JobClient(res, registry.resolved(settings))
        try:
            if args.workload == "noop":
                result = await throughput(args, res, client, "bench.noop")
            elif args.workload == "sleep":
                result = await throughput(args, res, client, "bench.sleep", seconds=args.sleep_s)
            elif args.workload == "latency":
                result = await latency(args, res, client)
            else:
                result = await latency(args, res, client, busy_jobs=args.concurrency)
        except WorkerGone as gone:
            sys.exit(f"benchmark: {gone}")
    emit(result)


if __name__ == "__main__":
    asyncio.run(main())
