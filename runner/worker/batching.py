"""Group commit: many small writes become one. Items submitted while a write is under way are written
together in the next one, so at low load an item goes out at once and at high load in large batches.

A submitter may wait for its item to be written (`wait=True`: the write's outcome is its outcome) or not
(`wait=False`: fire and forget; `close()` still writes it before the batcher stops). A failed write is
retried as one through `ride_out`, so an outage delays writes rather than dropping them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import structlog

from runner.errors import ResourceNotOpenError
from runner.worker.outage import ride_out

__all__ = ["Batcher"]

T = TypeVar("T")
log = structlog.get_logger("runner.worker.batching")


class Batcher(Generic[T]):
    """Writes submitted items in batches with `write(items)`; use `async with` (closing flushes)."""

    def __init__(
        self, name: str, write: Callable[[Sequence[T]], Awaitable[None]], *, max_items: int = 1000, outage_s: float
    ) -> None:
        self._name = name
        self._write = write
        self._max_items = max_items
        self._outage_s = outage_s
        self._items: list[tuple[T, asyncio.Future[None] | None]] = []
        self._pending = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._submitted = 0  # items submitted so far, and of them written (or failed): for flush()
        self._handled = 0
        self._progress = asyncio.Event()

    async def __aenter__(self) -> Batcher[T]:
        self._task = asyncio.create_task(self._run(), name=f"batcher:{self._name}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def submit(self, item: T, *, wait: bool = True) -> None:
        """Queue `item`; with `wait`, return once it is written (raising what the write raised)."""
        if self._task is None or self._closing:
            raise ResourceNotOpenError(f"{self._name}: submit before `async with`, or after close")
        while len(self._items) >= self._max_items * 10:  # backpressure while the writer cannot keep up
            self._room.clear()
            await self._room.wait()
        done = asyncio.get_running_loop().create_future() if wait else None
        self._items.append((item, done))
        self._submitted += 1
        self._pending.set()
        if done is not None:
            await done

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The writer task while open (for a watcher: it ends only at close, or by a bug)."""
        return self._task

    async def flush(self) -> None:
        """Return once every item submitted before this call has been written (or its write has failed)."""
        target = self._submitted
        while self._handled < target and self._task is not None and not self._task.done():
            self._progress.clear()
            await self._progress.wait()

    async def close(self) -> None:
        """Write everything submitted so far, then stop."""
        if self._task is None or self._closing:
            return
        self._closing = True
        self._pending.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            await self._pending.wait()
            self._pending.clear()
            while self._items:
                batch, self._items = self._items[: self._max_items], self._items[self._max_items :]
                self._room.set()
                try:
                    await self._write_batch(batch)
                finally:
                    self._handled += len(batch)
                    self._progress.set()
            if self._closing:
                return

    async def _write_batch(self, batch: list[tuple[T, asyncio.Future[None] | None]]) -> None:
        items = [item for item, _ in batch]
        try:
            await ride_out(lambda: self._write(items), what=self._name, budget_s=self._outage_s)
        except Exception as exc:
            log.error("batch_write_failed", batcher=self._name, items=len(items), error=repr(exc))
            for _, waiter in batch:
                if waiter is not None and not waiter.done():
                    waiter.set_exception(exc)
            return
        for _, waiter in batch:
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
