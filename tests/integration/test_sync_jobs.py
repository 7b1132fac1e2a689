"""Blocking code, kept off the event loop: `ctx.run_sync` and plain `def` jobs run in the worker's threads,
with the job's fields in their logs, arguments validated and time limits still ending the job."""

from __future__ import annotations

import threading
import time
from typing import Any

import structlog

from runner.client import JobClient
from runner.context import JobContext
from runner.registry import Registry, job
from runner.resources import Resources
from runner.settings import Settings
from runner.status import JobStatus
from tests.conftest import RunWorker, wait_for

release = threading.Event()
finished_order: list[str] = []


@job("sync.blocking")
def blocking(ctx: JobContext, *, label: str) -> dict[str, Any]:
    """A sync SDK call, say: blocks its thread until released."""
    release.wait(10)
    finished_order.append(label)
    return {"job_id": structlog.contextvars.get_contextvars().get("job_id"), "thread": threading.current_thread().name,
            "attempt": ctx.attempt}  # fmt: skip


@job("sync.quick")
async def quick(ctx: JobContext, *, label: str) -> int:
    finished_order.append(label)
    return await ctx.run_sync(sum, [1, 2, 3])


@job("sync.stuck", timeout_s=0.3, soft_timeout_s=0.3)
def stuck(ctx: JobContext, *, seconds: float) -> None:
    time.sleep(seconds)


REGISTRY = Registry(specs=(blocking, quick, stuck))


async def until(client: JobClient, job_id: str, status: JobStatus) -> None:
    async def check() -> bool:
        row = await client.get(job_id)
        return row is not None and row.status is status

    await wait_for(check)


async def test_a_blocking_job_leaves_the_loop_free(resources: Resources, settings: Settings, run_worker: RunWorker):
    """While a plain `def` job blocks its thread, an async job enqueued after it runs and ends first."""
    client = JobClient(resources, REGISTRY.resolved(settings))
    release.clear()
    await run_worker(REGISTRY)
    await client.enqueue("sync.blocking", job_id="slow", label="slow")
    await until(client, "slow", JobStatus.PROCESSING)
    await client.enqueue("sync.quick", job_id="fast", label="fast")
    await until(client, "fast", JobStatus.COMPLETED)
    release.set()
    await until(client, "slow", JobStatus.COMPLETED)
    assert finished_order[-2:] == ["fast", "slow"]
    slow, fast = await client.get("slow"), await client.get("fast")
    assert slow is not None and fast is not None and fast.result == 6
    assert slow.result["job_id"] == "slow" and slow.result["attempt"] == 1  # the job's log fields, in its thread
    assert slow.result["thread"].startswith("job-sync")


async def test_a_blocking_job_still_has_its_arguments_checked(
    resources: Resources, settings: Settings, run_worker: RunWorker
):
    client = JobClient(resources, REGISTRY.resolved(settings))
    await run_worker(REGISTRY)
    await client.push("sync.blocking", job_id="bad", kwargs={"lable": "typo"})
    await until(client, "bad", JobStatus.FAILED)
    row = await client.get("bad")
    assert row is not None and "unknown: ['lable'], missing: ['label']" in (row.error or "")


async def test_the_hard_limit_ends_a_blocking_job(resources: Resources, settings: Settings, run_worker: RunWorker):
    """The job fails at its limit and its slot is free again; the thread itself runs on to its end."""
    client = JobClient(resources, REGISTRY.resolved(settings))
    await run_worker(REGISTRY, settings.model_copy(update={"job_max_tries": 1}))
    await client.enqueue("sync.stuck", job_id="stuck", seconds=1.5)
    await until(client, "stuck", JobStatus.FAILED)
    row = await client.get("stuck")
    assert row is not None and row.error == "JobTimeoutError: stopped at the hard time limit of 0.3s"
