"""Putting jobs on a queue: one Lua round trip each, group-committed when many are in flight.

The enqueue script refuses an id that is queued, running or has a kept result, stores the JSON envelope
(arq's shape), queues the id, and hands the job to an idle worker (leased to it and pushed into its
inbox, so it starts in the reply to that worker's blocking read) or pushes a wake-up token. A unique
enqueue (runner/unique.py) is decided by the same script, in the same round trip.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from arq.constants import expires_extra_ms
from redis.exceptions import ConnectionError

from runner import envelope
from runner.broker import lua
from runner.broker.connection import RedisClient
from runner.broker.keys import TRY_COUNTER_TTL_MS, QueueKeys
from runner.priority import score
from runner.unique import UniqueMode, UniqueOutcome

__all__ = ["Enqueuer"]


class Enqueuer:
    """Puts jobs on queues. Enqueues made while a round trip is under way go out together in the next one
    (group commit, as for status writes): one enqueue alone goes out at once, and under load, an API
    answering many requests or a job fanning out, many share one round trip instead of paying for one each.
    Borrows the Redis pool."""

    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis
        self._script = lua.register(redis, "enqueue")
        self._waiting: list[tuple[lua.Call, asyncio.Future[Any]]] = []
        self._sending = False
        self._next: asyncio.Task[None] | None = None  # referenced so the loop does not drop it

    async def enqueue(
        self,
        queue: str,
        job_id: str,
        name: str,
        kwargs: dict[str, Any],
        *,
        defer_s: float = 0,
        first_try: int | None = None,
        meta: dict[str, str] | None = None,
        enqueued_ms: int | None = None,
        priority: int = 0,
    ) -> bool:
        """True if the job was queued; False if a job with this id exists (it is left as it is).

        `first_try`: the attempt number this run starts at (an operator's retry of a job that used its
        tries); `meta`: string metadata carried in the envelope (see runner.envelope); `enqueued_ms`: when
        the job was first enqueued, if elsewhere (a foreign producer's job taken in by an intake); `priority`:
        0-9, a head start on the jobs due with it (see runner.priority)."""
        return bool(
            await self._submit(_call(queue, job_id, name, kwargs, defer_s, first_try, meta, enqueued_ms, priority))
        )

    async def enqueue_unique(
        self, queue: str, job_id: str, name: str, kwargs: dict[str, Any], *, key: str, for_s: float,
        mode: UniqueMode, meta: dict[str, str] | None = None, priority: int = 0,
    ) -> tuple[UniqueOutcome, str, int]:  # fmt: skip
        """Enqueue under the unique key `key` of job `name` (see runner.unique), in the same one script call:
        what happened, the id of the job that holds the key now (this one's, unless deduplicated or
        debounced into another), and for a debounce which one it was (each later one is larger; else 0).
        A debounced job is due `for_s` from now."""
        keys = QueueKeys.of(queue)
        defer_s = for_s if mode == "debounce" else 0
        job_keys, args = _call(queue, job_id, name, kwargs, defer_s, None, meta, None, priority)
        window_ms = max(int(for_s * 1000), 1)  # PX 0 is an error
        code, holder, *debounce = await self._submit(
            ([*job_keys, keys.unique(name, key), keys.unique_takeovers(name, key)],
             [*args, window_ms, mode, keys.job_prefix])
        )  # fmt: skip
        holder_id = holder.decode() if isinstance(holder, bytes) else str(holder)
        return _UNIQUE_OUTCOMES[int(code)], holder_id, int(debounce[0]) if debounce else 0

    async def _submit(self, call: lua.Call) -> Any:
        """The script's reply to `call`, sent with whatever else is waiting (see `_send`)."""
        reply = asyncio.get_running_loop().create_future()
        self._waiting.append((call, reply))
        if not self._sending:  # nothing in flight: send now, in this task (no hop through another)
            await self._send()
        return await reply

    async def _send(self) -> None:
        """Send every waiting enqueue in one round trip; what arrives meanwhile goes next, together."""
        self._sending = True
        batch, self._waiting = self._waiting, []
        try:
            try:
                replies = await lua.run_many(self._redis, self._script, [call for call, _ in batch])
            except Exception as exc:  # the connection failed: every enqueue in the batch failed
                replies = [exc] * len(batch)
            for (_, future), reply in zip(batch, replies, strict=True):
                if future.done():  # its caller was cancelled
                    continue
                if isinstance(reply, BaseException):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
        finally:
            for _, future in batch:  # only if we were cancelled mid-send: nobody waits forever
                if not future.done():
                    future.set_exception(ConnectionError("the enqueue was interrupted; it may or may not be queued"))
            self._sending = bool(self._waiting)
            if self._waiting:
                self._next = asyncio.create_task(self._send(), name="enqueue-batch")


_UNIQUE_OUTCOMES = {0: UniqueOutcome.REFUSED, 1: UniqueOutcome.QUEUED, 2: UniqueOutcome.QUEUED,
                    3: UniqueOutcome.DEDUPLICATED, 4: UniqueOutcome.DEBOUNCED}  # fmt: skip


def _call(
    queue: str, job_id: str, name: str, kwargs: dict[str, Any], defer_s: float, first_try: int | None,
    meta: dict[str, str] | None, enqueued_ms: int | None, priority: int = 0,
) -> tuple[list[Any], list[Any]]:  # fmt: skip
    """The enqueue script's KEYS and ARGV for one job (see lua/enqueue.lua)."""
    keys = QueueKeys.of(queue)
    now = int(time.time() * 1000)
    due = now + int(defer_s * 1000)
    payload = envelope.encode_job(name, kwargs, enqueue_ms=enqueued_ms or now, first_try=first_try, meta=meta)
    return (
        [keys.jobs, keys.job(job_id), keys.result(job_id), keys.wake, keys.idle, keys.abort],
        [job_id, payload, score(due, now, priority), due - now + expires_extra_ms, now, keys.lease_prefix,
         keys.try_prefix, keys.leases_prefix, keys.inbox_prefix, TRY_COUNTER_TTL_MS],
    )  # fmt: skip
