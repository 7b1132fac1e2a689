"""A registry for the liveness tests: a job that blocks its worker's event loop on its first try."""

from __future__ import annotations

import asyncio
import time

from runner.context import JobContext
from runner.registry import Registry, job


@job("block.loop")
async def block_loop(ctx: JobContext, *, seconds: float) -> str:
    if ctx.attempt == 1:
        time.sleep(seconds)  # noqa: ASYNC251 - the fault under test: a job that blocks the event loop
    return f"attempt {ctx.attempt}"


@job("block.await")
async def await_a_while(ctx: JobContext, *, seconds: float) -> str:
    await asyncio.sleep(seconds)
    return f"attempt {ctx.attempt}"


registry = Registry(specs=(block_loop, await_a_while))
