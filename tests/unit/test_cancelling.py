"""cancel_and_wait ends tasks that a single cancel does not (a cancel lost under Python 3.11)."""

from __future__ import annotations

import asyncio

from runner.cancelling import RECANCEL_S, cancel_and_wait


async def _loses_one_cancel(seen: list[str]) -> None:
    """As a task does whose cancel asyncio.wait_for dropped: it goes on to its next await."""
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        seen.append("lost")
    await asyncio.sleep(30)


async def _fails() -> None:
    raise ValueError("read, not logged as unretrieved")


async def test_a_task_that_lost_its_cancel_is_cancelled_again():
    seen: list[str] = []
    stubborn = asyncio.create_task(_loses_one_cancel(seen))
    plain = asyncio.create_task(asyncio.sleep(30))
    done_already = asyncio.create_task(_fails())
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(cancel_and_wait([stubborn, plain, done_already]), 5)
    assert seen == ["lost"]
    assert stubborn.cancelled() and plain.cancelled()
    assert isinstance(done_already.exception(), ValueError)
    assert loop.time() - started < RECANCEL_S * 5


async def test_nothing_to_cancel():
    await cancel_and_wait([])
