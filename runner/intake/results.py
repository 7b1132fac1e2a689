"""Telling a foreign producer how its job went, where it looks: a job that came through an intake carries
`origin` in its envelope's metadata, and the worker reports its start and end here.

    celery   celery-task-meta-<id>, as Celery's Redis result backend writes it (STARTED, RETRY, SUCCESS,
             FAILURE, REVOKED), set with result_expires and published on the same channel, which
             AsyncResult.get() waits on
    arq      arq:in-progress:<id> while it runs, then arq:result:<id> (arq's result envelope, JSON) with
             arq:job:<id> and its parked entry in arq's queue removed, which Job.status() and Job.result() read

A report that fails (Redis gone) is logged and dropped: the job's own outcome is in Postgres regardless.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from runner.broker.connection import RedisClient
from runner.broker.keys import ArqKeys, CeleryKeys
from runner.errors import ConfigError
from runner.status import JobStatus

__all__ = ["ORIGIN", "ForeignResults", "ReportedRun", "celery_exception", "celery_meta", "celery_report"]

log = structlog.get_logger("runner.intake.results")

ORIGIN = "origin"  # the metadata key; its value names the producer's system

_CELERY_STATE = {JobStatus.COMPLETED: "SUCCESS", JobStatus.FAILED: "FAILURE", JobStatus.CANCELLED: "REVOKED"}


@dataclass(frozen=True, slots=True)
class ReportedRun:
    """One run of a job whose producer wants to hear about it."""

    job_id: str
    meta: Mapping[str, str]
    worker_id: str
    timeout_s: float


class ForeignResults:
    """Writes each origin's reports. Borrows the Redis pool."""

    def __init__(self, redis: RedisClient, *, celery_expires_s: int) -> None:
        # Foreign jobs come only through the intakes, which need a single Redis (never a cluster).
        self._single: Redis | None = redis if isinstance(redis, Redis) else None
        self._celery_expires_s = celery_expires_s

    @property
    def _redis(self) -> Redis:
        if self._single is None:
            raise ConfigError("reporting to Celery or arq needs a single Redis or Sentinel, not Redis Cluster")
        return self._single

    def wanted(self, meta: Mapping[str, str]) -> bool:
        return self._single is not None and meta.get(ORIGIN) in ("celery", "arq")

    async def started(self, run: ReportedRun) -> None:
        origin = run.meta.get(ORIGIN)
        if origin == "celery":
            state = celery_meta(run.job_id, "STARTED", {"pid": os.getpid(), "hostname": run.worker_id})
            await self._celery(run.job_id, state)
        elif origin == "arq":
            await self._safely(run, self._redis.set(ArqKeys.in_progress(run.job_id), b"1",
                                                    px=int((run.timeout_s + 10) * 1000)))  # fmt: skip

    async def retrying(self, run: ReportedRun, error: str, traceback: str | None) -> None:
        if run.meta.get(ORIGIN) == "celery":
            await self._celery(run.job_id, celery_meta(run.job_id, "RETRY", _exception(error), traceback))

    async def ended(
        self,
        run: ReportedRun,
        status: JobStatus,
        *,
        result: Any = None,
        error: str | None = None,
        traceback: str | None = None,
        envelope: bytes | None = None,
        keep_result_ms: int = 0,
    ) -> None:
        """The job's final outcome; `envelope` is the runner's result envelope (arq's shape)."""
        origin = run.meta.get(ORIGIN)
        if origin == "celery":
            state = _CELERY_STATE[status]
            value = result if status is JobStatus.COMPLETED else _exception(error or "failed", state)
            await self._celery(run.job_id, celery_meta(run.job_id, state, value, traceback))
        elif origin == "arq":
            async with self._redis.pipeline(transaction=True) as pipe:
                if envelope is not None:
                    pipe.set(ArqKeys.result(run.job_id), envelope, px=keep_result_ms or None)
                pipe.delete(ArqKeys.in_progress(run.job_id), ArqKeys.job(run.job_id))
                if arq_queue := run.meta.get("arq_queue"):  # the intake parked the id there (see arq_intake.py)
                    pipe.zrem(arq_queue, run.job_id)
                await self._safely(run, pipe.execute())

    async def _celery(self, task_id: str, state: dict[str, Any]) -> None:
        await celery_report(self._redis, task_id, state, expires_s=self._celery_expires_s)

    async def _safely(self, run: ReportedRun, write: Any) -> None:
        try:
            await write
        except (RedisError, OSError) as exc:
            log.warning("foreign_report_failed", job_id=run.job_id, origin=run.meta.get(ORIGIN), error=repr(exc))


def celery_meta(task_id: str, state: str, result: Any, traceback: str | None = None) -> dict[str, Any]:
    """Celery's result meta (backends/base.py `_get_result_meta`), JSON."""
    done = state in ("SUCCESS", "FAILURE", "REVOKED")
    return {"status": state, "result": result, "traceback": traceback, "children": [],
            "date_done": datetime.now(UTC).isoformat() if done else None, "task_id": task_id}  # fmt: skip


async def celery_report(redis: Redis, task_id: str, state: dict[str, Any], *, expires_s: int) -> None:
    """Set the task's meta and publish it (what Celery's RedisBackend.set does); never raises."""
    key, value = CeleryKeys.meta(task_id), orjson.dumps(state)
    try:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.set(key, value, ex=expires_s)
            pipe.publish(key, value)
            await pipe.execute()
    except (RedisError, OSError) as exc:
        log.warning("foreign_report_failed", job_id=task_id, origin="celery", error=repr(exc))


# Exception types the Celery client has itself: rebuilt as the real class (others as a class of that name).
_CELERY_MODULES = {"NotRegistered": "celery.exceptions", "TaskRevokedError": "celery.exceptions",
                   "ContentDisallowed": "kombu.exceptions", "TypeError": "builtins",
                   "NotImplementedError": "builtins"}  # fmt: skip


def celery_exception(exc_type: str, message: str) -> dict[str, Any]:
    """An error as Celery's JSON exception (`prepare_exception`), which the client raises from `.get()`."""
    return {"exc_type": exc_type, "exc_message": [message], "exc_module": _CELERY_MODULES.get(exc_type)}


def _exception(error: str, state: str = "FAILURE") -> dict[str, Any]:
    """The runner's "Type: message" as Celery's JSON exception."""
    if state == "REVOKED":
        return celery_exception("TaskRevokedError", error)
    name, sep, message = error.partition(": ")
    if not sep or not name.isidentifier():
        name, message = "JobFailed", error
    return celery_exception(name, message)
