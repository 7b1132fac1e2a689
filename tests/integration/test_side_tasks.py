"""A worker watches its side tasks: when one dies, it stops taking jobs, drains what it runs, and exits
so its supervisor replaces it, saying why in one log line."""

from __future__ import annotations

import asyncio

import pytest
import structlog

from runner.broker.queue import RedisQueue
from runner.resources import Resources
from runner.settings import Settings
from runner.status import JobStatus
from runner.worker.side_tasks import SideTasks
from runner.worker.worker import ExitReason, Worker
from tests.integration.test_worker import REGISTRY, client_for, status_of, until_status


class LeaseRenewalBug(Worker):
    """A worker whose lease renewal hits a bug on its first tick (what a silent death looked like)."""

    async def _renew_leases(self, queue: RedisQueue) -> None:
        await asyncio.sleep(0.3)
        raise RuntimeError("a bug in lease renewal")


async def test_a_dead_side_task_drains_and_stops_the_worker(resources: Resources, settings: Settings):
    client = client_for(resources, settings)
    worker = LeaseRenewalBug(settings, REGISTRY)
    with structlog.testing.capture_logs() as logs:
        run = asyncio.create_task(worker.run())
        await asyncio.wait_for(worker.ready.wait(), 10)
        running = f"{settings.queue_name}:running"
        await client.enqueue("probe.record", job_id=running, tag="running", sleep_s=1.0)
        await until_status(client, running, JobStatus.PROCESSING)
        reason = await asyncio.wait_for(run, 10)
        late = f"{settings.queue_name}:late"
        await client.enqueue("probe.record", job_id=late, tag="late")
        await asyncio.sleep(0.3)
    assert reason is ExitReason.SIDE_TASK_FAILED
    assert await status_of(client, running) is JobStatus.COMPLETED  # drained, not dropped
    assert await status_of(client, late) is JobStatus.PENDING  # nothing taken after the failure
    said = [e for e in logs if e["event"] == "worker_retiring"]
    assert len(said) == 1 and said[0]["side_task"] == "lease-renewal" and "a bug in lease renewal" in said[0]["error"]


async def test_a_side_task_that_just_ends_counts_as_failed_but_a_stopped_one_does_not():
    failures: list[tuple[str, BaseException | None]] = []
    side = SideTasks(lambda name, error: failures.append((name, error)))

    async def forever() -> None:
        await asyncio.Event().wait()

    async def returns() -> None:
        return None

    side.start("forever", forever())
    side.start("returns", returns())
    await asyncio.sleep(0.01)
    await side.stop()
    assert failures == [("returns", None)]


@pytest.mark.parametrize("member", [b"\xff\xfe not utf-8", b""])
async def test_a_foreign_abort_entry_does_not_kill_the_abort_watch(
    resources: Resources, settings: Settings, member: bytes
):
    """Nothing another system writes into our abort set may take a side task down."""
    from runner.broker.keys import QueueKeys

    worker = Worker(settings.model_copy(update={"abort_poll_s": 0.05}), REGISTRY)
    run = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.ready.wait(), 10)
    await resources.redis.zadd(QueueKeys.of(settings.queue_name).abort, {member: 1e15})
    await asyncio.sleep(0.4)
    assert not run.done(), "the worker must keep running"
    client = client_for(resources, settings)
    await client.enqueue("probe.record", job_id=f"{settings.queue_name}:after", tag="after")
    await until_status(client, f"{settings.queue_name}:after", JobStatus.COMPLETED)
    worker.stop()
    assert await asyncio.wait_for(run, 10) is ExitReason.STOPPED
