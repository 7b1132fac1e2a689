"""A registry for the intake's fault tests: the story jobs, plus a job that counts in Redis how often each
id ran (so a test can prove each ran exactly once). Run as `--registry tests.acceptance.legacy_jobs:registry`."""

from __future__ import annotations

from jobs import registry as story_registry
from runner.context import JobContext
from runner.registry import Registry, job


def runs_key(job_id: str) -> str:
    return f"test:legacy:runs:{job_id}"


@job("legacy.count", positional=("n",))
async def count(ctx: JobContext, *, n: int) -> int:
    await ctx.redis.incr(runs_key(ctx.job_id))
    return n


registry = Registry(
    specs=(*story_registry.specs, count),
    services=story_registry.services,
    migrations=story_registry.migrations,
    settings=story_registry.settings,
)
