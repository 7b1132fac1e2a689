"""The hand-off path against real Redis: an enqueue leases its job to an idle worker and pushes it into
that worker's inbox, so the job arrives in the worker's blocking read. Every way a hand-off can go
stale (the worker stops waiting, dies, or its idle entry lapses) must leave the job runnable."""

from __future__ import annotations

import asyncio
import time

import pytest

from runner.broker.enqueue import Enqueuer
from runner.broker.keys import QueueKeys
from runner.broker.queue import RedisQueue, release_dead_worker
from runner.registry import Registry
from runner.resources import Resources
from runner.settings import Settings
from runner.worker.worker import Worker
from tests.conftest import MakeSettings, wait_for

pytestmark = pytest.mark.also_on_cluster  # the broker's behaviour, again on Redis Cluster


def now_ms() -> int:
    return int(time.time() * 1000)


def worker(resources: Resources, settings: Settings, name: str, lease_ttl_s: float = 5.0) -> RedisQueue:
    return RedisQueue(resources.redis, queue=settings.queue_name, worker_id=name, lease_ttl_s=lease_ttl_s)


async def enqueue(resources: Resources, settings: Settings, job_id: str, *, defer_s: float = 0) -> None:
    """Job ids are global keys in Redis; each test runs on its own queue, so tests use distinct ids."""
    assert await Enqueuer(resources.redis).enqueue(settings.queue_name, job_id, "x.job", {"n": 1}, defer_s=defer_s)


async def test_enqueue_hands_the_job_to_the_idle_worker_in_its_wait(resources: Resources, settings: Settings):
    idle = worker(resources, settings, "idle-a")
    assert (await idle.claim(now_ms(), 5, idle_for_s=5)).jobs == []
    assert idle.idle
    await enqueue(resources, settings, "h1")
    # Leased to the idle worker by the enqueue itself, with its try counted, and still in the queue.
    assert await resources.redis.get(QueueKeys.of(settings.queue_name).lease("h1")) == b"idle-a"
    assert await resources.redis.get(QueueKeys.of(settings.queue_name).tries("h1")) == b"1"
    assert await resources.redis.zscore(QueueKeys.of(settings.queue_name).jobs, "h1") is not None
    assert await resources.redis.zcard(QueueKeys.of(settings.queue_name).idle) == 0  # one hand-off per idle entry
    started = time.monotonic()
    handed = await idle.wait_for_work(5)
    assert time.monotonic() - started < 1, "the job must arrive in the reply, not after the timeout"
    assert handed is not None
    assert (handed.job_id, handed.try_count, handed.aborted) == ("h1", 1, False)
    assert handed.payload is not None and b'"x.job"' in handed.payload
    assert not idle.idle
    # Another worker's claim cannot take it: the lease is the idle worker's.
    assert (await worker(resources, settings, "other").claim(now_ms(), 5, idle_for_s=5)).jobs == []


async def test_a_deferred_job_is_not_handed_off(resources: Resources, settings: Settings):
    idle = worker(resources, settings, "idle-b")
    await idle.claim(now_ms(), 5, idle_for_s=5)
    await enqueue(resources, settings, "later", defer_s=30)
    assert await resources.redis.exists(QueueKeys.of(settings.queue_name).lease("later")) == 0
    assert await resources.redis.llen(QueueKeys.of(settings.queue_name).inbox("idle-b")) == 0  # type: ignore[misc]


async def test_a_busy_queue_hands_one_job_per_idle_entry_and_wakes_for_the_rest(
    resources: Resources, settings: Settings
):
    idle = worker(resources, settings, "idle-c")
    await idle.claim(now_ms(), 5, idle_for_s=5)
    for n in range(3):
        await enqueue(resources, settings, f"burst-{n}")
    assert (await idle.wait_for_work(5)) is not None
    claim = await idle.claim(now_ms(), 5, idle_for_s=5)  # the other two, found by the ordinary claim
    assert sorted(j.job_id for j in claim.jobs) == ["burst-1", "burst-2"]


async def test_claim_takes_jobs_handed_over_while_the_worker_was_not_waiting(resources: Resources, settings: Settings):
    idle = worker(resources, settings, "idle-d")
    await idle.claim(now_ms(), 5, idle_for_s=5)
    await enqueue(resources, settings, "missed-wait")  # handed over, but the worker claims instead of waiting
    claim = await idle.claim(now_ms(), 5, idle_for_s=5)
    assert [(j.job_id, j.try_count) for j in claim.jobs] == [("missed-wait", 1)]
    assert await resources.redis.llen(QueueKeys.of(settings.queue_name).inbox("idle-d")) == 0  # type: ignore[misc]


async def test_claim_drops_a_stale_hand_off_whose_lease_is_gone(resources: Resources, settings: Settings):
    """A hand-off the worker did not pick up before its lease lapsed belongs to whoever claimed it since."""
    idle = worker(resources, settings, "idle-e", lease_ttl_s=0.2)
    await idle.claim(now_ms(), 5, idle_for_s=5)
    await enqueue(resources, settings, "stale")
    await asyncio.sleep(0.3)  # the hand-off's lease lapses while the worker is stuck
    rescuer = worker(resources, settings, "rescuer")
    assert [j.job_id for j in (await rescuer.claim(now_ms(), 5, idle_for_s=5)).jobs] == ["stale"]
    assert (await idle.claim(now_ms(), 5, idle_for_s=5)).jobs == []  # not run twice


async def test_withdraw_gives_the_handed_job_back_with_its_try(resources: Resources, settings: Settings):
    idle = worker(resources, settings, "idle-f")
    await idle.claim(now_ms(), 5, idle_for_s=5)
    await enqueue(resources, settings, "returned")
    assert await idle.withdraw() == 1
    assert not idle.idle
    assert await resources.redis.exists(QueueKeys.of(settings.queue_name).lease("returned")) == 0
    assert await resources.redis.get(QueueKeys.of(settings.queue_name).tries("returned")) == b"0"
    assert await resources.redis.zcard(QueueKeys.of(settings.queue_name).idle) == 0
    other = worker(resources, settings, "other-f")
    assert [(j.job_id, j.try_count) for j in (await other.claim(now_ms(), 5, idle_for_s=5)).jobs] == [("returned", 1)]


async def test_withdraw_without_a_hand_off_only_leaves_the_idle_set(resources: Resources, settings: Settings):
    idle = worker(resources, settings, "idle-g")
    await idle.claim(now_ms(), 5, idle_for_s=5)
    assert await idle.withdraw() == 0
    await enqueue(resources, settings, "not-handed")
    assert await resources.redis.exists(QueueKeys.of(settings.queue_name).lease("not-handed")) == 0


async def test_an_idle_entry_lapses_so_a_vanished_worker_gets_no_jobs(resources: Resources, settings: Settings):
    vanished = worker(resources, settings, "idle-h")
    await vanished.claim(now_ms(), 5, idle_for_s=0.1)
    await asyncio.sleep(0.2)
    await enqueue(resources, settings, "after-lapse")
    assert await resources.redis.exists(QueueKeys.of(settings.queue_name).lease("after-lapse")) == 0
    assert await resources.redis.zcard(QueueKeys.of(settings.queue_name).idle) == 0  # pruned by the enqueue


async def test_a_dead_workers_hand_off_is_released_with_its_leases(resources: Resources, settings: Settings):
    dead = worker(resources, settings, "idle-i", lease_ttl_s=settings.lease_ttl_s)
    await dead.claim(now_ms(), 5, idle_for_s=5)
    await enqueue(resources, settings, "orphaned-hand-off")
    released = await release_dead_worker(resources.redis, "idle-i", settings.queue_name, settings.lease_ttl_s)
    assert released == ["orphaned-hand-off"]
    assert await resources.redis.exists(QueueKeys.of(settings.queue_name).inbox("idle-i")) == 0
    other = worker(resources, settings, "other-i")
    assert [j.job_id for j in (await other.claim(now_ms(), 5, idle_for_s=5)).jobs] == ["orphaned-hand-off"]


async def test_a_dead_idle_worker_is_forgotten(resources: Resources, settings: Settings):
    dead = worker(resources, settings, "idle-j", lease_ttl_s=settings.lease_ttl_s)
    await dead.claim(now_ms(), 5, idle_for_s=60)
    await release_dead_worker(resources.redis, "idle-j", settings.queue_name, settings.lease_ttl_s)
    assert await resources.redis.zcard(QueueKeys.of(settings.queue_name).idle) == 0


async def test_an_idle_worker_stops_at_once_and_leaves_no_idle_entry(resources: Resources, make_settings: MakeSettings):
    """stop() interrupts the blocked read (POLL_INTERVAL_S is 30 s here), and a stopped worker is not
    handed jobs: the next enqueue stays in the queue for whoever is running."""
    settings = make_settings(poll_interval_s=30)
    worker = Worker(settings, Registry(specs=()))
    task = asyncio.create_task(worker.run())
    key = QueueKeys.of(settings.queue_name).idle
    await wait_for(lambda: _has_members(resources, key))
    started = time.monotonic()
    worker.stop()
    worker.stop()  # twice, as a retiring worker then a signal would: still one clean stop
    await asyncio.wait_for(task, 5)
    assert time.monotonic() - started < 1
    assert await resources.redis.zcard(key) == 0
    await enqueue(resources, settings, f"{settings.queue_name}:after-stop")
    assert (
        await resources.redis.exists(QueueKeys.of(settings.queue_name).lease(f"{settings.queue_name}:after-stop")) == 0
    )


async def test_stop_ends_the_blocked_read_whenever_it_lands(resources: Resources, make_settings: MakeSettings):
    """stop() lands at a different moment of the read each round. On Redis Cluster the read's socket write
    goes through asyncio.wait_for, which under Python 3.11 drops a cancel landing as the write completes:
    one round in ten or so, which left the worker blocked for its whole 30 s poll until stop() cancelled again."""
    settings = make_settings(poll_interval_s=30)
    key = QueueKeys.of(settings.queue_name).idle
    for round_ in range(30):
        worker = Worker(settings, Registry(specs=()))
        task = asyncio.create_task(worker.run())
        await wait_for(lambda: _has_members(resources, key), every=0.001)
        for _ in range(round_ % 4):
            await asyncio.sleep(0)
        started = time.monotonic()
        worker.stop()
        await asyncio.wait_for(task, 5)
        assert time.monotonic() - started < 1, f"round {round_}"


async def _has_members(resources: Resources, key: str) -> bool:
    return bool(await resources.redis.zcard(key))
