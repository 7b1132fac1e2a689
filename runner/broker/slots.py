"""Slot pools shared by every process, kept in Redis: at most N calls at once to a provider, and
optionally at most M calls a minute. Providers impose both; one process cannot see the others' calls.

A slot is a member of a sorted set scored by its expiry. Like a job lease, the expiry is short
(`hold_s`) and renewed while the call runs, so a process that died frees its slots within seconds.
The per-minute window is a second sorted set of call times. Waiting is bounded: past `max_wait_s` the
caller gets `RetryLaterError` and its job goes back to the queue without using a try, instead of holding
a worker slot hostage.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import structlog
from redis.exceptions import RedisError

from runner.broker import lua
from runner.broker.connection import RedisClient
from runner.broker.keys import SlotKeys
from runner.errors import ResourceNotOpenError, RetryLaterError

__all__ = ["SlotHolder", "SlotPool"]

T = TypeVar("T")
log = structlog.get_logger("runner.broker.slots")


@dataclass(frozen=True)
class SlotPool:
    """How a named resource may be used: `concurrency` calls at once, `per_minute` calls a minute (0: any)."""

    name: str
    concurrency: int
    per_minute: int = 0
    max_wait_s: float = 30.0


class SlotHolder:
    """Acquires slots of named pools across processes and renews the held ones; use `async with`.

    Borrows the Redis pool. Slots live `hold_s` unless renewed, so a dead holder's slot is free again
    within `hold_s`."""

    def __init__(self, redis: RedisClient, *, prefix: str = "runner:slots", hold_s: float = 10.0) -> None:
        self._redis = redis
        self._prefix = prefix
        self._hold_ms = int(hold_s * 1000)
        self._acquire = lua.register(redis, "slot_acquire")
        self._held: dict[str, set[str]] = {}
        self._unreleased: dict[str, set[str]] = {}  # slots whose release failed (Redis was away)
        self._renewal: asyncio.Task[None] | None = None
        # Redis calls that must finish even if their caller is cancelled (a release, a renewal round):
        # awaited on exit, so none outlives the holder and its connection is never dropped mid-reply.
        self._finishing: set[asyncio.Future[Any]] = set()

    async def __aenter__(self) -> SlotHolder:
        self._renewal = asyncio.create_task(self._renew_forever(), name="slot-renewal")
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self._renewal is not None:
            self._renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewal
        if self._finishing:
            await asyncio.wait(self._finishing, timeout=5)

    @asynccontextmanager
    async def hold(self, pool: SlotPool) -> AsyncIterator[None]:
        """Hold one slot of `pool` for the body; raise RetryLaterError if none frees up in time."""
        if self._renewal is None:
            raise ResourceNotOpenError("open the SlotHolder with `async with SlotHolder(redis) as holder:` first")
        keys, token = SlotKeys.of(self._prefix, pool.name), uuid.uuid4().hex
        key = keys.held
        await self._take(pool, keys, token)
        self._held.setdefault(key, set()).add(token)
        try:
            yield
        finally:
            self._held[key].discard(token)
            try:
                await self._to_the_end(self._redis.zrem(key, token))
            except (RedisError, OSError):  # released again by the background loop once Redis answers
                self._unreleased.setdefault(key, set()).add(token)

    async def _to_the_end(self, call: Awaitable[T]) -> T:
        """Await `call`, which runs to its end even if we are cancelled meanwhile (see `_finishing`)."""
        future = asyncio.ensure_future(call)
        self._finishing.add(future)
        future.add_done_callback(self._finishing.discard)
        return await asyncio.shield(future)

    async def _renew_round(self, held: dict[str, list[str]], orphans: dict[str, list[str]], expiry: int) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, tokens in held.items():
                pipe.zadd(key, dict.fromkeys(tokens, expiry), xx=True)
            for key, tokens in orphans.items():
                pipe.zrem(key, *tokens)
            await pipe.execute()

    async def _take(self, pool: SlotPool, keys: SlotKeys, token: str) -> None:
        deadline = time.monotonic() + pool.max_wait_s
        while True:
            args: list[int | str] = [int(time.time() * 1000), pool.concurrency, self._hold_ms, token, pool.per_minute]
            wait_ms = int(await self._acquire(keys=[keys.held, keys.minute], args=args))
            if wait_ms == 0:
                return
            if time.monotonic() + wait_ms / 1000 > deadline:
                raise RetryLaterError(
                    f"{pool.name}: no free slot within {pool.max_wait_s:g}s "
                    f"({pool.concurrency} at once, {pool.per_minute or 'any'} a minute)",
                    retry_after_s=max(wait_ms / 1000, 1.0),
                )
            await asyncio.sleep(wait_ms / 1000 * random.uniform(0.5, 1.5))

    async def _renew_forever(self) -> None:
        """Renew held slots every third of a hold; retry failed releases every tick until they succeed."""
        tick_s = min(self._hold_ms / 3000, 0.5)
        last_renewal = time.monotonic()
        while True:
            await asyncio.sleep(tick_s)
            renew = time.monotonic() - last_renewal >= self._hold_ms / 3000
            held = {key: list(tokens) for key, tokens in self._held.items() if tokens} if renew else {}
            orphans = {key: list(tokens) for key, tokens in self._unreleased.items() if tokens}
            if not held and not orphans:
                continue
            expiry = int(time.time() * 1000) + self._hold_ms
            try:
                await self._to_the_end(self._renew_round(held, orphans, expiry))
            except (RedisError, OSError) as exc:
                log.warning("slot_renewal_failed", error=repr(exc))
                continue
            last_renewal = time.monotonic() if renew else last_renewal
            for key, tokens in orphans.items():
                self._unreleased[key].difference_update(tokens)
