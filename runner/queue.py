"""Queue operations on arq's Redis layout, each one Lua script and one round trip.

Layout (arq's, so arq's client and `Job` keep working):
    <queue>                      sorted set of job ids, scored by the ms time they are due
    arq:job:<id>                 the JSON job envelope
    arq:in-progress:<id>         the lease: value = the owning worker's id, short TTL, renewed while running
    arq:retry:<id>               how many times the job was started (a try counter)
    arq:result:<id>              the JSON result envelope, kept KEEP_RESULT_S
    runner:leases:<worker>       ids a worker holds leases on, so its supervisor can free them when it dies
    runner:wake:<queue>          tokens idle workers block on (BLPOP) instead of polling; enqueue pushes one

arq guards a running job with an in-progress key that lives for the job timeout + 10 s, so a job whose
worker died waits up to an hour. Here that key is a lease of LEASE_TTL_S that the worker renews; only its
owner may renew, release or finish it.
"""

from __future__ import annotations

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

from runner import serializer

__all__ = ["Claim", "ClaimedJob", "Enqueuer", "Finished", "RedisQueue", "leases_key", "release_dead_worker", "wake_key"]

_RETRY_KEY_TTL_MS = 88_400_000  # as arq

# Claim up to ARGV[2] due jobs: skip leased ones without reading them, lease, count a try, return payloads.
# The scan is bounded (ARGV[5]) so one call never blocks Redis for long, yet it looks past running jobs,
# which arq's fixed queue_read_limit does not (an idle worker there can starve behind 100 running jobs).
_CLAIM = """
local queue, now, want, lease_ms = KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3]
local worker, scan = ARGV[4], tonumber(ARGV[5])
local out, got, offset = {}, 0, 0
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
-- Nothing to run: drop stale wake-ups (an enqueue after this script pushes a fresh one, so none is
-- lost) and say when the next deferred job falls due, so the caller can sleep exactly that long.
redis.call('DEL', ARGV[11])
local nxt = redis.call('ZRANGEBYSCORE', queue, '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
return {nxt[2] or -1, out}
"""

# Enqueue in one round trip: refuse a duplicate id, store the payload, queue it, wake an idle worker.
_ENQUEUE = """
if redis.call('EXISTS', KEYS[2], KEYS[3]) > 0 then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[4])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
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


# Release every lease a dead worker held, so its jobs run again now rather than when the leases expire.
# The crash keeps the try it used: a job that keeps killing its worker runs out of tries.
_RELEASE_DEAD = """
local released = {}
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


def leases_key(worker_id: str) -> str:
    """The set of job ids a worker holds leases on (kept by the scripts above, read when it dies)."""
    return f"runner:leases:{worker_id}"


def wake_key(queue: str) -> str:
    """The list idle workers block on; every enqueue of a job due now pushes a token."""
    return f"runner:wake:{queue}"


async def release_dead_worker(redis: ArqRedis, worker_id: str, queue: str) -> list[str]:
    """Free the leases of a worker known to be dead; return the ids of the jobs that can now run."""
    script = redis.register_script(_RELEASE_DEAD)
    released: list[Any] = await script(
        keys=[leases_key(worker_id), wake_key(queue)], args=[in_progress_key_prefix, worker_id]
    )
    return [_text(x) for x in released]


class Enqueuer:
    """Puts jobs on queues in one round trip each: arq's layout and envelope, JSON payload, and a
    wake-up for an idle worker. A job id already queued, running or with a kept result is refused."""

    def __init__(self, redis: ArqRedis) -> None:
        self._script = redis.register_script(_ENQUEUE)

    async def enqueue(self, queue: str, job_id: str, name: str, kwargs: dict[str, Any], *, defer_s: float = 0) -> bool:
        """True if the job was queued; False if a job with this id exists (it is left as it is)."""
        now = int(time.time() * 1000)
        due = now + int(defer_s * 1000)
        payload = serialize_job(name, (), kwargs, None, now, serializer=serializer.serialize)
        queued = await self._script(
            keys=[queue, job_key_prefix + job_id, result_key_prefix + job_id, wake_key(queue)],
            args=[job_id, payload, due, due - now + expires_extra_ms],
        )
        return bool(queued)


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
        self.lease_ms = max(int(lease_ttl_s * 1000), 100)
        self._leases = leases_key(worker_id)
        self._wake = wake_key(queue)
        self._claim = redis.register_script(_CLAIM)
        self._renew = redis.register_script(_RENEW)
        self._claim_one = redis.register_script(_CLAIM_ONE)
        self._finish = redis.register_script(_FINISH)
        self._release = redis.register_script(_RELEASE)

    async def claim(self, now_ms: int, limit: int, scan_limit: int = 10_000) -> Claim:
        """Lease up to `limit` due jobs in one round trip."""
        next_due, rows = await self._claim(
            keys=[self.queue],
            args=[now_ms, limit, self.lease_ms, self.worker_id, scan_limit, in_progress_key_prefix,
                  job_key_prefix, retry_key_prefix, _RETRY_KEY_TTL_MS, self._leases, self._wake],
        )  # fmt: skip
        jobs = [ClaimedJob(_text(r[0]), r[1], int(r[2]), int(float(r[3])), bool(r[4])) for r in rows]
        due = int(float(next_due))
        return Claim(jobs, due if due >= 0 else None)

    async def wake(self) -> None:
        """Wake one idle worker of this queue (a deferred job just fell due)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.lpush(self._wake, 1)
            pipe.ltrim(self._wake, 0, 999)
            await pipe.execute()

    async def wait_for_wake(self, timeout_s: float) -> bool:
        """Block until an enqueue wakes us or `timeout_s` passes; True if woken."""
        # BLPOP takes fractional seconds since Redis 6 (redis-py's typing says int only).
        reply = await self._redis.execute_command(  # type: ignore[no-untyped-call]
            "BLPOP", self._wake, f"{max(timeout_s, 0.001):.3f}"
        )
        return reply is not None

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
        """Finish several jobs in one round trip (one pipeline of the finish script)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for f in finished:
                await self._finish(
                    keys=[self.queue, self._leases],
                    args=[f.job_id, self.worker_id, f.result or b"", f.keep_result_ms,
                          job_key_prefix, retry_key_prefix, result_key_prefix, in_progress_key_prefix],
                    client=pipe,
                )  # fmt: skip
            await pipe.execute()

    async def release(self, job_id: str, *, due_ms: int, give_back_try: bool) -> bool:
        """Drop our lease and make the job due again at `due_ms`; False if the lease was not ours."""
        released = await self._release(
            keys=[self.queue, self._leases, self._wake],
            args=[job_id, self.worker_id, due_ms, "1" if give_back_try else "0",
                  in_progress_key_prefix, job_key_prefix, retry_key_prefix, int(time.time() * 1000)],
        )  # fmt: skip
        return bool(released)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
