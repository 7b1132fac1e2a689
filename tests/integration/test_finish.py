"""A job's keys through claim and finish, against real Redis (and Redis Cluster): a claim makes the try counter
with its TTL and counts each try; finishing a batch of jobs in one script call keeps each job's result for its
time, removes everything else of the job, and leaves alone a lease that is no longer ours or a key something
else made another type, without stopping the rest of the batch."""

from __future__ import annotations

import time

import pytest

from runner.broker.enqueue import Enqueuer
from runner.broker.keys import TRY_COUNTER_TTL_MS, QueueKeys
from runner.broker.queue import Finished, RedisQueue
from runner.broker.queues import WorkerQueues
from runner.resources import Resources
from runner.settings import Settings

pytestmark = pytest.mark.also_on_cluster


def now_ms() -> int:
    return int(time.time() * 1000)


async def test_a_batch_finishes_every_job_keeps_results_and_leaves_what_is_not_ours(
    resources: Resources, settings: Settings
):
    redis, keys = resources.redis, QueueKeys.of(settings.queue_name)
    ids = [f"fin-{n}" for n in range(6)]
    for job_id in ids:
        assert await Enqueuer(redis).enqueue(settings.queue_name, job_id, "x.job", {"n": 1})
    queue = RedisQueue(redis, queue=settings.queue_name, worker_id="fin-worker", lease_ttl_s=30)
    claimed = (await queue.claim(now_ms(), 10, idle_for_s=5)).jobs
    assert sorted(j.job_id for j in claimed) == ids
    await redis.set(keys.lease("fin-4"), "another-worker")  # its lease lapsed and another worker took it
    await redis.delete(keys.lease("fin-5"))
    await redis.rpush(keys.lease("fin-5"), "foreign")  # something else wrote a list there
    await redis.zadd(keys.abort, {"fin-2": now_ms()})

    await queue.finish_many([
        Finished("fin-0", b'{"r":0}', 60_000), Finished("fin-1", b'{"r":1}', 0), Finished("fin-2", None, 60_000),
        Finished("fin-3", b'{"r":3}', 60_000), Finished("fin-4", b'{"r":4}', 60_000), Finished("fin-5", None, 0),
    ])  # fmt: skip

    assert await redis.zcard(keys.jobs) == 0
    assert await redis.scard(keys.leases("fin-worker")) == 0  # type: ignore[misc]
    assert await redis.zcard(keys.abort) == 0
    for job_id in ids:
        assert await redis.exists(keys.job(job_id), keys.tries(job_id)) == 0, job_id
    assert await redis.get(keys.result("fin-0")) == b'{"r":0}'
    assert 0 < await redis.pttl(keys.result("fin-0")) <= 60_000
    assert await redis.pttl(keys.result("fin-1")) == -1  # 0: kept for ever
    assert await redis.exists(keys.result("fin-2"), keys.result("fin-5")) == 0  # no result to keep
    assert [await redis.exists(keys.lease(j)) for j in ("fin-0", "fin-1", "fin-2", "fin-3")] == [0, 0, 0, 0]
    assert await redis.get(keys.lease("fin-4")) == b"another-worker"
    assert await redis.type(keys.lease("fin-5")) == b"list"


async def test_a_worker_of_several_queues_finishes_each_queues_jobs_in_its_own_queue(
    resources: Resources, settings: Settings
):
    names = [settings.queue_name, f"{settings.queue_name}-b"]
    for name in names:
        for n in range(3):
            assert await Enqueuer(resources.redis).enqueue(name, f"{name}-fin-{n}", "x.job", {"n": n})
    each = [RedisQueue(resources.redis, queue=name, worker_id="fin-multi", lease_ttl_s=30) for name in names]
    claimed = [job for q in each for job in (await q.claim(now_ms(), 10, idle_for_s=5)).jobs]
    queues = WorkerQueues([(q, 1) for q in each])
    assert len(claimed) == 6
    await queues.finish_many([Finished(j.job_id, b"{}", 60_000, j.queue) for j in claimed])
    for name in names:
        keys = QueueKeys.of(name)
        assert await resources.redis.zcard(keys.jobs) == 0
        assert await resources.redis.scard(keys.leases("fin-multi")) == 0  # type: ignore[misc]
        assert await resources.redis.exists(*(keys.result(f"{name}-fin-{n}") for n in range(3))) == 3


async def test_a_claim_makes_the_try_counter_with_its_ttl_and_counts_each_try(resources: Resources, settings: Settings):
    redis, keys = resources.redis, QueueKeys.of(settings.queue_name)
    assert await Enqueuer(redis).enqueue(settings.queue_name, "tries-1", "x.job", {"n": 1})
    queue = RedisQueue(redis, queue=settings.queue_name, worker_id="tries-worker", lease_ttl_s=30)
    for expected in (1, 2, 3):
        (claimed,) = (await queue.claim(now_ms(), 10, idle_for_s=5)).jobs
        assert claimed.try_count == expected
        assert await redis.get(keys.tries("tries-1")) == str(expected).encode()
        assert 0 < await redis.pttl(keys.tries("tries-1")) <= TRY_COUNTER_TTL_MS
        assert await queue.release("tries-1", due_ms=now_ms(), give_back_try=False)
