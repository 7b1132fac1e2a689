"""A worker's presence: every PRESENCE_S it writes what an operator needs to each of its queues' worker lists
(host, pid, started, jobs running and done, memory, event-loop lag, state), with a short TTL, so a
worker that died drops out of the list by itself. Read by runner.ops."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from redis.exceptions import RedisError

from runner.broker.connection import RedisClient
from runner.broker.keys import QueueKeys

__all__ = ["PRESENCE_S", "Presence"]

PRESENCE_S = 2.0
_TTL_MS = int(PRESENCE_S * 3 * 1000)


class Presence:
    """Writes one worker's report; `snapshot()` gives what changes (running, done, state, ...)."""

    def __init__(
        self,
        redis: RedisClient,
        queues: str | Sequence[str],
        worker_id: str,
        snapshot: Callable[[], dict[str, Any]],
        *,
        host: str | None = None,
    ) -> None:
        self._redis = redis
        names = [queues] if isinstance(queues, str) else list(queues)
        self._keys = [QueueKeys.of(name) for name in names]
        self._worker_id = worker_id
        self._snapshot = snapshot
        self._fixed = {"worker_id": worker_id, "queue": names[0], "queues": names, "host": host or socket.gethostname(),
                       "pid": os.getpid(), "started_at": time.time()}  # fmt: skip
        self._lag_s = 0.0

    async def run_forever(self) -> None:
        while True:
            with contextlib.suppress(RedisError, OSError):  # an outage: the entry lapses, then comes back
                await self.report()
            asked = time.monotonic()
            await asyncio.sleep(PRESENCE_S)
            self._lag_s = max(time.monotonic() - asked - PRESENCE_S, 0.0)

    async def report(self) -> None:
        now = time.time()
        info = {**self._fixed, **self._snapshot(), "heartbeat_at": now, "loop_lag_ms": round(self._lag_s * 1000, 1)}
        async with self._redis.pipeline(transaction=False) as pipe:
            for keys in self._keys:
                pipe.set(keys.worker(self._worker_id), orjson.dumps({**info, "queue": keys.queue}), px=_TTL_MS)
                pipe.zadd(keys.workers, {self._worker_id: int(now * 1000)})
                pipe.zremrangebyscore(keys.workers, "-inf", int(now * 1000) - _TTL_MS)
            await pipe.execute()

    async def leave(self) -> None:
        """Take this worker off the list (call once `run_forever` is stopped)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for keys in self._keys:
                pipe.delete(keys.worker(self._worker_id))
                pipe.zrem(keys.workers, self._worker_id)
            await pipe.execute()
