"""Prometheus metrics. With several worker processes, prometheus-client's multiprocess mode aggregates
them: the supervisor gives every child the same PROMETHEUS_MULTIPROC_DIR, and one scrape of the API's
`/metrics` (or the supervisor's METRICS_PORT) sees the whole fleet. The API's `/metrics` adds what it reads
live at each scrape (`read_live`, `LiveNumbers`): whether Redis and Postgres answer, the queue's depth, the
age of its oldest waiting job and its live workers. Prometheus alerting rules on these: runner/ops/alerts.yml.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import asyncpg
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from runner.broker.connection import RedisClient
from runner.broker.queue import QueueDepth, oldest_waiting_age_s, queue_depth
from runner.fleet.metrics_dir import MULTIPROC_ENV
from runner.ops.workers import list_workers
from runner.servers import Server, check_servers

__all__ = [
    "INTAKE_MESSAGES",
    "JOBS",
    "JOBS_IN_FLIGHT",
    "JOB_DURATION",
    "LOOP_LAG",
    "LOOP_LAG_MAX",
    "MULTIPROC_ENV",
    "PROVIDER_RETRIES",
    "REDIS_REFUSALS",
    "RESTART_REASONS",
    "WORKERS_ALIVE",
    "WORKER_EXITS",
    "WORKER_RESTARTS",
    "LagObserver",
    "LiveNumbers",
    "fleet_registry",
    "mark_process_dead",
    "read_live",
    "render",
]


JOBS = Counter("runner_jobs", "Jobs that ended an attempt, by job name and outcome", ["job_name", "outcome"])
INTAKE_MESSAGES = Counter(
    "runner_intake_messages",
    "Messages of other systems' producers taken in (runner.intake), by origin (celery, arq) and outcome: taken, "
    "duplicate (handled before), refused (reason logged and reported to the sender), expired",
    ["origin", "outcome"],
)
JOB_DURATION = Histogram(
    "runner_job_duration_seconds",
    "Time a job attempt ran, by job name and outcome",
    ["job_name", "outcome"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
JOBS_IN_FLIGHT = Gauge("runner_jobs_in_flight", "Jobs running now", multiprocess_mode="livesum")
WORKERS_ALIVE = Gauge("runner_workers_alive", "Worker processes running now", multiprocess_mode="livesum")
WORKER_EXITS = Counter("runner_worker_exits", "Worker processes that ended, by reason", ["reason"])
RESTART_REASONS = ("crashed", "hung")
WORKER_RESTARTS = Counter(
    "runner_worker_restarts",
    "Supervised processes (api, worker-N) that died unasked, each then restarted, by slot and reason: crashed "
    "(exited or was killed, not by us), hung (killed by the supervisor: event loop blocked or silent)",
    ["child", "reason"],
)
LOOP_LAG = Histogram(
    "runner_event_loop_lag_seconds",
    "How late each process's event loop runs a 250 ms timer (a blocked loop shows here), by process kind",
    ["process"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
LOOP_LAG_MAX = Gauge(
    "runner_event_loop_lag_max_seconds",
    "The longest event-loop lag of each live process kind in the last one to two minutes",
    ["process"],
    multiprocess_mode="livemax",
)


class LagObserver:
    """Feeds each lag measurement to the histogram and keeps the gauge at the longest of the last one to two
    windows (the current window and the one before), so a block is visible for at least `window_s`."""

    def __init__(self, process: str, *, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._histogram = LOOP_LAG.labels(process)
        self._gauge = LOOP_LAG_MAX.labels(process)
        self._window_s = window_s
        self._clock = clock
        self._window_start = clock()
        self._current = self._previous = 0.0

    def __call__(self, lag_s: float) -> None:
        self._histogram.observe(lag_s)
        now = self._clock()
        if now - self._window_start >= self._window_s:
            self._previous = self._current if now - self._window_start < 2 * self._window_s else 0.0
            self._current, self._window_start = 0.0, now
        self._current = max(self._current, lag_s)
        self._gauge.set(max(self._current, self._previous))


PROVIDER_RETRIES = Counter(
    "runner_provider_retries",
    "Provider calls tried again inside a job, by provider, kind (text, image, speech) and reason",
    ["provider", "kind", "reason"],
)
REDIS_REFUSALS = Counter(
    "runner_redis_refusals",
    "Runner operations Redis refused while up (runner.broker.server_errors), by kind: WRONGTYPE, OOM, READONLY, "
    "NOSCRIPT, MISCONF, BUSY, LOADING, NOPERM, ERR; the `redis_refused` log line says which key and what to do",
    ["kind"],
)


def mark_process_dead(pid: int) -> None:
    """Drop a dead child's live gauges (in flight, alive) from the aggregate."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def fleet_registry() -> CollectorRegistry:
    """All processes' metrics in multiprocess mode, else this process's own."""
    if not os.environ.get(MULTIPROC_ENV):
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


@dataclass(frozen=True, slots=True)
class QueueNumbers:
    """One queue's numbers, read live."""

    queue: str
    depth: QueueDepth
    oldest_due_age_s: float  # the oldest due job that no worker holds; 0 when none waits
    live_workers: int  # workers whose presence report has not lapsed


@dataclass(frozen=True, slots=True)
class LiveNumbers:
    """What one scrape read from the servers: each server up or not, and each queue's numbers (none when
    Redis did not answer)."""

    servers_up: Mapping[Server, bool]
    queues: tuple[QueueNumbers, ...] = ()


_READ_TIMEOUT_S = 2.0  # each server's check, then the queues' reads


async def read_live(redis: RedisClient, db: asyncpg.Pool, queues: Sequence[str]) -> LiveNumbers:
    """This scrape's live numbers: a round trip to each server, then each of `queues`' numbers if Redis
    answered. Never raises for a server that is down: its `runner_server_up` is 0 and the queues' numbers
    are left out."""
    checks = await check_servers(redis, db, timeout_s=_READ_TIMEOUT_S)
    up = {server: state == "ok" for server, state in checks.items()}
    if not up["redis"]:
        return LiveNumbers(up)
    try:
        async with asyncio.timeout(_READ_TIMEOUT_S):
            numbers = await asyncio.gather(*(_queue_numbers(redis, queue) for queue in queues))
    except (RedisError, OSError, TimeoutError):  # went down since the check: no queue numbers this time
        up["redis"] = False
        return LiveNumbers(up)
    return LiveNumbers(up, tuple(numbers))


async def _queue_numbers(redis: RedisClient, queue: str) -> QueueNumbers:
    depth = await queue_depth(redis, queue)
    oldest = await oldest_waiting_age_s(redis, queue)
    workers = await list_workers(redis, queue)
    return QueueNumbers(queue, depth, oldest, len(workers))


class _Live(Collector):
    """The live numbers as gauges of this scrape only: unlike a Gauge, nothing is written to the multiprocess
    folder, so the fleet's part of the scrape never repeats them (with a pid label, and stale once it exits)."""

    def __init__(self, live: LiveNumbers) -> None:
        self._live = live

    def collect(self) -> Iterator[Metric]:
        live = self._live
        yield _gauge(
            "runner_server_up",
            "1 if the server answered this scrape's round trip, else 0",
            ["server"],
            [([server], float(answered)) for server, answered in live.servers_up.items()],
        )
        if not live.queues:
            return
        yield _gauge(
            "runner_queue_depth",
            "Jobs in the queue: all, and due now (running ones included)",
            ["queue", "kind"],
            [
                (labels, n)
                for q in live.queues
                for labels, n in (([q.queue, "all"], q.depth.total), ([q.queue, "due"], q.depth.due))
            ],
        )
        yield _gauge(
            "runner_queue_oldest_due_age_seconds",
            "How long the oldest due job that no worker holds has waited; 0 when none waits",
            ["queue"],
            [([q.queue], q.oldest_due_age_s) for q in live.queues],
        )
        yield _gauge(
            "runner_queue_live_workers",
            "Workers of the queue whose presence report has not lapsed",
            ["queue"],
            [([q.queue], q.live_workers) for q in live.queues],
        )


def _gauge(name: str, doc: str, labels: list[str], samples: list[tuple[list[str], float]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in samples:
        family.add_metric(values, value)
    return family


def render(live: LiveNumbers) -> bytes:
    """The text exposition for one scrape: the fleet's metrics, then the live numbers just read."""
    scrape = CollectorRegistry()
    scrape.register(_Live(live))
    return generate_latest(fleet_registry()) + generate_latest(scrape)
