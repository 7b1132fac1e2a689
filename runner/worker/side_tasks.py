"""The worker's side tasks, watched: lease renewal, the sweeper, the abort watch, the write batchers.

Each is meant to run as long as the worker does. One that ends on its own, above all with an unexpected
error, calls `on_failure` once: the worker then stops taking jobs, drains and exits, so its supervisor
replaces it. Without the watch, a lease renewal that died silently would let its jobs' leases lapse and
the jobs run twice. (procrastinate's `_monitor_side_tasks` does the same.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from runner.cancelling import CLEAN_UP_S, cancel_and_wait

__all__ = ["SideTasks"]

OnFailure = Callable[[str, BaseException | None], None]  # (task name, its error or None if it just ended)


class SideTasks:
    """Starts and watches side tasks; `stop()` cancels them (that is not a failure)."""

    def __init__(self, on_failure: OnFailure) -> None:
        self._on_failure = on_failure
        self._started: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self.failed: str | None = None  # the first side task that failed

    def start(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._started.add(task)
        self.watch(task)
        return task

    def watch(self, task: asyncio.Task[Any]) -> None:
        """Watch a task started elsewhere (its owner stops it; `stop()` only stops watching it)."""
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        if self._stopping or task.cancelled() or self.failed is not None:
            return
        self.failed = task.get_name()
        self._on_failure(task.get_name(), task.exception())

    async def stop(self) -> None:
        """Stop watching, and cancel the tasks started here."""
        self._stopping = True
        await cancel_and_wait(self._started, every_s=CLEAN_UP_S)
