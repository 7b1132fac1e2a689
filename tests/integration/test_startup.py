"""Start-up retries unreachable servers with backoff, then fails naming the server and what to check."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from runner.devservers import EmbeddedValkey, free_port
from runner.errors import StartupError
from runner.resources import open_resources
from tests.conftest import MakeSettings


async def test_unreachable_redis_fails_after_the_retry_budget(make_settings: MakeSettings):
    """With nothing listening, start-up gives up after STARTUP_RETRY_S with an error naming Redis."""
    settings = make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", startup_retry_s=1)
    started = time.monotonic()
    with pytest.raises(StartupError, match=r"redis did not answer within STARTUP_RETRY_S=1\.0s"):
        async with open_resources(settings):
            pass
    assert 0.5 < time.monotonic() - started < 4


async def test_redis_coming_up_during_start_up_is_waited_for(make_settings: MakeSettings, tmp_path: Path):
    """A server that starts while we retry is connected to, as Celery's retry on start-up did."""
    server = EmbeddedValkey(tmp_path / "late")
    settings = make_settings(redis_url=server.url, startup_retry_s=20)

    async def start_late() -> None:
        await asyncio.sleep(0.7)
        await asyncio.to_thread(server.start)

    late = asyncio.create_task(start_late())
    try:
        async with open_resources(settings) as resources:
            assert await resources.redis.ping()
    finally:
        await late
        server.stop()
