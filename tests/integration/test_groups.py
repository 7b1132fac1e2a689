"""Fan-out and join (runner.group): the callback runs once, after every member ended, whichever way."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from runner.broker.keys import QueueKeys
from runner.broker.queue import RedisQueue
from runner.client import JobClient
from runner.context import JobContext
from runner.errors import PermanentError, TransientError
from runner.group import GroupMemberTakenError, JobCall, join_id_for
from runner.registry import Registry, job
from runner.resources import Resources
from runner.retry import RetryPolicy
from runner.settings import Settings
from runner.status import JobStatus
from runner.store.groups import GroupStore, NewGroup
from runner.store.jobs import JobStore, Transition
from runner.worker.execution import JobExecutor
from runner.worker.sweeper import Sweeper
from tests.conftest import RunWorker, wait_for

pytestmark = pytest.mark.also_on_cluster  # the broker's behaviour, again on Redis Cluster


@job("grp.member", retry=RetryPolicy(max_tries=2, base_delay_s=0.01))
async def member(ctx: JobContext, *, value: int, until: float = 0.0, fail: str | None = None) -> int:
    await asyncio.sleep(max(until - time.time(), 0))  # members given one `until` end at the same instant
    if fail == "permanent":
        raise PermanentError(f"member {value} cannot")
    if fail == "transient":
        raise TransientError(f"member {value} timed out", retry_after_s=0.01)
    return value * 10


@job("grp.slow", timeout_s=0.3, soft_timeout_s=0.3)
async def slow(ctx: JobContext, *, seconds: float) -> None:
    await asyncio.sleep(seconds)


@job("grp.join")
async def join(ctx: JobContext, *, tag: str) -> dict[str, Any]:
    """Records each run (Redis list `tag`) with what it saw of its group."""
    group = await ctx.group()
    seen = {
        "ok": group.ok,
        "results": group.results,
        "ends": [(m.position, m.status.value if m.status else None, m.error) for m in group.members],
    }
    await ctx.redis.rpush(tag, orjson.dumps(seen))
    return seen


@job("grp.unknown_to_workers")
async def unknown(ctx: JobContext) -> None:  # only the client knows it: a worker refuses it
    raise AssertionError("never run")


REGISTRY = Registry(specs=(member, slow, join))


def client_for(resources: Resources, settings: Settings) -> JobClient:
    return JobClient(resources, Registry(specs=(*REGISTRY.specs, unknown)).resolved(settings))


def new_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:12]}"


async def runs_of(resources: Resources, tag: str) -> list[dict[str, Any]]:
    return [orjson.loads(raw) for raw in await resources.redis.lrange(tag, 0, -1)]


async def until_joined(client: JobClient, join_ids: list[str], timeout: float = 20) -> None:
    async def all_completed() -> bool:
        rows = [await client.get(j) for j in join_ids]
        return all(r is not None and r.status is JobStatus.COMPLETED for r in rows)

    await wait_for(all_completed, timeout, every=0.05)


async def test_members_ending_at_the_same_instant_run_the_callback_exactly_once(
    resources: Resources, settings: Settings, run_worker: RunWorker
):
    """20 groups of 8 members on 3 workers, every member ending at the same instant: each callback runs
    exactly once, and sees all 8 results."""
    worker_settings = settings.model_copy(update={"worker_concurrency": 60})
    for _ in range(3):
        await run_worker(REGISTRY, worker_settings)
    client = client_for(resources, settings)
    instant = time.time() + 1.5
    handles = await asyncio.gather(*(
        client.enqueue_group([JobCall("grp.member", {"value": n, "until": instant}) for n in range(1, 9)],
                             then=JobCall("grp.join", {"tag": f"{settings.queue_name}:{g}"}), group_id=new_id("same"))
        for g in range(20)
    ))  # fmt: skip
    await until_joined(client, [h.join.job_id for h in handles])
    for g in range(20):
        runs = await runs_of(resources, f"{settings.queue_name}:{g}")
        assert [r["results"] for r in runs] == [[10, 20, 30, 40, 50, 60, 70, 80]], (g, runs)
    ended = await resources.db.fetch(
        "SELECT max(ended_at) - min(ended_at) AS spread FROM runner_group_members WHERE group_id = ANY($1::text[]) "
        "GROUP BY group_id",
        [h.group_id for h in handles],
    )
    print(f"\nmeasured same-instant ends: widest spread within a group {max(r['spread'] for r in ended)}")


async def test_callback_sees_every_way_a_member_can_end(
    resources: Resources, settings: Settings, run_worker: RunWorker
):
    """Completed, failed at once, failed after its retries, stopped at its hard limit, cancelled, and refused
    (a job no worker knows): the callback runs once all six ended, and sees each end and its error."""
    await run_worker(REGISTRY)
    client = client_for(resources, settings)
    tag = f"{settings.queue_name}:kinds"
    members = [
        JobCall("grp.member", {"value": 1}),
        JobCall("grp.member", {"value": 2, "fail": "permanent"}),
        JobCall("grp.member", {"value": 3, "fail": "transient"}),
        JobCall("grp.slow", {"seconds": 5}),
        JobCall("grp.member", {"value": 5, "until": time.time() + 30}),
        JobCall("grp.unknown_to_workers"),
    ]
    handle = await client.enqueue_group(members, then=JobCall("grp.join", {"tag": tag}), group_id=new_id("kinds"))
    assert handle.created and handle.member_ids == tuple(f"{handle.group_id}:{n}" for n in range(1, 7))

    async def fifth_running() -> bool:
        row = await client.get(handle.member_ids[4])
        return row is not None and row.status is JobStatus.PROCESSING

    await wait_for(fifth_running)
    assert await client.get(handle.join.job_id) is None  # no callback while a member runs
    await client.request_cancel(handle.member_ids[4])
    seen = await handle.join.result(timeout=15)
    assert seen["ok"] is False and seen["results"] == [10]
    ends = [tuple(e) for e in seen["ends"]]
    assert ends[:3] == [
        (1, "completed", None),
        (2, "failed", "PermanentError: member 2 cannot"),
        (3, "failed", "TransientError: member 3 timed out"),
    ]
    assert ends[3] == (4, "failed", "JobTimeoutError: stopped at the hard time limit of 0.3s")
    assert ends[4] == (5, "cancelled", "cancelled")
    assert ends[5][:2] == (6, "failed") and "no job named 'grp.unknown_to_workers'" in ends[5][2]
    assert len(await runs_of(resources, tag)) == 1
    outcomes = await handle.outcomes()
    failed = [m.position for m in outcomes.failures if m.status is JobStatus.FAILED]  # the first to end first
    assert set(failed[:2]) == {2, 6} and failed[2:] == [3, 4]
    assert len(outcomes.failures) == 5 and outcomes.results == [10]


async def test_making_a_group_again_pushes_only_what_never_started(
    resources: Resources, settings: Settings, run_worker: RunWorker
):
    """A maker that re-runs gets its group back (created False) and runs nothing twice; a member that
    already exists is refused, and an empty group's callback runs at once."""
    client = client_for(resources, settings)
    group_id, tag = new_id("again"), f"{settings.queue_name}:again"
    calls = [JobCall("grp.member", {"value": n}) for n in (1, 2)]
    first = await client.enqueue_group(calls, then=JobCall("grp.join", {"tag": tag}), group_id=group_id)
    second = await client.enqueue_group(calls, then=JobCall("grp.join", {"tag": tag}), group_id=group_id)
    assert (first.created, second.created, second.member_ids) == (True, False, first.member_ids)
    await run_worker(REGISTRY)
    await first.join.result(timeout=15)
    assert [r["results"] for r in await runs_of(resources, tag)] == [[10, 20]]
    rows = [await client.get(j) for j in first.member_ids]
    assert [(r.status, r.attempts) for r in rows if r] == [(JobStatus.COMPLETED, 1)] * 2
    plain = await client.enqueue("grp.member", job_id=new_id("plain"), value=3)
    for taken, says in ((first.member_ids[0], "already in another group"), (plain.job_id, "exist already")):
        with pytest.raises(GroupMemberTakenError, match=says):
            await client.enqueue_group([JobCall("grp.member", {"value": 1}, job_id=taken)],
                                       then=JobCall("grp.join", {"tag": tag}), group_id=new_id("taken"))  # fmt: skip
    empty = await client.enqueue_group([], then=JobCall("grp.join", {"tag": f"{tag}:empty"}), group_id=new_id("e"))
    assert (await empty.join.result(timeout=15))["ends"] == []


@pytest.fixture
async def sweeper(resources: Resources, settings: Settings) -> AsyncIterator[Sweeper]:
    queue = RedisQueue(resources.redis, queue=settings.queue_name, worker_id="sweeper-test", lease_ttl_s=30)
    async with JobExecutor(resources, None, REGISTRY.resolved(settings), queue, JobStore(resources.db)) as executor:
        yield Sweeper(resources, executor, worker_id="sweeper-test")


async def unpushed_group(resources: Resources, client: JobClient, tag: str, size: int) -> NewGroup:
    """A group written as enqueue_group writes it, whose maker died before pushing any member."""
    group_id = new_id("dead")
    members = [client.pending("grp.member", job_id=f"{group_id}:{n}", kwargs={"value": n}) for n in range(1, size + 1)]
    group = NewGroup(group_id, members, client.pending("grp.join", job_id=join_id_for(group_id), kwargs={"tag": tag}))
    assert (await GroupStore(resources.db).create(group))[0]
    return group


def ended(group: NewGroup, status: JobStatus = JobStatus.COMPLETED) -> list[Transition]:
    return [Transition(m.job_id, status, name=m.name, queue=m.queue, attempt=1, result=n * 10 if n else None)
            for n, m in enumerate(group.members, 1)]  # fmt: skip


async def test_join_unwritten_when_its_writer_died_is_written_by_the_sweeper(
    resources: Resources, settings: Settings, sweeper: Sweeper, run_worker: RunWorker
):
    """The last members' ends committed, then their worker died before writing the join: the next sweep
    writes and pushes it; the callback runs once; later sweeps find nothing to do."""
    client = client_for(resources, settings)
    tag = f"{settings.queue_name}:dead-writer"
    group = await unpushed_group(resources, client, tag, 3)
    applied = await JobStore(resources.db).apply(ended(group))  # as the dead worker's status write did
    assert (applied.moved, applied.ended_groups) == (3, [group.group_id])
    assert await JobStore(resources.db).apply(ended(group)) == type(applied)(0, [])  # a re-run counts nothing
    assert await client.get(group.join.job_id) is None
    assert (await sweeper.sweep_once()).joined == [group.join.job_id]
    assert (await sweeper.sweep_once()).joined == []
    await run_worker(REGISTRY)
    await until_joined(client, [group.join.job_id])
    assert [r["results"] for r in await runs_of(resources, tag)] == [[10, 20, 30]]


async def test_join_written_but_never_pushed_is_enqueued_by_the_sweeper(
    resources: Resources, settings: Settings, sweeper: Sweeper, run_worker: RunWorker
):
    """The join's row committed, then its writer died before the push: the sweeper's re-drive of pending
    rows missing from Redis enqueues it, and the callback runs once."""
    client = client_for(resources, settings)
    tag = f"{settings.queue_name}:dead-pusher"
    group = await unpushed_group(resources, client, tag, 2)
    await JobStore(resources.db).apply(ended(group, JobStatus.FAILED))
    assert [j.job_id for j in await GroupStore(resources.db).write_joins([group.group_id])] == [group.join.job_id]
    assert await GroupStore(resources.db).write_joins([group.group_id]) == []  # written once
    await resources.db.execute(
        "UPDATE runner_jobs SET updated_at = now() - interval '1 hour' WHERE job_id = $1", group.join.job_id
    )
    assert (await sweeper.sweep_once()).requeued == [group.join.job_id]
    await run_worker(REGISTRY)
    await until_joined(client, [group.join.job_id])
    runs = await runs_of(resources, tag)
    assert [r["ends"] for r in runs] == [[[1, "failed", None], [2, "failed", None]]]


async def test_member_lost_after_its_last_try_still_joins(
    resources: Resources, settings: Settings, sweeper: Sweeper, run_worker: RunWorker
):
    """A member whose job vanished from Redis after its last try is failed by the sweeper, and that end
    joins its group like any other."""
    client = client_for(resources, settings)
    tag = f"{settings.queue_name}:lost"
    handle = await client.enqueue_group([JobCall("grp.member", {"value": 1})], then=JobCall("grp.join", {"tag": tag}),
                                        group_id=new_id("lost"))  # fmt: skip
    lost = handle.member_ids[0]
    keys = QueueKeys.of(settings.queue_name)
    await resources.redis.delete(keys.job(lost))
    await resources.redis.zrem(keys.jobs, lost)
    await resources.db.execute(
        "UPDATE runner_jobs SET status = 'processing', attempts = max_tries, updated_at = now() - interval '1 hour' "
        "WHERE job_id = $1",
        lost,
    )
    assert (await sweeper.sweep_once()).failed == [lost]
    await run_worker(REGISTRY)
    seen = await handle.join.result(timeout=15)
    assert seen["ends"][0][:2] == [1, "failed"] and "lost from the queue" in seen["ends"][0][2]
