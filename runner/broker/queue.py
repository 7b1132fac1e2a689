"""One worker's queue operations, each one Lua script (`lua/`) and one round trip; keys in keys.py.

arq guards a running job with an in-progress key that lives for the job timeout + 10 s, so a job whose
worker died waits up to an hour. Here that key is a lease of LEASE_TTL_S that the worker renews; only its
owner may renew, release or finish it.

Hand-off: a worker whose claim finds nothing registers as idle in the same script and blocks on its inbox
and the wake list together. An enqueue of a job due now that finds an idle worker leases the job to it and
pushes the payload into its inbox, so the job reaches the worker in the blocking pop's reply: two hops
(enqueue, reply) instead of three (enqueue, wake-up, claim). A handed-off job is claimed in every way that
matters (lease, try counted, listed in the worker's lease set, still in the queue), so a worker that dies
with a full inbox loses nothing: its leases are freed by its supervisor or lapse like any other.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from runner.broker import lua
from runner.broker.connection import RedisClient
from runner.broker.keys import TRY_COUNTER_TTL_MS, QueueKeys
from runner.priority import due_of

__all__ = [
    "ABORT_KEEP_MS",
    "Claim",
    "ClaimedJob",
    "ControlRequests",
    "Finished",
    "QueueDepth",
    "RedisQueue",
    "lease_ms",
    "oldest_waiting_age_s",
    "purge",
    "queue_depth",
    "release_dead_worker",
    "reopen",
    "request_abort",
    "request_drain",
    "unpack_handed",
]

# A cancel (or drain) request waits this long for a worker to act on it, so one made while no worker
# runs (a purge of a stalled queue) still takes effect when one starts; finishing a job drops its entry.
ABORT_KEEP_MS = 86_400_000
_PURGE_PAGE = 1000
_SCAN_PAGE = 500  # due jobs looked at per round trip for the oldest one not running
_SCAN_MAX = 5000


def lease_ms(lease_ttl_s: float) -> int:
    """A lease's length in ms, as the scripts take it."""
    return max(int(lease_ttl_s * 1000), 100)


@dataclass(frozen=True, slots=True)
class QueueDepth:
    total: int  # every job in the queue, running or deferred included
    due: int  # due now


async def queue_depth(redis: RedisClient, queue: str) -> QueueDepth:
    """How many jobs the queue holds, and how many of them are due now (one round trip)."""
    key = QueueKeys.of(queue).jobs
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zcard(key)
        pipe.zcount(key, "-inf", int(time.time() * 1000))
        total, due = await pipe.execute()
    return QueueDepth(int(total), int(due))


async def oldest_waiting_age_s(redis: RedisClient, queue: str) -> float:
    """Seconds since the oldest due job that no worker holds fell due; 0 when none waits. A running job stays
    in the queue (leased) until it ends, so leased ones are skipped. A job's head start (runner.priority) is
    not waiting: the scan reads on past the first waiting job while a later score may stand for an older due
    time. Past _SCAN_MAX jobs, the oldest found so far (else the age of the last one looked at)."""
    keys = QueueKeys.of(queue)
    now_ms = int(time.time() * 1000)
    oldest: float | None = None
    last: float = now_ms
    for offset in range(0, _SCAN_MAX, _SCAN_PAGE):
        page = await redis.zrangebyscore(keys.jobs, "-inf", now_ms, start=offset, num=_SCAN_PAGE, withscores=True)
        leases = await redis.mget([keys.lease(_text(job_id)) for job_id, _ in page]) if page else []
        for (_, score), lease in zip(page, leases, strict=True):
            if oldest is not None and score >= oldest:  # every later job fell due after the oldest found
                return max(now_ms - oldest, 0) / 1000
            last = due_of(score)
            if lease is None:
                oldest = last if oldest is None else min(oldest, last)
        if len(page) < _SCAN_PAGE:
            break
    else:  # _SCAN_MAX looked at: past them, the last one's age
        oldest = last if oldest is None else oldest
    return max(now_ms - oldest, 0) / 1000 if oldest is not None else 0.0


async def request_abort(redis: RedisClient, queue: str, job_id: str) -> None:
    """Ask the workers of `queue` to cancel `job_id` (its abort watch or claim sees it within ABORT_POLL_S)."""
    await redis.zadd(QueueKeys.of(queue).abort, {job_id: int(time.time() * 1000)})


async def request_drain(redis: RedisClient, queue: str, worker_id: str) -> None:
    """Ask one worker to stop taking jobs, finish its running ones and exit (its supervisor replaces it)."""
    await redis.zadd(QueueKeys.of(queue).drain, {worker_id: int(time.time() * 1000)})


async def reopen(redis: RedisClient, queue: str, jobs: Sequence[tuple[str, int]]) -> list[bool]:
    """Clear what each finished (job id, tries used) left in Redis so it can be enqueued again; False
    for a job that is still queued (leave it as it is)."""
    keys = QueueKeys.of(queue)
    calls = [([keys.jobs, keys.result(job_id), keys.tries(job_id), keys.abort], [job_id, used, TRY_COUNTER_TTL_MS])
             for job_id, used in jobs]  # fmt: skip
    replies = await lua.run_many(redis, lua.register(redis, "reopen"), calls) if calls else []
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return [bool(r) for r in replies]


async def purge(redis: RedisClient, queue: str, *, dry_run: bool) -> int:
    """Ask the workers to cancel every job of `queue` that nobody runs now (see lua/purge.lua); how many.
    The queue is read a page at a time, so a large one does not block Redis."""
    keys = QueueKeys.of(queue)
    script = lua.register(redis, "purge")
    marked, offset, now_ms = 0, 0, int(time.time() * 1000)
    while True:
        args: list[str | int] = [keys.lease_prefix, offset, _PURGE_PAGE, now_ms, "1" if dry_run else "0"]
        got, seen = await script(keys=[keys.jobs, keys.abort], args=args)
        marked += int(got)
        offset += int(seen)
        if int(seen) < _PURGE_PAGE:
            return marked


def _idle_member(worker_id: str, lease_ms: int) -> str:
    return f"{lease_ms}:{worker_id}"  # the enqueue script leases a handed-off job for this long


async def release_dead_worker(redis: RedisClient, worker_id: str, queue: str, lease_ttl_s: float) -> list[str]:
    """Free the leases of a worker known to be dead; return the ids of the jobs that can now run."""
    keys = QueueKeys.of(queue)
    released: list[Any] = await lua.register(redis, "release_dead")(
        keys=[keys.leases(worker_id), keys.wake, keys.idle, keys.inbox(worker_id)],
        args=[keys.lease_prefix, worker_id, _idle_member(worker_id, lease_ms(lease_ttl_s))],
    )
    return [_text(x) for x in released]


@dataclass(slots=True)  # not frozen: see ClaimedJob
class Finished:
    """A job to take off the queue for good, with the result envelope to keep."""

    job_id: str
    result: bytes | None
    keep_result_ms: int
    queue: str = ""  # the queue it was claimed from (a worker serving one queue may leave it out)


@dataclass(frozen=True, slots=True)
class ControlRequests:
    """What operators asked of a worker since its last look: jobs to cancel, and whether to drain."""

    aborts: list[str]
    drain: bool


@dataclass(frozen=True, slots=True)
class Claim:
    """What one claim call got: the jobs now leased, and when the next deferred job falls due (ms)."""

    jobs: list[ClaimedJob]
    next_due_ms: int | None


# Not frozen, though never changed: several records like this are made each job, and a frozen dataclass's
# __init__ costs three times a plain one's (object.__setattr__ a field). The same holds for Finished,
# PreparedJob and Transition.
@dataclass(slots=True)
class ClaimedJob:
    """A job this worker now holds the lease of. `payload` is None when the job key has expired."""

    job_id: str
    payload: bytes | None
    try_count: int
    score_ms: int
    queue: str  # the queue it was claimed from
    aborted: bool = False  # a cancel was asked for before this worker claimed it


class RedisQueue:
    """One queue's operations for one worker identity. Borrows the Redis pool."""

    def __init__(self, redis: RedisClient, *, queue: str, worker_id: str, lease_ttl_s: float) -> None:
        self._redis = redis
        self.queue = queue
        self.keys = keys = QueueKeys.of(queue)
        self.worker_id = worker_id
        self.lease_ms = lease_ms(lease_ttl_s)
        self._leases = keys.leases(worker_id)
        self._inbox = keys.inbox(worker_id)
        self._idle_member = _idle_member(worker_id, self.lease_ms)
        # What claiming (and waiting for work, and withdrawing) touches: for naming a key of the wrong type.
        self.claim_keys = (keys.jobs, self._leases, keys.wake, keys.idle, self._inbox, keys.abort)
        self.idle = False  # registered as idle by the last claim: enqueues may hand us jobs
        self._claim = lua.register(redis, "claim")
        self._renew = lua.register(redis, "renew")
        self._claim_one = lua.register(redis, "claim_one")
        self._finish = lua.register(redis, "finish")
        self._release = lua.register(redis, "release")
        self._withdraw = lua.register(redis, "withdraw")

    async def claim(self, now_ms: int, max_jobs: int, *, idle_for_s: float, scan_max: int = 10_000) -> Claim:
        """Lease up to `max_jobs` due jobs in one round trip, first taking any jobs handed to us.

        If there are none, we are registered as idle for `idle_for_s` (the caller then waits in
        `wait_for_work`, and must claim again or `withdraw()` before that time is up)."""
        keys, args = self.claim_call(now_ms, max_jobs, idle_for_s=idle_for_s, scan_max=scan_max)
        return self.claimed(await self._claim(keys=keys, args=args), registered=True)

    @property
    def claim_script(self) -> Any:
        return self._claim

    def claim_call(self, now_ms: int, max_jobs: int, *, idle_for_s: float | None, scan_max: int = 10_000) -> lua.Call:
        """The claim script's KEYS and ARGV (see `claim`); `idle_for_s` None: if nothing is found, do not
        register as idle (no enqueue hands us a job; a wake-up token still wakes us)."""
        k = self.keys
        idle_until = now_ms + int(idle_for_s * 1000) if idle_for_s is not None else 0
        args = [now_ms, max_jobs, self.lease_ms, self.worker_id, scan_max, k.lease_prefix, k.job_prefix,
                k.try_prefix, TRY_COUNTER_TTL_MS, self._idle_member, idle_until]  # fmt: skip
        return self.claim_keys, args

    def claimed(self, reply: Any, *, registered: bool) -> Claim:
        """A claim script's reply, read; `registered`: the call may have registered us as idle."""
        next_due, rows = reply
        jobs = [ClaimedJob(_text(r[0]), r[1], int(r[2]), int(float(r[3])), self.queue, bool(r[4])) for r in rows]
        self.idle = registered and not jobs
        due = int(float(next_due))
        return Claim(jobs, due if due >= 0 else None)

    async def withdraw(self) -> int:
        """Stop being idle without claiming: give back the jobs handed to us meanwhile; how many."""
        self.idle = False
        given_back: int = await self._withdraw(
            keys=[self.keys.idle, self._inbox, self._leases, self.keys.wake],
            args=[self._idle_member, self.worker_id, self.keys.lease_prefix, self.keys.try_prefix],
        )
        return given_back

    async def wake(self) -> None:
        """Wake one idle worker of this queue (a deferred job just fell due)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.lpush(self.keys.wake, 1)
            pipe.ltrim(self.keys.wake, 0, 999)
            await pipe.execute()

    async def wait_for_work(self, timeout_s: float) -> ClaimedJob | None:
        """Block until an enqueue hands us a job (returned), wakes us (None: claim now), or `timeout_s`
        passes (None). Call only while idle, that is right after a claim that found nothing."""
        # BLPOP takes fractional seconds since Redis 6 (redis-py's typing says int only).
        reply = await self._redis.execute_command("BLPOP", self._inbox, self.keys.wake, f"{max(timeout_s, 0.001):.3f}")
        if reply is None or _text(reply[0]) != self._inbox:
            return None
        self.idle = False  # the enqueue that handed us this job took our idle entry
        return unpack_handed(reply[1], self.queue)

    async def held(self) -> list[str]:
        """The ids this worker holds leases on (its lease set)."""
        members: list[Any] = await self._redis.smembers(self._leases)  # type: ignore[misc]
        return [_text(m) for m in members]

    async def release_all(self) -> list[str]:
        """Free every lease we still hold (at exit, once no job runs): as if we had died, but now."""
        return await release_dead_worker(self._redis, self.worker_id, self.queue, self.lease_ms / 1000)

    async def claim_aborted(self, job_ids: Sequence[str]) -> list[ClaimedJob]:
        """Lease each of `job_ids` that is queued and that nobody holds (to cancel aborted queued jobs at
        once, not at their turn), in one round trip."""
        k = self.keys
        calls = [([k.jobs, self._leases, k.lease(job_id), k.job(job_id), k.tries(job_id)],
                  [job_id, self.worker_id, self.lease_ms]) for job_id in job_ids]  # fmt: skip
        claimed = []
        for r in await lua.run_many(self._redis, self._claim_one, calls) if calls else []:
            if isinstance(r, Exception):
                raise r
            if r:
                claimed.append(ClaimedJob(_text(r[0]), r[1], int(r[2]), int(float(r[3])), self.queue, True))
        return claimed

    async def control_requests(self) -> ControlRequests:
        """Job ids someone asked to cancel, and whether this worker is asked to drain (one round trip).
        Requests older than ABORT_KEEP_MS are dropped."""
        oldest = int(time.time() * 1000) - ABORT_KEEP_MS
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(self.keys.abort, "-inf", oldest)
            pipe.zrange(self.keys.abort, 0, -1)
            pipe.zremrangebyscore(self.keys.drain, "-inf", oldest)
            pipe.zrem(self.keys.drain, self.worker_id)
            _, ids, _, drain = await pipe.execute()
        return ControlRequests([_text(x) for x in ids], bool(drain))

    async def forget_abort(self, job_id: str) -> None:
        await self._redis.zrem(self.keys.abort, job_id)

    async def renew(self, job_ids: list[str]) -> list[str]:
        """Extend our leases on `job_ids`; return the ids whose lease we lost."""
        if not job_ids:
            return []
        lost: list[Any] = await self._renew(
            keys=[self._leases], args=[self.keys.lease_prefix, self.worker_id, self.lease_ms, *job_ids]
        )
        return [_text(x) for x in lost]

    async def finish(self, job_id: str, result: bytes | None, keep_result_ms: int) -> None:
        """Remove a finished job from the queue, keeping its result envelope for `keep_result_ms`."""
        await self.finish_many([Finished(job_id, result, keep_result_ms)])

    async def finish_many(self, finished: Sequence[Finished]) -> None:
        """Finish several jobs in one round trip."""
        for reply in await lua.run_many(self._redis, self._finish, [self.finish_call(finished)]):
            if isinstance(reply, Exception):
                raise reply

    def finish_call(self, finished: Sequence[Finished]) -> lua.Call:
        """The finish script's KEYS and ARGV for a batch of this queue's jobs (see lua/finish.lua)."""
        k = self.keys
        args: list[str | bytes | int] = [self.worker_id, k.job_prefix, k.try_prefix, k.result_prefix, k.lease_prefix]
        for f in finished:
            args += (f.job_id, f.result or b"", f.keep_result_ms)
        return (k.jobs, self._leases, k.abort), args

    @property
    def finish_script(self) -> Any:
        return self._finish

    @property
    def redis(self) -> RedisClient:
        return self._redis

    async def release(self, job_id: str, *, due_ms: int, give_back_try: bool) -> bool:
        """Drop our lease and make the job due again at `due_ms`; False if the lease was not ours."""
        k = self.keys
        released = await self._release(
            keys=[k.jobs, self._leases, k.wake, k.lease(job_id), k.job(job_id), k.tries(job_id)],
            args=[job_id, self.worker_id, due_ms, "1" if give_back_try else "0", int(time.time() * 1000)],
        )
        return bool(released)


def unpack_handed(item: bytes, queue: str) -> ClaimedJob:
    """Decode an inbox item (see lua/enqueue.lua): "<len(id)>|<id>|<try>|<due ms>|<aborted>|<payload>"."""
    length, rest = item.split(b"|", 1)
    n = int(length)
    try_count, due, aborted, payload = rest[n + 1 :].split(b"|", 3)
    return ClaimedJob(rest[:n].decode(), payload, int(try_count), int(float(due)), queue, aborted == b"1")


def _text(value: bytes | str) -> str:
    # errors="replace": a member another system wrote (not UTF-8) must not crash the loop reading it.
    return value.decode(errors="replace") if isinstance(value, bytes) else value
