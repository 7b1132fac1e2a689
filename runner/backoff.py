"""Retrying with exponential backoff: one schedule and one loop for every wait the runner makes.

The runner's own writes riding out an outage, start-up connections, the claim loop after a failed
round trip and the supervisor restarting a child that keeps dying all wait `first_s * factor**(n-1)`,
capped at `max_s`, before their n-th retry. Jobs' retries add jitter on top (see runner.retry).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["Backoff", "retry_with_backoff"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Waits growing by `factor` from `first_s`, never longer than `max_s`."""

    first_s: float
    max_s: float
    factor: float = 2.0

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (counting from 1)."""
        return min(self.first_s * self.factor ** max(retry - 1, 0), self.max_s)


async def retry_with_backoff(
    op: Callable[[], Awaitable[T]],
    *,
    backoff: Backoff,
    budget_s: float,
    retry_if: Callable[[BaseException], bool],
    on_retry: Callable[[BaseException, int, float], None],
) -> T:
    """Run `op` until it succeeds, retrying errors `retry_if` accepts while the next wait still ends
    within `budget_s` of the start; then the last error is raised. `on_retry(error, retry, delay)` is
    called before each wait (to log it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_s
    retry = 1
    while True:
        try:
            return await op()
        except Exception as exc:
            delay = backoff.delay(retry)
            if not retry_if(exc) or loop.time() + delay > deadline:
                raise
            on_retry(exc, retry, delay)
            await asyncio.sleep(delay)
            retry += 1
