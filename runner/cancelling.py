"""Cancelling for certain under Python 3.11.

A cancel can be lost there: `asyncio.wait_for`, which redis-py wraps round each socket write once a read
timeout is set (our Sentinel and Cluster clients set one), returns the write's result and drops a cancel
that lands in the loop iteration where the write completes (CPython gh-86296; fixed in 3.12, where it is
built on `asyncio.timeout`). The cancelled task goes on to its next await: a 30 s blocking read, or the
next turn of a loop that never ends. So what must stop is cancelled again until it has."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

# How long a cancelled task gets before it is cancelled again: far longer than the one loop iteration
# a lost cancel takes to show, far shorter than anyone waits for a stop. Tasks with clean-up to await
# (closing a connection) are given longer.
RECANCEL_S = 0.1
CLEAN_UP_S = 1.0


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], *, every_s: float = RECANCEL_S) -> None:
    """Cancel `tasks` and wait until every one has ended, cancelling again any still running after each
    `every_s`. A task that awaits clean-up when cancelled gets `every_s` for it before the next cancel."""
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=every_s)
    await asyncio.gather(*tasks, return_exceptions=True)  # their outcomes read: none is logged as unretrieved
