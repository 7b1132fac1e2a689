"""The enqueue client: records a job's `pending` row, then puts the job in Redis under a deterministic id.

Enqueueing the same job id twice runs the job once: the row insert and arq's enqueue both refuse a second
copy. Callers that write their own rows in the same transaction use `record()` inside it and `push()`
after commit, so no worker can start a job whose rows are not yet visible.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from runner import tracing
from runner.broker.enqueue import Enqueuer
from runner.broker.queue import request_abort
from runner.context import CURRENT_JOB_ID
from runner.errors import JobFailedError, ResourceNotOpenError
from runner.registry import JobSpec
from runner.resources import Resources
from runner.status import TERMINAL, JobStatus
from runner.store.jobs import Connection, JobRow, JobStore, PendingJob

__all__ = ["EnqueueResult", "JobClient"]


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    """What an enqueue did, and a handle on the job: `await result.status()`, `await result.result(timeout=...)`
    (the job's return value; raises JobFailedError if it failed or was cancelled), `await result.cancel()`."""

    job_id: str
    recorded: bool  # a new status row was written
    queued: bool  # a new job entered Redis (False: one with this id was queued or finished already)
    client: JobClient | None = field(default=None, repr=False, compare=False)

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

    async def enqueue(self, name: str, *, job_id: str, **kwargs: Any) -> EnqueueResult:
        """Push, then record, for callers with no rows of their own that the job must see.

        The push goes first, alone: the row insert and the worker's first status write commute (the
        insert does nothing if the worker got there first), so the job need not wait for the row, and
        sending both at once measurably delays the job's start on a small machine (the database's
        wake-up competes with the worker's). A push that fails raises before any row is written."""
        job = self.pending(name, job_id=job_id, kwargs=kwargs)  # refuses bad arguments before any write
        with tracing.enqueue_span(name, job_id=job_id, queue=job.queue):
            queued = await self._enqueuer.enqueue(job.queue, job_id, name, kwargs, meta=_meta(job.parent_id))
            recorded = await self.store.insert_pending(job)
        return EnqueueResult(job_id, recorded, queued, self)

    async def record(self, name: str, *, job_id: str, kwargs: dict[str, Any], conn: Connection | None = None) -> bool:
        """Validate the arguments and write the `pending` row (in `conn`'s transaction if given)."""
        return await self.store.insert_pending(self.pending(name, job_id=job_id, kwargs=kwargs), conn=conn)

    def pending(self, name: str, *, job_id: str, kwargs: dict[str, Any]) -> PendingJob:
        """The job's pending row, its arguments validated: for `record()`, or for a caller to write with
        its own rows in one statement (then call `push()` once that statement has committed)."""
        spec = self.spec(name)
        spec.bind((), kwargs)
        assert spec.queue is not None
        return PendingJob(job_id, name, spec.queue, kwargs, spec.max_tries, parent_id=CURRENT_JOB_ID.get())

    async def push(self, name: str, *, job_id: str, kwargs: dict[str, Any]) -> bool:
        """Put the job in Redis; False if a job with this id is queued, running or recently finished."""
        queue = self.spec(name).queue
        assert queue is not None
        with tracing.enqueue_span(name, job_id=job_id, queue=queue):
            return await self._enqueuer.enqueue(queue, job_id, name, kwargs, meta=_meta(CURRENT_JOB_ID.get()))

    async def request_cancel(self, job_id: str) -> JobRow | None:
        """Ask the workers to cancel `job_id`; the row says `cancelled` once one has.

        Returns the row as it is now (None if there is no such job); a finished job is left as it is."""
        row = await self.store.get(job_id)
        if row is not None and row.status not in TERMINAL:
            await request_abort(self._resources.redis, row.queue, job_id)
        return row

    async def get(self, job_id: str) -> JobRow | None:
        return await self.store.get(job_id)


def _meta(parent_id: str | None) -> dict[str, str] | None:
    """The envelope's metadata: the enqueuing job, and with tracing on the enqueue span's trace context."""
    meta = {"parent": parent_id} if parent_id else None
    if tracing.enabled():
        meta = {**(meta or {}), **tracing.inject()} or None
    return meta
