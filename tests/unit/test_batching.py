"""Group commit: items go out at once when idle, in batches under load, and none is lost on close."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from runner.errors import ResourceNotOpenError
from runner.worker.batching import Batcher


class Sink:
    def __init__(self, delay_s: float = 0.0, fail: BaseException | None = None) -> None:
        self.batches: list[list[int]] = []
        self.delay_s, self.fail = delay_s, fail

    async def write(self, items: Sequence[int]) -> None:
        await asyncio.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail
        self.batches.append(list(items))


async def test_an_item_goes_out_at_once_and_later_ones_gather():
    """An idle batcher writes the first item alone, at once; items arriving during that write go
    together in the next single write."""
    sink = Sink(delay_s=0.05)
    async with Batcher[int]("test", sink.write, outage_s=1) as batcher:
        first = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.01)  # the first write is under way
        await asyncio.gather(first, *(batcher.submit(n) for n in range(1, 10)))
    assert sink.batches == [[0], list(range(1, 10))]


async def test_waiting_submit_returns_only_after_its_item_is_written():
    """`submit(wait=True)` returns after the write that holds the item, even past max_items."""
    sink = Sink(delay_s=0.01)
    async with Batcher[int]("test", sink.write, max_items=3, outage_s=1) as batcher:

        async def submit_and_check(n: int) -> None:
            await batcher.submit(n)
            assert any(n in b for b in sink.batches)

        await asyncio.gather(*(submit_and_check(n) for n in range(10)))
    assert all(len(b) <= 3 for b in sink.batches)


async def test_close_writes_fire_and_forget_items():
    """Items submitted without waiting are still written before close returns."""
    sink = Sink()
    batcher = Batcher[int]("test", sink.write, outage_s=1)
    async with batcher:
        for n in range(5):
            await batcher.submit(n, wait=False)
    assert sorted(n for b in sink.batches for n in b) == [0, 1, 2, 3, 4]
    with pytest.raises(ResourceNotOpenError, match="after close"):
        await batcher.submit(9)


async def test_a_permanent_write_error_reaches_the_waiters():
    """A write that fails for good raises in every waiting submitter of that batch."""
    sink = Sink(fail=ValueError("bad row"))
    async with Batcher[int]("test", sink.write, outage_s=1) as batcher:
        with pytest.raises(ValueError, match="bad row"):
            await batcher.submit(1)


async def test_flush_returns_once_every_item_submitted_before_it_is_written():
    """`flush()` waits for fire-and-forget items too, across several writes, and not for items submitted
    after it was called; with nothing pending it returns at once."""
    sink = Sink(delay_s=0.02)
    async with Batcher[int]("test", sink.write, max_items=2, outage_s=1) as batcher:
        await batcher.flush()
        for n in range(5):
            await batcher.submit(n, wait=False)
        flushing = asyncio.create_task(batcher.flush())
        await asyncio.sleep(0)
        await batcher.submit(99, wait=False)  # after flush() began: not waited for
        await flushing
        assert sorted(n for batch in sink.batches for n in batch if n != 99) == [0, 1, 2, 3, 4]
    assert [n for batch in sink.batches for n in batch][-1] == 99


async def test_flush_returns_when_a_write_fails():
    sink = Sink(fail=RuntimeError("refused"))
    async with Batcher[int]("test", sink.write, outage_s=0.05) as batcher:
        await batcher.submit(1, wait=False)
        await asyncio.wait_for(batcher.flush(), 5)
