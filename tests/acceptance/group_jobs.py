"""A registry for the group fault tests: members that SIGKILL their own worker just after they end."""

from __future__ import annotations

import asyncio
import os
import signal

import orjson

from runner.context import JobContext
from runner.registry import Registry, job


@job("grp.member_then_die")
async def member_then_die(ctx: JobContext, *, tag: str, value: int, sleep_s: float = 0.0,
                          die_after_ms: float | None = None) -> int:  # fmt: skip
    """Returns value * 10; on its first try, with `die_after_ms`, its worker is SIGKILLed that long after
    the job returns: while the runner records its end, writes its group's join or pushes it."""
    await asyncio.sleep(sleep_s)
    if die_after_ms is not None and ctx.attempt == 1:
        await ctx.redis.rpush(f"{tag}:killed", os.getpid())
        asyncio.get_running_loop().call_later(die_after_ms / 1000, os.kill, os.getpid(), signal.SIGKILL)
    return value * 10


@job("grp.record_join")
async def record_join(ctx: JobContext, *, tag: str) -> None:
    """Records each run: its process, and its group's results."""
    group = await ctx.group()
    await ctx.redis.rpush(tag, orjson.dumps({"pid": os.getpid(), "results": group.results, "ok": group.ok}))


registry = Registry(specs=(member_then_die, record_join))
