"""Limits shared by every worker process, kept in Redis: at most N calls at once to a provider, and
optionally at most M calls a minute. Providers impose both; one process cannot see the others' calls.

A slot is a member of a sorted set scored by its expiry, so a holder that died frees its slot when the
expiry passes; the per-minute window is a second sorted set of call times. Waiting is bounded: past
`max_wait_s` the caller gets `RetryLaterError` and its job goes back to the queue without using a try,
instead of holding a worker slot hostage.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from arq.connections import ArqRedis

from runner.errors import RetryLaterError

__all__ = ["Limit", "Limiter"]

# Take a slot if fewer than ARGV[2] are held and fewer than ARGV[5] calls started in the last minute.
# Returns 0 when taken, else how many ms to wait before asking again.
_ACQUIRE = """
local now, limit, hold_ms = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local token, rpm = ARGV[4], tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= limit then return 20 end
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 60000)
  if redis.call('ZCARD', KEYS[2]) >= rpm then
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    return math.max(1, tonumber(oldest[2]) + 60000 - now)
  end
  redis.call('ZADD', KEYS[2], now, token)
  redis.call('PEXPIRE', KEYS[2], 61000)
end
redis.call('ZADD', KEYS[1], now + hold_ms, token)
redis.call('PEXPIRE', KEYS[1], hold_ms + 1000)
return 0
"""


@dataclass(frozen=True)
class Limit:
    """How a named resource may be used: `concurrency` calls at once, `per_minute` calls a minute (0: any)."""

    name: str
    concurrency: int
    per_minute: int = 0
    hold_s: float = 300.0  # a slot's lifetime if its holder dies without releasing it
    max_wait_s: float = 30.0


class Limiter:
    """Acquires slots of named limits across processes. Borrows the Redis pool."""

    def __init__(self, redis: ArqRedis) -> None:
        self._redis = redis
        self._acquire = redis.register_script(_ACQUIRE)

    @asynccontextmanager
    async def slot(self, limit: Limit) -> AsyncIterator[None]:
        """Hold one slot of `limit` for the body; raise RetryLaterError if none frees up in time."""
        token = uuid.uuid4().hex
        key = f"runner:limit:{limit.name}"
        deadline = time.monotonic() + limit.max_wait_s
        while True:
            wait_ms = int(
                await self._acquire(
                    keys=[key, f"{key}:minute"],
                    args=[
                        int(time.time() * 1000),
                        limit.concurrency,
                        int(limit.hold_s * 1000),
                        token,
                        limit.per_minute,
                    ],
                )
            )
            if wait_ms == 0:
                break
            if time.monotonic() + wait_ms / 1000 > deadline:
                raise RetryLaterError(
                    f"{limit.name}: no free slot within {limit.max_wait_s:g}s "
                    f"({limit.concurrency} at once, {limit.per_minute or 'any'} a minute)",
                    retry_after_s=max(wait_ms / 1000, 1.0),
                )
            await asyncio.sleep(wait_ms / 1000 * random.uniform(0.5, 1.5))
        try:
            yield
        finally:
            await asyncio.shield(self._redis.zrem(key, token))
