"""The heartbeat sees its own event loop: how late it runs, and, when it is blocked, where."""

from __future__ import annotations

import asyncio
import time

import structlog

from runner.fleet.control import ControlPipe, Heartbeat, parse_line


def blocking_job_body() -> None:
    time.sleep(0.8)


async def test_a_blocked_loop_is_logged_once_with_its_stack_and_job_and_its_lag_measured():
    lags: list[float] = []
    with structlog.testing.capture_logs() as logs:
        async with Heartbeat(ControlPipe(None), on_orphaned=lambda: None, observe_lag=lags.append, blocked_log_s=0.3):
            await asyncio.sleep(0.6)  # a few quiet turns first

            async def job() -> None:
                blocking_job_body()

            await asyncio.create_task(job(), name="job:sleepy-1")
            await asyncio.sleep(0.6)
    blocked = [e for e in logs if e["event"] == "event_loop_blocked"]
    assert len(blocked) == 1, blocked  # once per block, not once per beat
    assert blocked[0]["job_id"] == "sleepy-1" and blocked[0]["blocked_s"] >= 0.3
    assert any("test_heartbeat.py" in frame and "blocking_job_body" in frame for frame in blocked[0]["stack"])
    assert max(lags) >= 0.5 and min(lags) < 0.05  # the block shows as lag; quiet turns do not


def test_control_lines_parse_and_unknown_ones_are_ignored():
    assert parse_line(b"alive\n") == ("alive", 0.0, "")
    assert parse_line(b"retiring\n") == ("retiring", 0.0, "")
    assert parse_line(b"blocked 12.5 job:abc\n") == ("blocked", 12.5, "job:abc")
    assert parse_line(b"blocked soon job:abc\n") == ("", 0.0, "")
    assert parse_line(b"\xff\xfe garbage\n") == ("", 0.0, "")
