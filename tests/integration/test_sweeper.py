"""The sweeper repairs status rows whose job is gone from Redis, and leaves live ones alone."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import orjson
import pytest

from runner.broker.keys import QueueKeys
from runner.broker.queue import RedisQueue
from runner.client import JobClient
from runner.resources import Resources
from runner.settings import Settings
from runner.status import JobStatus
from runner.store.jobs import JobStore, Transition
from runner.worker.execution import JobExecutor
from runner.worker.sweeper import Sweeper
from tests.conftest import MakeSettings, RunWorker, wait_for
from tests.integration.test_worker import REGISTRY, failures

pytestmark = pytest.mark.also_on_cluster  # the broker's behaviour, again on Redis Cluster


@pytest.fixture
async def sweeper(resources: Resources, settings: Settings) -> AsyncIterator[Sweeper]:
    queue = RedisQueue(resources.redis, queue=settings.queue_name, worker_id="sweeper-test", lease_ttl_s=30)
    async with JobExecutor(resources, None, REGISTRY.resolved(settings), queue, JobStore(resources.db)) as executor:
        yield Sweeper(resources, executor, worker_id="sweeper-test")


async def age_rows(resources: Resources, settings: Settings) -> None:
    await resources.db.execute(
        "UPDATE runner_jobs SET updated_at = now() - interval '1 hour' WHERE queue = $1", settings.queue_name
    )


async def test_row_written_but_never_enqueued_is_enqueued_and_runs(
    resources: Resources, settings: Settings, sweeper: Sweeper, run_worker: RunWorker
):
    """An API that died between the row and the enqueue leaves a pending row; the sweep runs its job."""
    client = JobClient(resources, REGISTRY.resolved(settings))
    await client.record("probe.record", job_id="never-pushed", kwargs={"tag": "swept"})
    await client.enqueue("probe.record", job_id="pushed", tag="alive")
    await age_rows(resources, settings)
    report = await sweeper.sweep_once()
    assert (report.checked, report.requeued, report.failed, report.resolved) == (2, ["never-pushed"], [], [])
    await run_worker(REGISTRY)

    async def both_done() -> bool:
        rows = [await client.get(j) for j in ("never-pushed", "pushed")]
        return all(r is not None and r.status == JobStatus.COMPLETED for r in rows)

    await wait_for(both_done)


async def test_lost_job_without_tries_left_is_failed_with_its_hook(
    resources: Resources, settings: Settings, sweeper: Sweeper
):
    """A processing row whose job vanished after its last try is failed, and its failure hook runs."""
    store = JobStore(resources.db)
    await store.move(Transition("vanished", JobStatus.PROCESSING, name="probe.record", queue=settings.queue_name,
                                attempt=3, max_tries=3, args={"tag": "gone"}))  # fmt: skip
    await age_rows(resources, settings)
    report = await sweeper.sweep_once()
    assert report.failed == ["vanished"]
    row = await store.get("vanished")
    assert row is not None and row.status == JobStatus.FAILED
    assert row.error == "lost from the queue after 3 of 3 tries; not run again"
    assert ("vanished", row.error) in failures


async def test_finished_job_whose_status_write_was_lost_takes_its_result(
    resources: Resources, settings: Settings, sweeper: Sweeper
):
    """A row stuck in processing whose result is in Redis is moved to that result's outcome."""
    store = JobStore(resources.db)
    await store.move(Transition("done-in-redis", JobStatus.PROCESSING, name="probe.record",
                                queue=settings.queue_name, attempt=1, max_tries=3))  # fmt: skip
    envelope = {"t": 1, "f": "probe.record", "a": [], "k": {}, "et": 0, "s": True, "r": {"tag": "x"}, "st": 0,
                "ft": 0, "q": settings.queue_name, "id": "done-in-redis"}  # fmt: skip
    await resources.redis.set(QueueKeys.of(settings.queue_name).result("done-in-redis"), orjson.dumps(envelope))
    await age_rows(resources, settings)
    report = await sweeper.sweep_once()
    assert report.resolved == ["done-in-redis"]
    row = await store.get("done-in-redis")
    assert row is not None and (row.status, row.result) == (JobStatus.COMPLETED, {"tag": "x"})


async def test_recent_rows_are_left_alone(resources: Resources, settings: Settings, sweeper: Sweeper):
    """A row that moved recently is not judged yet, even with no job in Redis."""
    client = JobClient(resources, REGISTRY.resolved(settings))
    await client.record("probe.record", job_id="fresh", kwargs={"tag": "fresh"})
    report = await sweeper.sweep_once()
    assert (report.checked, report.requeued) == (0, [])


async def test_ended_jobs_past_the_retention_are_forgotten_with_their_attempts(
    resources: Resources, make_settings: MakeSettings, run_worker: RunWorker
):
    """Result retention: rows (and attempts) of jobs that ended longer ago than RESULT_RETENTION_S go; newer
    ones and active ones stay."""
    settings = make_settings(result_retention_s=3600)
    client = JobClient(resources, REGISTRY.resolved(settings))
    q = settings.queue_name
    await run_worker(REGISTRY, settings)
    for n in range(3):
        await client.enqueue("probe.record", job_id=f"{q}:old-{n}", tag="old")
    await client.enqueue("probe.record", job_id=f"{q}:new", tag="new")
    for job_id in (f"{q}:old-0", f"{q}:old-1", f"{q}:old-2", f"{q}:new"):

        async def ended(job_id: str = job_id) -> bool:
            row = await client.get(job_id)
            return row is not None and row.status is JobStatus.COMPLETED

        await wait_for(ended)
    await client.record("probe.record", job_id=f"{q}:waiting", kwargs={"tag": "pending"})
    await resources.db.execute(
        "UPDATE runner_jobs SET finished_at = now() - interval '2 hours' WHERE job_id LIKE $1", f"{q}:old-%"
    )
    queue = RedisQueue(resources.redis, queue=q, worker_id="sweeper-test", lease_ttl_s=30)
    async with JobExecutor(resources, None, REGISTRY.resolved(settings), queue, JobStore(resources.db)) as executor:
        mine = dataclasses.replace(resources, settings=settings)  # this test's queue and retention
        report = await Sweeper(mine, executor, worker_id="sweeper-test").sweep_once()
    assert report.forgotten == 3
    left = await resources.db.fetch("SELECT job_id FROM runner_jobs WHERE queue = $1 ORDER BY job_id", q)
    assert [r["job_id"] for r in left] == [f"{q}:new", f"{q}:waiting"]
    attempts = await resources.db.fetchval(
        "SELECT count(*) FROM runner_job_attempts WHERE job_id LIKE $1", f"{q}:old-%"
    )
    assert attempts == 0
