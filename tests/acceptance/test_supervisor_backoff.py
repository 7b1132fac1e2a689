"""The supervisor restarts a child that keeps dying with growing delays, not in a tight loop
(runner.fleet.supervisor), with real child processes."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
from pathlib import Path

import pytest

from runner.fleet.supervisor import ChildSpec, Supervisor
from tests.conftest import wait_for

pytestmark = pytest.mark.slow

STARTS = 5


def dies_at_once(stamps: Path) -> ChildSpec:
    """A child that notes when it started, then exits with an error at once."""
    code = f"import time; open({str(stamps)!r}, 'a').write(f'{{time.monotonic()}}\\n'); raise SystemExit(3)"
    return ChildSpec("crashy", lambda instance: [sys.executable, "-c", code])


def starts(stamps: Path) -> list[float]:
    return [float(line) for line in stamps.read_text().split()] if stamps.exists() else []


async def test_a_child_that_keeps_dying_is_restarted_with_growing_delays(tmp_path: Path) -> None:
    """Five starts of a child that exits at once: the first restart is immediate, then each gap is at
    least 1.5 times the one before (0.5 s, 1 s, 2 s ...), and a stop during a backoff starts nothing more."""
    stamps = tmp_path / "starts"
    supervisor = Supervisor([dies_at_once(stamps)], env=dict(os.environ), grace_s=1)
    running = asyncio.create_task(supervisor.run())
    try:

        async def enough() -> bool:
            assert not running.done(), running
            return len(starts(stamps)) >= STARTS

        await wait_for(enough, timeout=20, every=0.01)
    finally:
        supervisor.handle_signal(signal.SIGTERM)
        assert await asyncio.wait_for(running, 10) == 0
    times = starts(stamps)
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(times)]
    print(f"\nmeasured restart gaps: {gaps} s")
    assert gaps[0] < 0.4, gaps  # the first crash is restarted at once
    for earlier, later in itertools.pairwise(gaps[1:]):
        assert later >= 1.5 * earlier, gaps
    assert gaps[1] >= 0.4, gaps
    await asyncio.sleep(0.5)
    assert len(starts(stamps)) == len(times), "a child was started after the supervisor stopped"
