"""A job's time limits: the soft one, one catchable interrupt of the job's current await (Celery's
SoftTimeLimitExceeded, as asyncio can do it), then the hard one, which ends it (an `asyncio.timeout`).
See JobContext.past_soft_limit for what a job sees."""

from __future__ import annotations

import asyncio

__all__ = ["TimeLimits"]


class TimeLimits:
    """Arms a job's soft and hard limits with one timer at a time: the soft limit's, whose firing sets the hard
    one on `timeout` (entered with no deadline), or the hard limit's alone. Most jobs end before either, so a
    job costs one timer, not two.

    The soft limit's cancel request is withdrawn as soon as it is made (the interrupt still lands on 3.11): the
    task's cancel count then stays that of real cancellations, so a shutdown is never mistaken for the soft
    limit and `asyncio.timeout` still reports the hard limit correctly after a job swallowed the warning."""

    def __init__(self, timeout: asyncio.Timeout, *, soft_s: float | None, hard_s: float | None) -> None:
        self._task = asyncio.current_task()
        self._timeout = timeout
        self.fired = False
        loop = asyncio.get_running_loop()
        self._hard_at = loop.time() + hard_s if hard_s is not None else None
        self._handle: asyncio.TimerHandle | None = None
        if soft_s is not None and (hard_s is None or soft_s < hard_s):
            self._handle = loop.call_later(soft_s, self._fire)
        elif self._hard_at is not None:
            timeout.reschedule(self._hard_at)

    def _fire(self) -> None:
        self._handle = None
        if self._task is not None:
            self.fired = True
            self._task.cancel("soft time limit")
            self._task.uncancel()
        if self._hard_at is not None:
            self._timeout.reschedule(self._hard_at)

    def was_cause(self) -> bool:
        """Whether a CancelledError reaching us is the soft limit's alone, with no shutdown asking to cancel too."""
        return self.fired and self._task is not None and self._task.cancelling() == 0

    def disarm(self) -> None:
        """Call before leaving the timeout's `async with` (its reschedule() refuses afterwards)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
