"""A worker process: one event loop, WORKER_CONCURRENCY job slots, leases renewed while jobs run.

The loop claims at most as many jobs as it has free slots (never prefetching work another worker could
start), polls only while idle, and on stop finishes what it runs within SHUTDOWN_GRACE_S, then gives the
rest back to the queue at once without using up their tries. After MAX_JOBS_PER_WORKER jobs (less up to a tenth,
at random, so workers do not all retire at once) or past
MAX_MEMORY_PER_WORKER_MB it stops taking jobs, drains and exits so its supervisor starts a fresh one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from enum import StrEnum
from typing import Any

import psutil
import structlog
from redis.exceptions import RedisError

from runner.backoff import Backoff
from runner.broker.queue import ClaimedJob, RedisQueue
from runner.broker.queues import WorkerQueues
from runner.broker.server_errors import RefusalLog, explain
from runner.cancelling import RECANCEL_S
from runner.client import JobClient
from runner.fleet.metrics import REDIS_REFUSALS, WORKER_EXITS, WORKERS_ALIVE
from runner.registry import Registry
from runner.resources import Resources, open_resources
from runner.settings import Settings
from runner.store.jobs import JobStore
from runner.store.migrations import apply_migrations
from runner.worker.execution import JobExecutor
from runner.worker.periodic import Periodic
from runner.worker.presence import Presence
from runner.worker.side_tasks import SideTasks
from runner.worker.sweeper import Sweeper

__all__ = ["ExitReason", "Worker"]

log = structlog.get_logger("runner.worker")

CLAIM_BACKOFF = Backoff(first_s=0.1, max_s=1.0)  # after a failed claim round trip
REFUSED_BACKOFF = Backoff(first_s=1.0, max_s=10.0)  # after Redis refused in a way waiting does not fix
RETIRE_OVERLAP_S = 30.0  # a recycled worker's longest wait for its replacement before it stops taking jobs
_SUPERVISED_ID = re.compile(r"^(?P<slot>.+:\d+:.+)\.(?P<generation>\d+)$")  # "<host>:<pid>:<slot>.<gen>"
_ABORTS_PER_POLL = 200  # queued jobs cancelled per look at the abort requests


class ExitReason(StrEnum):
    STOPPED = "stopped"
    RECYCLED_JOBS = "recycled_after_max_jobs"
    RECYCLED_MEMORY = "recycled_over_memory"
    SIDE_TASK_FAILED = "side_task_failed"
    DRAINED = "drained"  # an operator asked (`workers drain`)


class Worker:
    """Runs the registry's jobs from Redis until stopped. Create it inside the process's event loop."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        *,
        worker_id: str | None = None,
        on_retire: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.worker_id = worker_id or f"{settings.host_id}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.jobs_done = 0
        self.exit_reason = ExitReason.STOPPED
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._running: dict[str, asyncio.Task[None]] = {}  # until the job's bookkeeping is done too
        self._queue_of: dict[str, str] = {}  # a running job's queue (a worker may serve several: QUEUES)
        self._busy: set[str] = set()  # the slots: jobs whose coroutine has not returned yet
        self._process = psutil.Process()
        self.ready = asyncio.Event()
        self._on_retire = on_retire
        self._blocked: asyncio.Task[None] | None = None  # the claim loop, while blocked waiting for work
        self._wait_cancels = 0  # how many times stop() has cancelled that wait
        # Recycle after MAX_JOBS_PER_WORKER jobs, less up to a tenth at random: workers sharing a load evenly
        # would otherwise all reach it together.
        limit = settings.max_jobs_per_worker
        self._max_jobs = limit - random.randint(0, limit // 10) if limit else 0
        self._refusals = RefusalLog()  # the claim loop's: logs a refusal once, not on every retry
        self._retiring = False
        self._overlap: asyncio.Task[None] | None = None  # a recycle's wait for its replacement
        self._redis: Any = None  # the process's Redis, once open (a recycle watches for its replacement)

    def stop(self) -> None:
        """Stop taking jobs; running ones get SHUTDOWN_GRACE_S to finish. Safe from a signal handler."""
        self._stopping.set()
        self._wake.set()
        if not self._wait_cancels:  # once: a second stop() must not cancel the loop a second time
            self._cancel_wait()

    def _cancel_wait(self) -> None:
        """Give up the claim loop's blocked read (a job handed meanwhile is withdrawn), cancelling it again
        each RECANCEL_S until it has: under Python 3.11 a cancel can be lost (runner/cancelling.py)."""
        if self._blocked is None:
            return
        self._blocked.cancel()
        self._wait_cancels += 1
        asyncio.get_running_loop().call_later(RECANCEL_S, self._cancel_wait)

    def force_stop(self) -> None:
        """Stop now: cancel running jobs, which give their jobs back to the queue (second Ctrl-C)."""
        self.stop()
        for task in list(self._running.values()):
            task.cancel()

    async def run(self) -> ExitReason:
        """Open resources, apply migrations, run jobs until stopped or recycled, then drain and close."""
        async with self._open() as parts:
            queues = parts.queues
            names = [q.queue for q in queues]
            side = SideTasks(self._side_task_failed)
            side.start("lease-renewal", self._renew_leases(queues))
            for name in names:
                sweeper = Sweeper(parts.resources, parts.executor, worker_id=self.worker_id, queue=name)
                side.start(f"sweeper:{name}" if len(names) > 1 else "sweeper", sweeper.run_forever())
            side.start("abort-watch", self._watch_aborts(parts))
            periodic = Periodic(JobClient(parts.resources, parts.specs), parts.resources.redis, names, parts.specs)
            if periodic.jobs:
                side.start("periodic", periodic.run_forever())
            presence = Presence(parts.resources.redis, names, self.worker_id, self._snapshot,
                                host=self.settings.host_id)  # fmt: skip
            side.start("presence", presence.run_forever())
            for task in parts.executor.side_tasks():
                side.watch(task)
            log.info("worker_started", worker_id=self.worker_id, queue=names[0],
                     queues=dict(self.settings.worker_queues) if len(names) > 1 else None,
                     concurrency=self.settings.worker_concurrency, job_names=sorted(parts.specs))  # fmt: skip
            self._redis = parts.resources.redis
            self.ready.set()
            WORKERS_ALIVE.inc()
            try:
                await self._claim_loop(parts)
                with suppress(RedisError, OSError):
                    await self._give_back_unstarted(queues, parts.executor.finishing)
                await self._drain()
                await parts.executor.flush_finishes()
                for queue in queues:
                    with suppress(RedisError, OSError):  # e.g. a job handed over as our blocked read was cancelled
                        if released := await queue.release_all():
                            log.warning("leases_released_at_exit", jobs=released, queue=queue.queue)
            finally:
                WORKERS_ALIVE.dec()
                WORKER_EXITS.labels(self.exit_reason.value).inc()
                await side.stop()
                with suppress(RedisError, OSError):
                    await presence.leave()
        log.info("worker_stopped", worker_id=self.worker_id, reason=self.exit_reason, jobs_done=self.jobs_done)
        return self.exit_reason

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[_Parts]:
        async with AsyncExitStack() as stack:
            resources: Resources = await stack.enter_async_context(open_resources(self.settings))
            await apply_migrations(resources.db, ["runner", *self.registry.migrations])
            services: Any = None
            if self.registry.services is not None:
                services = await stack.enter_async_context(self.registry.services(resources))
            lease_s = self.settings.lease_ttl_s
            queues = WorkerQueues([
                (RedisQueue(resources.redis, queue=name, worker_id=self.worker_id, lease_ttl_s=lease_s), weight)
                for name, weight in self.settings.worker_queues
            ])  # fmt: skip
            specs = self.registry.resolved(self.settings)
            # Threads for blocking job code (JobContext.run_sync, plain `def` jobs), one per job slot. A thread
            # still blocked at exit cannot be stopped: it is left to finish while the process ends.
            threads = ThreadPoolExecutor(self.settings.worker_concurrency, thread_name_prefix="job-sync")
            stack.callback(threads.shutdown, wait=False, cancel_futures=True)
            store = JobStore(resources.db)
            executor = await stack.enter_async_context(
                JobExecutor(resources, services, specs, queues, store, on_slot_free=self._slot_free, sync_pool=threads)
            )
            yield _Parts(executor, queues, specs, resources)

    async def _claim_loop(self, parts: _Parts) -> None:
        queues, failures = parts.queues, 0
        # Idle, we stay registered for a hand-off a little longer than one wait can last.
        idle_for_s = self.settings.poll_interval_s + 1.0
        while not self._stopping.is_set():
            try:
                free = self.settings.worker_concurrency - len(self._busy)
                if free <= 0:
                    if queues.idle:  # an abort claimed our last slot while we were idle
                        await queues.withdraw()
                    await self._sleep(None)
                    continue
                claim = await queues.claim(int(time.time() * 1000), free, idle_for_s=idle_for_s)
                for job in claim.jobs:
                    self._start(parts.executor, job)
                if not claim.jobs and (handed := await self._wait_for_work(queues, claim.next_due_ms)):
                    self._start(parts.executor, handed)
                    await asyncio.sleep(0)  # let the job start before we go back to Redis for more
                if failures:
                    self._claims_back(failures)
                    failures = 0
            except (RedisError, OSError) as exc:
                failures += 1
                await self._sleep(await self._claim_failed(parts, exc, failures))
        with suppress(RedisError, OSError):
            if queues.idle:  # give back anything handed to us after our last claim
                await queues.withdraw()

    async def _claim_failed(self, parts: _Parts, exc: Exception, failures: int) -> float:
        """Log and count a failed claim round trip; how long to wait before the next. Redis down is a
        `claim_failed` each time; Redis up but refusing (a key of the wrong type, OOM, READONLY, ...) is one
        `redis_refused` naming the key, the error and what to do (again when it changes, and each minute), and
        one that waiting does not fix is retried less often."""
        refusal = await explain(exc, parts.resources.redis, parts.queues.claim_keys)
        if refusal is None:
            log.warning("claim_failed", error=repr(exc), consecutive=failures)
            return CLAIM_BACKOFF.delay(failures)
        REDIS_REFUSALS.labels(refusal.kind).inc()
        if self._refusals.due(refusal):
            log.error("redis_refused", what="claim", consecutive=failures, **refusal.log_fields())
        return (CLAIM_BACKOFF if refusal.transient else REFUSED_BACKOFF).delay(failures)

    def _claims_back(self, failures: int) -> None:
        if (lasted_s := self._refusals.clear()) is not None:
            log.info("redis_refusal_over", what="claim", lasted_s=round(lasted_s, 1), failed_claims=failures)

    async def _wait_for_work(self, queues: WorkerQueues, next_due_ms: int | None) -> ClaimedJob | None:
        """Block until an enqueue hands us a job (returned) or wakes us, the next deferred job's due time,
        the fallback poll (POLL_INTERVAL_S), or stop, whichever comes first."""
        timeout = self.settings.poll_interval_s
        if next_due_ms is not None:
            timeout = min(timeout, max(next_due_ms / 1000 - time.time(), 0.001))
        # Awaited in place, not in a task raced against a stop event: the hand-off path is the latency
        # path, and each extra task costs a loop iteration. stop() cancels us here instead.
        self._blocked = asyncio.current_task()
        if self._stopping.is_set():  # stop() came while our claim's reply was on its way: nothing to cancel yet
            self._blocked = None
            return None
        try:
            return await queues.wait_for_work(timeout)
        except asyncio.CancelledError:
            if self._take_back_wait_cancels() == 0 and self._stopping.is_set():
                return None  # cancelled by stop(), nobody else: leave the loop normally
            raise
        finally:
            self._blocked = None
            self._take_back_wait_cancels()  # one was lost and the read went on to return

    def _take_back_wait_cancels(self) -> int:
        """Withdraw the cancels stop() sent the blocked read; how many other cancels the task still has."""
        task = asyncio.current_task()
        assert task is not None
        for _ in range(self._wait_cancels):
            task.uncancel()
        self._wait_cancels = 0
        return task.cancelling()

    def _start(self, executor: JobExecutor, job: ClaimedJob) -> None:
        task = asyncio.create_task(executor.execute(job), name=f"job:{job.job_id}")
        self._running[job.job_id] = task
        self._queue_of[job.job_id] = job.queue
        self._busy.add(job.job_id)
        task.add_done_callback(lambda _: self._job_done(job.job_id))

    def _slot_free(self, job_id: str) -> None:
        """The job's coroutine returned: its slot takes the next job while its outcome is recorded."""
        if job_id in self._busy:
            self._busy.discard(job_id)
            self._wake.set()

    def _job_done(self, job_id: str) -> None:
        self._running.pop(job_id, None)
        self._queue_of.pop(job_id, None)
        self._busy.discard(job_id)
        self.jobs_done += 1
        self._check_recycle()
        self._wake.set()

    def _check_recycle(self) -> None:
        if self._retiring or self._stopping.is_set():
            return
        limit_jobs = self._max_jobs
        if limit_jobs and self.jobs_done >= limit_jobs:
            self._retire(ExitReason.RECYCLED_JOBS, overlap=True, jobs_done=self.jobs_done)
            return
        limit_mb = self.settings.max_memory_per_worker_mb
        if limit_mb:
            rss_mb = self._process.memory_info().rss / 2**20
            if rss_mb > limit_mb:
                self._retire(ExitReason.RECYCLED_MEMORY, overlap=True, rss_mb=round(rss_mb, 1), limit_mb=limit_mb)

    def _snapshot(self) -> dict[str, Any]:
        """What changes in this worker's presence report."""
        state = "retiring" if self._retiring else "draining" if self._stopping.is_set() else "running"
        return {"state": state, "running": len(self._running), "jobs_done": self.jobs_done,
                "concurrency": self.settings.worker_concurrency,
                "rss_mb": round(self._process.memory_info().rss / 2**20, 1)}  # fmt: skip

    def _side_task_failed(self, name: str, error: BaseException | None) -> None:
        """A side task died: we can no longer keep our promises (leases, aborts), so stop and be replaced."""
        self._retire(ExitReason.SIDE_TASK_FAILED, level="error", side_task=name,
                     error=repr(error) if error is not None else "it ended on its own")  # fmt: skip

    def _retire(self, reason: ExitReason, *, level: str = "info", overlap: bool = False, **facts: Any) -> None:
        """Stop taking jobs, finish the running ones and exit; the supervisor starts a replacement now.

        With `overlap` (a recycle: nothing is wrong with us), keep taking jobs until the replacement reports
        itself, so capacity never drops while it starts (at most RETIRE_OVERLAP_S)."""
        if self._retiring:
            return
        self._retiring = True
        log.log(logging.getLevelName(level.upper()), "worker_retiring", reason=reason, **facts)
        self.exit_reason = reason
        if self._on_retire is not None:
            self._on_retire()
        successor = _slot_of(self.worker_id) if overlap and self._redis is not None else None
        if successor is None:
            self.stop()
            return
        self._overlap = asyncio.get_running_loop().create_task(self._stop_when_replaced(*successor))

    async def _stop_when_replaced(self, slot: str, generation: int) -> None:
        """Stop once a worker of our supervisor slot with a later generation reports itself (or at the bound)."""
        from runner.ops.workers import list_workers

        assert self._redis is not None
        deadline = time.monotonic() + RETIRE_OVERLAP_S
        try:
            while time.monotonic() < deadline and not self._stopping.is_set():
                with suppress(RedisError, OSError):
                    for worker in await list_workers(self._redis, self.settings.worker_queues[0][0]):
                        theirs = _slot_of(worker.worker_id)
                        if theirs is not None and theirs[0] == slot and theirs[1] > generation:
                            log.info("worker_replaced", successor=worker.worker_id)
                            return
                await asyncio.sleep(0.1)
        finally:
            self.stop()

    async def _sleep(self, seconds: float | None) -> None:
        self._wake.clear()
        with suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _give_back_unstarted(self, queues: WorkerQueues, finishing: set[str]) -> None:
        """Give back, before draining, jobs leased to us that we never started: a job an enqueue handed over
        just as our blocked read was cancelled by stop() is popped off the inbox on a read nobody reads.
        Without this it would wait for our drain and exit (or a recycle's long job) before running. Jobs that
        ended and whose finish is on its way to Redis (`finishing`) are not unstarted: given back, they would run
        again."""
        for queue in queues:
            unstarted = set(await queue.held()) - set(self._running) - finishing
            if not unstarted:
                continue
            now_ms = int(time.time() * 1000)
            await asyncio.gather(*(queue.release(job_id, due_ms=now_ms, give_back_try=True) for job_id in unstarted))
            log.info("handed_jobs_given_back", jobs=sorted(unstarted), queue=queue.queue)

    async def _drain(self) -> None:
        if not self._running:
            return
        grace = None if self.exit_reason != ExitReason.STOPPED else self.settings.shutdown_grace_s
        log.info("worker_draining", running=len(self._running), grace_s=grace)
        _, pending = await asyncio.wait(list(self._running.values()), timeout=grace)
        for task in pending:  # each gives its job back to the queue as it is cancelled
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _watch_aborts(self, parts: _Parts) -> None:
        """Act on operators' requests: cancel jobs someone asked to stop (ours that run, and queued ones
        nobody has claimed yet), and drain this worker if asked to."""
        while True:
            await asyncio.sleep(self.settings.abort_poll_s)
            for queue in parts.queues:
                try:
                    asked = await queue.control_requests()
                    queued = []
                    for job_id in asked.aborts:
                        if (task := self._running.get(job_id)) is not None:
                            parts.executor.abort(job_id, task)
                        else:
                            queued.append(job_id)
                    if queued and not self._stopping.is_set():  # a page a poll: a purge may ask for thousands
                        for claimed in await queue.claim_aborted(queued[:_ABORTS_PER_POLL]):
                            self._start(parts.executor, claimed)
                    if asked.drain and not self._stopping.is_set():
                        self._retire(ExitReason.DRAINED)
                except (RedisError, OSError) as exc:
                    log.warning("abort_watch_failed", error=repr(exc), queue=queue.queue)

    async def _renew_leases(self, queues: WorkerQueues) -> None:
        period = queues.primary.lease_ms / 3000
        while True:
            await asyncio.sleep(period)
            for queue in queues:
                try:
                    lost = await queue.renew([job for job, name in self._queue_of.items() if name == queue.queue])
                except (RedisError, OSError) as exc:
                    log.warning("lease_renewal_failed", error=repr(exc), queue=queue.queue)
                    continue
                for job_id in lost:
                    # Only while the job's code runs does a lost lease matter (another worker may start it);
                    # after it returned, its finish may just have taken the lease away.
                    if job_id in self._busy:
                        log.warning("lease_lost", job_id=job_id)


def _slot_of(worker_id: str) -> tuple[str, int] | None:
    """(supervisor slot, generation) of an id the supervisor gave (runner.fleet.supervisor); None otherwise."""
    match = _SUPERVISED_ID.match(worker_id)
    return (match["slot"], int(match["generation"])) if match else None


class _Parts:
    """The worker's per-run collaborators, bundled for the loop."""

    def __init__(
        self, executor: JobExecutor, queues: WorkerQueues, specs: dict[str, Any], resources: Resources
    ) -> None:
        self.executor = executor
        self.resources = resources
        self.queues = queues
        self.specs = specs
