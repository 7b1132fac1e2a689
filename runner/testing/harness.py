"""The real queue for one test: the test's own queue on real Redis and Postgres, workers in the test's event
loop or as processes, a client, and the waits a test needs (`run_until_idle`, `result`).

    harness = JobRunnerHarness(settings, registry, resources, log_dir=tmp_path)
    await harness.start_worker()                       # or start_worker(process=True)
    handle = await harness.enqueue("reports.build", day="2024-05-01")
    await harness.run_until_idle()                     # every job ended, retries and children included
    assert await harness.result(handle) == {...}       # JobFailedError if it failed
    await harness.stop_workers()

The pytest plugin (runner.testing.plugin) builds one per test: the `job_runner` fixture.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from pathlib import Path
from typing import Any

from runner.broker.keys import QueueKeys
from runner.broker.queue import queue_depth
from runner.client import EnqueueResult, JobClient
from runner.ops.workers import list_workers
from runner.registry import Registry
from runner.resources import Resources
from runner.settings import Settings
from runner.status import JobStatus
from runner.store.jobs import JobRow
from runner.testing.worker_process import WorkerProcess
from runner.worker.worker import ExitReason, Worker

__all__ = ["JobRunnerHarness", "harness_settings"]

_POLL_S = 0.02
_START_S = 30.0
_SHOWN_JOBS = 10


def harness_settings(
    registry: Registry, *, redis_url: str, database_url: str, data_dir: Path, **overrides: Any
) -> Settings:
    """The registry's settings class for one test: a queue of its own on the given servers, workers that never
    recycle (the test process is not theirs) and stop within seconds. Unset fields come from the environment
    (never from `.env`); `overrides` win over both."""
    queue = f"test-{uuid.uuid4().hex[:12]}"
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "database_url": database_url,
        "data_dir": data_dir,
        "queue_name": queue,
        "slot_prefix": f"runner:slots:{queue}",  # one test's shared limits never starve another's
        "max_jobs_per_worker": 0,
        "max_memory_per_worker_mb": 0,
        "shutdown_grace_s": 5,
        "startup_retry_s": 10,
        **overrides,
    }
    return registry.settings(_env_file=None, **values)


class JobRunnerHarness:
    """Jobs of `registry` on the test's queue (`settings.queue_name`). Borrows `resources`; stops the workers it
    started (`stop_workers`, which the fixtures call at teardown)."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        resources: Resources,
        *,
        log_dir: Path,
        registry_path: str | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.resources = resources
        self.specs = registry.resolved(settings)
        self.client = JobClient(resources, self.specs)
        self.log_dir = log_dir
        self.registry_path = registry_path
        self.workers: list[Worker] = []
        self.processes: list[WorkerProcess] = []
        self._tasks: dict[str, asyncio.Task[ExitReason]] = {}
        self._ids = itertools.count(1)

    @property
    def queue(self) -> str:
        return self.settings.queue_name

    @property
    def queues(self) -> list[str]:
        """The test's queue and any other queue a job of the registry names."""
        return sorted({self.queue, *(spec.queue for spec in self.specs.values() if spec.queue)})

    def job_id(self, name: str) -> str:
        """A job id no other test uses: `<queue>:<name>:<n>`."""
        return f"{self.queue}:{name}:{next(self._ids)}"

    # --- jobs -------------------------------------------------------------------------------------------------

    async def enqueue(self, name: str, /, *, job_id: str | None = None, **kwargs: Any) -> EnqueueResult:
        """Enqueue the job `name` with its keyword arguments (checked against its signature now); a handle on it.
        Without `job_id`, one unique to this test is made."""
        return await self.client.enqueue(name, job_id=job_id or self.job_id(name), **kwargs)

    async def result(self, job: str | EnqueueResult, timeout: float = 10.0) -> Any:  # noqa: ASYNC109 - as handles do
        """Wait for the job (an id or a handle) to end; its return value. Raises runner.errors.JobFailedError if
        it failed or was cancelled, TimeoutError (saying which workers run) if it did not end within `timeout`."""
        job_id = job if isinstance(job, str) else job.job_id
        handle = EnqueueResult(job_id, recorded=False, queued=False, client=self.client)  # a handle on an id
        try:
            return await handle.result(timeout)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; {await self._workers_note()}") from None

    async def status(self, job_id: str) -> JobStatus | None:
        """The job's status now; None if it has no status row."""
        row = await self.client.get(job_id)
        return row.status if row is not None else None

    async def row(self, job_id: str) -> JobRow | None:
        """The job's status row: status, attempts, error, result, parent, timestamps."""
        return await self.client.get(job_id)

    async def run_until_idle(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - a test's bound
        """Wait until every job of the test's queues has ended: none due, running, or waiting for a retry (the
        jobs they enqueue included). Raises TimeoutError naming the unfinished jobs and the workers after
        `timeout` seconds, and at once if no worker runs (a worker of the test that crashed: its error)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while await self._unfinished():
            await self._check_workers()
            if loop.time() >= deadline:
                raise TimeoutError(await self._not_idle(f"after {timeout:g}s"))
            await asyncio.sleep(_POLL_S)

    # --- workers ----------------------------------------------------------------------------------------------

    async def start_worker(self, *, process: bool = False, **overrides: Any) -> Worker | WorkerProcess:
        """Start a worker on the test's queue, with `overrides` of the test's settings (e.g. worker_concurrency=1);
        return once it takes jobs. In the test's event loop by default; `process=True`: a real
        `python -m runner worker` process, which imports the registry by `registry_path`."""
        settings = self.settings.model_copy(update=overrides) if overrides else self.settings
        if process:
            return await self._start_process(settings)
        worker = Worker(settings, self.registry)
        task = asyncio.create_task(worker.run(), name=f"test-worker:{worker.worker_id}")
        ready = asyncio.create_task(worker.ready.wait())
        await asyncio.wait([ready, task], timeout=_START_S, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if not worker.ready.is_set():  # raised here, so not again at teardown
            worker.force_stop()
            await asyncio.wait([task], timeout=10)
            if task.done():
                reason = task.result()  # raises the worker's start-up error
                raise RuntimeError(f"worker {worker.worker_id} exited ({reason}) before it took a job")
            raise TimeoutError(f"worker {worker.worker_id} did not start within {_START_S:g}s (Redis and Postgres up?)")
        self.workers.append(worker)
        self._tasks[worker.worker_id] = task
        return worker

    async def _start_process(self, settings: Settings) -> WorkerProcess:
        if self.registry_path is None:
            raise RuntimeError(
                "a worker process imports its registry by path, and none was found for this one: bind the Registry "
                "to a module-level name and set `runner_registry = package.module:name` in the pytest ini"
            )
        n = len(self.processes) + 1
        worker = WorkerProcess(settings, self.registry_path, self.log_dir / f"worker-{n}" / "worker.log")
        self.processes.append(worker)
        return await worker.start(self.resources.redis, _START_S)

    async def stop_workers(self) -> None:
        """Stop every worker started here (running jobs get SHUTDOWN_GRACE_S); raise a loop worker's crash."""
        for worker in self.workers:
            worker.stop()
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.wait(tasks, timeout=self.settings.shutdown_grace_s + 10)
        late = [w for w in self.workers if not self._tasks[w.worker_id].done()]
        for worker in late:
            worker.force_stop()  # past its grace: its jobs go back to the queue now
        if late:
            await asyncio.wait([self._tasks[w.worker_id] for w in late], timeout=10)
        codes = await asyncio.gather(*(p.stop() for p in self.processes))
        for task in tasks:
            if task.done() and not task.cancelled() and (exc := task.exception()) is not None:
                raise RuntimeError(f"a worker in the test's loop crashed: {exc!r}") from exc
        for process, code in zip(self.processes, codes, strict=True):
            if code not in (0, None) and not process.killed:
                raise RuntimeError(f"worker process {process.pid} ended with {code}; its log ({process.log_path}) "
                                   f"ends:\n{process.log_tail()}")  # fmt: skip

    async def _check_workers(self) -> None:
        """Raise at once when waiting is pointless: a loop worker crashed, or no worker runs the test's queue."""
        for worker_id, task in self._tasks.items():
            if task.done() and not task.cancelled() and (exc := task.exception()) is not None:
                raise RuntimeError(f"worker {worker_id} (in the test's loop) crashed: {exc!r}") from exc
        started = bool(self._tasks or self.processes)
        running = any(not t.done() for t in self._tasks.values()) or any(p.returncode is None for p in self.processes)
        if (started and not running) or (not started and not await list_workers(self.resources.redis, self.queue)):
            raise RuntimeError(await self._not_idle("and no worker runs it: use the job_runner fixture, or "
                                                    "await start_worker()"))  # fmt: skip

    # --- what is left -----------------------------------------------------------------------------------------

    async def _unfinished(self) -> int:
        totals = [(await queue_depth(self.resources.redis, queue)).total for queue in self.queues]
        return sum(totals)

    async def _not_idle(self, why: str) -> str:
        parts = []
        for queue in self.queues:
            depth = await queue_depth(self.resources.redis, queue)
            if depth.total:
                ids = await self.resources.redis.zrange(QueueKeys.of(queue).jobs, 0, _SHOWN_JOBS - 1)
                jobs = [await self._describe(i.decode() if isinstance(i, bytes) else str(i)) for i in ids]
                more = f", and {depth.total - len(ids)} more" if depth.total > len(ids) else ""
                parts.append(f"queue {queue!r} holds {depth.total} unfinished jobs ({depth.due} due or running, "
                             f"{depth.total - depth.due} waiting for a retry): {'; '.join(jobs)}{more}")  # fmt: skip
        return f"not idle {why}: {'. '.join(parts) or 'no job left'}. {await self._workers_note()}"

    async def _describe(self, job_id: str) -> str:
        row = await self.client.get(job_id)
        if row is None:
            return f"{job_id} (no status row)"
        error = f", last error: {row.error}" if row.error else ""
        return f"{job_id} ({row.name}, {row.status}, attempt {row.attempts}/{row.max_tries}{error})"

    async def _workers_note(self) -> str:
        live = await list_workers(self.resources.redis, self.queue)
        in_loop = sum(not t.done() for t in self._tasks.values())
        processes = sum(p.returncode is None for p in self.processes)
        return (f"Workers reporting on {self.queue!r}: {len(live)} (this test's: {in_loop} in its event loop, "
                f"{processes} processes)")  # fmt: skip
