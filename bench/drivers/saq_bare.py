# mypy: ignore-errors
# (runs in bench/.venv-saq, made by `python -m bench.run` from bench/requirements-saq.txt)
"""Driver for SAQ on Redis, as its users run it: `queue.enqueue(...)` (256 at a time before a throughput
run), one `python -m saq` worker process (bench.drivers.saq_jobs) with concurrency = CONCURRENCY (SAQ's knob
for jobs in flight: that many BLMOVE loops, so its Redis pool gets that many connections and 50 more), on uvloop; SAQ's defaults otherwise (dequeue_timeout 0: block).

taken: the queue's `queued` list is shorter than what was enqueued; running: the length of its `active`
list; drained: its `incomplete` sorted set is empty (SAQ removes a job from it when it ends).  The 60 s jobs
of starvation get timeout 0 (SAQ's default timeout is 10 s).  See bench.drivers.peer for the rest.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import redis
import saq
import uvloop

from bench.drivers import peer
from bench.drivers.common import parse_args
from bench.drivers.saq_jobs import EXTRA_CONNECTIONS, make_queue

SYSTEM = "saq"


class SaqPeer:
    system = SYSTEM

    def __init__(self, args: Any) -> None:
        self.args = args
        self.queue = make_queue(args.queue, args.redis_url, 256)  # enqueues 256 at a time
        self.redis = self.queue.redis

    async def enqueue(self, name: str, count: int, **kwargs: Any) -> None:
        job = {"timeout": 0} if kwargs.get("seconds", 0) > 10 else {}  # the long filler jobs of starvation
        for start in range(0, count, 256):
            await asyncio.gather(*(self.queue.enqueue(name, **job, **kwargs) for _ in range(min(256, count - start))))

    async def enqueue_one(self, name: str, **kwargs: Any) -> None:
        await self.queue.enqueue(name, **kwargs)

    async def taken(self, total: int) -> bool:
        return await self.redis.llen(self.queue.namespace("queued")) < total

    async def running(self) -> int:
        return int(await self.redis.llen(self.queue.namespace("active")))

    async def drained(self) -> bool:
        return not await self.redis.zcard(self.queue.namespace("incomplete"))

    def worker(self, concurrency: int, role: str) -> tuple[list[str], dict[str, str]]:
        return [sys.executable, "-m", "saq", "bench.drivers.saq_jobs.settings"], {
            "BENCH_SAQ_QUEUE": self.args.queue, "BENCH_CONCURRENCY": str(concurrency), "REDIS_URL": self.args.redis_url}  # fmt: skip

    def notes(self, concurrency: int) -> dict[str, float | str]:
        return {"saq": saq.__version__ if hasattr(saq, "__version__") else "0.26.4", "redis_py": redis.__version__,
                "uvloop": uvloop.__version__, "concurrency": concurrency, "dequeue_timeout_s": 0,
                "redis_max_connections": concurrency + EXTRA_CONNECTIONS,
                "worker": "1 process, `saq` CLI (uvloop)"}  # fmt: skip

    async def outcomes(self) -> dict[str, float | str]:
        return {}


async def main() -> None:
    args = parse_args(SYSTEM)
    system = SaqPeer(args)
    await system.queue.connect()
    try:
        await peer.run(system, args)
    finally:
        await system.queue.disconnect()


if __name__ == "__main__":
    asyncio.run(main())
