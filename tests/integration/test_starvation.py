"""An idle worker never waits behind another worker's long jobs: claiming skips leased jobs however many
of them sit at the head of the queue (arq's poll reads only the oldest `queue_read_limit` ids)."""

from __future__ import annotations

import asyncio
import time

from runner.broker.enqueue import Enqueuer
from runner.client import JobClient
from runner.context import JobContext
from runner.registry import Registry, job
from runner.resources import Resources
from tests.conftest import MakeSettings, RunWorker, wait_for

BUSY_JOBS = 250  # more than one page (200 ids) of the claim script's scan, and than arq's limit of 100
started: dict[str, tuple[float, str]] = {}  # job id -> (time.time() it started, worker id)


@job("probe.long")
async def long_job(ctx: JobContext, *, seconds: float) -> None:
    started[ctx.job_id] = (time.time(), ctx.worker_id)
    await asyncio.sleep(seconds)


@job("probe.stamp")
async def stamp(ctx: JobContext) -> None:
    started[ctx.job_id] = (time.time(), ctx.worker_id)


REGISTRY = Registry(specs=(long_job, stamp))


async def until_started(job_ids: list[str], timeout: float = 10) -> None:
    async def check() -> bool:
        return all(j in started for j in job_ids)

    await wait_for(check, timeout, every=0.002)


async def test_an_idle_worker_starts_new_jobs_at_once_while_another_holds_250_long_ones(
    resources: Resources, make_settings: MakeSettings, run_worker: RunWorker
) -> None:
    """Worker A runs 250 long jobs, the oldest in the queue. Worker B, idle, starts each new job within
    0.2 s (p50 well under 50 ms): handed to it on enqueue, found by its claim at start-up, and found
    when a deferred one falls due, each time past the 250 leased jobs ahead of it."""
    settings = make_settings(shutdown_grace_s=0.1)
    busy_settings = settings.model_copy(update={"worker_concurrency": BUSY_JOBS})
    idle_settings = settings.model_copy(update={"worker_concurrency": 10})
    client = JobClient(resources, REGISTRY.resolved(settings))
    queue = settings.queue_name
    busy = await run_worker(REGISTRY, busy_settings)
    long_ids = [f"{queue}:long:{n}" for n in range(BUSY_JOBS)]
    await asyncio.gather(*(client.enqueue("probe.long", job_id=j, seconds=60.0) for j in long_ids))
    await until_started(long_ids)
    assert {started[j][1] for j in long_ids} == {busy.worker_id}

    # 1. B starts after a job was queued behind the 250: its first claim must look past them.
    early = f"{queue}:early"
    enqueued_early = time.time()
    await client.enqueue("probe.stamp", job_id=early)
    idle = await run_worker(REGISTRY, idle_settings)
    await until_started([early], timeout=5)

    # 2. B is waiting: each new job reaches it on enqueue.
    delays_ms: list[float] = []
    for n in range(30):
        job_id = f"{queue}:probe:{n}"
        enqueued = time.time()
        await client.enqueue("probe.stamp", job_id=job_id)
        await until_started([job_id], timeout=5)
        delays_ms.append((started[job_id][0] - enqueued) * 1000)

    # 3. Deferred jobs are never handed over: B's claim finds them in the scan when they fall due.
    enqueuer, deferred_ids = Enqueuer(resources.redis), [f"{queue}:deferred:{n}" for n in range(5)]
    due_at = time.time() + 0.3
    await asyncio.gather(*(enqueuer.enqueue(queue, j, "probe.stamp", {}, defer_s=0.3) for j in deferred_ids))
    await until_started(deferred_ids, timeout=5)

    ran_on = {started[j][1] for j in [early, *(f"{queue}:probe:{n}" for n in range(30)), *deferred_ids]}
    assert ran_on == {idle.worker_id}
    late_ms = [(started[j][0] - due_at) * 1000 for j in deferred_ids]
    print(f"\nmeasured starvation: B's start-up claim {(started[early][0] - enqueued_early) * 1000:.0f} ms after "
          f"enqueue (includes B's start-up); hand-off p50 {sorted(delays_ms)[15]:.2f} ms, max {max(delays_ms):.2f} ms;"
          f" deferred jobs started {[round(x, 1) for x in late_ms]} ms after due")  # fmt: skip
    assert max(delays_ms) < 200, delays_ms
    assert sorted(delays_ms)[15] < 50, delays_ms
    assert max(late_ms) < 250, late_ms  # Redis times blocking reads out at its `hz` (10 a second)
    assert all(started[j][1] == busy.worker_id for j in long_ids)
    assert busy.jobs_done == 0, "the long jobs should still be running"
