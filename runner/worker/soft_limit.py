"""The soft time limit: one catchable interrupt of a job's current await (Celery's SoftTimeLimitExceeded,
as asyncio can do it). See JobContext.past_soft_limit for what a job sees."""

from __future__ import annotations

import asyncio

__all__ = ["SoftLimit"]


class SoftLimit:
    """Interrupts the current task's await once, at the soft limit, with a cancellation it can catch.

    The cancel request is withdrawn as soon as it is made (the interrupt still lands on 3.11): the task's
    cancel count then stays that of real cancellations, so a shutdown is never mistaken for the soft limit
    and `asyncio.timeout` still reports the hard limit correctly after a job swallowed the warning."""

    def __init__(self, delay_s: float) -> None:
        self._task = asyncio.current_task()
        self.fired = False
        loop = asyncio.get_running_loop()
        self._handle = loop.call_later(delay_s, self._fire) if delay_s < 1e9 else None

    def _fire(self) -> None:
        if self._task is not None:
            self.fired = True
            self._task.cancel("soft time limit")
            self._task.uncancel()

    def was_cause(self) -> bool:
        """Whether a CancelledError reaching us is ours alone, with no shutdown asking to cancel too."""
        return self.fired and self._task is not None and self._task.cancelling() == 0

    def disarm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
