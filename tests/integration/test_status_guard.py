"""The forward-only guard on `runner_jobs`, against real Postgres: a terminal row is never moved again,
whatever late, repeated or racing write arrives (see runner.store.jobs)."""

from __future__ import annotations

import asyncio
import itertools
import uuid

import asyncpg
import pytest

from runner.resources import Resources
from runner.settings import Settings
from runner.status import ACTIVE, TERMINAL, JobStatus
from runner.store.jobs import JobStore, PendingJob, Transition

MOVES = sorted(set(JobStatus) - {JobStatus.PENDING})  # every status a transition may target


async def row(resources: Resources, job_id: str) -> asyncpg.Record:
    record = await resources.db.fetchrow("SELECT * FROM runner_jobs WHERE job_id = $1", job_id)
    assert record is not None
    return record


async def job_in(resources: Resources, settings: Settings, status: JobStatus) -> str:
    """A fresh job row brought to `status` the way the runner does: pending, processing, then `status`."""
    store = JobStore(resources.db)
    job_id = f"guard-{uuid.uuid4().hex[:8]}"
    assert await store.insert_pending(PendingJob(job_id, "probe.guard", settings.queue_name, {"x": 1}, 3))
    if status is not JobStatus.PENDING:
        assert await store.move(Transition(job_id, JobStatus.PROCESSING, name="probe.guard", attempt=1, max_tries=3))
    if status not in (JobStatus.PENDING, JobStatus.PROCESSING):
        result = {"n": 1} if status is JobStatus.COMPLETED else None
        error = None if status is JobStatus.COMPLETED else f"{status} on purpose"
        assert await store.move(Transition(job_id, status, name="probe.guard", attempt=1, max_tries=3, result=result,
                                           error=error))  # fmt: skip
    return job_id


@pytest.mark.parametrize(("source", "target"), list(itertools.product(sorted(TERMINAL), MOVES)))
async def test_a_terminal_row_is_never_moved_again(
    resources: Resources, settings: Settings, source: JobStatus, target: JobStatus
) -> None:
    """completed, failed and cancelled rows refuse every later move, and keep every column as it was."""
    job_id = await job_in(resources, settings, source)
    before = await row(resources, job_id)
    late = Transition(job_id, target, name="probe.guard", attempt=2, max_tries=3, worker="late-worker",
                      error="late write", result={"late": True})  # fmt: skip
    assert not await JobStore(resources.db).move(late)
    assert dict(await row(resources, job_id)) == dict(before)


@pytest.mark.parametrize(("source", "target"), list(itertools.product(sorted(ACTIVE), MOVES)))
async def test_an_active_row_moves_to_every_later_status(
    resources: Resources, settings: Settings, source: JobStatus, target: JobStatus
) -> None:
    """The guard is not simply shut: from pending, processing or retrying every move is applied."""
    job_id = await job_in(resources, settings, source)
    assert await JobStore(resources.db).move(Transition(job_id, target, name="probe.guard", attempt=2, max_tries=3))
    assert (await row(resources, job_id))["status"] == target.value


async def test_a_late_processing_in_a_later_batch_leaves_completed_alone(
    resources: Resources, settings: Settings
) -> None:
    """A re-run's `processing` arriving in its own batch after `completed` moves nothing back, and the
    other rows of that batch are still written."""
    done = await job_in(resources, settings, JobStatus.COMPLETED)
    other = await job_in(resources, settings, JobStatus.PROCESSING)
    moved = await JobStore(resources.db).move_many([
        Transition(done, JobStatus.PROCESSING, name="probe.guard", attempt=2, max_tries=3, worker="rerun"),
        Transition(other, JobStatus.COMPLETED, name="probe.guard", attempt=1, max_tries=3),
    ])  # fmt: skip
    assert moved == 1
    done_row, other_row = await row(resources, done), await row(resources, other)
    assert (done_row["status"], done_row["attempts"], done_row["worker"]) == ("completed", 1, None)
    assert done_row["result"] is not None and done_row["finished_at"] is not None
    assert other_row["status"] == "completed"


async def test_racing_ends_from_many_connections_leave_exactly_one(resources: Resources, settings: Settings) -> None:
    """Twenty writers racing to end one running job from separate connections: exactly one wins, and the
    row keeps the winner's status and error."""
    job_id = await job_in(resources, settings, JobStatus.PROCESSING)
    ends = [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.RETRYING] * 5
    stores = [JobStore(resources.db) for _ in ends]
    applied = await asyncio.gather(*(
        store.move(Transition(job_id, end, name="probe.guard", attempt=1, max_tries=3, error=f"writer {n}"))
        for n, (store, end) in enumerate(zip(stores, ends, strict=True))
    ))  # fmt: skip
    winners = [n for n, ok in enumerate(applied) if ok]
    terminal_winners = [n for n in winners if ends[n] in TERMINAL]
    assert len(terminal_winners) == 1, (winners, [ends[n] for n in winners])
    final = await row(resources, job_id)
    winner = terminal_winners[0]
    assert final["status"] == ends[winner].value
    assert final["error"] == (None if ends[winner] is JobStatus.COMPLETED else f"writer {winner}")
