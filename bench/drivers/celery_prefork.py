# mypy: ignore-errors
"""Driver for the old design: Celery 5 prefork workers (bench.drivers.celery_app), each task running its
coroutine in a new event loop.  Runs in bench/.venv-celery (Celery needs redis-py >= 6.4, arq < 6).

The prefork pool gets CONCURRENCY processes, capped at CELERY_MAX_PROCS (8): notes["pool"] is the real
size.  Messages are published with `send_task` on one producer connection before the worker starts.

noop / sleep: the clock runs from the first message reserved (the queue's kombu unacked hash non-empty;
with acks_late and prefetch 1 a message is reserved just before it runs) to the queue list empty and no
message unacked (every task finished and acked).  latency: one idle worker (pool min(10, cap)), 5 warm-up
tasks, then one task every 1/RATE s; the task's coroutine LPUSHes enqueue -> start in ms.  starvation: a
first worker is kept busy with as many 60 s tasks as it has pool processes (a prefork worker cannot hold
more), then the same probes go to a second, idle worker; the wait is bounded (BENCH_START_WAIT_S, 15 s).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import redis

from bench.drivers.celery_app import make_app, unacked_key
from bench.drivers.common import LATENCY_KEY, Result, emit, parse_args, percentiles, spawn, stop, tree_rss_mib

SYSTEM = "celery-prefork"
MAX_PROCS = int(os.environ.get("CELERY_MAX_PROCS", "8"))
IDLE_POOL = 10  # the idle worker of latency / starvation, as in the storymimi driver (then capped)
START_WAIT_S = float(os.environ.get("BENCH_START_WAIT_S", "15"))


def worker(args: argparse.Namespace, pool: int, role: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "bench.drivers.celery_app", "worker", "--pool", "prefork",
            "-c", str(pool), "--without-gossip", "--without-mingle", "--without-heartbeat", "-Q", args.queue,
            "-n", f"{role}-{args.queue}@%h", "--loglevel", "WARNING"]  # fmt: skip


def worker_env(args: argparse.Namespace) -> dict[str, str]:
    return {"BENCH_CELERY_QUEUE": args.queue, "REDIS_URL": args.redis_url}


def versions() -> dict[str, float | str]:
    import celery
    import kombu

    return {"celery": celery.__version__, "kombu": kombu.__version__, "redis_py": redis.__version__}


class Broker:
    """Publishing and looking at one queue: the list kombu pushes to and its unacked hash."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.queue, self.unacked = args.queue, unacked_key(args.queue)
        self.app = make_app(args.queue, args.redis_url)
        self.redis = redis.Redis.from_url(args.redis_url)

    def send(self, name: str, count: int, **kwargs: Any) -> None:
        with self.app.producer_or_acquire() as producer:
            for _ in range(count):
                self.app.send_task(name, kwargs=kwargs, queue=self.queue, producer=producer)

    def send_one(self, name: str, **kwargs: Any) -> None:
        self.app.send_task(name, kwargs=kwargs, queue=self.queue)

    def queued(self) -> int:
        return int(self.redis.llen(self.queue))

    def reserved(self) -> int:
        return int(self.redis.hlen(self.unacked))

    def wait(self, check: Any, timeout: float, what: str, every: float = 0.001) -> float:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                sys.exit(f"benchmark: {what} not reached within {timeout}s")
            time.sleep(every)
        return time.monotonic()

    def drained_at(self, timeout: float) -> float:
        """When the queue was empty with nothing unacked, seen twice 20 ms apart (a message is briefly in
        neither while a worker moves it from the list to the hash)."""
        while True:
            at = self.wait(lambda: not self.queued() and not self.reserved(), timeout, "queue drained", 0.002)
            time.sleep(0.02)
            if not self.queued() and not self.reserved():
                return at

    def cleanup(self) -> None:
        self.redis.delete(self.queue, self.unacked, f"{self.queue}:unacked_index", f"{self.queue}:unacked_mutex")


def throughput(args: argparse.Namespace, broker: Broker, name: str, workload: str, **kwargs: Any) -> Result:
    pool = min(args.concurrency, MAX_PROCS)
    broker.send(name, args.jobs, **kwargs)
    if broker.queued() != args.jobs:
        sys.exit(f"benchmark: {broker.queued()} messages in list {broker.queue!r}, expected {args.jobs}")
    process = spawn(worker(args, pool, "w"), worker_env(args))
    try:
        started = broker.wait(lambda: broker.reserved() > 0, 60, "first Celery task reserved")
        seconds = broker.drained_at(170) - started
        rss = tree_rss_mib(process.pid)
    finally:
        stop(process)
    return Result(SYSTEM, workload, args.jobs, args.concurrency, seconds, args.jobs / seconds, worker_rss_mib=rss,
                  notes={"pool": pool, **versions()})  # fmt: skip


def stamp_jobs(broker: Broker, count: int, rate: float, wait_s: float) -> list[float]:
    broker.redis.delete(LATENCY_KEY)
    for _ in range(count):
        broker.send_one("bench.stamp", enqueued_at=time.time())
        time.sleep(1 / rate)
    deadline = time.monotonic() + wait_s
    while broker.redis.llen(LATENCY_KEY) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return [float(x) for x in broker.redis.lrange(LATENCY_KEY, 0, -1)]


def latency(args: argparse.Namespace, broker: Broker, busy_jobs: int = 0) -> Result:
    busy_pool = min(busy_jobs, MAX_PROCS)
    busy = spawn(worker(args, busy_pool, "busy"), worker_env(args)) if busy_jobs else None
    idle, pool = None, min(IDLE_POOL, MAX_PROCS)
    try:
        if busy is not None:  # one worker holds as many long tasks as it has processes before the idle one starts
            broker.send("bench.sleep", busy_pool, seconds=60.0)
            broker.wait(lambda: broker.reserved() >= busy_pool and not broker.queued(), 60, "busy worker full", 0.01)
        idle = spawn(worker(args, pool, "idle"), worker_env(args))
        stamp_jobs(broker, 5, 10, 15)  # warm-up: the idle worker is up and consuming
        values = stamp_jobs(broker, args.jobs, args.rate, START_WAIT_S)
        rss = tree_rss_mib(idle.pid)
    finally:
        for process in (idle, busy):
            if process is not None:
                stop(process, timeout=5)
    p50, p99 = percentiles(values) if values else (None, None)
    notes: dict[str, float | str] = {"pool": pool, "started": len(values), **versions()}
    if busy_jobs:
        notes |= {"busy_jobs": busy_pool, "busy_pool": busy_pool}
    return Result(SYSTEM, "starvation" if busy_jobs else "latency", args.jobs, args.concurrency, p50_ms=p50,
                  p99_ms=p99, worker_rss_mib=rss, notes=notes)  # fmt: skip


def main() -> None:
    args = parse_args(SYSTEM)
    broker = Broker(args)
    try:
        if args.workload == "noop":
            result = throughput(args, broker, "bench.noop", "noop")
        elif args.workload == "sleep":
            result = throughput(args, broker, "bench.sleep", "sleep", seconds=args.sleep_s)
        elif args.workload == "latency":
            result = latency(args, broker)
        else:
            result = latency(args, broker, busy_jobs=args.concurrency)
    finally:
        broker.cleanup()
    emit(result)


if __name__ == "__main__":
    main()
