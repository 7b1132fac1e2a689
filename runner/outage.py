"""Riding out a Redis or Postgres outage: the runner's own writes retry with backoff for a bounded time.

A job's result or status transition must not be dropped because a server restarted mid-write; the
write is retried (logging each wait) for up to OUTAGE_RETRY_S, after which the error surfaces and the
job's lease expiry is the last line of defence.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from runner.retry import is_transient

__all__ = ["ride_out"]

T = TypeVar("T")
log = structlog.get_logger("runner.outage")


async def ride_out(op: Callable[[], Awaitable[T]], *, what: str, budget_s: float) -> T:
    """Run `op`, retrying transient connection errors with backoff until `budget_s` has passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_s
    delay = 0.05
    attempt = 1
    while True:
        try:
            return await op()
        except Exception as exc:
            if not is_transient(exc) or loop.time() + delay > deadline:
                raise
            log.warning("outage_retry", what=what, error=repr(exc), attempt=attempt, retry_in_s=round(delay, 2))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            attempt += 1
