"""The enqueue client: records a job's `pending` row, then puts the job in Redis under a deterministic id.

Enqueueing the same job id twice runs the job once: the row insert and arq's enqueue both refuse a second
copy. Callers that write their own rows in the same transaction use `record()` inside it and `push()`
after commit, so no worker can start a job whose rows are not yet visible.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from runner import tracing
from runner.broker.enqueue import Enqueuer
from runner.broker.keys import QueueKeys
from runner.broker.queue import request_abort
from runner.context import CURRENT_JOB_ID
from runner.errors import JobArgumentsError, JobFailedError, ResourceNotOpenError
from runner.group import GroupHandle, JobCall
from runner.priority import check_priority
from runner.registry import JobSpec
from runner.resources import Resources
from runner.status import TERMINAL, JobStatus
from runner.store.groups import GroupResults, GroupStore, NewGroup, join_id_for
from runner.store.jobs import Connection, JobRow, JobStore, PendingJob, has_nul
from runner.unique import Unique, UniqueMode, UniqueOutcome

__all__ = ["EnqueueResult", "JobClient"]


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    """What an enqueue did, and a handle on the job: `await result.status()`, `await result.result(timeout=...)`
    (the job's return value; raises JobFailedError if it failed or was cancelled), `await result.cancel()`."""

    job_id: str
    recorded: bool  # a new status row was written
    queued: bool  # a new job entered Redis (False: one with this id was queued or finished already)
    client: JobClient | None = field(default=None, repr=False, compare=False)
    # Unique jobs (runner/unique.py): `job_id` is then the id of the job holding the key.
    deduplicated: bool = False  # the key's job was returned; nothing was enqueued or recorded
    debounced: bool = False  # the key's waiting job took these arguments and a start `unique_for_s` from now

    async def status(self) -> JobStatus | None:
        """The job's status now (from its row); None if it has no row."""
        row = await self._client().get(self.job_id)
        return row.status if row is not None else None

    async def result(self, timeout: float | None = None, *, poll_s: float = 0.05) -> Any:  # noqa: ASYNC109 - as Celery and arq ask
        """Wait for the job to end and return its result; raise JobFailedError if it ended failed or cancelled,
        TimeoutError if it has not ended within `timeout` seconds (None: wait as long as it takes)."""
        client = self._client()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            row = await client.get(self.job_id)
            if row is not None and row.status in TERMINAL:
                if row.status is JobStatus.COMPLETED:
                    return row.result
                raise JobFailedError(self.job_id, row.status.value, row.error)
            if deadline is not None and time.monotonic() >= deadline:
                now = row.status.value if row is not None else "unrecorded"
                raise TimeoutError(f"job {self.job_id!r} is still {now} after {timeout:g}s")
            wait = poll_s if deadline is None else min(poll_s, max(deadline - time.monotonic(), 0.0))
            await asyncio.sleep(wait)
            poll_s = min(poll_s * 2, 0.5)  # a quick job answers at once; a long one costs a read every 0.5 s

    async def cancel(self) -> JobRow | None:
        """Ask the workers to stop the job (see JobClient.request_cancel); its row as it is now."""
        return await self._client().request_cancel(self.job_id)

    def _client(self) -> JobClient:
        if self.client is None:
            raise ResourceNotOpenError("this EnqueueResult has no client: make it with JobClient.enqueue")
        return self.client


class JobClient:
    """Enqueue jobs and read their status. Borrows the process's resources."""

    def __init__(self, resources: Resources, specs: dict[str, JobSpec]) -> None:
        self._resources = resources
        self._specs = specs
        self.store = JobStore(resources.db)
        self._enqueuer = Enqueuer(resources.redis)

    def spec(self, name: str) -> JobSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise KeyError(f"no job named {name!r}; known jobs: {sorted(self._specs)}") from None

    async def enqueue(
        self, name: str, *, job_id: str | None = None, queue: str | None = None, priority: int | None = None,
        unique_key: str | None = None, unique_for_s: float | None = None, unique_mode: UniqueMode | None = None,
        **kwargs: Any,
    ) -> EnqueueResult:  # fmt: skip
        """Push, then record, for callers with no rows of their own that the job must see.

        The push goes first, alone: the row insert and the worker's first status write commute (the
        insert does nothing if the worker got there first), so the job need not wait for the row, and
        sending both at once measurably delays the job's start on a small machine (the database's
        wake-up competes with the worker's). A push that fails raises before any row is written.

        No `job_id`: a random one. `queue`, `priority` (0-9, higher first: runner.priority): the job's own
        (`@job(queue=..., priority=...)`) unless given. `unique_key` (or the job's `@job(unique=...)`): one job
        per key within `unique_for_s`, deduplicated or debounced by `unique_mode` (see runner.unique)."""
        job_id = job_id or uuid.uuid4().hex
        job = self.pending(name, job_id=job_id, kwargs=kwargs, queue=queue)  # refuses bad arguments before any write
        priority = self.spec(name).priority if priority is None else check_priority(priority)
        unique = self._unique(name, kwargs, unique_key, unique_for_s, unique_mode)
        if unique is not None:
            return await self._enqueue_unique(job, unique, priority)
        with tracing.enqueue_span(name, job_id=job_id, queue=job.queue):
            queued = await self._enqueuer.enqueue(
                job.queue, job_id, name, kwargs, meta=_meta(job.parent_id), priority=priority
            )
            recorded = await self.store.insert_pending(job)
        return EnqueueResult(job_id, recorded, queued, self)

    def _unique(
        self, name: str, kwargs: dict[str, Any], key: str | None, for_s: float | None, mode: UniqueMode | None
    ) -> tuple[str, Unique] | None:
        """The key and rule of a unique enqueue: the call's own, else the job's declared one; None if neither."""
        declared = self.spec(name).unique
        if declared is None:
            if key is None and for_s is None and mode is None:
                return None
            if not key or for_s is None:
                raise ValueError(f"job {name!r} declares no unique key: pass both unique_key and unique_for_s")
            return key, Unique(key, for_s, mode or "dedupe")
        rule = Unique(declared.key, declared.for_s if for_s is None else for_s, mode or declared.mode)
        return key or declared.key_for(name, {**_defaults(self.spec(name).coroutine), **kwargs}), rule

    async def _enqueue_unique(self, job: PendingJob, unique: tuple[str, Unique], priority: int) -> EnqueueResult:
        """One script call decides (see runner.unique); then the row: a new job's inserted, a debounced
        job's given the new arguments, a deduplicated enqueue's none (no row is left `pending` behind)."""
        key, rule = unique
        with tracing.enqueue_span(job.name, job_id=job.job_id, queue=job.queue):
            outcome, holder, takeover = await self._enqueuer.enqueue_unique(
                job.queue, job.job_id, job.name, job.args, key=key, for_s=rule.for_s, mode=rule.mode,
                meta=_meta(job.parent_id), priority=priority,
            )  # fmt: skip
            if outcome is UniqueOutcome.DEDUPLICATED:
                return EnqueueResult(holder, False, False, self, deduplicated=True)
            if outcome is UniqueOutcome.DEBOUNCED:
                await self.store.replace_pending(replace(job, job_id=holder), takeover=takeover)
                return EnqueueResult(holder, False, False, self, debounced=True)
            recorded = await self.store.insert_pending(job)
        return EnqueueResult(job.job_id, recorded, outcome is UniqueOutcome.QUEUED, self)

    async def record(self, name: str, *, job_id: str, kwargs: dict[str, Any], conn: Connection | None = None) -> bool:
        """Validate the arguments and write the `pending` row (in `conn`'s transaction if given)."""
        return await self.store.insert_pending(self.pending(name, job_id=job_id, kwargs=kwargs), conn=conn)

    def pending(self, name: str, *, job_id: str, kwargs: dict[str, Any], queue: str | None = None) -> PendingJob:
        """The job's pending row, its arguments validated: for `record()`, or for a caller to write with
        its own rows in one statement (then call `push()` once that statement has committed)."""
        spec = self.spec(name)
        spec.bind((), kwargs)
        if "\x00" in job_id or has_nul(orjson.dumps(kwargs)):
            raise JobArgumentsError(
                f"job {name!r}: its id and arguments must not contain NUL (\\u0000): Postgres cannot store it"
            )
        queue = queue or spec.queue
        assert queue is not None
        QueueKeys.of(queue)  # refuses a name that cannot be a queue before any write
        return PendingJob(job_id, name, queue, kwargs, spec.max_tries, parent_id=CURRENT_JOB_ID.get())

    async def push(
        self, name: str, *, job_id: str, kwargs: dict[str, Any], queue: str | None = None, priority: int | None = None
    ) -> bool:
        """Put the job in Redis (on `queue`, else the job's own); False if a job with this id is queued, running
        or recently finished."""
        spec = self.spec(name)
        queue = queue or spec.queue
        assert queue is not None
        priority = spec.priority if priority is None else check_priority(priority)
        with tracing.enqueue_span(name, job_id=job_id, queue=queue):
            return await self._enqueuer.enqueue(
                queue, job_id, name, kwargs, meta=_meta(CURRENT_JOB_ID.get()), priority=priority
            )

    async def request_cancel(self, job_id: str) -> JobRow | None:
        """Ask the workers to cancel `job_id`; the row says `cancelled` once one has.

        Returns the row as it is now (None if there is no such job); a finished job is left as it is."""
        row = await self.store.get(job_id)
        if row is not None and row.status not in TERMINAL:
            await request_abort(self._resources.redis, row.queue, job_id)
        return row

    async def get(self, job_id: str) -> JobRow | None:
        return await self.store.get(job_id)

    # --- Fan-out and join (runner/group.py) ---------------------------------------------------------------

    async def enqueue_group(
        self, members: Sequence[JobCall], *, then: JobCall, group_id: str | None = None
    ) -> GroupHandle:
        """Enqueue `members`, and `then`, a callback run once when every member has ended (see runner.group).
        The group and its members' rows are written in one transaction, then the members are pushed.

        No `group_id`: a random one. Inside a job, give one made from the job's work, so that a re-run of
        the job finds its group (and pushes only what never started) instead of making a second one."""
        group_id = group_id or f"group:{uuid.uuid4().hex}"
        jobs = [self.pending(m.name, job_id=m.job_id or f"{group_id}:{n}", kwargs=dict(m.kwargs))
                for n, m in enumerate(members, 1)]  # fmt: skip
        join = self.pending(then.name, job_id=join_id_for(group_id), kwargs=dict(then.kwargs))
        ids = [j.job_id for j in jobs]
        if then.job_id not in (None, join.job_id) or len({*ids, join.job_id}) != len(ids) + 1:
            raise ValueError(f"group {group_id!r}: member ids must differ from each other and from the "
                             f"callback's {join.job_id!r} (always <group_id>:join); got {ids}")  # fmt: skip
        group = NewGroup(group_id, jobs, join, parent_id=CURRENT_JOB_ID.get())
        created, to_push = await GroupStore(self._resources.db).create(group)
        await asyncio.gather(*(self.push(j.name, job_id=j.job_id, kwargs=j.args, queue=j.queue) for j in to_push))
        return GroupHandle(group_id, tuple(ids), EnqueueResult(join.job_id, False, False, self), created, self)

    async def cancel_group(self, group_id: str) -> list[str]:
        """Ask the workers to stop the group's members that have not ended; their ids."""
        running = await GroupStore(self._resources.db).running(group_id)
        await asyncio.gather(*(self.request_cancel(job_id) for job_id in running))
        return running

    async def group_results(self, group_id: str) -> GroupResults | None:
        """The group's members and how each has ended so far; None if there is no such group."""
        return await GroupStore(self._resources.db).results(group_id)


def _defaults(coroutine: Any) -> dict[str, Any]:
    """A job's parameters that have defaults, with them (a unique key may name one the enqueue left out)."""
    return {n: p.default for n, p in inspect.signature(coroutine).parameters.items() if p.default is not p.empty}


def _meta(parent_id: str | None) -> dict[str, str] | None:
    """The envelope's metadata: the enqueuing job, and with tracing on the enqueue span's trace context."""
    meta = {"parent": parent_id} if parent_id else None
    if tracing.enabled():
        meta = {**(meta or {}), **tracing.inject()} or None
    return meta
