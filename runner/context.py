"""The typed context a job receives as its first argument."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar

import asyncpg
import httpx
import structlog

from runner.broker.connection import RedisClient
from runner.errors import PermanentError
from runner.resources import Resources
from runner.settings import Settings
from runner.store.groups import GroupResults, GroupStore

if TYPE_CHECKING:
    from collections.abc import Sequence

    from runner.client import EnqueueResult
    from runner.group import GroupHandle, JobCall
    from runner.store.jobs import JobRow

__all__ = ["CURRENT_JOB_ID", "JobActions", "JobContext"]

P = ParamSpec("P")
R = TypeVar("R")

# The job whose task this is (set by the worker for each job it runs): what a job enqueues names it as parent.
CURRENT_JOB_ID: ContextVar[str | None] = ContextVar("runner_current_job_id", default=None)


class JobActions(Protocol):
    """What a running job may do with other jobs (the worker's JobClient does it)."""

    async def enqueue(self, name: str, *, job_id: str, **kwargs: Any) -> EnqueueResult:
        """Enqueue a follow-up job, recorded and deduplicated by id like the API's."""
        ...

    async def request_cancel(self, job_id: str) -> JobRow | None:
        """Ask the workers to stop a job; the row as it is now, or None if there is no such job."""
        ...

    async def get(self, job_id: str) -> JobRow | None:
        """A job's status row."""
        ...

    async def enqueue_group(
        self, members: Sequence[JobCall], *, then: JobCall, group_id: str | None = None
    ) -> GroupHandle:
        """Enqueue a group of jobs and a callback run once when all have ended (see runner.group)."""
        ...

    async def cancel_group(self, group_id: str) -> list[str]:
        """Ask the workers to stop the group's members that have not ended; their ids."""
        ...

    async def group_results(self, group_id: str) -> GroupResults | None:
        """The group's members and how each has ended so far; None if there is no such group."""
        ...


@dataclass(frozen=True)
class JobContext:
    """What a running job may use: the process's resources (borrowed, never closed by the job), the
    services its registry opened, and facts about this run. `log` is bound to the job's ids."""

    resources: Resources
    services: Any
    job_id: str
    job_name: str
    attempt: int
    max_tries: int
    enqueued_at: datetime
    worker_id: str
    kwargs: Mapping[str, Any]
    log: structlog.stdlib.BoundLogger
    jobs: JobActions  # to enqueue, cancel and look up other jobs
    soft_deadline: float = float("inf")  # time.monotonic() of the soft time limit
    sync_pool: Executor | None = None  # the worker's threads for blocking code (None: the loop's default)

    async def run_sync(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run blocking code (a sync SDK, file or CPU work) in one of the worker's threads, so the event
        loop and the other jobs keep running; its log lines keep the job's fields.

        The job's time limits still end the job: at the hard limit it fails with JobTimeoutError and its
        slot is freed. Python cannot stop a thread, so the function itself runs on to its end in the
        background and its result is dropped; give blocking calls their own timeouts too."""
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self.sync_pool, call)

    async def group(self) -> GroupResults:
        """For a group's join callback (runner.group): every member and how it ended, in member order."""
        groups = GroupStore(self.db)
        group_id = await groups.group_of_join(self.job_id)
        results = await groups.results(group_id) if group_id is not None else None
        if results is None:
            raise PermanentError(f"job {self.job_id!r} is no group's join callback: only the `then` job of "
                                 "enqueue_group can read a group's ends with ctx.group()")  # fmt: skip
        return results

    def past_soft_limit(self) -> bool:
        """True once the soft limit has passed: the cancellation the job sees is the runner's warning,
        not a shutdown. Clean up and re-raise; swallowing it lets the job run on until the hard limit."""
        return time.monotonic() >= self.soft_deadline

    @property
    def settings(self) -> Settings:
        return self.resources.settings

    @property
    def db(self) -> asyncpg.Pool:
        return self.resources.db

    @property
    def redis(self) -> RedisClient:
        return self.resources.redis

    @property
    def http(self) -> httpx.AsyncClient:
        return self.resources.http

    @property
    def is_last_try(self) -> bool:
        return self.attempt >= self.max_tries
