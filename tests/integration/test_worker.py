"""The worker against real Redis and Postgres: one loop, shared pools, dedup, bad payloads, retries, limits."""

from __future__ import annotations

import asyncio
import os
import pickle
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from structlog.testing import capture_logs

from runner.broker.enqueue import Enqueuer
from runner.broker.keys import QueueKeys
from runner.broker.queue import RedisQueue
from runner.broker.queues import WorkerQueues
from runner.client import JobClient
from runner.context import JobContext
from runner.errors import JobArgumentsError, PermanentError, RetryLaterError, TransientError
from runner.registry import Registry, job
from runner.resources import Resources
from runner.retry import RetryPolicy
from runner.settings import Settings
from runner.status import JobStatus
from runner.worker.worker import Worker
from tests.conftest import MakeSettings, RunWorker, wait_for

pytestmark = pytest.mark.also_on_cluster  # the broker's behaviour, again on Redis Cluster

seen: list[dict[str, Any]] = []
failures: list[tuple[str, str]] = []
calls: dict[str, int] = {}


async def record_failure(ctx: JobContext, error: str) -> None:
    failures.append((ctx.job_id, error))


@job("probe.record", log_fields=("tag",), on_failure=record_failure)
async def record(ctx: JobContext, *, tag: str, sleep_s: float = 0.0) -> dict[str, Any]:
    started = time.monotonic()
    await asyncio.sleep(sleep_s)
    seen.append({"tag": tag, "loop": id(asyncio.get_running_loop()), "db": id(ctx.db), "http": id(ctx.http),
                 "redis": id(ctx.redis), "started": started, "ended": time.monotonic(),
                 "log_context": structlog.contextvars.get_contextvars(), "attempt": ctx.attempt})  # fmt: skip
    return {"tag": tag}


@job("probe.flaky", retry=RetryPolicy(max_tries=3, base_delay_s=0.01), on_failure=record_failure)
async def flaky(ctx: JobContext, *, key: str, fail_times: int, permanent: bool = False) -> int:
    calls[key] = calls.get(key, 0) + 1
    if calls[key] <= fail_times:
        raise PermanentError("not fixable") if permanent else TransientError("try later", retry_after_s=0.01)
    return calls[key]


@job("probe.slow", timeout_s=0.3, soft_timeout_s=0.3, on_failure=record_failure)
async def slow(ctx: JobContext, *, seconds: float) -> None:
    await asyncio.sleep(seconds)


@job("probe.nul")
async def nul(ctx: JobContext, *, fail: bool) -> str:
    if fail:
        raise PermanentError("bad\x00byte")
    return "a\x00b"


REGISTRY = Registry(specs=(record, flaky, slow, nul))


def client_for(resources: Resources, settings: Settings) -> JobClient:
    return JobClient(resources, REGISTRY.resolved(settings))


async def status_of(client: JobClient, job_id: str) -> JobStatus | None:
    row = await client.get(job_id)
    return row.status if row else None


async def until_status(client: JobClient, job_id: str, status: JobStatus, timeout: float = 15) -> None:
    async def check() -> bool:
        return await status_of(client, job_id) == status

    await wait_for(check, timeout)


async def test_jobs_share_one_loop_and_one_pool(resources: Resources, settings: Settings, run_worker: RunWorker):
    """Two jobs in one worker process run at once on the same event loop and borrow the same pools."""
    client = client_for(resources, settings)
    await run_worker(REGISTRY)
    for tag in ("a", "b"):
        await client.enqueue("probe.record", job_id=f"share-{tag}-{settings.queue_name}", tag=tag, sleep_s=0.2)
    for tag in ("a", "b"):
        await until_status(client, f"share-{tag}-{settings.queue_name}", JobStatus.COMPLETED)
    a, b = (next(s for s in seen if s["tag"] == t) for t in ("a", "b"))
    assert a["loop"] == b["loop"] == id(asyncio.get_running_loop())
    assert (a["db"], a["http"], a["redis"]) == (b["db"], b["http"], b["redis"])
    assert a["started"] < b["ended"] and b["started"] < a["ended"], "the two jobs should have overlapped"


async def test_log_context_carries_job_fields(resources: Resources, settings: Settings, run_worker: RunWorker):
    """Inside a job, every log line carries job_id, job_name, attempt and the job's declared fields."""
    client = client_for(resources, settings)
    await run_worker(REGISTRY)
    job_id = f"ctx-{settings.queue_name}"
    await client.enqueue("probe.record", job_id=job_id, tag="ctx")
    await until_status(client, job_id, JobStatus.COMPLETED)
    context = next(s["log_context"] for s in seen if s["log_context"].get("job_id") == job_id)
    assert context == {"job_id": job_id, "job_name": "probe.record", "attempt": 1, "tag": "ctx"}


async def test_same_job_id_enqueued_twice_runs_once(resources: Resources, settings: Settings, run_worker: RunWorker):
    """A deterministic job id makes a second enqueue a no-op, before and after the first one ran."""
    client = client_for(resources, settings)
    job_id = f"once-{settings.queue_name}"
    first = await client.enqueue("probe.flaky", job_id=job_id, key=job_id, fail_times=0)
    second = await client.enqueue("probe.flaky", job_id=job_id, key=job_id, fail_times=0)
    assert (first.recorded, first.queued) == (True, True)
    assert (second.recorded, second.queued) == (False, False)
    await run_worker(REGISTRY)
    await until_status(client, job_id, JobStatus.COMPLETED)
    third = await client.enqueue("probe.flaky", job_id=job_id, key=job_id, fail_times=0)
    assert not third.queued
    await asyncio.sleep(0.2)
    assert calls[job_id] == 1


class Boom:
    """Unpickling this would create a file: proof of whether a worker ever unpickles."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


async def push_raw(resources: Resources, settings: Settings, job_id: str, payload: bytes) -> None:
    keys = QueueKeys.of(settings.queue_name)
    await resources.redis.set(keys.job(job_id), payload)
    await resources.redis.zadd(keys.jobs, {job_id: int(time.time() * 1000)})


async def test_pickle_payload_is_refused_unread(
    resources: Resources, settings: Settings, run_worker: RunWorker, tmp_path: Path
):
    """A pickle placed in the queue is failed with a reason, never unpickled, and the worker goes on."""
    marker = tmp_path / "unpickled"
    payload = pickle.dumps({"t": 1, "f": "probe.record", "a": [], "k": {"tag": Boom(marker)}, "et": 0})
    client = client_for(resources, settings)
    await push_raw(resources, settings, "pickled", payload)
    await run_worker(REGISTRY)
    await until_status(client, "pickled", JobStatus.FAILED)
    row = await client.get("pickled")
    assert row is not None and row.error is not None and "pickle" in row.error
    assert not marker.exists()

    async def off_the_queue() -> bool:  # its finish goes to Redis after its row is written
        return await resources.redis.zscore(QueueKeys.of(settings.queue_name).jobs, "pickled") is None

    await wait_for(off_the_queue, 5)
    await client.enqueue("probe.record", job_id=f"after-{settings.queue_name}", tag="after-pickle")
    await until_status(client, f"after-{settings.queue_name}", JobStatus.COMPLETED)


async def test_bad_payloads_fail_with_reasons(resources: Resources, settings: Settings, run_worker: RunWorker):
    """Non-JSON bytes, unknown job names and wrong arguments each fail with a reason saying which."""
    bad = {
        "garbage": (b"\x00not json at all", "not valid JSON"),
        "not-object": (b"[1, 2]", "must be a JSON object"),
        "unknown": (orjson.dumps({"t": None, "f": "no.such.job", "a": [], "k": {}, "et": 0}), "no.such.job"),
        "positional": (orjson.dumps({"f": "probe.record", "a": ["x", 0, 1], "k": {}, "et": 0}),
                       "takes at most 2 positional arguments"),
        "missing": (orjson.dumps({"f": "probe.record", "a": [], "k": {}, "et": 0}), "missing: ['tag']"),
        "extra": (orjson.dumps({"f": "probe.record", "a": [], "k": {"tag": "x", "zz": 1}, "et": 0}), "unknown: ['zz']"),
        "wrong-type": (orjson.dumps({"f": "probe.record", "a": [], "k": {"tag": "x", "sleep_s": "slow"}, "et": 0}),
                       "'sleep_s'='slow' is invalid"),
    }  # fmt: skip
    for job_id, (payload, _) in bad.items():
        await push_raw(resources, settings, f"{job_id}-{settings.queue_name}", payload)
    client = client_for(resources, settings)
    await run_worker(REGISTRY)
    for job_id, (_, reason) in bad.items():
        await until_status(client, f"{job_id}-{settings.queue_name}", JobStatus.FAILED)
        row = await client.get(f"{job_id}-{settings.queue_name}")
        assert row is not None and row.error is not None and reason in row.error, (job_id, row.error)
    assert any(error.startswith("JobArgumentsError") for job_id, error in failures if "missing" in job_id)


async def test_transient_errors_retry_then_succeed(resources: Resources, settings: Settings, run_worker: RunWorker):
    """A transient error retries with backoff; the row shows the attempts and ends completed."""
    client = client_for(resources, settings)
    job_id = f"flaky-{settings.queue_name}"
    await run_worker(REGISTRY)
    await client.enqueue("probe.flaky", job_id=job_id, key=job_id, fail_times=2)
    await until_status(client, job_id, JobStatus.COMPLETED)
    row = await client.get(job_id)
    assert row is not None
    assert (row.attempts, row.result, row.error) == (3, 3, None)


async def test_retries_run_out_then_fail(resources: Resources, settings: Settings, run_worker: RunWorker):
    """After the last try the job is failed with the last error, and its failure hook runs."""
    client = client_for(resources, settings)
    job_id = f"hopeless-{settings.queue_name}"
    await run_worker(REGISTRY)
    await client.enqueue("probe.flaky", job_id=job_id, key=job_id, fail_times=99)
    await until_status(client, job_id, JobStatus.FAILED)
    row = await client.get(job_id)
    assert row is not None and row.attempts == 3 and row.error == "TransientError: try later"
    assert (job_id, "TransientError: try later") in failures


async def test_permanent_error_fails_at_once(resources: Resources, settings: Settings, run_worker: RunWorker):
    """A permanent error is not retried."""
    client = client_for(resources, settings)
    job_id = f"permanent-{settings.queue_name}"
    await run_worker(REGISTRY)
    await client.enqueue("probe.flaky", job_id=job_id, key=job_id, fail_times=5, permanent=True)
    await until_status(client, job_id, JobStatus.FAILED)
    row = await client.get(job_id)
    assert row is not None and row.attempts == 1 and calls[job_id] == 1


async def test_a_nul_in_an_error_or_result_is_stored_as_u_fffd_and_fails_no_other_job(
    resources: Resources, settings: Settings, run_worker: RunWorker
):
    """Postgres text and jsonb cannot hold NUL: the rows show U+FFFD in its place, and the jobs whose status
    writes share a batch with them are written too (a NUL once failed the whole batch's write)."""
    client = client_for(resources, settings)
    q = settings.queue_name
    await asyncio.gather(
        client.enqueue("probe.nul", job_id=f"nul-fail-{q}", fail=True),
        client.enqueue("probe.nul", job_id=f"nul-result-{q}", fail=False),
        *(client.enqueue("probe.record", job_id=f"beside-nul-{n}-{q}", tag=f"beside-{n}") for n in range(10)),
    )
    await run_worker(REGISTRY)
    await until_status(client, f"nul-fail-{q}", JobStatus.FAILED)
    await until_status(client, f"nul-result-{q}", JobStatus.COMPLETED)
    for n in range(10):
        await until_status(client, f"beside-nul-{n}-{q}", JobStatus.COMPLETED)
    failed, completed = await client.get(f"nul-fail-{q}"), await client.get(f"nul-result-{q}")
    assert failed is not None and failed.error == "PermanentError: bad\ufffdbyte"
    assert completed is not None and completed.result == "a\ufffdb"
    errors = await resources.db.fetch("SELECT error FROM runner_job_attempts WHERE job_id = $1", f"nul-fail-{q}")
    assert [r["error"] for r in errors] == ["PermanentError: bad\ufffdbyte"]


async def test_an_enqueue_with_a_nul_in_its_arguments_is_refused_before_any_write(
    resources: Resources, settings: Settings
):
    client = client_for(resources, settings)
    for job_id, tag in ((f"nul-arg-{settings.queue_name}", "a\x00b"), (f"nul\x00id-{settings.queue_name}", "a")):
        with pytest.raises(JobArgumentsError, match="NUL"):
            await client.enqueue("probe.record", job_id=job_id, tag=tag)
    assert await client.enqueue("probe.record", job_id=f"nul-free-{settings.queue_name}", tag="a\\u0000")
    assert await resources.redis.zcard(QueueKeys.of(settings.queue_name).jobs) == 1  # only the NUL-free one
    assert await client.get(f"nul-arg-{settings.queue_name}") is None


async def test_a_stopping_worker_writes_its_ended_jobs_finishes_before_giving_back_leases(
    resources: Resources, settings: Settings, monkeypatch: pytest.MonkeyPatch
):
    """A job's finish in Redis is not awaited by the job: a worker stopped right after its jobs ended writes
    those finishes before it gives back the leases it still holds, so no ended job goes back to the queue."""
    finish_many = WorkerQueues.finish_many

    async def slow_finish_many(self: WorkerQueues, finished: Any) -> None:  # a slow Redis: the window is wide
        await asyncio.sleep(0.2)
        await finish_many(self, finished)

    monkeypatch.setattr(WorkerQueues, "finish_many", slow_finish_many)
    client = client_for(resources, settings)
    ids = [f"stop-after-{n}-{settings.queue_name}" for n in range(200)]
    await asyncio.gather(*(client.enqueue("probe.record", job_id=i, tag="stop-after") for i in ids))
    worker = Worker(settings, REGISTRY)
    with capture_logs() as logs:
        running = asyncio.create_task(worker.run())

        async def all_ended() -> bool:
            return worker.jobs_done >= len(ids)

        await wait_for(all_ended, 30, every=0.001)
        worker.stop()  # at once: some finishes are still in the batcher
        await asyncio.wait_for(running, 30)
    given_back = [e for e in logs if e["event"] in ("leases_released_at_exit", "handed_jobs_given_back")]
    assert given_back == [], given_back
    keys = QueueKeys.of(settings.queue_name)
    assert await resources.redis.zcard(keys.jobs) == 0
    assert await resources.redis.exists(keys.leases(worker.worker_id)) == 0
    assert {(await client.get(i)).status for i in ids} == {JobStatus.COMPLETED}  # type: ignore[union-attr]


async def test_hard_time_limit_stops_and_fails(resources: Resources, settings: Settings, run_worker: RunWorker):
    """A job past its hard limit is stopped and failed with a timeout reason, and the hook runs."""
    client = client_for(resources, settings)
    job_id = f"slow-{settings.queue_name}"
    await run_worker(REGISTRY)
    started = time.monotonic()
    await client.enqueue("probe.slow", job_id=job_id, seconds=30)
    await until_status(client, job_id, JobStatus.FAILED)
    assert time.monotonic() - started < 5
    row = await client.get(job_id)
    assert row is not None and row.error == "JobTimeoutError: stopped at the hard time limit of 0.3s"
    assert any(j == job_id for j, _ in failures)


async def test_graceful_stop_gives_job_back_without_using_a_try(
    resources: Resources, make_settings: MakeSettings, run_worker: RunWorker
):
    """A job still running when the grace period ends goes back to the queue at once, its try returned."""
    settings = make_settings(shutdown_grace_s=0.2)
    client = client_for(resources, settings)
    job_id = f"drained-{settings.queue_name}"
    worker = await run_worker(REGISTRY, settings)
    await client.enqueue("probe.record", job_id=job_id, tag="drained", sleep_s=2)
    await until_status(client, job_id, JobStatus.PROCESSING)
    worker.stop()
    await until_status(client, job_id, JobStatus.RETRYING)
    keys = QueueKeys.of(settings.queue_name)
    assert await resources.redis.zscore(keys.jobs, job_id) is not None
    assert await resources.redis.get(keys.tries(job_id)) == b"0"
    assert await resources.redis.exists(keys.lease(job_id)) == 0
    await run_worker(REGISTRY, settings)
    await until_status(client, job_id, JobStatus.COMPLETED)
    assert next(s for s in seen if s["tag"] == "drained")["attempt"] == 1


async def test_expired_lease_lets_another_worker_run_the_job(
    resources: Resources, make_settings: MakeSettings, run_worker: RunWorker
):
    """A job leased by a worker that vanished runs elsewhere once the short lease expires."""
    settings = make_settings(lease_ttl_s=0.5)
    client = client_for(resources, settings)
    job_id = f"orphan-{settings.queue_name}"
    await client.enqueue("probe.record", job_id=job_id, tag="orphan")
    ghost = RedisQueue(resources.redis, queue=settings.queue_name, worker_id="ghost", lease_ttl_s=0.5)
    assert [c.job_id for c in (await ghost.claim(int(time.time() * 1000), 1, idle_for_s=1)).jobs] == [job_id]
    lost_at = time.monotonic()
    await run_worker(REGISTRY, settings)
    await until_status(client, job_id, JobStatus.COMPLETED)
    assert 0.4 < time.monotonic() - lost_at < 3
    assert next(s for s in seen if s["tag"] == "orphan")["attempt"] == 2


cleanups: list[str] = []


@job("probe.soft", timeout_s=1.5, soft_timeout_s=0.3, on_failure=record_failure)
async def soft_limited(ctx: JobContext, *, key: str, swallow: bool) -> str:
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        cleanups.append(f"{key}:past_soft_limit={ctx.past_soft_limit()}")
        if not swallow:
            raise
    await asyncio.sleep(10)  # a job that ignored the warning runs on into the hard limit
    return "unreachable"


SOFT = Registry(specs=(soft_limited,))


async def test_soft_limit_interrupts_the_job_which_may_clean_up(
    resources: Resources, settings: Settings, run_worker: RunWorker
):
    """At the soft limit the job's await is interrupted; it cleans up and is failed with the soft reason."""
    client = JobClient(resources, SOFT.resolved(settings))
    job_id = f"soft-{settings.queue_name}"
    await run_worker(SOFT)
    started = time.monotonic()
    await client.enqueue("probe.soft", job_id=job_id, key=job_id, swallow=False)
    await until_status(client, job_id, JobStatus.FAILED)
    assert 0.3 <= time.monotonic() - started < 1.5
    row = await client.get(job_id)
    assert row is not None and row.error == "SoftTimeLimitExceeded: stopped at the soft time limit of 0.3s"
    assert f"{job_id}:past_soft_limit=True" in cleanups


async def test_hard_limit_stops_a_job_that_ignored_the_soft_one(
    resources: Resources, settings: Settings, run_worker: RunWorker
):
    """A job that swallows the soft-limit warning is still stopped, and reported, at the hard limit."""
    client = JobClient(resources, SOFT.resolved(settings))
    job_id = f"stubborn-{settings.queue_name}"
    await run_worker(SOFT)
    started = time.monotonic()
    await client.enqueue("probe.soft", job_id=job_id, key=job_id, swallow=True)
    await until_status(client, job_id, JobStatus.FAILED)
    assert 1.5 <= time.monotonic() - started < 3
    row = await client.get(job_id)
    assert row is not None and row.error == "JobTimeoutError: stopped at the hard time limit of 1.5s"
    assert f"{job_id}:past_soft_limit=True" in cleanups


async def test_cancel_stops_a_running_job_and_runs_its_hook(
    resources: Resources, settings: Settings, run_worker: RunWorker
):
    """A running job asked to cancel is stopped within the abort poll, ends cancelled, and its hook runs."""
    client = client_for(resources, settings)
    job_id = f"cancel-running-{settings.queue_name}"
    await run_worker(REGISTRY)
    await client.enqueue("probe.record", job_id=job_id, tag="cancel-me", sleep_s=30)
    await until_status(client, job_id, JobStatus.PROCESSING)
    asked = time.monotonic()
    assert await client.request_cancel(job_id) is not None
    await until_status(client, job_id, JobStatus.CANCELLED)
    assert time.monotonic() - asked < 2

    async def hook_ran() -> bool:  # the hook runs right after the row says cancelled
        return (job_id, "cancelled") in failures

    async def off_the_queue() -> bool:  # its finish goes to Redis after the hook
        return await resources.redis.zscore(QueueKeys.of(settings.queue_name).jobs, job_id) is None

    await wait_for(hook_ran, 5)
    await wait_for(off_the_queue, 5)
    assert not any(s["tag"] == "cancel-me" for s in seen)


async def test_cancel_reaches_a_queued_job_without_waiting_for_its_turn(
    resources: Resources, make_settings: MakeSettings, run_worker: RunWorker
):
    """A job queued behind a busy worker is cancelled at once and never runs."""
    settings = make_settings(worker_concurrency=1)
    client = client_for(resources, settings)
    busy, queued = f"busy-{settings.queue_name}", f"queued-{settings.queue_name}"
    await run_worker(REGISTRY, settings)
    await client.enqueue("probe.record", job_id=busy, tag="busy", sleep_s=30)
    await until_status(client, busy, JobStatus.PROCESSING)
    await client.enqueue("probe.record", job_id=queued, tag="never", sleep_s=0)
    await client.request_cancel(queued)
    await until_status(client, queued, JobStatus.CANCELLED, timeout=3)
    assert not any(s["tag"] == "never" for s in seen)
    assert await status_of(client, busy) == JobStatus.PROCESSING
    await client.request_cancel(busy)
    await until_status(client, busy, JobStatus.CANCELLED, timeout=3)


deferrals: dict[str, int] = {}


@job("probe.deferred", retry=RetryPolicy(max_tries=1))
async def deferred(ctx: JobContext, *, key: str, times: int) -> int:
    deferrals[key] = deferrals.get(key, 0) + 1
    if deferrals[key] <= times:
        raise RetryLaterError("provider busy", retry_after_s=0.05)
    return ctx.attempt


async def test_retry_later_does_not_use_up_tries(resources: Resources, settings: Settings, run_worker: RunWorker):
    """A job deferred by a busy shared limit runs again later without spending a try, even with max_tries=1."""
    registry = Registry(specs=(deferred,))
    client = JobClient(resources, registry.resolved(settings))
    job_id = f"deferred-{settings.queue_name}"
    await run_worker(registry)
    await client.enqueue("probe.deferred", job_id=job_id, key=job_id, times=3)
    await until_status(client, job_id, JobStatus.COMPLETED)
    row = await client.get(job_id)
    assert row is not None and (row.attempts, row.result) == (1, 1)
    assert deferrals[job_id] == 4


async def test_a_job_whose_end_redis_lost_is_not_run_again(
    resources: Resources, settings: Settings, run_worker: RunWorker
):
    """A failover can drop the last writes (async replication): a job's finish among them, so the job is back
    in the queue, claimed again. Its row is final in Postgres, the record: it is finished, not run twice."""
    client = client_for(resources, settings)
    job_id = f"lost-finish-{settings.queue_name}"
    await client.enqueue("probe.flaky", job_id=job_id, key=job_id, fail_times=0)
    worker = await run_worker(REGISTRY)
    await until_status(client, job_id, JobStatus.COMPLETED)
    worker.stop()
    await asyncio.sleep(0.5)
    keys = QueueKeys.of(settings.queue_name)
    # Redis as a promoted replica that never got the finish: the job queued, one try used, no result.
    await resources.redis.delete(keys.result(job_id))
    args = {"key": job_id, "fail_times": 0}
    assert await Enqueuer(resources.redis).enqueue(settings.queue_name, job_id, "probe.flaky", args)
    await resources.redis.set(keys.tries(job_id), 1)
    with structlog.testing.capture_logs() as logs:
        await run_worker(REGISTRY)

        async def finished() -> bool:
            return await resources.redis.zscore(keys.jobs, job_id) is None

        await wait_for(finished)
    assert calls[job_id] == 1, "the job ran a second time"
    assert await status_of(client, job_id) == JobStatus.COMPLETED
    assert [e["status"] for e in logs if e["event"] == "job_already_ended"] == ["completed"]
