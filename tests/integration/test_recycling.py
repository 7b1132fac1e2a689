"""Memory-based recycling: a worker whose RSS is above MAX_MEMORY_PER_WORKER_MB after a job retires
(reason recycled_over_memory), telling its supervisor first; below the limit it keeps going."""

from __future__ import annotations

import asyncio

import psutil
from structlog.testing import capture_logs

from runner.client import JobClient
from runner.context import JobContext
from runner.registry import Registry, job
from runner.resources import Resources
from runner.status import JobStatus
from runner.worker.worker import ExitReason, Worker
from tests.conftest import MakeSettings, wait_for

MARGIN_MIB, BALLAST_MIB = 100, 200
ballast: list[bytearray] = []  # what the allocating job leaves behind, as a leaky job would


@job("probe.allocate")
async def allocate(ctx: JobContext, *, mib: int) -> None:
    ballast.append(bytearray(b"\x01") * (mib * 2**20))  # written, so resident (not lazily zero pages)


@job("probe.small")
async def small(ctx: JobContext) -> None:
    return None


REGISTRY = Registry(specs=(allocate, small))


async def test_a_worker_over_its_memory_limit_retires_and_one_under_it_does_not(
    resources: Resources, make_settings: MakeSettings
) -> None:
    """With the limit 100 MiB above this process's RSS, ten small jobs leave the worker running; a job
    that keeps 200 MiB makes it retire at once with reason recycled_over_memory, calling on_retire."""
    rss_mib = psutil.Process().memory_info().rss / 2**20
    settings = make_settings(max_memory_per_worker_mb=int(rss_mib) + MARGIN_MIB, max_jobs_per_worker=0)
    client = JobClient(resources, REGISTRY.resolved(settings))
    told: list[str] = []
    worker = Worker(settings, REGISTRY, on_retire=lambda: told.append("retiring"))
    running = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.ready.wait(), 30)
        small_ids = [f"{settings.queue_name}:small:{n}" for n in range(10)]
        for job_id in small_ids:
            await client.enqueue("probe.small", job_id=job_id)

        async def all_done() -> bool:
            rows = [await client.get(j) for j in small_ids]
            return all(r is not None and r.status is JobStatus.COMPLETED for r in rows)

        await wait_for(all_done, 10)
        await asyncio.sleep(0.1)
        assert not running.done() and told == [], "the worker retired while under its memory limit"
        with capture_logs() as logs:
            await client.enqueue("probe.allocate", job_id=f"{settings.queue_name}:big", mib=BALLAST_MIB)
            reason = await asyncio.wait_for(running, 10)
    finally:
        ballast.clear()
        worker.stop()
        await asyncio.wait_for(asyncio.gather(running, return_exceptions=True), 30)
    assert reason is ExitReason.RECYCLED_MEMORY
    assert told == ["retiring"]
    retiring = [e for e in logs if e["event"] == "worker_retiring"]
    assert len(retiring) == 1 and retiring[0]["reason"] == "recycled_over_memory", retiring
    assert retiring[0]["rss_mb"] > retiring[0]["limit_mb"] == settings.max_memory_per_worker_mb
    row = await client.get(f"{settings.queue_name}:big")
    assert row is not None and row.status is JobStatus.COMPLETED, "the job that crossed the limit still ends"
