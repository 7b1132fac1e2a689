"""A registry for the fault tests: the story job plus a job that kills its own worker process."""

from __future__ import annotations

import asyncio
import os
import signal

from jobs import registry as story_registry
from runner.context import JobContext
from runner.registry import Registry, job


@job("crash.kill_own_worker")
async def kill_own_worker(ctx: JobContext, *, note: str) -> None:
    await asyncio.sleep(0.2)  # mid-run: its start is on record by then
    os.kill(os.getpid(), signal.SIGKILL)


registry = Registry(
    specs=(*story_registry.specs, kill_own_worker),
    services=story_registry.services,
    migrations=story_registry.migrations,
    settings=story_registry.settings,
)
