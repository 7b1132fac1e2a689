"""A provider slot pool is shared by every worker process: two real workers together never hold more
than its concurrency (runner.broker.slots), where a per-process limit would let each hold that many."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from runner.client import JobClient
from runner.resources import Resources
from runner.settings import Settings
from runner.status import JobStatus
from tests.acceptance import probe_jobs
from tests.acceptance.fleet import Fleet
from tests.conftest import wait_for

pytestmark = pytest.mark.slow

LIMIT, JOBS = 3, 40


@pytest.fixture
async def fleet(settings: Settings, tmp_path: Path) -> AsyncIterator[Callable[..., Fleet]]:
    """Make probe-job fleets for this test's queue; every one is killed at teardown if still running."""
    made: list[Fleet] = []

    def make(**env: Any) -> Fleet:
        made.append(Fleet(settings, tmp_path, registry="tests.acceptance.probe_jobs:registry", **env))
        return made[-1]

    yield make
    for f in made:
        f.close()


async def test_two_worker_processes_never_hold_more_than_the_pools_concurrency(
    resources: Resources, settings: Settings, fleet: Callable[..., Fleet]
) -> None:
    """40 jobs on two worker processes (10 slots each) share a pool of 3: both processes hold slots,
    the pool is full at times, and no moment ever sees a 4th holder across the two."""
    running = await fleet(workers=2, worker_concurrency=10).start()
    pool = f"shared-{settings.queue_name}"
    client = JobClient(resources, probe_jobs.registry.resolved(settings))
    ids = [f"{settings.queue_name}:slot:{n}" for n in range(JOBS)]
    await asyncio.gather(*(client.enqueue("probe.hold_slot", job_id=j, pool=pool, concurrency=LIMIT, hold_s=0.1)
                           for j in ids))  # fmt: skip

    async def all_completed() -> bool:
        rows = await asyncio.gather(*(client.get(j) for j in ids))
        return all(r is not None and r.status is JobStatus.COMPLETED for r in rows)

    await wait_for(all_completed, 30)
    seen = [item.decode().split(":") for item in await resources.redis.lrange(probe_jobs.seen_key(pool), 0, -1)]  # type: ignore[misc]
    per_pid: dict[str, int] = {}
    for pid, _ in seen:
        per_pid[pid] = per_pid.get(pid, 0) + 1
    peak = max(int(at_once) for _, at_once in seen)
    print(f"\nmeasured shared slots: {len(seen)} calls, peak {peak} at once (limit {LIMIT}), per process {per_pid}")
    assert len(seen) == JOBS
    assert set(per_pid) <= {str(p) for p in running.worker_pids()} and len(per_pid) == 2, per_pid
    assert min(per_pid.values()) >= 5, f"one process did nearly all the work, so the pool was not shared: {per_pid}"
    assert peak == LIMIT, f"{peak} holders at once with a limit of {LIMIT}"
