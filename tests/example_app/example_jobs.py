"""An example project's jobs: one that returns a value, one that fails, one that needs retries, one that
enqueues others (a fan-out), and one that sleeps (for time limits and process workers)."""

from __future__ import annotations

import asyncio

from runner import JobContext, PermanentError, Registry, RetryPolicy, TransientError, job


@job("example.add")
async def add(ctx: JobContext, *, a: int, b: int) -> int:
    return a + b


@job("example.refuse")
async def refuse(ctx: JobContext, *, reason: str) -> None:
    raise PermanentError(f"refused: {reason}")


@job("example.flaky", retry=RetryPolicy(max_tries=3, base_delay_s=0.05))
async def flaky(ctx: JobContext, *, fail_times: int) -> int:
    """Fails its first `fail_times` tries with an error worth retrying; returns the try that succeeded."""
    if ctx.attempt <= fail_times:
        raise TransientError(f"try {ctx.attempt} of {ctx.max_tries} failed")
    return ctx.attempt


@job("example.double_all")
async def double_all(ctx: JobContext, *, numbers: list[int]) -> list[str]:
    """Enqueues one example.add per number (n + n); returns the children's job ids."""
    children = []
    for i, n in enumerate(numbers):
        handle = await ctx.jobs.enqueue("example.add", job_id=f"{ctx.job_id}:add:{i}", a=n, b=n)
        children.append(handle.job_id)
    return children


@job("example.nap")
async def nap(ctx: JobContext, *, seconds: float) -> str:
    await asyncio.sleep(seconds)
    return ctx.worker_id


registry = Registry(specs=(add, refuse, flaky, double_all, nap))
