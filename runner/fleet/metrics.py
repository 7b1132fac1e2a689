"""Prometheus metrics. With several worker processes, prometheus-client's multiprocess mode aggregates
them: the supervisor gives every child the same PROMETHEUS_MULTIPROC_DIR, and one scrape of the API's
`/metrics` (or the supervisor's METRICS_PORT) sees the whole fleet, plus the queue depth read live.
"""

from __future__ import annotations

import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from runner.fleet.metrics_dir import MULTIPROC_ENV

__all__ = [
    "JOBS",
    "JOBS_IN_FLIGHT",
    "JOB_DURATION",
    "LOOP_LAG",
    "MULTIPROC_ENV",
    "PROVIDER_RETRIES",
    "WORKERS_ALIVE",
    "WORKER_EXITS",
    "fleet_registry",
    "mark_process_dead",
    "render",
]


JOBS = Counter("runner_jobs", "Jobs that ended an attempt, by job name and outcome", ["job_name", "outcome"])
JOB_DURATION = Histogram(
    "runner_job_duration_seconds",
    "Time a job attempt ran, by job name and outcome",
    ["job_name", "outcome"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
JOBS_IN_FLIGHT = Gauge("runner_jobs_in_flight", "Jobs running now", multiprocess_mode="livesum")
WORKERS_ALIVE = Gauge("runner_workers_alive", "Worker processes running now", multiprocess_mode="livesum")
WORKER_EXITS = Counter("runner_worker_exits", "Worker processes that ended, by reason", ["reason"])
LOOP_LAG = Histogram(
    "runner_event_loop_lag_seconds",
    "How late each process's event loop runs a 250 ms timer (a blocked loop shows here), by process kind",
    ["process"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
PROVIDER_RETRIES = Counter(
    "runner_provider_retries",
    "Provider calls tried again inside a job, by provider, kind (text, image, speech) and reason",
    ["provider", "kind", "reason"],
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


def render(queue: str, total: int, due: int) -> bytes:
    """The text exposition for one scrape: the fleet's metrics, then the queue depth just read from Redis."""
    fleet = fleet_registry()
    scrape = CollectorRegistry()
    depth = Gauge("runner_queue_depth", "Jobs in the queue: all, and due now", ["queue", "kind"], registry=scrape)
    depth.labels(queue, "all").set(total)
    depth.labels(queue, "due").set(due)
    return generate_latest(fleet) + generate_latest(scrape)
