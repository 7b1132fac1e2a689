"""Queue operations on arq's Redis layout, each one Lua script and one round trip.

Layout (arq's, so arq's client and `Job` keep working):
    <queue>                      sorted set of job ids, scored by the ms time they are due
    arq:job:<id>                 the JSON job envelope
    arq:in-progress:<id>         the lease: value = the owning worker's id, short TTL, renewed while running
    arq:retry:<id>               how many times the job was started (a try counter)
    arq:result:<id>              the JSON result envelope, kept KEEP_RESULT_S
    runner:leases:<worker>       ids a worker holds leases on, so its supervisor can free them when it dies
    runner:wake:<queue>          tokens idle workers block on (BLPOP) instead of polling
    runner:idle:<queue>          sorted set of idle workers ("<lease ms>:<worker>"), scored by when the entry lapses
    runner:inbox:<worker>        jobs an enqueue handed straight to that idle worker, already leased to it

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

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from arq.connections import ArqRedis
from arq.constants import (
    abort_jobs_ss,
    expires_extra_ms,
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.jobs import serialize_job
from redis.exceptions import ConnectionError

from runner import envelope
from runner.broker.lua import Call, run_many

__all__ = [
    "Claim",
    "ClaimedJob",
    "Enqueuer",
    "Finished",
    "RedisQueue",
    "idle_key",
    "inbox_key",
    "leases_key",
    "release_dead_worker",
    "wake_key",
]

_RETRY_KEY_TTL_MS = 88_400_000  # as arq

# Claim up to ARGV[2] due jobs: skip leased ones without reading them, lease, count a try, return payloads.
# The scan is bounded (ARGV[5]) so one call never blocks Redis for long, yet it looks past running jobs,
# which arq's fixed queue_read_limit does not (an idle worker there can starve behind 100 running jobs).
_CLAIM = """
local queue, now, want, lease_ms = KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3]
local worker, scan = ARGV[4], tonumber(ARGV[5])
local out, got, offset = {}, 0, 0
-- No longer idle; take what enqueues handed us since our last wait (only if still leased to us).
redis.call('ZREM', ARGV[12], ARGV[13])
for _, item in ipairs(redis.call('LRANGE', ARGV[14], 0, -1)) do
  local n, rest = string.match(item, '^(%d+)|(.*)$')
  local id = string.sub(rest, 1, tonumber(n))
  if redis.call('GET', ARGV[6] .. id) == worker then
    redis.call('PEXPIRE', ARGV[6] .. id, lease_ms)
    out[#out + 1] = {id, redis.call('GET', ARGV[7] .. id), redis.call('GET', ARGV[8] .. id) or 1,
                     redis.call('ZSCORE', queue, id) or now, redis.call('ZSCORE', 'arq:abort', id) and 1 or 0}
    got = got + 1
  end
end
redis.call('DEL', ARGV[14])
while got < want and offset < scan do
  local page = redis.call('ZRANGEBYSCORE', queue, '-inf', now, 'WITHSCORES', 'LIMIT', offset, 200)
  if #page == 0 then break end
  for i = 1, #page, 2 do
    local id = page[i]
    if redis.call('SET', ARGV[6] .. id, worker, 'NX', 'PX', lease_ms) then
      redis.call('SADD', ARGV[10], id)
      local try = redis.call('INCR', ARGV[8] .. id)
      redis.call('PEXPIRE', ARGV[8] .. id, ARGV[9])
      local aborted = redis.call('ZSCORE', 'arq:abort', id) and 1 or 0
      out[#out + 1] = {id, redis.call('GET', ARGV[7] .. id), try, page[i + 1], aborted}
      got = got + 1
      if got >= want then break end
    end
  end
  offset = offset + #page / 2
end
if got > 0 then
  redis.call('PEXPIRE', ARGV[10], lease_ms * 4)
  return {-1, out}
end
-- Nothing to run: register as idle so the next enqueue hands its job straight to us, drop stale
-- wake-ups (an enqueue after this script hands off or pushes a fresh one, so none is lost), and say
-- when the next deferred job falls due, so the caller can sleep exactly that long.
redis.call('ZADD', ARGV[12], ARGV[15], ARGV[13])
redis.call('DEL', ARGV[11])
local nxt = redis.call('ZRANGEBYSCORE', queue, '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
return {nxt[2] or -1, out}
"""

# Enqueue in one round trip: refuse a duplicate id, store the payload, queue it, and either hand it to an
# idle worker (lease it to that worker and push it into its inbox) or push a wake-up token.
# An inbox item is "<len(id)>|<id>|<try>|<due ms>|<aborted>|<payload>".
_ENQUEUE = """
if redis.call('EXISTS', KEYS[2], KEYS[3]) > 0 then return 0 end
local id, payload, due, now = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
redis.call('SET', KEYS[2], payload, 'PX', ARGV[4])
redis.call('ZADD', KEYS[1], due, id)
if tonumber(due) <= tonumber(now) then
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
  local idle = redis.call('ZPOPMIN', KEYS[5])
  if idle[1] then
    local lease_ms, worker = string.match(idle[1], '^(%d+):(.*)$')
    if redis.call('SET', ARGV[6] .. id, worker, 'NX', 'PX', lease_ms) then
      redis.call('SADD', ARGV[8] .. worker, id)
      redis.call('PEXPIRE', ARGV[8] .. worker, tonumber(lease_ms) * 4)
      local try = redis.call('INCR', ARGV[7] .. id)
      redis.call('PEXPIRE', ARGV[7] .. id, ARGV[10])
      local aborted = redis.call('ZSCORE', 'arq:abort', id) and 1 or 0
      local inbox = ARGV[9] .. worker
      redis.call('RPUSH', inbox, #id .. '|' .. id .. '|' .. try .. '|' .. due .. '|' .. aborted .. '|' .. payload)
      redis.call('PEXPIRE', inbox, tonumber(lease_ms) * 4)
      return 2
    end
  end
end
redis.call('LPUSH', KEYS[4], 1)
redis.call('LTRIM', KEYS[4], 0, 999)
redis.call('PEXPIRE', KEYS[4], 60000)
return 1
"""

# Lease one named job if it is queued and free (to cancel an aborted job without waiting for its turn).
_CLAIM_ONE = """
local id = ARGV[1]
if not redis.call('ZSCORE', KEYS[1], id) then return false end
if not redis.call('SET', ARGV[4] .. id, ARGV[2], 'NX', 'PX', ARGV[3]) then return false end
redis.call('SADD', KEYS[2], id)
local try = redis.call('INCR', ARGV[6] .. id)
return {id, redis.call('GET', ARGV[5] .. id), try, redis.call('ZSCORE', KEYS[1], id), 1}
"""

# Renew the leases we still own; return the ids whose lease is no longer ours.
_RENEW = """
local lost = {}
for i = 4, #ARGV do
  local key = ARGV[1] .. ARGV[i]
  if redis.call('GET', key) == ARGV[2] then redis.call('PEXPIRE', key, ARGV[3]) else lost[#lost + 1] = ARGV[i] end
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 4)
return lost
"""

# Finish a job for good: store the result, drop job, try counter, lease and queue entry.
_FINISH = """
local id, queue = ARGV[1], KEYS[1]
if ARGV[3] ~= '' then
  if tonumber(ARGV[4]) > 0 then
    redis.call('SET', ARGV[7] .. id, ARGV[3], 'PX', ARGV[4])
  else
    redis.call('SET', ARGV[7] .. id, ARGV[3])
  end
end
redis.call('DEL', ARGV[5] .. id, ARGV[6] .. id)
if redis.call('GET', ARGV[8] .. id) == ARGV[2] then redis.call('DEL', ARGV[8] .. id) end
redis.call('SREM', KEYS[2], id)
redis.call('ZREM', queue, id)
redis.call('ZREM', 'arq:abort', id)
return 1
"""

# Put a job back in the queue at ARGV[3] (ms) and drop our lease. ARGV[4] == '1' gives the try back
# (a graceful stop did not really try the job, so it must not use up one of its tries).
_RELEASE = """
local id = ARGV[1]
redis.call('SREM', KEYS[2], id)
if redis.call('GET', ARGV[5] .. id) ~= ARGV[2] then return 0 end
redis.call('DEL', ARGV[5] .. id)
if redis.call('EXISTS', ARGV[6] .. id) == 1 then
  redis.call('ZADD', KEYS[1], ARGV[3], id)
  if tonumber(ARGV[3]) <= tonumber(ARGV[8]) then redis.call('LPUSH', KEYS[3], 1) end
end
if ARGV[4] == '1' and tonumber(redis.call('GET', ARGV[7] .. id) or '0') > 0 then redis.call('DECR', ARGV[7] .. id) end
return 1
"""


# Release every lease a dead worker held, so its jobs run again now rather than when the leases expire,
# and forget its idle entry and inbox (their jobs are in its lease set too).
# The crash keeps the try it used: a job that keeps killing its worker runs out of tries.
_RELEASE_DEAD = """
local released = {}
redis.call('ZREM', KEYS[3], ARGV[3])
redis.call('DEL', KEYS[4])
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('GET', ARGV[1] .. id) == ARGV[2] then
    redis.call('DEL', ARGV[1] .. id)
    released[#released + 1] = id
    redis.call('LPUSH', KEYS[2], 1)
  end
end
redis.call('DEL', KEYS[1])
return released
"""

# Stop being idle without claiming (the worker is full or stopping): leave the idle set and give back
# what enqueues handed us meanwhile, with its try, to be claimed by whoever is free.
_WITHDRAW = """
redis.call('ZREM', KEYS[1], ARGV[1])
local n = 0
for _, item in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  local len, rest = string.match(item, '^(%d+)|(.*)$')
  local id = string.sub(rest, 1, tonumber(len))
  if redis.call('GET', ARGV[3] .. id) == ARGV[2] then
    redis.call('DEL', ARGV[3] .. id)
    redis.call('SREM', KEYS[3], id)
    if tonumber(redis.call('GET', ARGV[4] .. id) or '0') > 0 then redis.call('DECR', ARGV[4] .. id) end
    redis.call('LPUSH', KEYS[4], 1)
    n = n + 1
  end
end
redis.call('DEL', KEYS[2])
return n
"""


def leases_key(worker_id: str) -> str:
    """The set of job ids a worker holds leases on (kept by the scripts above, read when it dies)."""
    return f"{_LEASES_PREFIX}{worker_id}"


def wake_key(queue: str) -> str:
    """The list idle workers block on; an enqueue that finds no idle worker to hand to pushes a token."""
    return f"runner:wake:{queue}"


def idle_key(queue: str) -> str:
    """The queue's idle workers, which an enqueue hands its job to directly."""
    return f"runner:idle:{queue}"


def inbox_key(worker_id: str) -> str:
    """Jobs handed to one worker by enqueues, already leased to it."""
    return f"{_INBOX_PREFIX}{worker_id}"


def _idle_member(worker_id: str, lease_ms: int) -> str:
    return f"{lease_ms}:{worker_id}"  # the enqueue script leases the job for this long


_LEASES_PREFIX = "runner:leases:"
_INBOX_PREFIX = "runner:inbox:"


async def release_dead_worker(redis: ArqRedis, worker_id: str, queue: str, lease_ttl_s: float) -> list[str]:
    """Free the leases of a worker known to be dead; return the ids of the jobs that can now run."""
    script = redis.register_script(_RELEASE_DEAD)
    released: list[Any] = await script(
        keys=[leases_key(worker_id), wake_key(queue), idle_key(queue), inbox_key(worker_id)],
        args=[in_progress_key_prefix, worker_id, _idle_member(worker_id, _lease_ms(lease_ttl_s))],
    )
    return [_text(x) for x in released]


def _lease_ms(lease_ttl_s: float) -> int:
    return max(int(lease_ttl_s * 1000), 100)


class Enqueuer:
    """Puts jobs on queues in one round trip each: arq's layout and envelope, JSON payload, and a
    hand-off to an idle worker or a wake-up. A job id already queued, running or with a kept result is
    refused.

    Enqueues made while a round trip is under way go out together in the next one (group commit, as
    for status writes): one enqueue alone goes out at once, and under load, for example an API answering
    many requests or a job fanning out, many share one round trip instead of paying for one each."""

    def __init__(self, redis: ArqRedis) -> None:
        self._redis = redis
        self._script = redis.register_script(_ENQUEUE)
        self._waiting: list[tuple[Call, asyncio.Future[Any]]] = []
        self._sending = False
        self._next: asyncio.Task[None] | None = None  # referenced so the loop does not drop it

    async def enqueue(self, queue: str, job_id: str, name: str, kwargs: dict[str, Any], *, defer_s: float = 0) -> bool:
        """True if the job was queued; False if a job with this id exists (it is left as it is)."""
        now = int(time.time() * 1000)
        due = now + int(defer_s * 1000)
        payload = serialize_job(name, (), kwargs, None, now, serializer=envelope.serialize)
        call = (
            [queue, job_key_prefix + job_id, result_key_prefix + job_id, wake_key(queue), idle_key(queue)],
            [job_id, payload, due, due - now + expires_extra_ms, now, in_progress_key_prefix,
             retry_key_prefix, _LEASES_PREFIX, _INBOX_PREFIX, _RETRY_KEY_TTL_MS],
        )  # fmt: skip
        reply = asyncio.get_running_loop().create_future()
        self._waiting.append((call, reply))
        if not self._sending:  # nothing in flight: send now, in this task (no hop through another)
            await self._send()
        return bool(await reply)

    async def _send(self) -> None:
        """Send every waiting enqueue in one round trip; what arrives meanwhile goes next, together."""
        self._sending = True
        batch, self._waiting = self._waiting, []
        try:
            try:
                replies = await run_many(self._redis, self._script, [call for call, _ in batch])
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


@dataclass(frozen=True, slots=True)
class Finished:
    """A job to take off the queue for good, with the result envelope to keep."""

    job_id: str
    result: bytes | None
    keep_result_ms: int


@dataclass(frozen=True, slots=True)
class Claim:
    """What one claim call got: the jobs now leased, and when the next deferred job falls due (ms)."""

    jobs: list[ClaimedJob]
    next_due_ms: int | None


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job this worker now holds the lease of. `payload` is None when the job key has expired."""

    job_id: str
    payload: bytes | None
    try_count: int
    score_ms: int
    aborted: bool = False  # a cancel was asked for before this worker claimed it


class RedisQueue:
    """One queue's operations for one worker identity. Borrows the Redis pool."""

    def __init__(self, redis: ArqRedis, *, queue: str, worker_id: str, lease_ttl_s: float) -> None:
        self._redis = redis
        self.queue = queue
        self.worker_id = worker_id
        self.lease_ms = _lease_ms(lease_ttl_s)
        self._leases = leases_key(worker_id)
        self._wake = wake_key(queue)
        self._idle = idle_key(queue)
        self._idle_member = _idle_member(worker_id, self.lease_ms)
        self._inbox = inbox_key(worker_id)
        self.idle = False  # registered as idle by the last claim: enqueues may hand us jobs
        self._claim = redis.register_script(_CLAIM)
        self._renew = redis.register_script(_RENEW)
        self._claim_one = redis.register_script(_CLAIM_ONE)
        self._finish = redis.register_script(_FINISH)
        self._release = redis.register_script(_RELEASE)
        self._withdraw = redis.register_script(_WITHDRAW)

    async def claim(self, now_ms: int, limit: int, *, idle_for_s: float, scan_limit: int = 10_000) -> Claim:
        """Lease up to `limit` due jobs in one round trip, first taking any jobs handed to us.

        If there are none, we are registered as idle for `idle_for_s` (the caller then waits in
        `wait_for_work`, and must claim again or `withdraw()` before that time is up)."""
        next_due, rows = await self._claim(
            keys=[self.queue],
            args=[now_ms, limit, self.lease_ms, self.worker_id, scan_limit, in_progress_key_prefix,
                  job_key_prefix, retry_key_prefix, _RETRY_KEY_TTL_MS, self._leases, self._wake,
                  self._idle, self._idle_member, self._inbox, now_ms + int(idle_for_s * 1000)],
        )  # fmt: skip
        jobs = [ClaimedJob(_text(r[0]), r[1], int(r[2]), int(float(r[3])), bool(r[4])) for r in rows]
        self.idle = not jobs
        due = int(float(next_due))
        return Claim(jobs, due if due >= 0 else None)

    async def withdraw(self) -> int:
        """Stop being idle without claiming: give back the jobs handed to us meanwhile; how many."""
        self.idle = False
        given_back: int = await self._withdraw(
            keys=[self._idle, self._inbox, self._leases, self._wake],
            args=[self._idle_member, self.worker_id, in_progress_key_prefix, retry_key_prefix],
        )
        return given_back

    async def wake(self) -> None:
        """Wake one idle worker of this queue (a deferred job just fell due)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.lpush(self._wake, 1)
            pipe.ltrim(self._wake, 0, 999)
            await pipe.execute()

    async def wait_for_work(self, timeout_s: float) -> ClaimedJob | None:
        """Block until an enqueue hands us a job (returned), wakes us (None: claim now), or `timeout_s`
        passes (None). Call only while idle, that is right after a claim that found nothing."""
        # BLPOP takes fractional seconds since Redis 6 (redis-py's typing says int only).
        reply = await self._redis.execute_command(  # type: ignore[no-untyped-call]
            "BLPOP", self._inbox, self._wake, f"{max(timeout_s, 0.001):.3f}"
        )
        if reply is None or _text(reply[0]) != self._inbox:
            return None
        self.idle = False  # the enqueue that handed us this job took our idle entry
        return _unpack_handed(reply[1])

    async def release_all(self) -> list[str]:
        """Free every lease we still hold (at exit, once no job runs): as if we had died, but now."""
        return await release_dead_worker(self._redis, self.worker_id, self.queue, self.lease_ms / 1000)

    async def claim_one(self, job_id: str) -> ClaimedJob | None:
        """Lease `job_id` now if it is queued and nobody holds it (used to cancel aborted queued jobs)."""
        r: list[Any] | None = await self._claim_one(
            keys=[self.queue, self._leases],
            args=[job_id, self.worker_id, self.lease_ms, in_progress_key_prefix, job_key_prefix, retry_key_prefix],
        )
        return None if not r else ClaimedJob(_text(r[0]), r[1], int(r[2]), int(float(r[3])), True)

    async def abort_requests(self) -> list[str]:
        """Job ids someone asked to cancel (arq's abort set); entries older than a minute are dropped."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(abort_jobs_ss, "-inf", int(time.time() * 1000) - 60_000)
            pipe.zrange(abort_jobs_ss, 0, -1)
            _, ids = await pipe.execute()
        return [_text(x) for x in ids]

    async def forget_abort(self, job_id: str) -> None:
        await self._redis.zrem(abort_jobs_ss, job_id)

    async def renew(self, job_ids: list[str]) -> list[str]:
        """Extend our leases on `job_ids`; return the ids whose lease we lost."""
        if not job_ids:
            return []
        lost: list[Any] = await self._renew(
            keys=[self._leases], args=[in_progress_key_prefix, self.worker_id, self.lease_ms, *job_ids]
        )
        return [_text(x) for x in lost]

    async def finish(self, job_id: str, result: bytes | None, keep_result_ms: int) -> None:
        """Remove a finished job from the queue, keeping its result envelope for `keep_result_ms`."""
        await self.finish_many([Finished(job_id, result, keep_result_ms)])

    async def finish_many(self, finished: Sequence[Finished]) -> None:
        """Finish several jobs in one round trip."""
        calls = [
            ([self.queue, self._leases],
             [f.job_id, self.worker_id, f.result or b"", f.keep_result_ms,
              job_key_prefix, retry_key_prefix, result_key_prefix, in_progress_key_prefix])
            for f in finished
        ]  # fmt: skip
        for reply in await run_many(self._redis, self._finish, calls):
            if isinstance(reply, Exception):
                raise reply

    async def release(self, job_id: str, *, due_ms: int, give_back_try: bool) -> bool:
        """Drop our lease and make the job due again at `due_ms`; False if the lease was not ours."""
        released = await self._release(
            keys=[self.queue, self._leases, self._wake],
            args=[job_id, self.worker_id, due_ms, "1" if give_back_try else "0",
                  in_progress_key_prefix, job_key_prefix, retry_key_prefix, int(time.time() * 1000)],
        )  # fmt: skip
        return bool(released)


def _unpack_handed(item: bytes) -> ClaimedJob:
    """Decode an inbox item (see _ENQUEUE): "<len(id)>|<id>|<try>|<due ms>|<aborted>|<payload>"."""
    length, rest = item.split(b"|", 1)
    n = int(length)
    try_count, due, aborted, payload = rest[n + 1 :].split(b"|", 3)
    return ClaimedJob(rest[:n].decode(), payload, int(try_count), int(float(due)), aborted == b"1")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
