"""Unique jobs by key: deduplicated or debounced within a window, decided in Redis in one script call, with
exactly one status row per job that runs (none left `pending` for an enqueue that was folded into another)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from runner import envelope
from runner.broker.keys import QueueKeys
from runner.broker.queue import RedisQueue
from runner.client import JobClient
from runner.context import JobContext
from runner.registry import Registry, job
from runner.resources import Resources
from runner.settings import Settings
from runner.status import JobStatus
from runner.store.jobs import JobStore
from runner.unique import Unique
from runner.worker.execution import JobExecutor
from runner.worker.sweeper import Sweeper
from tests.conftest import RunWorker, wait_for

pytestmark = pytest.mark.also_on_cluster  # the broker's behaviour, again on Redis Cluster

runs: list[dict[str, Any]] = []


@job("unique.note")
async def note(ctx: JobContext, *, key: str, n: int, sleep_s: float = 0.0) -> int:
    runs.append({"job_id": ctx.job_id, "key": key, "n": n, "started": time.time()})
    await asyncio.sleep(sleep_s)
    return n


@job("unique.per_user", unique=Unique("user:{user}", for_s=30))
async def per_user(ctx: JobContext, *, user: str, n: int) -> int:
    runs.append({"job_id": ctx.job_id, "key": user, "n": n, "started": time.time()})
    return n


@job("unique.per_region", unique=Unique("region:{user}:{region}", for_s=30))
async def per_region(ctx: JobContext, *, user: str, region: str = "eu") -> str:
    return region


REGISTRY = Registry(specs=(note, per_user, per_region))


def client_for(resources: Resources, settings: Settings) -> JobClient:
    return JobClient(resources, REGISTRY.resolved(settings))


def runs_of(key: str) -> list[dict[str, Any]]:
    return [r for r in runs if r["key"] == key]


async def rows(resources: Resources, job_ids: list[str]) -> list[str]:
    return [
        r["job_id"] for r in await resources.db.fetch("SELECT job_id FROM runner_jobs WHERE job_id = ANY($1)", job_ids)
    ]


async def test_dedupe_returns_the_first_job_within_the_window_and_a_new_one_after(
    resources: Resources, settings: Settings, run_worker: RunWorker
):
    """Within the window a second enqueue is the first job (no row, nothing queued); after it, a new job."""
    client, q = client_for(resources, settings), settings.queue_name
    key = f"{q}:dedupe"
    first = await client.enqueue("unique.note", job_id=f"{q}:a", key=key, n=1, unique_key=key, unique_for_s=1.5)
    second = await client.enqueue("unique.note", job_id=f"{q}:b", key=key, n=2, unique_key=key, unique_for_s=1.5)
    assert (first.job_id, first.queued, first.recorded, first.deduplicated) == (f"{q}:a", True, True, False)
    assert (second.job_id, second.queued, second.recorded, second.deduplicated) == (f"{q}:a", False, False, True)
    assert await rows(resources, [f"{q}:a", f"{q}:b"]) == [f"{q}:a"]
    assert await resources.redis.zcard(QueueKeys.of(q).jobs) == 1
    await asyncio.sleep(1.6)  # the window closes
    third = await client.enqueue("unique.note", job_id=f"{q}:c", key=key, n=3, unique_key=key, unique_for_s=1.5)
    assert (third.job_id, third.queued, third.deduplicated) == (f"{q}:c", True, False)
    await run_worker(REGISTRY)
    assert [await first.result(timeout=10), await second.result(timeout=10), await third.result(timeout=10)] == [
        1,
        1,
        3,
    ]
    assert sorted(r["n"] for r in runs_of(key)) == [1, 3]


async def test_dedupe_returns_an_ended_job_while_its_window_lasts(
    resources: Resources, settings: Settings, run_worker: RunWorker
):
    """The window runs from the first enqueue, not while the job waits: a finished job still answers."""
    client, q = client_for(resources, settings), settings.queue_name
    await run_worker(REGISTRY)
    done = await client.enqueue("unique.note", key=f"{q}:ended", n=7, unique_key="k", unique_for_s=30)
    assert await done.result(timeout=10) == 7
    again = await client.enqueue("unique.note", key=f"{q}:ended", n=8, unique_key="k", unique_for_s=30)
    assert again.deduplicated and again.job_id == done.job_id
    assert await again.status() is JobStatus.COMPLETED and await again.result(timeout=1) == 7


async def test_debounce_runs_once_with_the_last_arguments_after_a_quiet_window(
    resources: Resources, settings: Settings, run_worker: RunWorker
):
    """Five enqueues 0.1 s apart: one job (the first one's id), started a window after the last, with n=5."""
    client, q = client_for(resources, settings), settings.queue_name
    key = f"{q}:debounce"
    await run_worker(REGISTRY)
    handles = []
    for n in range(1, 6):
        handles.append(await client.enqueue("unique.note", job_id=f"{q}:{n}", key=key, n=n, unique_key=key,
                                            unique_for_s=1.5, unique_mode="debounce"))  # fmt: skip
        last_enqueue = time.time()
        await asyncio.sleep(0.1)
    assert [h.job_id for h in handles] == [f"{q}:1"] * 5
    assert [(h.queued, h.debounced) for h in handles] == [(True, False)] + [(False, True)] * 4
    row = await client.get(f"{q}:1")
    assert row is not None and row.status is JobStatus.PENDING and row.args["n"] == 5
    assert await handles[-1].result(timeout=10) == 5
    await asyncio.sleep(0.3)  # nothing else runs
    [ran] = runs_of(key)
    assert ran["n"] == 5 and ran["job_id"] == f"{q}:1"
    assert ran["started"] >= last_enqueue + 1.5 - 0.05  # pushed back by the later enqueues (Redis clock slack)
    assert await rows(resources, [f"{q}:{n}" for n in range(1, 6)]) == [f"{q}:1"]


async def test_debounce_leaves_a_running_job_alone_and_the_new_one_waits_its_turn(
    resources: Resources, settings: Settings, run_worker: RunWorker
):
    """A job already started keeps its arguments; the enqueue that comes meanwhile is a new job of its own."""
    client, q = client_for(resources, settings), settings.queue_name
    key = f"{q}:running"
    await run_worker(REGISTRY)
    opts: dict[str, Any] = {"unique_key": key, "unique_for_s": 0.3, "unique_mode": "debounce"}
    first = await client.enqueue("unique.note", job_id=f"{q}:first", key=key, n=1, sleep_s=1.0, **opts)

    async def running() -> bool:
        return await first.status() is JobStatus.PROCESSING

    await wait_for(running)
    second = await client.enqueue("unique.note", job_id=f"{q}:second", key=key, n=2, **opts)
    assert (second.job_id, second.queued, second.debounced) == (f"{q}:second", True, False)
    assert [await first.result(timeout=10), await second.result(timeout=10)] == [1, 2]
    assert [(r["job_id"], r["n"]) for r in runs_of(key)] == [(f"{q}:first", 1), (f"{q}:second", 2)]


async def test_a_debounced_job_still_waiting_past_its_window_takes_later_enqueues(
    resources: Resources, settings: Settings, run_worker: RunWorker
):
    """No worker free when it fell due: the job still waits unstarted, so the next enqueue debounces it."""
    client, q = client_for(resources, settings), settings.queue_name
    opts: dict[str, Any] = {"unique_key": "late", "unique_for_s": 0.2, "unique_mode": "debounce"}
    first = await client.enqueue("unique.note", job_id=f"{q}:late1", key=f"{q}:late", n=1, **opts)
    await asyncio.sleep(0.5)
    second = await client.enqueue("unique.note", job_id=f"{q}:late2", key=f"{q}:late", n=2, **opts)
    assert (second.job_id, second.debounced) == (first.job_id, True)
    await run_worker(REGISTRY)
    assert await first.result(timeout=10) == 2
    await asyncio.sleep(0.4)
    assert [r["n"] for r in runs_of(f"{q}:late")] == [2]


@pytest.mark.parametrize("mode", ["dedupe", "debounce"])
async def test_fifty_concurrent_enqueues_of_one_key_make_exactly_one_job(
    resources: Resources, settings: Settings, run_worker: RunWorker, mode: str
):
    """50 at once, from five clients (five separate batches on the wire): one job queued, one row, one run."""
    clients = [client_for(resources, settings) for _ in range(5)]
    q, key = settings.queue_name, f"{settings.queue_name}:crowd"
    ids = [f"{q}:{n}" for n in range(50)]
    handles = await asyncio.gather(*(
        clients[n % 5].enqueue("unique.note", job_id=ids[n], key=key, n=n, unique_key=key, unique_for_s=1.0,
                               unique_mode=mode)  # type: ignore[arg-type]
        for n in range(50)
    ))  # fmt: skip
    assert sum(h.queued for h in handles) == 1 and sum(h.recorded for h in handles) <= 1
    [holder] = {h.job_id for h in handles}
    assert await resources.redis.zcard(QueueKeys.of(q).jobs) == 1
    assert await rows(resources, ids) == [holder]
    await run_worker(REGISTRY)
    result = await handles[0].result(timeout=10)
    await asyncio.sleep(0.3)  # nothing else runs (the queue held one job)
    [ran] = runs_of(key)
    assert (ran["job_id"], ran["n"]) == (holder, result)
    if mode == "debounce":  # every one but the first took the waiting job over
        assert sum(h.debounced for h in handles) == 49


async def test_concurrent_debounces_leave_the_row_with_the_arguments_redis_runs(
    resources: Resources, settings: Settings
):
    """30 debounces of one key at once from five clients, whose row writes reach Postgres in any order: the
    row ends with the arguments of the payload Redis holds, the ones the job will run (and the ones a re-drive
    from the row would run). Without the takeover number it kept an earlier set in 20 of 20 trials."""
    q = settings.queue_name
    for trial in range(5):
        clients = [client_for(resources, settings) for _ in range(5)]
        key = f"{q}:race-{trial}"
        handles = await asyncio.gather(*(
            clients[n % 5].enqueue("unique.note", job_id=f"{key}-{n}", key=key, n=n, unique_key=key,
                                   unique_for_s=30, unique_mode="debounce")
            for n in range(30)
        ))  # fmt: skip
        [holder] = {h.job_id for h in handles}
        payload = await resources.redis.get(QueueKeys.of(q).job(holder))
        in_redis = envelope.deserialize(payload)["k"]
        row = await resources.db.fetchval("SELECT args FROM runner_jobs WHERE job_id = $1", holder)
        assert orjson.loads(row) == in_redis, f"trial {trial}"


async def test_a_key_declared_on_the_job_is_built_from_its_arguments(resources: Resources, settings: Settings):
    """@job(unique=Unique("user:{user}", ...)): the same user deduplicates, another user does not."""
    client, q = client_for(resources, settings), settings.queue_name
    one = await client.enqueue("unique.per_user", user=f"{q}-u1", n=1)
    same = await client.enqueue("unique.per_user", user=f"{q}-u1", n=2)
    other = await client.enqueue("unique.per_user", user=f"{q}-u2", n=3)
    assert same.deduplicated and same.job_id == one.job_id
    assert other.queued and other.job_id != one.job_id
    assert await resources.redis.get(QueueKeys.of(q).unique("unique.per_user", f"user:{q}-u1")) == one.job_id.encode()
    with pytest.raises(ValueError, match="pass both unique_key and unique_for_s"):
        await client.enqueue("unique.note", key="k", n=1, unique_key="k")
    # A key naming a parameter with a default: an enqueue that leaves it out takes the default.
    defaulted = await client.enqueue("unique.per_region", user=f"{q}-u1")
    explicit = await client.enqueue("unique.per_region", user=f"{q}-u1", region="eu")
    assert defaulted.queued and explicit.deduplicated and explicit.job_id == defaulted.job_id


@pytest.fixture
async def sweeper(resources: Resources, settings: Settings) -> AsyncIterator[Sweeper]:
    queue = RedisQueue(resources.redis, queue=settings.queue_name, worker_id="unique-sweeper", lease_ttl_s=30)
    async with JobExecutor(resources, None, REGISTRY.resolved(settings), queue, JobStore(resources.db)) as executor:
        yield Sweeper(resources, executor, worker_id="unique-sweeper")


async def test_the_sweeper_leaves_a_debounced_job_alone(resources: Resources, settings: Settings, sweeper: Sweeper):
    """The replaced enqueues have no rows, and the one row's job is in Redis: nothing to re-drive, even stale."""
    client, q = client_for(resources, settings), settings.queue_name
    for n in range(3):
        await client.enqueue("unique.note", job_id=f"{q}:s{n}", key="s", n=n, unique_key="s", unique_for_s=60,
                             unique_mode="debounce")  # fmt: skip
    await resources.db.execute("UPDATE runner_jobs SET updated_at = now() - interval '1 hour' WHERE queue = $1", q)
    report = await sweeper.sweep_once()
    assert (report.checked, report.requeued, report.failed, report.resolved) == (1, [], [], [])
    row = await client.get(f"{q}:s0")
    assert row is not None and row.status is JobStatus.PENDING and row.args["n"] == 2
