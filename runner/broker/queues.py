"""The queues one worker serves (QUEUES=storymimi:3,media:1), claimed together in one round trip.

Each claim shares the worker's free slots among the queues by weight with smooth weighted round robin
(nginx's upstream balancing): a slot goes to the queue furthest behind its share, so with weights 3:1 and
both queues deep, one slot in four goes to the lighter queue; no weight, however small, starves. A queue
that comes up short (nothing more due) leaves its slots to the others, asked again in the same claim, so
a slot never idles while any queue has work.

The per-queue claims go out as one pipeline of the claim script (one round trip; another only when a
queue given slots had fewer due jobs than slots and another queue may have more), each under its queue's
hash tag. An idle worker blocks on every queue's inbox and wake list in one BLPOP, so an enqueue to any of
them reaches it at once. It registers for hand-offs (an enqueue leasing it a job directly) only
while it has a free slot per queue, since each queue may hand it one job; with fewer it waits for wake-ups.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

from runner.broker import lua
from runner.broker.queue import Claim, ClaimedJob, Finished, RedisQueue, unpack_handed

__all__ = ["WorkerQueues"]


class WorkerQueues:
    """A worker's queues and their weights. Borrows the Redis pool (through its queues)."""

    def __init__(self, queues: Sequence[tuple[RedisQueue, int]]) -> None:
        if not queues:
            raise ValueError("a worker serves at least one queue")
        self._queues = {queue.queue: queue for queue, _ in queues}
        self._weights = {queue.queue: weight for queue, weight in queues}
        self._credit = dict.fromkeys(self._queues, 0)
        first = queues[0][0]
        self._redis, self._script = first.redis, first.claim_script
        # The idle worker's one blocking read: every inbox first (jobs already leased to us), then the wake lists.
        self._wait_keys = [q.keys.inbox(q.worker_id) for q in self._queues.values()] + [
            q.keys.wake for q in self._queues.values()
        ]
        self._inboxes = {q.keys.inbox(q.worker_id): q for q in self._queues.values()}

    @classmethod
    def one(cls, queue: RedisQueue) -> WorkerQueues:
        return cls([(queue, 1)])

    def __getitem__(self, name: str) -> RedisQueue:
        return self._queues[name]

    def __iter__(self) -> Iterator[RedisQueue]:
        return iter(self._queues.values())

    def __len__(self) -> int:
        return len(self._queues)

    @property
    def primary(self) -> RedisQueue:
        """The first queue named (QUEUE_NAME when QUEUES is unset)."""
        return next(iter(self._queues.values()))

    @property
    def idle(self) -> bool:
        """Registered as idle on some queue by the last claim: enqueues may hand us jobs."""
        return any(q.idle for q in self._queues.values())

    @property
    def claim_keys(self) -> tuple[str, ...]:
        return tuple(key for q in self._queues.values() for key in q.claim_keys)

    async def claim(self, now_ms: int, free: int, *, idle_for_s: float) -> Claim:
        """Lease up to `free` due jobs across the queues, by weight, in one round trip (see the module doc)."""
        if len(self._queues) == 1:
            return await self.primary.claim(now_ms, free, idle_for_s=idle_for_s)
        dry: set[str] = set()  # queues that came up short in this claim: nothing more is due there
        jobs: list[ClaimedJob] = []
        due: list[int] = []
        left = free
        # Again while slots are left and some queue may have more: one that filled its share, or was given none.
        while left > 0 and len(dry) < len(self._queues):
            shares = self._shares(left, dry)
            # One hand-off per queue may arrive while we wait: take them only if each has a slot.
            wait_s = idle_for_s if left >= len(self._queues) else None
            calls = [q.claim_call(now_ms, shares[name], idle_for_s=wait_s) for name, q in self._queues.items()]
            replies = await lua.run_many(self._redis, self._script, calls)
            due = []
            for (name, queue), reply in zip(self._queues.items(), replies, strict=True):
                if isinstance(reply, Exception):
                    raise reply
                claim = queue.claimed(reply, registered=wait_s is not None)
                jobs += claim.jobs
                left -= len(claim.jobs)
                if claim.next_due_ms is not None:
                    due.append(claim.next_due_ms)
                if len(claim.jobs) < shares[name]:
                    dry.add(name)
        return Claim(jobs, None if jobs or not due else min(due))

    def _shares(self, free: int, dry: set[str]) -> dict[str, int]:
        """Smooth weighted round robin of `free` slots over the queues not found dry."""
        wet = [name for name in self._queues if name not in dry]
        total = sum(self._weights[name] for name in wet)
        shares = dict.fromkeys(self._queues, 0)
        for _ in range(free):
            for name in wet:
                self._credit[name] += self._weights[name]
            best = max(wet, key=self._credit.__getitem__)
            self._credit[best] -= total
            shares[best] += 1
        return shares

    async def withdraw(self) -> int:
        """Stop being idle on every queue without claiming; how many handed jobs were given back."""
        idle = [q for q in self._queues.values() if q.idle]
        return sum(await asyncio.gather(*(q.withdraw() for q in idle)))

    async def wait_for_work(self, timeout_s: float) -> ClaimedJob | None:
        """Block until an enqueue to any queue hands us a job (returned), wakes us (None), or `timeout_s`."""
        if len(self._queues) == 1:
            return await self.primary.wait_for_work(timeout_s)
        reply: Any = await self._redis.execute_command("BLPOP", *self._wait_keys, f"{max(timeout_s, 0.001):.3f}")
        if reply is None:
            return None
        key = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
        if (queue := self._inboxes.get(key)) is None:
            return None  # a wake-up token
        queue.idle = False  # the enqueue that handed us this job took our idle entry on its queue
        return unpack_handed(reply[1], queue.queue)

    async def finish_many(self, finished: Sequence[Finished]) -> None:
        """Finish jobs of any of the queues in one round trip."""
        by_queue: dict[str, list[Finished]] = {}
        for f in finished:
            by_queue.setdefault(f.queue or self.primary.queue, []).append(f)
        calls = [self._queues[name].finish_call(batch) for name, batch in by_queue.items()]
        for reply in await lua.run_many(self._redis, self.primary.finish_script, calls):
            if isinstance(reply, Exception):
                raise reply
