"""Workers that notice their own failures: a blocked event loop is killed and replaced by its supervisor,
and a worker whose supervisor is gone stops at once, even while it is still starting."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from runner.client import JobClient
from runner.resources import Resources
from runner.settings import Settings
from runner.status import JobStatus
from tests.acceptance import blocking_jobs
from tests.acceptance.fleet import Fleet
from tests.conftest import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
async def fleets(settings: Settings, tmp_path: Path) -> AsyncIterator[list[Fleet]]:
    made: list[Fleet] = []
    yield made
    for fleet in made:
        fleet.close()


async def test_a_worker_whose_loop_is_blocked_is_killed_and_its_jobs_run_again_within_seconds(
    resources: Resources, settings: Settings, tmp_path: Path, fleets: list[Fleet]
):
    """A job calls time.sleep(60): past WORKER_HANG_S the supervisor kills the worker, names the job, frees
    its leases at once, and the replacement runs both that job and the other one the worker held."""
    fleet = Fleet(settings, tmp_path, registry="tests.acceptance.blocking_jobs:registry",
                  workers=1, worker_hang_s=2)  # fmt: skip
    fleets.append(fleet)
    await fleet.start()
    client = JobClient(resources, blocking_jobs.registry.resolved(settings))
    await client.enqueue("block.await", job_id=f"{settings.queue_name}:held", seconds=1.5)
    await client.enqueue("block.loop", job_id=(blocker := f"{settings.queue_name}:blocker"), seconds=60)
    started = time.monotonic()

    async def both_done() -> bool:
        rows = [await client.get(f"{settings.queue_name}:{name}") for name in ("held", "blocker")]
        return all(row is not None and row.status is JobStatus.COMPLETED for row in rows)

    await wait_for(both_done, timeout=20, every=0.1)
    took = time.monotonic() - started
    assert took < 6, f"{took:.1f}s: the leases must be freed when the hung worker is killed, not lapse (8 s)"
    hung = fleet.events("child_hung")
    assert len(hung) == 1 and hung[0]["job_id"] == blocker, hung
    told = fleet.events("event_loop_blocked")  # the worker itself said where it was stuck, before the kill
    assert told and told[0]["job_id"] == blocker
    assert any("blocking_jobs.py" in frame and "block_loop" in frame for frame in told[0]["stack"]), told[0]
    row = await client.get(blocker)
    assert row is not None and row.attempts == 2


async def test_a_worker_still_starting_stops_at_once_when_its_supervisor_is_killed(
    settings: Settings, tmp_path: Path, fleets: list[Fleet]
):
    """Redis never answers, so the worker is retrying its start-up connections (STARTUP_RETRY_S=60): a
    SIGKILLed supervisor must not leave it running for a minute."""
    down = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    fleet = Fleet(down, tmp_path, workers=1, startup_retry_s=60)
    fleets.append(fleet)
    fleet._spawn()

    async def retrying() -> bool:
        return bool(fleet.events("startup_connect_retry"))

    await wait_for(retrying, timeout=30, every=0.05)
    workers = fleet.worker_pids()
    assert len(workers) == 1
    assert fleet.process is not None
    os.kill(fleet.process.pid, signal.SIGKILL)
    fleet.process.wait(5)
    killed = time.monotonic()

    async def worker_gone() -> bool:
        return not psutil.pid_exists(workers[0]) or psutil.Process(workers[0]).status() == psutil.STATUS_ZOMBIE

    await wait_for(worker_gone, timeout=10, every=0.05)
    assert time.monotonic() - killed < 2
    assert fleet.events("supervisor_gone")
