# mypy: ignore-errors
# (imported by the peers' drivers, which run in their own virtual environments: bench/.venv-<peer>)
"""The workloads, written once for the asyncio peers (pgqueuer, taskiq, SAQ): each peer's driver supplies a
`Peer` (how to enqueue, how to tell that jobs were taken, are running, are done, and its worker's argv) and
calls `run(peer, args)`.  Needs redis-py (every peer's venv has it): the `stamp` jobs LPUSH their
enqueue -> start delay, in ms, to common.LATENCY_KEY, as the arq and Celery drivers' jobs do.

noop / sleep: all jobs enqueued before the worker starts; the clock runs from the first job taken
(`peer.taken()`) to the queue drained (`peer.drained()`: nothing queued, nothing running).  latency: one
idle worker (concurrency 10), 5 warm-up jobs, then one job every 1/RATE s.  starvation: a first worker is
kept busy with CONCURRENCY 60 s jobs (`peer.running()` reaches it), then the same probes go to a second,
idle worker; the wait is bounded (BENCH_START_WAIT_S, 15 s) and notes["started"] counts the probes that ran.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

import redis.asyncio as aioredis

from bench.drivers.common import LATENCY_KEY, Result, emit, log_tail, percentiles, spawn, stop, tree_rss_mib

IDLE_CONCURRENCY = 10  # the idle worker of latency / starvation, as in the other drivers
START_WAIT_S = float(os.environ.get("BENCH_START_WAIT_S", "15"))
START_TIMEOUT_S = 30.0  # for a worker to take its first job (bench.run allows a driver 60 s with --quick)
LONG_JOB_S = 60.0


class Peer(Protocol):
    system: str

    async def enqueue(self, name: str, count: int, **kwargs: Any) -> None: ...  # many at once, before a run
    async def enqueue_one(self, name: str, **kwargs: Any) -> None: ...
    async def taken(self, total: int) -> bool: ...  # a worker has taken at least one of `total` queued jobs
    async def running(self) -> int: ...  # jobs taken and not finished
    async def drained(self) -> bool: ...  # nothing queued, nothing running
    def worker(self, concurrency: int, role: str) -> tuple[list[str], dict[str, str]]: ...  # argv, env
    def notes(self, concurrency: int) -> dict[str, float | str]: ...  # versions and settings
    async def outcomes(self) -> dict[str, float | str]: ...  # after a throughput run, e.g. {"completed": n}


class WorkerGone(RuntimeError):
    """A worker exited, or did not get going, while the benchmark still needed it."""


class Worker:
    def __init__(self, peer: Peer, concurrency: int, role: str, logs: str) -> None:
        argv, env = peer.worker(concurrency, role)
        self.log = Path(logs) / f"{role}.log"
        self.process: subprocess.Popen[bytes] = spawn(argv, env, self.log)

    def check(self) -> None:
        if self.process.poll() is not None:
            raise WorkerGone(f"the worker exited with code {self.process.returncode}: {log_tail(self.log)}")

    async def until(self, condition: Any, what: str, limit_s: float = START_TIMEOUT_S, every: float = 0.001) -> float:
        deadline = time.monotonic() + limit_s
        while not await condition():
            self.check()
            if time.monotonic() > deadline:
                raise WorkerGone(f"{what} not reached within {limit_s:g} s: {log_tail(self.log)}")
            await asyncio.sleep(every)
        return time.monotonic()


async def throughput(peer: Peer, args: argparse.Namespace, name: str, **kwargs: Any) -> Result:
    await peer.enqueue(name, args.jobs, **kwargs)
    worker = Worker(peer, args.concurrency, "throughput", args.logs)
    try:
        started = await worker.until(lambda: peer.taken(args.jobs), "a first job taken")
        ended = await worker.until(peer.drained, "the queue drained", limit_s=170, every=0.002)
        seconds = ended - started
        rss = tree_rss_mib(worker.process.pid)
    finally:
        stop(worker.process, timeout=2)  # measured and drained: no need to wait out a slow graceful shutdown
    notes = peer.notes(args.concurrency) | await peer.outcomes()
    return Result(peer.system, args.workload, args.jobs, args.concurrency, seconds, args.jobs / seconds,
                  worker_rss_mib=rss, notes=notes)  # fmt: skip


async def stamp_jobs(
    peer: Peer, client: aioredis.Redis, worker: Worker, count: int, rate: float, wait_s: float
) -> list[float]:
    await client.delete(LATENCY_KEY)
    for _ in range(count):
        await peer.enqueue_one("stamp", enqueued_at=time.time())
        await asyncio.sleep(1 / rate)
    deadline = time.monotonic() + wait_s
    while await client.llen(LATENCY_KEY) < count and time.monotonic() < deadline:
        worker.check()
        await asyncio.sleep(0.01)
    return [float(x) for x in await client.lrange(LATENCY_KEY, 0, -1)]


async def latency(peer: Peer, args: argparse.Namespace, client: aioredis.Redis, busy_jobs: int = 0) -> Result:
    busy = Worker(peer, busy_jobs, "busy", args.logs) if busy_jobs else None
    idle = None
    try:
        if busy is not None:  # one worker holds `busy_jobs` long jobs before the idle one starts
            await peer.enqueue("sleep", busy_jobs, seconds=LONG_JOB_S)
            await busy.until(lambda: _at_least(peer, busy_jobs), f"the busy worker running {busy_jobs} jobs",
                             every=0.01)  # fmt: skip
        idle = Worker(peer, IDLE_CONCURRENCY, "idle", args.logs)
        await stamp_jobs(peer, client, idle, 5, 10, min(START_WAIT_S, 5) + 10)  # warm-up: the idle worker is up
        values = await stamp_jobs(peer, client, idle, args.jobs, args.rate, START_WAIT_S)
        idle.check()
        rss = tree_rss_mib(idle.process.pid)
    finally:
        if idle is not None:
            stop(idle.process, timeout=5)
        if busy is not None:  # its 60 s jobs are filler: no need to wait for a graceful shutdown
            stop(busy.process, timeout=1)
    p50, p99 = _percentiles(values)
    notes = peer.notes(IDLE_CONCURRENCY) | {"started": len(values)}
    if busy_jobs:
        notes["busy_jobs"] = busy_jobs
    return Result(peer.system, args.workload, args.jobs, args.concurrency, p50_ms=p50, p99_ms=p99,
                  worker_rss_mib=rss, notes=notes)  # fmt: skip


async def _at_least(peer: Peer, count: int) -> bool:
    return await peer.running() >= count


def _percentiles(values: list[float]) -> tuple[float | None, float | None]:
    return percentiles(values) if values else (None, None)


async def run(peer: Peer, args: argparse.Namespace) -> None:
    """One workload against `peer`; prints the JSON result (or exits with why not)."""
    client = aioredis.Redis.from_url(args.redis_url)
    args.logs = tempfile.mkdtemp(prefix=f"bench-{peer.system}-")  # the workers' logs, read when one stops early
    try:
        if args.workload == "noop":
            result = await throughput(peer, args, "noop")
        elif args.workload == "sleep":
            result = await throughput(peer, args, "sleep", seconds=args.sleep_s)
        elif args.workload == "latency":
            result = await latency(peer, args, client)
        else:
            result = await latency(peer, args, client, busy_jobs=args.concurrency)
    except WorkerGone as gone:
        sys.exit(f"benchmark: {gone}")
    finally:
        await client.aclose()
        shutil.rmtree(args.logs, ignore_errors=True)
    emit(result)
