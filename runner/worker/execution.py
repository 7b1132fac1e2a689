"""Running one claimed job: decode, validate, run under its time limit, and record how it ended.

Every path ends in exactly one of: finished (completed or failed, result kept in Redis, row terminal),
rescheduled for a retry (row `retrying`), or released for another worker (graceful stop). Bookkeeping
that fails (Redis or Postgres gone) releases the job rather than dropping it: nothing is lost.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from structlog.contextvars import bind_contextvars

from runner import envelope, tracing
from runner.broker.queue import ClaimedJob, Finished, RedisQueue
from runner.broker.queues import WorkerQueues
from runner.client import JobClient
from runner.context import CURRENT_JOB_ID, JobContext
from runner.errors import JobTimeoutError, PermanentError, RetryLaterError, SoftTimeLimitExceeded
from runner.fleet.metrics import JOB_DURATION, JOBS, JOBS_IN_FLIGHT
from runner.intake.results import ForeignResults, ReportedRun
from runner.registry import JobSpec
from runner.resources import Resources
from runner.status import TERMINAL, JobStatus
from runner.store.jobs import JobStore, Transition
from runner.worker.batching import Batcher
from runner.worker.claimed import (
    PreparedJob,
    describe,
    error_traceback,
    loggable,
    peek_kwargs,
    peek_name,
    prepare,
    result_envelope,
    transition,
)
from runner.worker.joins import Joins
from runner.worker.outage import ride_out
from runner.worker.soft_limit import TimeLimits

__all__ = ["JobExecutor"]

log = structlog.get_logger("runner.job")
_JOB_LOG = structlog.get_logger("job")  # each job's ctx.log: binds nothing itself, so one serves every job
_JOIN_DRAIN_S = 5.0  # at exit, how long joins being written may take before the sweeper is left to finish them


@dataclass(slots=True)  # not frozen: see runner.broker.queue.ClaimedJob
class _Outcome:
    """How a job's coroutine ended: a result, an error, or cancelled at a user's request."""

    result: Any = None
    error: BaseException | None = None
    cancelled: bool = False


class JobExecutor:
    """Runs claimed jobs for one worker. Shared by all of the worker's job tasks."""

    def __init__(
        self,
        resources: Resources,
        services: Any,
        specs: dict[str, JobSpec],
        queues: WorkerQueues | RedisQueue,
        store: JobStore,
        *,
        on_slot_free: Callable[[str], None] | None = None,
        sync_pool: Executor | None = None,
    ) -> None:
        self._resources = resources
        self._services = services
        self._specs = specs
        self._queues = queues if isinstance(queues, WorkerQueues) else WorkerQueues.one(queues)
        self._worker_id = self._queues.primary.worker_id
        self._store = store
        self._keep_result_ms = int(resources.settings.keep_result_s * 1000)
        self._aborting: set[str] = set()
        self._runs: dict[str, float] = {}  # job id -> when its current attempt started (epoch s)
        self._client = JobClient(resources, specs)
        self._wake_tasks: set[asyncio.Task[None]] = set()
        self._join_tasks: set[asyncio.Task[list[str]]] = set()  # never raise (Joins.after_members_ended)
        self._slot_free = on_slot_free or (lambda job_id: None)
        self._sync_pool = sync_pool
        self._foreign = ForeignResults(resources.redis, celery_expires_s=resources.settings.celery_result_expires_s)
        self._outage_s = outage_s = resources.settings.outage_retry_s
        self._status_writes = Batcher[Transition]("status_write", self._write_transitions, outage_s=outage_s)
        self._finishes = Batcher[Finished]("finish", self._write_finishes, outage_s=outage_s)
        # Jobs that ended (row final) whose finish is not yet written in Redis: still leased to us, not running.
        self.finishing: set[str] = set()
        self.priorities = {name: spec.priority for name, spec in specs.items()}  # a join is pushed with its own
        self._joins = Joins(resources, outage_s=outage_s, priorities=self.priorities)

    async def __aenter__(self) -> JobExecutor:
        await self._status_writes.__aenter__()
        await self._finishes.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Write every status change and finish still buffered (never lose a transition on shutdown)."""
        await self._finishes.close()
        await self._status_writes.close()
        if self._join_tasks:  # bounded: what is left is the sweeper's (a join's row, or its push)
            await asyncio.wait(list(self._join_tasks), timeout=_JOIN_DRAIN_S)

    async def _write_finishes(self, finished: Sequence[Finished]) -> None:
        await self._queues.finish_many(finished)
        self.finishing.difference_update(f.job_id for f in finished)

    async def flush_finishes(self) -> None:
        """Write the finishes submitted so far (jobs ended, not yet off the queue in Redis): before a stopping
        worker gives back the leases it still holds, so it gives back none of a job that ended."""
        await self._finishes.flush()

    def side_tasks(self) -> list[asyncio.Task[None]]:
        """The write batchers' tasks, for the worker to watch."""
        return [t for t in (self._status_writes.task, self._finishes.task) if t is not None]

    async def _write_transitions(self, transitions: Sequence[Transition]) -> None:
        applied = await self._store.apply(transitions)
        if applied.ended_groups:
            # Beside the batch, not in it: a join riding out an outage must not hold every job's status write.
            # A worker that dies before it is written leaves it to the sweeper (runner.worker.joins).
            task = asyncio.create_task(self._joins.after_members_ended(applied.ended_groups))
            self._join_tasks.add(task)
            task.add_done_callback(self._join_tasks.discard)

    def abort(self, job_id: str, task: asyncio.Task[None]) -> None:
        """Cancel a running job at the user's request: it ends `cancelled`, its failure hook runs."""
        self._aborting.add(job_id)
        task.cancel("aborted")

    @property
    def store(self) -> JobStore:
        return self._store

    def knows(self, name: str) -> bool:
        return name in self._specs

    async def fail_orphan(
        self, *, job_id: str, queue: str, name: str, kwargs: dict[str, Any], attempt: int, error: str
    ) -> None:
        """Fail a job that is no longer in Redis, and run its failure hook so its domain rows end too."""
        spec = self._specs.get(name)
        await self._move(Transition(job_id, JobStatus.FAILED, name=name, queue=queue, attempt=attempt,
                                    max_tries=spec.max_tries if spec else 1, error=error))  # fmt: skip
        if spec is not None:
            claimed = ClaimedJob(job_id, None, attempt, 0, queue)
            await self._run_failure_hook(
                spec, self._context(claimed, PreparedJob(spec, kwargs, attempt, 0, kwargs)), error
            )

    async def execute(self, claimed: ClaimedJob) -> None:
        """Run one claimed job to one of its ends; never raises but CancelledError (worker stopping)."""
        # Bound in this job's own task (its context is a copy): nothing to unbind, and nothing leaks to the
        # worker's loop. `bound_contextvars` would copy every context variable twice a job.
        CURRENT_JOB_ID.set(claimed.job_id)  # jobs it enqueues name it as their parent
        with JOBS_IN_FLIGHT.track_inprogress():
            try:
                await self._execute(claimed)
            except asyncio.CancelledError:
                await asyncio.shield(self._release(claimed, "worker stopped before the job finished"))
                raise
            except Exception as exc:  # bookkeeping failed: give the job back rather than lose it
                log.exception("job_bookkeeping_failed", error=repr(exc))
                await asyncio.shield(self._release(claimed, f"runner error: {exc!r}", delay_s=1.0))
            finally:
                self._runs.pop(claimed.job_id, None)

    async def _execute(self, claimed: ClaimedJob) -> None:
        try:
            prepared = prepare(claimed, self._specs)
        except PermanentError as exc:
            bind_contextvars(job_id=claimed.job_id, attempt=claimed.try_count)
            await self._refuse(claimed, exc)
            return
        spec = prepared.spec
        fields = {k: loggable(prepared.kwargs[k]) for k in spec.log_fields if k in prepared.kwargs}
        bind_contextvars(job_id=claimed.job_id, job_name=spec.name, attempt=prepared.attempt, **fields)
        with tracing.run_span(
            spec.name, job_id=claimed.job_id, attempt=prepared.attempt, queue=claimed.queue, meta=prepared.meta
        ):
            ctx = self._context(claimed, prepared)
            if claimed.aborted:
                await self._cancelled(claimed, prepared, ctx, time.monotonic())
                return
            if claimed.try_count > 1 and await self._ended_already(claimed):
                return
            self._runs[claimed.job_id] = prepared.run_started
            if prepared.tries_used > spec.max_tries:
                error = f"gave up after {spec.max_tries} tries: the job's worker stopped each time before it ended"
                await self._fail(claimed, prepared, ctx, error)
                return
            # Not awaited: the job starts at once; its later (awaited) transitions are written after this one.
            await self._move(self._transition(claimed, prepared, JobStatus.PROCESSING), wait=False)
            log.info("job_started", queued_ms=max(0, _now_ms() - prepared.enqueue_time_ms))
            if (run := self._foreign_run(claimed, prepared)) is not None:  # a Celery or arq sender waits to hear
                await self._foreign.started(run)
            await self._run(claimed, prepared, ctx)

    async def _ended_already(self, claimed: ClaimedJob) -> bool:
        """Whether a job claimed again (a try past the first) has a final row already: Redis lost the finish
        of a run that ended (a Sentinel or Cluster failover drops the last writes a replica never got). Postgres
        is the record, so the job is finished in Redis without running twice. Read only for re-runs."""
        row = await ride_out(lambda: self._store.get(claimed.job_id), what="status_read", budget_s=self._outage_s)
        if row is None or row.status not in TERMINAL:
            return False
        why = "Redis lost the end of an earlier run (a failover?); its row is final: not run again"
        log.warning("job_already_ended", status=row.status.value, attempts=row.attempts, why=why)
        await self._finish(claimed, None)
        return True

    async def _run(self, claimed: ClaimedJob, prepared: PreparedJob, ctx: JobContext) -> None:
        """Call the job, free its slot, then record how it ended (the slot is not held for bookkeeping)."""
        started = time.monotonic()
        outcome = await self._call(claimed, prepared, ctx)
        self._slot_free(claimed.job_id)
        if outcome.cancelled:
            await self._cancelled(claimed, prepared, ctx, started)
        elif outcome.error is not None:
            await self._after_error(claimed, prepared, ctx, outcome.error, started)
        else:
            await self._complete(claimed, prepared, outcome.result, started)

    async def _call(self, claimed: ClaimedJob, prepared: PreparedJob, ctx: JobContext) -> _Outcome:
        """Run the job's coroutine under its limits; a shutdown's cancellation propagates."""
        spec = prepared.spec
        soft_s = ctx.soft_deadline - time.monotonic() if ctx.soft_deadline != float("inf") else None
        limit, limits = asyncio.timeout(None), None
        try:
            async with limit:
                limits = TimeLimits(limit, soft_s=soft_s, hard_s=spec.timeout_s)
                try:
                    result = await spec.coroutine(ctx, **prepared.kwargs)
                finally:
                    limits.disarm()
            envelope.serialize(result)  # a result that is not JSON is the job's bug: fail it, say why
            return _Outcome(result=result)
        except asyncio.CancelledError:
            if claimed.job_id in self._aborting:
                _take_back_cancel()
                return _Outcome(cancelled=True)
            if limits is None or not limits.was_cause():
                raise
            return _Outcome(error=SoftTimeLimitExceeded(f"stopped at the soft time limit of {spec.soft_timeout_s:g}s"))
        except Exception as exc:
            if isinstance(exc, TimeoutError) and limit.expired():
                exc = JobTimeoutError(f"stopped at the hard time limit of {spec.timeout_s:g}s")
            return _Outcome(error=exc)
        finally:
            self._aborting.discard(claimed.job_id)  # also when the job swallowed the abort and finished

    async def _cancelled(self, claimed: ClaimedJob, prepared: PreparedJob, ctx: JobContext, started: float) -> None:
        self._aborting.discard(claimed.job_id)
        log.info("job_cancelled", outcome="cancelled", duration_ms=_elapsed_ms(started))
        _count(prepared.spec.name, "cancelled", started)
        await self._move(self._transition(claimed, prepared, JobStatus.CANCELLED, error="cancelled",
                                          outcome="cancelled"))  # fmt: skip
        await self._run_failure_hook(prepared.spec, ctx, "cancelled")
        result = result_envelope(claimed, prepared, False, "cancelled")
        await self._finish(claimed, result)
        if (run := self._foreign_run(claimed, prepared)) is not None:
            await self._foreign.ended(run, JobStatus.CANCELLED, error="cancelled", envelope=result,
                                      keep_result_ms=self._keep_result_ms)  # fmt: skip
        queue = self._queues[claimed.queue]
        await ride_out(lambda: queue.forget_abort(claimed.job_id), what="abort", budget_s=self._outage_s)

    async def _complete(self, claimed: ClaimedJob, prepared: PreparedJob, result: Any, started: float) -> None:
        await self._move(self._transition(claimed, prepared, JobStatus.COMPLETED, result=result, outcome="completed"))
        envelope_ = result_envelope(claimed, prepared, True, result)
        await self._finish(claimed, envelope_)
        if (run := self._foreign_run(claimed, prepared)) is not None:
            await self._foreign.ended(run, JobStatus.COMPLETED, result=result, envelope=envelope_,
                                      keep_result_ms=self._keep_result_ms)  # fmt: skip
        log.info("job_completed", outcome="completed", duration_ms=_elapsed_ms(started))
        _count(prepared.spec.name, "completed", started)

    async def _after_error(
        self, claimed: ClaimedJob, prepared: PreparedJob, ctx: JobContext, exc: BaseException, started: float
    ) -> None:
        error = describe(exc)
        if isinstance(exc, RetryLaterError):  # a busy shared limit, not the job's fault: no try used
            log.info("job_deferred", outcome="deferred", reason=error, retry_in_s=exc.retry_after_s)
            _count(prepared.spec.name, "deferred", started)
            await self._move(self._transition(claimed, prepared, JobStatus.RETRYING, error=error, outcome="deferred"))
            due_ms = _now_ms() + int((exc.retry_after_s or 1.0) * 1000)
            await self._requeue(claimed, due_ms=due_ms, give_back_try=True)
            return
        assert prepared.spec.retry is not None
        tracing.record_error(exc)
        delay = prepared.spec.retry.decide(exc, prepared.tries_used)
        trace = error_traceback(exc)
        if delay is None:
            log.warning("job_failed", outcome="failed", error=error, duration_ms=_elapsed_ms(started))
            _count(prepared.spec.name, "failed", started)
            await self._fail(claimed, prepared, ctx, error, trace)
            return
        log.warning("job_retrying", outcome="retrying", error=error, retry_in_s=round(delay, 3))
        _count(prepared.spec.name, "retrying", started)
        await self._move(self._transition(claimed, prepared, JobStatus.RETRYING, error=error, outcome="retrying",
                                          traceback=trace))  # fmt: skip
        if (run := self._foreign_run(claimed, prepared)) is not None:
            await self._foreign.retrying(run, error, trace)
        await self._requeue(claimed, due_ms=_now_ms() + int(delay * 1000), give_back_try=False)

    async def _fail(
        self, claimed: ClaimedJob, prepared: PreparedJob, ctx: JobContext, error: str, trace: str | None = None
    ) -> None:
        await self._move(self._transition(claimed, prepared, JobStatus.FAILED, error=error, outcome="failed",
                                          traceback=trace))  # fmt: skip
        await self._run_failure_hook(prepared.spec, ctx, error)
        envelope_ = result_envelope(claimed, prepared, False, error)
        await self._finish(claimed, envelope_)
        if (run := self._foreign_run(claimed, prepared)) is not None:
            await self._foreign.ended(run, JobStatus.FAILED, error=error, traceback=trace, envelope=envelope_,
                                      keep_result_ms=self._keep_result_ms)  # fmt: skip

    async def _refuse(self, claimed: ClaimedJob, exc: PermanentError) -> None:
        """A payload we cannot run: record why, finish it, keep the worker going."""
        name, spec = peek_name(claimed, self._specs)
        error = describe(exc)
        log.warning("job_refused", job_name=name, outcome="failed", error=error)
        JOBS.labels(name if spec else "<unknown>", "refused").inc()
        max_tries = spec.max_tries if spec else 1
        await self._move(
            Transition(claimed.job_id, JobStatus.FAILED, name=name, queue=claimed.queue,
                       attempt=claimed.try_count, max_tries=max_tries, worker=self._worker_id, error=error,
                       run_started=time.time(), outcome="failed")
        )  # fmt: skip
        if spec is not None and spec.on_failure is not None:
            kwargs = peek_kwargs(claimed)
            prepared = PreparedJob(spec, kwargs, claimed.try_count, 0, kwargs)
            await self._run_failure_hook(spec, self._context(claimed, prepared), error)
        result = envelope.serialize({"t": claimed.try_count, "f": name, "a": [], "k": {}, "et": 0, "s": False,
                                       "r": error, "st": _now_ms(), "ft": _now_ms(), "q": claimed.queue,
                                       "id": claimed.job_id})  # fmt: skip
        await self._finish(claimed, result)

    async def _release(self, claimed: ClaimedJob, reason: str, delay_s: float = 0.0) -> None:
        try:
            released = await self._requeue(claimed, due_ms=_now_ms() + int(delay_s * 1000), give_back_try=True)
            log.warning("job_released", reason=reason, released=released)
            JOBS.labels(peek_name(claimed, self._specs)[0], "released").inc()
            await self._move(Transition(claimed.job_id, JobStatus.RETRYING, error=reason, attempt=claimed.try_count,
                                        queue=claimed.queue, worker=self._worker_id,
                                        run_started=self._runs.get(claimed.job_id), outcome="released"))  # fmt: skip
        except Exception as exc:  # the lease will expire and another worker will run the job
            log.error("job_release_failed", error=repr(exc), lease_ttl_ms=self._queues[claimed.queue].lease_ms)

    async def _move(self, transition: Transition, *, wait: bool = True) -> None:
        """Record a transition, group-committed with other jobs' (see runner.worker.batching). Not waiting is
        only for `processing`: the job's later transitions are awaited and written after it."""
        tracing.set_outcome(transition.outcome, transition.error)  # on the attempt's span, if tracing is on
        await self._status_writes.submit(transition, wait=wait)

    async def _finish(self, claimed: ClaimedJob, result: bytes | None) -> None:
        # Not awaited: the row is final already (the ending transition was), so a finish that Redis refuses past
        # the outage budget only leaves the lease to lapse, and the job's next claim finds the row final
        # (_ended_already) and finishes it unrun. Closing the executor still writes every finish submitted.
        self.finishing.add(claimed.job_id)
        await self._finishes.submit(Finished(claimed.job_id, result, self._keep_result_ms, claimed.queue), wait=False)

    async def _requeue(self, claimed: ClaimedJob, *, due_ms: int, give_back_try: bool) -> bool:
        queue = self._queues[claimed.queue]
        released = await ride_out(
            lambda: queue.release(claimed.job_id, due_ms=due_ms, give_back_try=give_back_try),
            what="requeue",
            budget_s=self._outage_s,
        )
        delay_s = due_ms / 1000 - time.time()
        if released and delay_s > 0:  # idle workers block until woken: wake one when the job falls due
            asyncio.get_running_loop().call_later(delay_s, self._wake_a_worker, queue)
        return released

    def _wake_a_worker(self, queue: RedisQueue) -> None:
        task = asyncio.create_task(queue.wake())
        self._wake_tasks.add(task)
        task.add_done_callback(self._wake_done)

    def _wake_done(self, task: asyncio.Task[None]) -> None:
        self._wake_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:  # the fallback poll will find the job
            log.warning("wake_failed", error=repr(task.exception()))

    async def _run_failure_hook(self, spec: JobSpec, ctx: JobContext, error: str) -> None:
        if spec.on_failure is None:
            return
        try:
            await spec.on_failure(ctx, error)
        except Exception as exc:
            log.exception("job_failure_hook_failed", error=repr(exc))

    def _foreign_run(self, claimed: ClaimedJob, prepared: PreparedJob) -> ReportedRun | None:
        """The run to report to a foreign producer (a job an intake took in), else None."""
        if not prepared.meta or not self._foreign.wanted(prepared.meta):
            return None
        timeout_s = prepared.spec.timeout_s or 0.0
        return ReportedRun(claimed.job_id, prepared.meta, self._worker_id, timeout_s)

    def _context(self, claimed: ClaimedJob, prepared: PreparedJob) -> JobContext:
        return JobContext(
            resources=self._resources,
            services=self._services,
            job_id=claimed.job_id,
            job_name=prepared.spec.name,
            attempt=prepared.attempt,
            max_tries=prepared.last_try,
            enqueued_at=datetime.fromtimestamp((prepared.enqueue_time_ms or _now_ms()) / 1000, UTC),
            worker_id=self._worker_id,
            kwargs=prepared.kwargs,
            log=_JOB_LOG,
            jobs=self._client,
            soft_deadline=time.monotonic() + (prepared.spec.soft_timeout_s or float("inf")),
            sync_pool=self._sync_pool,
        )

    def _transition(self, claimed: ClaimedJob, prepared: PreparedJob, status: JobStatus, **fields: Any) -> Transition:
        return transition(claimed, prepared, self._worker_id, status, **fields)


def _count(job_name: str, outcome: str, started: float) -> None:
    jobs, duration = _counters(job_name, outcome)
    jobs.inc()
    duration.observe(time.monotonic() - started)


@functools.cache
def _counters(job_name: str, outcome: str) -> tuple[Any, Any]:
    """A job's counter and histogram for an outcome (looking labels up costs more than counting)."""
    return JOBS.labels(job_name, outcome), JOB_DURATION.labels(job_name, outcome)


def _take_back_cancel() -> None:
    """The cancellation we just handled was ours to absorb: leave no pending cancel on the task."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        task.uncancel()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _elapsed_ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
