"""The Celery intake: tasks sent by unchanged Celery producers run as the runner's jobs.

A message is moved atomically from the queue's list (or a priority list) into the intake's processing
list (lua/celery_claim.lua); the job is enqueued under the Celery task id (refused if it is there already)
and its row written in Postgres under that id, and only then is the message removed. At start,
and every REDRIVE_S after, the processing list is read again: a message whose handling was cut short (a
SIGKILL at any point) is handled again, and since every step refuses a second copy, it runs once.

A task name must be a registered job; positional arguments take the job's names (JobSpec.positional).
Pickles, unknown names and bad arguments are refused, and the reason is written where the sender looks
(FAILURE in celery-task-meta-<id>) and on a failed row; nothing is unpickled.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import structlog

from runner.broker import lua
from runner.broker.connection import single_node
from runner.broker.keys import CeleryKeys, QueueKeys
from runner.errors import JobArgumentsError, UnknownJobError
from runner.fleet.metrics import INTAKE_MESSAGES
from runner.intake.celery_message import CeleryTask, RefusedMessage, parse_message
from runner.intake.handover import Handover
from runner.intake.results import ORIGIN, celery_exception, celery_meta, celery_report
from runner.registry import JobSpec
from runner.resources import Resources
from runner.status import JobStatus
from runner.store.jobs import Transition

__all__ = ["REDRIVE_S", "CeleryIntake"]

log = structlog.get_logger("runner.intake.celery")

REDRIVE_S = 30.0  # how often the processing list is read again (an intake elsewhere may have died mid-way)
IN_FLIGHT = 32  # messages handled at once: a slow commit of one does not hold back the ones behind it
_BLOCK_S = 0.25  # a blocking wait on the main list between claims of all lists


class CeleryIntake:
    """Takes one queue's Celery messages. Borrows the process's resources."""

    def __init__(self, resources: Resources, specs: dict[str, JobSpec]) -> None:
        settings = resources.settings
        self._redis = single_node(resources.redis, "the Celery intake")
        self._handover = Handover(resources, specs)
        self._queue = settings.queue_name
        self._lists = CeleryKeys(self._queue).lists
        self._processing = QueueKeys.of(self._queue).celery_intake
        self._expires_s = settings.celery_result_expires_s
        self._claim = lua.register(resources.redis, "celery_claim")
        self._slots = asyncio.Semaphore(IN_FLIGHT)
        self._in_flight: dict[bytes, asyncio.Task[str]] = {}  # claimed messages being handled

    async def run_forever(self) -> None:
        await self.redrive()
        redriven = time.monotonic()
        try:
            while True:
                await self._slots.acquire()
                item = await self._claim(keys=[self._processing, *self._lists])
                if item is None:  # nothing anywhere: wait on the main list, where nearly everything arrives
                    item = await self._command("BLMOVE", self._lists[0], self._processing, "RIGHT", "LEFT", _BLOCK_S)
                if item is not None:
                    self._start(item)
                    continue
                self._slots.release()
                if time.monotonic() - redriven > REDRIVE_S:
                    await self.redrive()
                    redriven = time.monotonic()
        finally:
            for task in self._in_flight.values():  # cut short: the messages stay in the processing list
                task.cancel()

    def _start(self, item: bytes) -> None:
        """Handle a claimed message beside the others in flight (its slot is taken: released when done)."""
        task = asyncio.create_task(self.handle(item))
        self._in_flight[item] = task
        task.add_done_callback(lambda done: self._done(item, done))

    def _done(self, item: bytes, task: asyncio.Task[str]) -> None:
        self._in_flight.pop(item, None)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:  # Redis or Postgres: the re-drive retries it
            log.warning("celery_message_not_handled", error=repr(task.exception()))

    async def redrive(self) -> int:
        """Handle every message still in the processing list but not in flight here; how many there were."""
        items: list[bytes] = await self._command("LRANGE", self._processing, 0, -1)
        items = [item for item in items if item not in self._in_flight]
        for item in items:
            await self.handle(item, redriven=True)
        if items:
            log.warning("celery_intake_redriven", messages=len(items))
        return len(items)

    async def handle(self, item: bytes, *, redriven: bool = False) -> str:
        """Hand one claimed message to the runner (or refuse it), then drop it from the processing list.
        A re-driven one may have been handed over before its handling was cut short: its row says so."""
        try:
            outcome = await self._take(parse_message(item), redriven=redriven)
        except RefusedMessage as refused:
            outcome = "refused"
            await self._refuse(refused)
        INTAKE_MESSAGES.labels("celery", outcome).inc()
        await self._command("LREM", self._processing, 1, item)
        return outcome

    async def _command(self, *args: Any) -> Any:
        # redis-py's types say an int timeout for BLMOVE (Redis 6 takes fractions) and sync results for async.
        return await self._redis.execute_command(*args)  # type: ignore[no-untyped-call]

    async def _take(self, task: CeleryTask, *, redriven: bool) -> str:
        try:
            spec, kwargs = self._handover.resolve(task.name, task.args, task.kwargs)
        except UnknownJobError as exc:
            raise RefusedMessage(str(exc), task_id=task.task_id, exc_type="NotRegistered") from None
        except JobArgumentsError as exc:
            raise RefusedMessage(str(exc), task_id=task.task_id, exc_type="TypeError") from None
        if task.has_workflow:
            raise RefusedMessage("callbacks, chains and chords (Celery canvas) are not supported by this runner",
                                 task_id=task.task_id, exc_type="NotImplementedError")  # fmt: skip
        now = datetime.now(UTC)
        if task.expires is not None and task.expires <= now:
            await self._report(task.task_id, "REVOKED", celery_exception("TaskRevokedError", "expired"))
            await self._store_failed(task.task_id, task.name, f"expired at {task.expires.isoformat()} before it ran",
                                     JobStatus.CANCELLED)  # fmt: skip
            return "expired"
        # Fresh messages skip this round trip: no row can exist before we write it. A re-driven one may have
        # been handed over before its message was dropped: it ran or runs under this id.
        if redriven and await self._handover.ran_before(task.task_id):
            return "duplicate"
        defer_s = max((task.eta - now).total_seconds(), 0.0) if task.eta else 0.0
        queued = await self._handover.hand_over(spec, task.task_id, kwargs, meta={ORIGIN: "celery"}, defer_s=defer_s)
        return "taken" if queued else "duplicate"

    async def _refuse(self, refused: RefusedMessage) -> None:
        log.warning("celery_message_refused", task_id=refused.task_id, exc_type=refused.exc_type, reason=str(refused))
        if refused.task_id is None:
            return  # no id: nobody can be told (the log line and the metric say it)
        await self._report(refused.task_id, "FAILURE", celery_exception(refused.exc_type, str(refused)))
        await self._store_failed(refused.task_id, "<celery>", f"refused: {refused}", JobStatus.FAILED)

    async def _report(self, task_id: str, state: str, result: Any) -> None:
        await celery_report(self._redis, task_id, celery_meta(task_id, state, result), expires_s=self._expires_s)

    async def _store_failed(self, task_id: str, name: str, error: str, status: JobStatus) -> None:
        await self._handover.store.move(Transition(task_id, status, name=name, queue=self._queue, error=error))
