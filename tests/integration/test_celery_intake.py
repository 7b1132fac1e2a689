"""Unchanged Celery producers against this runner: a real Celery 5.7 client (its own venv) sends tasks as
the old backend did; the Celery intake takes them in, the worker runs them, and the client's AsyncResult
sees STARTED, then SUCCESS with the result or FAILURE with the error. Nothing is ever unpickled."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from typing import Any

import orjson
import pytest

from runner.broker.keys import CeleryKeys, QueueKeys
from runner.context import JobContext
from runner.errors import PermanentError, TransientError
from runner.registry import Registry, job
from runner.resources import Resources
from runner.retry import RetryPolicy
from runner.settings import Settings
from runner.status import JobStatus
from runner.store.jobs import JobStore
from tests.conftest import Celery, MakeSettings, RunIntake, RunWorker, wait_for

ran: list[str] = []


@job("legacy.add", positional=("x", "y"))
async def add(ctx: JobContext, *, x: int, y: int) -> int:
    ran.append(ctx.job_id)
    return x + y


@job("legacy.fail")
async def fail(ctx: JobContext, *, why: str) -> None:
    raise PermanentError(why)


@job("legacy.flaky", retry=RetryPolicy(max_tries=2, base_delay_s=1.5, jitter=0))
async def flaky(ctx: JobContext, *, key: str) -> str:
    if ctx.attempt == 1:
        raise TransientError("upstream hiccup")
    return f"{key} on attempt {ctx.attempt}"


@job("legacy.sleep")
async def sleep(ctx: JobContext, *, seconds: float) -> None:
    await asyncio.sleep(seconds)


REGISTRY = Registry(specs=(add, fail, flaky, sleep))


@pytest.fixture
def settings(make_settings: MakeSettings) -> Settings:
    return make_settings(celery_intake=True, celery_result_expires_s=600)


def call(how: str, name: str, *args: Any, **options: Any) -> dict[str, Any]:
    return {"how": how, "name": name, "args": list(args), **options}


async def test_delay_send_task_and_get_see_started_then_the_result(
    celery: Celery, run_intake: RunIntake, run_worker: RunWorker, resources: Resources
):
    await run_intake(REGISTRY)
    await run_worker(REGISTRY)
    delayed, sent = await celery("send", orjson.dumps([call("delay", "legacy.add", 2, 3),
                                                       call("send_task", "legacy.add", 10, 20)]).decode())  # fmt: skip
    first, second = await asyncio.gather(celery("get", delayed, "20"), celery("get", sent, "20"))
    assert first["result"] == 5 and second["result"] == 30
    assert first["states"][-1] == "SUCCESS"
    row = await JobStore(resources.db).get(delayed)  # keyed by the Celery task id
    assert row is not None and row.status is JobStatus.COMPLETED and row.args == {"x": 2, "y": 3}
    assert row.result == 5


async def test_the_sender_sees_started_while_it_runs(
    celery: Celery, run_intake: RunIntake, run_worker: RunWorker, settings: Settings
):
    """task_track_started: STARTED is written when the job starts, before SUCCESS."""

    @job("legacy.slow")
    async def slow(ctx: JobContext, *, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "done"

    registry = Registry(specs=(slow,))
    await run_intake(registry)
    await run_worker(registry)
    [task_id] = await celery("send", orjson.dumps([call("delay", "legacy.slow", 3.0)]).decode())
    got = await celery("get", task_id, "20")
    assert got["result"] == "done" and got["states"][-2:] == ["STARTED", "SUCCESS"]


async def test_a_failure_reaches_get_with_its_type_message_and_traceback(
    celery: Celery, run_intake: RunIntake, run_worker: RunWorker
):
    await run_intake(REGISTRY)
    await run_worker(REGISTRY)
    sent = [call("delay", "legacy.fail", "the moon is made of cheese")]
    [task_id] = await celery("send", orjson.dumps(sent).decode())
    got = await celery("get", task_id, "20")
    assert got["error_type"] == "PermanentError" and got["error"] == "the moon is made of cheese"
    assert "Traceback (most recent call last)" in got["traceback"] and "raise PermanentError(why)" in got["traceback"]
    assert got["states"][-1] == "FAILURE"


async def test_countdown_and_priority_are_honoured(
    celery: Celery, run_intake: RunIntake, run_worker: RunWorker, settings: Settings, resources: Resources
):
    """All sent before the intake starts: the priority-0 task is taken first, the countdown one waits."""
    before = len(ran)
    low, high, later = await celery("send", orjson.dumps([
        call("apply_async", "legacy.add", 1, 1, priority=9),
        call("apply_async", "legacy.add", 2, 2, priority=0),
        call("apply_async", "legacy.add", 3, 3, countdown=3),
    ]).decode())  # fmt: skip
    lists = CeleryKeys(settings.queue_name).lists
    assert await resources.redis.llen(lists[0]) == 2 and await resources.redis.llen(lists[3]) == 1
    await run_intake(REGISTRY)
    store = JobStore(resources.db)
    await wait_for(lambda: _rows_exist(resources, [low, high, later]))
    row = await store.get(later)
    assert row is not None and row.status is JobStatus.PENDING  # deferred by its countdown
    await run_worker(REGISTRY, settings.model_copy(update={"worker_concurrency": 1}))
    got = await asyncio.gather(*(celery("get", t, "20") for t in (low, high)))
    assert [g["result"] for g in got] == [2, 4]
    assert ran[before:before + 2] == [high, low]  # fmt: skip
    assert (await celery("get", later, "20"))["result"] == 6
    done = await store.get(later)
    assert done is not None and done.started_at is not None and (done.started_at - done.enqueued_at).total_seconds() > 1


async def test_unknown_names_pickles_and_bad_arguments_are_refused_where_the_sender_looks(
    celery: Celery, run_intake: RunIntake, resources: Resources
):
    await run_intake(REGISTRY)
    unknown, pickled, wrong = await celery("send", orjson.dumps([
        call("delay", "no.such.task", 1),
        call("delay", "legacy.add", 1, 2, serializer="pickle"),
        call("delay", "legacy.add", 1, 2, 3),
    ]).decode())  # fmt: skip
    got = {t: await celery("get", t, "20") for t in (unknown, pickled, wrong)}
    assert got[unknown]["error_type"] == "NotRegistered" and "no.such.task" in got[unknown]["error"]
    assert got[pickled]["error_type"] == "ContentDisallowed"
    assert "JSON only and never unpickles" in got[pickled]["error"]
    assert got[wrong]["error_type"] == "TypeError" and "at most 2 positional" in got[wrong]["error"]
    rows = {t: await JobStore(resources.db).get(t) for t in got}
    assert all(r is not None and r.status is JobStatus.FAILED and (r.error or "").startswith("refused:")
               for r in rows.values())  # fmt: skip


async def test_a_message_cut_short_is_redriven_and_runs_once(
    run_intake: RunIntake, run_worker: RunWorker, settings: Settings, resources: Resources, celery: Celery
):
    """What a SIGKILL leaves behind at each step: a message in the processing list, alone (killed right
    after the claim) and with its row and job already written (killed before removing it). A new intake
    re-drives both; each runs exactly once and the processing list is empty after."""
    [claimed, enqueued] = await celery("send", orjson.dumps([call("delay", "legacy.add", 4, 4),
                                                             call("delay", "legacy.add", 5, 5)]).decode())  # fmt: skip
    lists, processing = CeleryKeys(settings.queue_name).lists, QueueKeys.of(settings.queue_name).celery_intake
    first = await run_intake(REGISTRY)  # takes both, then we undo as a crash would leave it
    await wait_for(lambda: _rows_exist(resources, [claimed, enqueued]))
    first.stop()
    raw = await resources.redis.lrange(lists[0], 0, -1)
    assert raw == []  # both were taken
    # Put both messages back into the processing list, as if the intake had died holding them.
    for task_id in (claimed, enqueued):
        await resources.redis.lpush(processing, _message(task_id, "legacy.add", [int(task_id == enqueued) + 4] * 2))
    await JobStore(resources.db).forget_pending(claimed)  # "killed right after the claim": no row yet
    await resources.redis.delete(QueueKeys.of(settings.queue_name).job(claimed))
    await resources.redis.zrem(QueueKeys.of(settings.queue_name).jobs, claimed)
    before = list(ran)
    await asyncio.sleep(0.3)
    await run_intake(REGISTRY)
    await run_worker(REGISTRY)
    results = await asyncio.gather(celery("get", claimed, "20"), celery("get", enqueued, "20"))
    assert [r["result"] for r in results] == [8, 10]
    await asyncio.sleep(0.5)
    assert sorted(j for j in ran if j not in before) == sorted([claimed, enqueued])
    assert await resources.redis.llen(processing) == 0


async def _rows_exist(resources: Resources, ids: list[str]) -> bool:
    return all([await JobStore(resources.db).get(i) is not None for i in ids])


def _message(task_id: str, name: str, args: list[Any]) -> bytes:
    """A Celery protocol 2 message as kombu's Redis transport writes it (JSON body, base64, no compression)."""
    import base64

    body = orjson.dumps([args, {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}])
    return orjson.dumps({
        "body": base64.b64encode(body).decode(), "content-encoding": "utf-8", "content-type": "application/json",
        "headers": {"lang": "py", "task": name, "id": task_id, "eta": None, "expires": None, "retries": 0,
                    "root_id": task_id, "parent_id": None, "group": None},
        "properties": {"correlation_id": task_id, "delivery_mode": 2, "priority": 0, "body_encoding": "base64",
                       "delivery_tag": str(uuid.uuid4()), "delivery_info": {"exchange": "", "routing_key": "q"}},
    })  # fmt: skip


async def test_retry_cancel_and_expiry_reach_the_sender(
    celery: Celery, run_intake: RunIntake, run_worker: RunWorker, resources: Resources, settings: Settings
):
    """RETRY between tries, REVOKED for a job cancelled through the runner and for one that expired unrun."""
    await run_intake(REGISTRY)
    await run_worker(REGISTRY)
    flaky_id, sleeper, expired = await celery("send", orjson.dumps([
        call("delay", "legacy.flaky", "k"),
        call("delay", "legacy.sleep", 30),
        call("apply_async", "legacy.add", 1, 1, expires="2000-01-01T00:00:00+00:00"),
    ]).decode())  # fmt: skip

    async def state(task_id: str) -> str | None:
        raw = await resources.redis.get(CeleryKeys.meta(task_id))
        return orjson.loads(raw)["status"] if raw else None

    await wait_for(lambda: _is(state(flaky_id), "RETRY"))
    assert (await celery("get", flaky_id, "20"))["result"] == "k on attempt 2"

    await wait_for(lambda: _is(state(sleeper), "STARTED"))
    from runner.ops.jobs import cancel_job

    await cancel_job(resources.redis, resources.db, sleeper)
    cancelled = await celery("get", sleeper, "20")
    assert cancelled["error_type"] == "TaskRevokedError" and cancelled["error_module"] == "celery.exceptions"

    gone = await celery("get", expired, "20")
    assert gone["error_type"] == "TaskRevokedError" and "expired" in gone["error"]
    row = await JobStore(resources.db).get(expired)
    assert row is not None and row.status is JobStatus.CANCELLED


async def _is(value: Awaitable[str | None], wanted: str) -> bool:
    return await value == wanted
