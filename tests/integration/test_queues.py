"""Several queues per worker (QUEUES=a:3,b:1) and priorities within a queue, against real Redis and Postgres:
weighted shares that never starve a queue, no slot idle while any queue has work, hand-offs from every queue,
and a priority's head start that is bounded (an old enough job goes first) and not counted as waiting."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections import Counter
from typing import Any

import pytest

from runner.broker.enqueue import Enqueuer
from runner.broker.keys import QueueKeys
from runner.broker.queue import RedisQueue, oldest_waiting_age_s
from runner.client import JobClient
from runner.context import JobContext
from runner.priority import PRIORITY_STEP_S
from runner.registry import Registry, job
from runner.resources import Resources
from runner.settings import Settings
from runner.status import JobStatus
from tests.conftest import MakeSettings, RunWorker, wait_for

started: dict[str, list[tuple[str, float]]] = {}  # test run -> (tag, when) of each job started
running: dict[str, int] = {}  # test run -> jobs running now
most: dict[str, int] = {}  # test run -> the most jobs running at once


@job("queues.mark")
async def mark(ctx: JobContext, *, run: str, tag: str, sleep_s: float = 0.002) -> str:
    started.setdefault(run, []).append((tag, time.monotonic()))
    running[run] = running.get(run, 0) + 1
    most[run] = max(most.get(run, 0), running[run])
    try:
        await asyncio.sleep(sleep_s)
    finally:
        running[run] -= 1
    return tag


REGISTRY = Registry(specs=(mark,))


def now_ms() -> int:
    return int(time.time() * 1000)


async def enqueue_marks(client: JobClient, run: str, queue: str, n: int, *, sleep_s: float = 0.002) -> list[str]:
    results = [await client.enqueue("queues.mark", queue=queue, run=run, tag=queue, sleep_s=sleep_s) for _ in range(n)]
    return [r.job_id for r in results]


def two_queue_settings(make_settings: MakeSettings, weights: tuple[int, int], **overrides: Any) -> Settings:
    queue = make_settings().queue_name
    return make_settings(queue_name=queue, queues=f"{queue}:{weights[0]},{queue}-b:{weights[1]}", **overrides)


async def test_slots_go_to_the_queues_by_weight_and_the_light_one_is_never_starved(
    resources: Resources, make_settings: MakeSettings, run_worker: RunWorker
):
    settings = two_queue_settings(make_settings, (3, 1), worker_concurrency=1)
    heavy, light = (name for name, _ in settings.worker_queues)
    run = uuid.uuid4().hex
    client = JobClient(resources, REGISTRY.resolved(settings))
    ids = await enqueue_marks(client, run, heavy, 40) + await enqueue_marks(client, run, light, 40)
    await run_worker(REGISTRY, settings)
    await wait_for(lambda: _all_ended(client, ids), timeout=60)
    order = [tag for tag, _ in started[run]]
    first = Counter(order[:40])
    # One slot in four to the weight-1 queue while both are deep (smooth weighted round robin: exactly 30/10).
    assert 28 <= first[heavy] <= 32 and 8 <= first[light] <= 12, first
    assert max(_gaps(order, light)[:9]) <= 4, "the light queue waits at most three heavy jobs at a time"
    assert Counter(order) == {heavy: 40, light: 40}, "once the heavy queue is empty its share goes to the light one"


async def test_a_queue_with_nothing_due_leaves_its_slots_to_the_others(
    resources: Resources, make_settings: MakeSettings, run_worker: RunWorker
):
    settings = two_queue_settings(make_settings, (3, 1), worker_concurrency=4)
    _, light = (name for name, _ in settings.worker_queues)
    run = uuid.uuid4().hex
    client = JobClient(resources, REGISTRY.resolved(settings))
    ids = await enqueue_marks(client, run, light, 8, sleep_s=0.4)
    await run_worker(REGISTRY, settings)
    await wait_for(lambda: _all_ended(client, ids), timeout=30)
    assert most[run] == 4, "every slot took the weight-1 queue's jobs while the weight-3 queue had none"


async def test_an_idle_worker_takes_a_job_of_any_of_its_queues_at_once(
    resources: Resources, make_settings: MakeSettings, run_worker: RunWorker
):
    settings = two_queue_settings(make_settings, (1, 1), poll_interval_s=5.0)
    queues = [name for name, _ in settings.worker_queues]
    run = uuid.uuid4().hex
    client = JobClient(resources, REGISTRY.resolved(settings))
    await run_worker(REGISTRY, settings)
    await asyncio.sleep(0.2)  # blocked in its one read of both queues' inboxes and wake lists
    for queue in [*queues, *reversed(queues)]:
        asked = time.monotonic()
        [job_id] = await enqueue_marks(client, run, queue, 1)
        await wait_for(lambda: _all_ended(client, [job_id]), timeout=4)  # noqa: B023 (awaited here)
        tag, at = started[run][-1]
        assert tag == queue and at - asked < 0.5, f"a job of {queue} waited {at - asked:.3f}s (poll is 5 s)"
        row = await client.get(job_id)
        assert row is not None and row.queue == queue  # the queue it was enqueued on, recorded on its row
        await asyncio.sleep(0.1)


async def test_a_worker_of_several_queues_reports_itself_on_each(
    resources: Resources, make_settings: MakeSettings, run_worker: RunWorker
):
    from runner.ops.workers import list_workers

    settings = two_queue_settings(make_settings, (2, 1))
    worker = await run_worker(REGISTRY, settings)
    for queue, _ in settings.worker_queues:
        await wait_for(lambda q=queue: _listed(resources.redis, q, worker.worker_id))  # type: ignore[misc]
        [found] = [w for w in await list_workers(resources.redis, queue) if w.worker_id == worker.worker_id]
        assert found.queues == tuple(name for name, _ in settings.worker_queues)


async def _listed(redis: Any, queue: str, worker_id: str) -> bool:
    from runner.ops.workers import list_workers

    return any(w.worker_id == worker_id for w in await list_workers(redis, queue))


@pytest.mark.also_on_cluster
async def test_priority_is_a_head_start_among_due_jobs(resources: Resources, settings: Settings):
    enqueuer, q = Enqueuer(resources.redis), settings.queue_name
    for n in range(3):
        assert await enqueuer.enqueue(q, f"plain-{n}", "queues.mark", {})
    assert await enqueuer.enqueue(q, "urgent", "queues.mark", {}, priority=9)
    assert await enqueuer.enqueue(q, "soon", "queues.mark", {}, priority=5)
    assert await enqueuer.enqueue(q, "later-urgent", "queues.mark", {}, priority=9, defer_s=30)
    claim = await RedisQueue(resources.redis, queue=q, worker_id="w", lease_ttl_s=5).claim(now_ms(), 10, idle_for_s=1)
    assert [j.job_id for j in claim.jobs] == ["urgent", "soon", "plain-0", "plain-1", "plain-2"]
    # A deferred job is not due early for its priority.
    due = await resources.redis.zscore(QueueKeys.of(q).jobs, "later-urgent")
    assert due is not None and due > now_ms() + 25_000


@pytest.mark.also_on_cluster
async def test_a_job_waiting_longer_than_any_head_start_goes_first(resources: Resources, settings: Settings):
    enqueuer, keys = Enqueuer(resources.redis), QueueKeys.of(settings.queue_name)
    assert await enqueuer.enqueue(settings.queue_name, "old", "queues.mark", {})
    waited_ms = (9 * PRIORITY_STEP_S + 60) * 1000  # ten minutes: longer than priority 9's nine
    await resources.redis.zadd(keys.jobs, {"old": now_ms() - waited_ms}, xx=True)
    assert await enqueuer.enqueue(settings.queue_name, "urgent", "queues.mark", {}, priority=9)
    assert 590 < await oldest_waiting_age_s(resources.redis, settings.queue_name) < 610
    queue = RedisQueue(resources.redis, queue=settings.queue_name, worker_id="w", lease_ttl_s=5)
    assert [j.job_id for j in (await queue.claim(now_ms(), 1, idle_for_s=1)).jobs] == ["old"]


@pytest.mark.also_on_cluster
async def test_a_head_start_is_not_counted_as_waiting(resources: Resources, settings: Settings):
    """The oldest-waiting metric (alerts, autoscaling) must not see a priority-9 job as nine minutes late."""
    enqueuer = Enqueuer(resources.redis)
    assert await enqueuer.enqueue(settings.queue_name, "urgent", "queues.mark", {}, priority=9)
    assert await oldest_waiting_age_s(resources.redis, settings.queue_name) < 1
    assert await enqueuer.enqueue(settings.queue_name, "plain", "queues.mark", {})
    await asyncio.sleep(0.3)
    # Both wait; "plain" was enqueued after "urgent" (their head starts aside), so "urgent" is the oldest.
    assert 0.25 < await oldest_waiting_age_s(resources.redis, settings.queue_name) < 2


@pytest.mark.also_on_cluster
async def test_queue_and_priority_at_registration_or_enqueue(
    resources: Resources, make_settings: MakeSettings, run_worker: RunWorker
):
    settings = make_settings(worker_concurrency=1)
    run = uuid.uuid4().hex

    @job("queues.urgent", priority=7)
    async def urgent(ctx: JobContext, *, run: str) -> str:
        started.setdefault(run, []).append(("urgent", time.monotonic()))
        return "urgent"

    registry = Registry(specs=(mark, urgent))
    client = JobClient(resources, registry.resolved(settings))
    plain = [await client.enqueue("queues.mark", run=run, tag=f"plain-{n}") for n in range(3)]
    first = await client.enqueue("queues.urgent", run=run)  # its registered priority 7
    second = await client.enqueue("queues.mark", run=run, tag="asked", priority=8)  # the enqueue's own
    await run_worker(registry, settings)
    await wait_for(lambda: _all_ended(client, [r.job_id for r in [*plain, first, second]]), timeout=30)
    assert [tag for tag, _ in started[run]] == ["asked", "urgent", "plain-0", "plain-1", "plain-2"]
    with pytest.raises(ValueError, match="priority must be an int 0-9"):
        await client.enqueue("queues.mark", run=run, tag="x", priority=10)
    with pytest.raises(ValueError, match="free of braces"):
        await client.enqueue("queues.mark", run=run, tag="x", queue="{bad}")


async def _all_ended(client: JobClient, ids: list[str]) -> bool:
    rows = [await client.get(job_id) for job_id in ids]
    return all(row is not None and row.status == JobStatus.COMPLETED for row in rows)


def _gaps(order: list[str], tag: str) -> list[int]:
    """How far apart (in starts) the jobs of `tag` began."""
    at = [n for n, t in enumerate(order) if t == tag]
    return [b - a for a, b in itertools.pairwise(at)]
