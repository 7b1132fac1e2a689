"""A real fleet serving two queues (QUEUES): a SIGKILLed worker's jobs on its second queue run again within
a second, its leases freed on every queue it served, and its replacement serves both queues again."""

from __future__ import annotations

import os
import signal

import pytest

from runner.client import JobClient
from runner.resources import Resources
from runner.settings import Settings
from runner.status import JobStatus
from tests.acceptance.blocking_jobs import registry
from tests.acceptance.conftest import MakeFleet
from tests.acceptance.fleet import now
from tests.conftest import wait_for

pytestmark = pytest.mark.slow


async def test_a_sigkilled_worker_of_two_queues_has_its_jobs_on_both_run_again(
    resources: Resources, settings: Settings, fleet: MakeFleet
):
    first, second = settings.queue_name, f"{settings.queue_name}-media"
    running = await fleet(registry="tests.acceptance.blocking_jobs:registry", workers=1,
                          queues=f"{first}:3,{second}:1").start()  # fmt: skip
    client = JobClient(resources, registry.resolved(settings))
    jobs = [await client.enqueue("block.await", queue=q, seconds=1.5) for q in (first, second, second, first)]
    ids = [j.job_id for j in jobs]

    async def all_in(status: JobStatus) -> bool:
        rows = [await client.get(job_id) for job_id in ids]
        return all(row is not None and row.status == status for row in rows)

    await wait_for(lambda: all_in(JobStatus.PROCESSING), timeout=20, every=0.01)
    killed_at = now()
    os.kill(running.steady_worker_pid(), signal.SIGKILL)
    await wait_for(lambda: all_in(JobStatus.COMPLETED), timeout=30)
    rows = [await client.get(job_id) for job_id in ids]
    assert [row.queue for row in rows if row] == [first, second, second, first]
    assert all(row is not None and row.attempts == 2 for row in rows), "each ran again, once"
    restarted = max(row.started_at.timestamp() for row in rows if row and row.started_at)
    released = {e["queue"] for e in running.events("dead_worker_leases_released")}
    print(f"\nmeasured: 4 jobs on 2 queues re-run, the last {restarted - killed_at:.2f}s after SIGKILL")
    assert released == {first, second}, "the supervisor freed the dead worker's leases on both queues"
    assert restarted - killed_at < 1, f"the last job re-ran {restarted - killed_at:.2f}s after SIGKILL"
