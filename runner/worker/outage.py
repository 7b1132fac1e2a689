"""Riding out a Redis or Postgres outage: the worker's own writes retry with backoff for a bounded time.

A job's result or status transition must not be dropped because a server restarted mid-write; the
write is retried (logging each wait) for up to OUTAGE_RETRY_S, after which the error surfaces and the
job's lease expiry is the last line of defence. Redis refusing in a way that may pass (BUSY, READONLY just
after a failover, LOADING) is retried the same way, its kind logged; one that waiting cannot fix (WRONGTYPE,
OOM, MISCONF, ...) surfaces at once (runner.broker.server_errors).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from runner.backoff import Backoff, retry_with_backoff
from runner.broker.server_errors import classify
from runner.retry import is_transient

__all__ = ["OUTAGE_BACKOFF", "ride_out"]

T = TypeVar("T")
log = structlog.get_logger("runner.worker.outage")

OUTAGE_BACKOFF = Backoff(first_s=0.05, max_s=2.0)


async def ride_out(op: Callable[[], Awaitable[T]], *, what: str, budget_s: float) -> T:
    """Run `op`, retrying transient connection errors with backoff until `budget_s` has passed."""

    def on_retry(exc: BaseException, retry: int, delay: float) -> None:
        refusal = classify(exc)
        log.warning("outage_retry", what=what, error=repr(exc), attempt=retry, retry_in_s=round(delay, 2),
                    refused=refusal.kind if refusal else None)  # fmt: skip

    return await retry_with_backoff(
        op, backoff=OUTAGE_BACKOFF, budget_s=budget_s, retry_if=_worth_retrying, on_retry=on_retry
    )


def _worth_retrying(exc: BaseException) -> bool:
    refusal = classify(exc)
    return refusal.transient if refusal is not None else is_transient(exc)
