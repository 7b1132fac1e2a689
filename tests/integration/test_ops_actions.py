"""The operators' service layer against real servers: attempt history, children, retry one and all
matching (with a confirmed count), purge through the workers, drain a worker."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from runner.broker.queue import queue_depth
from runner.client import JobClient
from runner.context import JobContext
from runner.errors import PermanentError, TransientError
from runner.ops.actions import ConfirmationError, drain_worker, purge_queue, retry_jobs, retry_matching
from runner.ops.history import job_detail
from runner.ops.jobs import JobFilter
from runner.ops.workers import list_workers
from runner.registry import Registry, job
from runner.resources import Resources
from runner.retry import RetryPolicy
from runner.settings import Settings
from runner.status import JobStatus
from runner.worker.worker import ExitReason
from tests.conftest import RunWorker, wait_for

pytestmark = pytest.mark.also_on_cluster  # the broker's behaviour, again on Redis Cluster

hooks: list[tuple[str, str]] = []
broken: dict[str, bool] = {}


async def note_failure(ctx: JobContext, error: str) -> None:
    hooks.append((ctx.job_id, error))


@job("ops.fragile", retry=RetryPolicy(max_tries=2, base_delay_s=0.01), on_failure=note_failure)
async def fragile(ctx: JobContext, *, key: str) -> str:
    if broken.get(key, True):
        raise TransientError(f"{key} is still broken")
    return f"{key} fixed on attempt {ctx.attempt}"


@job("ops.parent")
async def parent(ctx: JobContext, *, children: int) -> int:
    for i in range(children):
        await ctx.jobs.enqueue("ops.child", job_id=f"{ctx.job_id}:child:{i}", n=i)
    return children


@job("ops.child")
async def child(ctx: JobContext, *, n: int) -> int:
    return n


@job("ops.sleepy", on_failure=note_failure)
async def sleepy(ctx: JobContext, *, seconds: float) -> None:
    await asyncio.sleep(seconds)


@job("ops.refuse")
async def refuse(ctx: JobContext, *, why: str) -> None:
    raise PermanentError(why)


REGISTRY = Registry(specs=(fragile, parent, child, sleepy, refuse))


def client_for(resources: Resources, settings: Settings) -> JobClient:
    # Job ids are unique across the status table every test shares: each test's ids carry its queue name.
    return JobClient(resources, REGISTRY.resolved(settings))


async def until(client: JobClient, job_id: str, status: JobStatus, timeout: float = 15) -> None:
    async def check() -> bool:
        row = await client.get(job_id)
        return row is not None and row.status is status

    await wait_for(check, timeout)


async def test_a_failed_job_keeps_every_attempt_with_its_traceback(
    resources: Resources, settings: Settings, run_worker: RunWorker
):
    """Both tries are recorded in order, on the worker that ran them, with outcome, error and traceback."""
    client = client_for(resources, settings)
    worker = await run_worker(REGISTRY)
    await client.enqueue("ops.fragile", job_id="f1", key="f1")
    await until(client, "f1", JobStatus.FAILED)
    detail = await job_detail(resources.db, "f1")
    assert detail is not None
    assert [(a.attempt, a.outcome) for a in detail.attempts] == [(1, "retrying"), (2, "failed")]
    assert all(a.worker == worker.worker_id and a.finished_at is not None for a in detail.attempts)
    assert all(a.duration_s is not None and a.duration_s >= 0 for a in detail.attempts)
    last = detail.attempts[-1]
    assert last.error == "TransientError: f1 is still broken"
    assert last.traceback is not None and "Traceback (most recent call last)" in last.traceback
    assert 'raise TransientError(f"{key} is still broken")' in last.traceback


async def test_a_job_lists_the_jobs_it_enqueued(resources: Resources, settings: Settings, run_worker: RunWorker):
    client = client_for(resources, settings)
    await run_worker(REGISTRY)
    await client.enqueue("ops.parent", job_id="p1", children=3)
    for i in range(3):
        await until(client, f"p1:child:{i}", JobStatus.COMPLETED)
    detail = await job_detail(resources.db, "p1")
    assert detail is not None
    assert [c.job_id for c in detail.children] == ["p1:child:0", "p1:child:1", "p1:child:2"]
    assert detail.children_total == 3
    top = await job_detail(resources.db, "p1:child:0")
    assert top is not None and top.job.parent_id == "p1" and top.children == []


async def test_retry_sends_a_failed_job_back_with_fresh_tries_and_continued_numbering(
    resources: Resources, settings: Settings, run_worker: RunWorker
):
    client = client_for(resources, settings)
    await run_worker(REGISTRY)
    r1 = f"r1-{settings.queue_name}"  # `broken` outlives the test: the cluster run must not see this one's
    await client.enqueue("ops.fragile", job_id=r1, key=r1)
    await until(client, r1, JobStatus.FAILED)
    hooks_before = len(hooks)

    broken[r1] = True  # still broken: the new run gets its two tries again, numbered 3 and 4
    assert await retry_jobs(resources.redis, resources.db, [r1]) == [r1]
    await until(client, r1, JobStatus.FAILED)
    detail = await job_detail(resources.db, r1)
    assert detail is not None
    assert [(a.attempt, a.outcome) for a in detail.attempts] == [
        (1, "retrying"), (2, "failed"), (3, "retrying"), (4, "failed")
    ]  # fmt: skip
    assert detail.job.attempts == 4 and detail.job.max_tries == 4
    assert len(hooks) == hooks_before + 1

    broken[r1] = False
    assert await retry_jobs(resources.redis, resources.db, [r1]) == [r1]
    await until(client, r1, JobStatus.COMPLETED)
    row = await client.get(r1)
    assert row is not None and row.result == f"{r1} fixed on attempt 5" and row.error is None


async def test_retry_leaves_running_and_completed_jobs_alone(
    resources: Resources, settings: Settings, run_worker: RunWorker
):
    client = client_for(resources, settings)
    await run_worker(REGISTRY)
    await client.enqueue("ops.parent", job_id="done", children=0)
    await client.enqueue("ops.sleepy", job_id="busy", seconds=30)
    await until(client, "done", JobStatus.COMPLETED)
    await until(client, "busy", JobStatus.PROCESSING)
    assert await retry_jobs(resources.redis, resources.db, ["done", "busy", "no-such-job"]) == []
    await client.request_cancel("busy")
    await until(client, "busy", JobStatus.CANCELLED)


async def test_retry_all_matching_counts_first_and_needs_that_count(
    resources: Resources, settings: Settings, run_worker: RunWorker
):
    client = client_for(resources, settings)
    await run_worker(REGISTRY)
    for i in range(3):
        await client.enqueue("ops.refuse", job_id=f"bad{i}", why=f"quota exceeded {i}")
    await client.enqueue("ops.refuse", job_id="other", why="disk full")
    for job_id in ("bad0", "bad1", "bad2", "other"):
        await until(client, job_id, JobStatus.FAILED)

    where = JobFilter(queue=settings.queue_name, error_contains="quota exceeded")
    assert await retry_matching(resources.redis, resources.db, where, confirm=None) == (3, 0)
    with pytest.raises(ConfirmationError, match="3 jobs match now, not the 2 confirmed"):
        await retry_matching(resources.redis, resources.db, where, confirm=2)
    assert await retry_matching(resources.redis, resources.db, where, confirm=3) == (3, 3)

    async def all_ran_again() -> bool:
        details = [await job_detail(resources.db, f"bad{i}") for i in range(3)]
        return all(d is not None and d.job.status is JobStatus.FAILED and len(d.attempts) == 2 for d in details)

    await wait_for(all_ran_again)
    other = await job_detail(resources.db, "other")
    assert other is not None and len(other.attempts) == 1


async def test_purge_cancels_queued_jobs_through_the_workers_and_spares_running_ones(
    resources: Resources, settings: Settings, run_worker: RunWorker, make_settings: Any
):
    """With one slot busy, queued jobs wait; a purge cancels each (row `cancelled`, hook run), not the
    running one, and the queue is empty after."""
    client = client_for(resources, settings)
    one_slot = settings.model_copy(update={"worker_concurrency": 1})
    await run_worker(REGISTRY, one_slot)
    await client.enqueue("ops.sleepy", job_id="running", seconds=2)
    await until(client, "running", JobStatus.PROCESSING)
    for i in range(5):
        await client.enqueue("ops.sleepy", job_id=f"queued{i}", seconds=0)

    assert await purge_queue(resources.redis, settings.queue_name, confirm=None) == 5
    with pytest.raises(ConfirmationError):
        await purge_queue(resources.redis, settings.queue_name, confirm=4)
    assert await purge_queue(resources.redis, settings.queue_name, confirm=5) == 5
    for i in range(5):
        await until(client, f"queued{i}", JobStatus.CANCELLED)
    assert {f"queued{i}" for i in range(5)} <= {job_id for job_id, error in hooks if error == "cancelled"}
    await until(client, "running", JobStatus.COMPLETED)

    async def queue_empty() -> bool:  # the finish in Redis lands just after the row's write
        return (await queue_depth(resources.redis, settings.queue_name)).total == 0

    await wait_for(queue_empty)


async def test_drain_retires_the_named_worker_only(resources: Resources, settings: Settings, run_worker: RunWorker):
    client = client_for(resources, settings)
    first = await run_worker(REGISTRY)
    second = await run_worker(REGISTRY)

    async def both_listed() -> bool:
        return len(await list_workers(resources.redis, settings.queue_name)) == 2

    await wait_for(both_listed)
    await client.enqueue("ops.sleepy", job_id="in-flight", seconds=1)
    await until(client, "in-flight", JobStatus.PROCESSING)
    assert not await drain_worker(resources.redis, settings.queue_name, "no-such-worker")
    assert await drain_worker(resources.redis, settings.queue_name, first.worker_id)

    async def first_gone() -> bool:
        ids = {w.worker_id for w in await list_workers(resources.redis, settings.queue_name)}
        return ids == {second.worker_id}

    await wait_for(first_gone)
    assert first.exit_reason is ExitReason.DRAINED and second.exit_reason is ExitReason.STOPPED
    await until(client, "in-flight", JobStatus.COMPLETED)  # a draining worker finishes what it runs


async def test_the_api_retries_a_failed_job_and_refuses_others(
    resources: Resources, settings: Settings, run_worker: RunWorker, api: Any
):
    client = client_for(resources, settings)
    await run_worker(REGISTRY)
    await client.enqueue("ops.refuse", job_id="api-bad", why="flaky upstream")
    await client.enqueue("ops.parent", job_id="api-good", children=0)
    await until(client, "api-bad", JobStatus.FAILED)
    await until(client, "api-good", JobStatus.COMPLETED)

    answer = await api.post("/jobs/api-bad/retry")
    assert answer.status_code == 202 and answer.json() == {"job_id": "api-bad", "status": "pending"}

    async def ran_again() -> bool:
        detail = await job_detail(resources.db, "api-bad")
        return detail is not None and detail.job.status is JobStatus.FAILED and len(detail.attempts) == 2

    await wait_for(ran_again)
    refused = await api.post("/jobs/api-good/retry")
    assert refused.status_code == 409 and "is completed; only failed or cancelled" in refused.json()["detail"]
    assert (await api.post("/jobs/nope/retry")).status_code == 404
