"""Unchanged arq producers against this runner: a real arq client (`ArqRedis.enqueue_job` with a JSON
serializer) enqueues on the queue's name; the arq intake takes the job in at once (keyspace
notifications), and the client's `Job.status()` and `Job.result()` see the outcome."""

from __future__ import annotations

import asyncio
import json
import pickle
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.jobs import Job, JobStatus

from runner.context import JobContext
from runner.errors import PermanentError
from runner.registry import Registry, job
from runner.resources import Resources
from runner.settings import Settings
from runner.store.jobs import JobStore
from tests.conftest import MakeSettings, RunIntake, RunWorker

started_at: dict[str, float] = {}


@job("legacy.mul", positional=("x", "y"))
async def mul(ctx: JobContext, *, x: int, y: int) -> int:
    started_at[ctx.job_id] = time.time()
    return x * y


@job("legacy.broken")
async def broken(ctx: JobContext, *, why: str) -> None:
    raise PermanentError(why)


REGISTRY = Registry(specs=(mul, broken))


@pytest.fixture
def settings(make_settings: MakeSettings) -> Settings:
    return make_settings(arq_intake=True, arq_queue_name=f"arq:{uuid.uuid4().hex[:10]}")


@pytest.fixture
async def arq(settings: Settings) -> AsyncIterator[ArqRedis]:
    """arq's own client, sending and reading JSON, on the arq queue the intake takes from."""
    pool = await create_pool(RedisSettings.from_dsn(str(settings.redis_url)),
                             default_queue_name=settings.arq_queue_name,
                             job_serializer=lambda v: json.dumps(v).encode(), job_deserializer=json.loads)  # fmt: skip
    yield pool
    await pool.aclose()


async def test_positional_and_keyword_jobs_run_and_arq_reads_the_outcome(
    arq: ArqRedis, run_intake: RunIntake, run_worker: RunWorker, resources: Resources
):
    await run_intake(REGISTRY)
    await run_worker(REGISTRY)
    by_position = await arq.enqueue_job("legacy.mul", 6, 7, _job_id="arq-pos")
    by_keyword = await arq.enqueue_job("legacy.mul", x=2, y=5)
    assert by_position is not None and by_keyword is not None
    assert await by_position.result(timeout=10, poll_delay=0.05) == 42
    assert await by_keyword.result(timeout=10, poll_delay=0.05) == 10
    assert await by_position.status() is JobStatus.complete
    row = await JobStore(resources.db).get("arq-pos")
    assert row is not None and row.status.value == "completed" and row.args == {"x": 6, "y": 7}
    again = await arq.enqueue_job("legacy.mul", 1, 1, _job_id="arq-pos")
    assert again is None  # arq's own dedupe still holds: its result is kept


async def test_a_deferred_job_waits_in_arqs_queue_then_runs(
    arq: ArqRedis, run_intake: RunIntake, run_worker: RunWorker
):
    await run_intake(REGISTRY)
    await run_worker(REGISTRY)
    deferred = await arq.enqueue_job("legacy.mul", 3, 3, _defer_by=1.5)
    assert deferred is not None
    await asyncio.sleep(0.3)
    assert await deferred.status() is JobStatus.deferred
    assert await deferred.result(timeout=10, poll_delay=0.05) == 9
    assert started_at[deferred.job_id] - time.time() < 0  # ran, and after its due time (below)
    info = await deferred.info()
    assert info is not None and (info.start_time - info.enqueue_time).total_seconds() >= 1.4


async def test_a_failure_and_refusals_reach_the_sender(
    arq: ArqRedis, run_intake: RunIntake, run_worker: RunWorker, settings: Settings, resources: Resources
):
    await run_intake(REGISTRY)
    await run_worker(REGISTRY)
    failing = await arq.enqueue_job("legacy.broken", why="no more tea")
    unknown = await arq.enqueue_job("no.such.job", 1)
    assert failing is not None and unknown is not None
    with pytest.raises(Exception, match="PermanentError: no more tea"):
        await failing.result(timeout=10, poll_delay=0.05)
    with pytest.raises(Exception, match=r"no job named 'no\.such\.job' is registered"):
        await unknown.result(timeout=10, poll_delay=0.05)

    pickler = await create_pool(RedisSettings.from_dsn(str(settings.redis_url)),
                                default_queue_name=settings.arq_queue_name)  # arq's default: pickle  # fmt: skip
    try:
        pickled = await pickler.enqueue_job("legacy.mul", 2, 2, _job_id=f"pickled-{settings.queue_name}")
    finally:
        await pickler.aclose()
    assert pickled is not None
    reader = Job(pickled.job_id, arq, _queue_name=settings.arq_queue_name, _deserializer=json.loads)
    with pytest.raises(Exception, match="is a pickle, refused unread"):
        await reader.result(timeout=10, poll_delay=0.05)
    row = await JobStore(resources.db).get(pickled.job_id)
    assert row is not None and row.status.value == "failed" and "pickle" in (row.error or "")
    assert pickle  # the test's only use of pickle is arq's own sender, above


async def test_jobs_start_within_milliseconds_of_the_enqueue(
    arq: ArqRedis, run_intake: RunIntake, run_worker: RunWorker
):
    """No 1 s poll: the intake hears of arq's ZADD (keyspace notification) and hands the job over. The
    bound here only catches a fallback to polling; the figure itself comes from `make bench`."""
    await run_intake(REGISTRY)
    await run_worker(REGISTRY)
    waits = []
    for n in range(20):
        sent = time.time()
        enqueued = await arq.enqueue_job("legacy.mul", n, 1)
        assert enqueued is not None and await enqueued.result(timeout=10, poll_delay=0.005) == n
        waits.append(started_at[enqueued.job_id] - sent)
    waits.sort()
    print(f"\narq producer -> job start: p50 {waits[10] * 1000:.1f} ms, max {waits[-1] * 1000:.1f} ms")
    assert waits[10] < 0.25
