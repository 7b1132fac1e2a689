"""A claimed job: read from the payload Redis handed over (its registered spec, its arguments, which try this
is), and the records its run makes (status transitions, the result envelope arq's clients read, error text).
A payload that cannot be read names why (PermanentError): the executor fails the job with it."""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from typing import Any

from arq.jobs import serialize_result

from runner import envelope
from runner.broker.queue import ClaimedJob
from runner.errors import PermanentError, UnknownJobError
from runner.registry import JobSpec
from runner.status import JobStatus
from runner.store.jobs import Transition

__all__ = [
    "PreparedJob", "describe", "error_traceback", "loggable", "peek_kwargs", "peek_name", "prepare",
    "result_envelope", "transition",
]  # fmt: skip


@dataclass(slots=True)  # not frozen: see runner.broker.queue.ClaimedJob
class PreparedJob:
    spec: JobSpec
    kwargs: dict[str, Any]
    attempt: int
    enqueue_time_ms: int
    raw_kwargs: dict[str, Any]  # as JSON in the payload, kept on the row so a lost job can be re-enqueued
    # The attempt this run of the job began at: 1, or past the tries of earlier runs for a job an operator
    # sent back to the queue (its payload says so), which gets its full retry policy again.
    first_try: int = 1
    run_started: float = 0.0  # epoch s: this attempt's record
    parent_id: str | None = None  # the job that enqueued this one
    meta: dict[str, str] | None = None  # the payload's metadata: the enqueuer's trace context (runner.tracing)

    @property
    def tries_used(self) -> int:
        return self.attempt - self.first_try + 1

    @property
    def last_try(self) -> int:
        return self.first_try - 1 + self.spec.max_tries


def prepare(claimed: ClaimedJob, specs: dict[str, JobSpec]) -> PreparedJob:
    """The claimed job, read and bound to its spec; PermanentError saying why if it cannot be."""
    if claimed.payload is None:
        raise PermanentError("job payload is gone from Redis (expired before any worker ran it)")
    payload = envelope.decode_job(claimed.payload)
    spec = specs.get(payload.name)
    if spec is None:
        raise UnknownJobError(f"no job named {payload.name!r} is registered; known jobs: {sorted(specs)}")
    kwargs = spec.bind(payload.args, payload.kwargs)
    first_try = max(payload.enqueue_try or 1, 1)
    attempt = max(claimed.try_count, first_try)
    return PreparedJob(spec, kwargs, attempt, payload.enqueue_time_ms, payload.kwargs, first_try, time.time(),
                       payload.meta.get("parent"), payload.meta)  # fmt: skip


def peek_name(claimed: ClaimedJob, specs: dict[str, JobSpec]) -> tuple[str, JobSpec | None]:
    """The job's name and spec as far as a payload that failed to prepare still says them."""
    try:
        name = str(envelope.deserialize(claimed.payload or b"")["f"])
    except Exception:
        return "<undecodable>", None
    return name, specs.get(name)


def peek_kwargs(claimed: ClaimedJob) -> dict[str, Any]:
    """The job's keyword arguments as far as a payload that failed to prepare still says them."""
    try:
        kwargs = envelope.deserialize(claimed.payload or b"").get("k")
    except Exception:
        return {}
    return kwargs if isinstance(kwargs, dict) else {}


# --- the records a run makes -------------------------------------------------------------------------


def transition(
    claimed: ClaimedJob,
    prepared: PreparedJob,
    worker_id: str,
    status: JobStatus,
    error: str | None = None,
    result: Any = None,
    outcome: str | None = None,
    traceback: str | None = None,
) -> Transition:
    """The job's row moving to `status` (with this attempt's record when `outcome` is given)."""
    return Transition(
        claimed.job_id, status, name=prepared.spec.name, queue=claimed.queue, attempt=prepared.attempt,
        max_tries=prepared.last_try, worker=worker_id, error=error, result=result,
        args=prepared.raw_kwargs, started=status is JobStatus.PROCESSING, run_started=prepared.run_started,
        outcome=outcome, traceback=traceback, parent_id=prepared.parent_id,
    )  # fmt: skip


def result_envelope(claimed: ClaimedJob, prepared: PreparedJob, success: bool, result: Any) -> bytes | None:
    """The result as arq keeps it in Redis (what arq's clients and our intakes' senders read)."""
    now = int(time.time() * 1000)
    data: bytes | None = serialize_result(
        prepared.spec.name, (), prepared.kwargs, prepared.attempt, prepared.enqueue_time_ms, success, result,
        now, now, claimed.job_id, claimed.queue, claimed.job_id, serializer=envelope.serialize,
    )  # fmt: skip
    return data


def loggable(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)


def error_traceback(exc: BaseException, limit_chars: int = 16_000) -> str:
    """The error's traceback for its attempt record (its innermost frames, if it is long)."""
    text = "".join(traceback.format_exception(exc))
    return text if len(text) <= limit_chars else "...\n" + text[-limit_chars:]


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
