# mypy: ignore-errors
# (runs in bench/.venv-taskiq, made by `python -m bench.run` from bench/requirements-taskiq.txt)
"""Driver for taskiq on Redis streams (taskiq-redis's RedisStreamBroker), as its users run it: the broker
started on the producer side (which declares the consumer group, so messages sent before a worker starts
are kept for it), `task.kiq(...)` (256 at a time before a throughput run), and one `taskiq worker` process
(`--workers 1`) with `--max-async-tasks CONCURRENCY`, taskiq's knob for jobs in flight in a process; its
defaults otherwise (prefetch 0, ack when done, XREADGROUP COUNT 100, uvloop).

From XINFO on the stream: taken: the group's last-delivered id has moved; running: the group's pending
(delivered, not yet acked) count; drained: nothing pending and the last delivered id is the stream's last.
See bench.drivers.peer for the rest.
"""

from __future__ import annotations

import asyncio
import os
import sys
from importlib.metadata import version
from typing import Any

from bench.drivers import peer
from bench.drivers.common import parse_args

SYSTEM = "taskiq"
GROUP = "taskiq"  # RedisStreamBroker's default consumer group


class TaskiqPeer:
    system = SYSTEM

    def __init__(self, args: Any) -> None:
        os.environ["BENCH_TASKIQ_QUEUE"], os.environ["REDIS_URL"] = args.queue, args.redis_url
        from bench.drivers import taskiq_jobs  # its broker is made at import, from the environment

        self.args, self.jobs = args, taskiq_jobs
        self.broker = taskiq_jobs.broker
        from redis.asyncio import Redis

        self.redis = Redis.from_url(args.redis_url)

    async def enqueue(self, name: str, count: int, **kwargs: Any) -> None:
        task = self.jobs.TASKS[name]
        for start in range(0, count, 256):
            await asyncio.gather(*(task.kiq(**kwargs) for _ in range(min(256, count - start))))

    async def enqueue_one(self, name: str, **kwargs: Any) -> None:
        await self.jobs.TASKS[name].kiq(**kwargs)

    async def group(self) -> dict[str, Any]:
        groups = await self.redis.xinfo_groups(self.args.queue)
        return next(g for g in groups if g["name"] in (GROUP, GROUP.encode()))

    async def taken(self, total: int) -> bool:
        return (await self.group())["last-delivered-id"] not in (b"0-0", "0-0")

    async def running(self) -> int:
        return int((await self.group())["pending"])

    async def drained(self) -> bool:
        last = (await self.redis.xinfo_stream(self.args.queue))["last-generated-id"]
        group = await self.group()
        return not group["pending"] and group["last-delivered-id"] == last

    def worker(self, concurrency: int, role: str) -> tuple[list[str], dict[str, str]]:
        argv = [sys.executable, "-m", "taskiq", "worker", "bench.drivers.taskiq_jobs:broker", "--workers", "1",
                "--max-async-tasks", str(concurrency), "--log-level", "WARNING"]  # fmt: skip
        return argv, {"BENCH_TASKIQ_QUEUE": self.args.queue, "REDIS_URL": self.args.redis_url}

    def notes(self, concurrency: int) -> dict[str, float | str]:
        return {"taskiq": version("taskiq"), "taskiq_redis": version("taskiq-redis"), "redis_py": version("redis"),
                "uvloop": version("uvloop"), "broker": "RedisStreamBroker", "max_async_tasks": concurrency,
                "max_prefetch": 0, "xread_count": 100, "ack": "when_saved",
                "worker": "1 process (`taskiq worker --workers 1`; uvloop)"}  # fmt: skip

    async def outcomes(self) -> dict[str, float | str]:
        return {}


async def main() -> None:
    args = parse_args(SYSTEM)
    system = TaskiqPeer(args)
    await system.broker.startup()
    try:
        await peer.run(system, args)
    finally:
        await system.broker.shutdown()
        await system.redis.aclose()


if __name__ == "__main__":
    asyncio.run(main())
