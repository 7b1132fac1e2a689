"""The arq intake: jobs enqueued by unchanged arq producers (`ArqRedis.enqueue_job(name, *args, **kwargs,
_queue_name=...)`, with a JSON serializer) run as the runner's jobs.

arq's enqueue writes `arq:job:<id>` and adds the id to its queue's sorted set, and wakes nobody. The intake
hears of it through Redis keyspace notifications on that sorted set (it turns on `Kz` in
notify-keyspace-events if it may), else it polls every INTAKE_POLL_S. Each due id is written as a pending
row, enqueued under the same id (refused if there already) and only then parked in arq's queue: its score
moved PARKED_MS into the future, so no pass takes it again. arq's `Job.result()` gives up on a job that is
not in its queue, so the id stays there (parked) until the job ends and its result is written; a crash
before parking leaves it due, and the next pass finds the copy and only parks it. Jobs deferred with
`_defer_by`/`_defer_until` wait in arq's queue as arq left them until due. `arq:job:<id>` stays until the
job ends, so arq refuses a second job with that id, as it would itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError, ResponseError

from runner import envelope
from runner.broker.connection import single_node
from runner.broker.keys import ArqKeys
from runner.errors import JobArgumentsError, PayloadError, UnknownJobError
from runner.fleet.metrics import INTAKE_MESSAGES
from runner.intake.handover import Handover
from runner.intake.results import ORIGIN
from runner.registry import JobSpec
from runner.resources import Resources
from runner.status import JobStatus
from runner.store.jobs import Transition

__all__ = ["ARQ_QUEUE", "PARKED_MS", "ArqIntake"]

ARQ_QUEUE = "arq_queue"  # the envelope metadata naming the arq queue a job came from (its result reporter parks there)
PARKED_MS = 2**50  # added to a taken job's score in arq's queue: due in 35,000 years, never due again

log = structlog.get_logger("runner.intake.arq")

_PAGE = 200  # due ids taken per pass
_IDLE_S = 1.0  # longest wait between passes while notifications work (they may be missed in a reconnect)


class ArqIntake:
    """Takes one arq queue's jobs. Borrows the process's resources."""

    def __init__(self, resources: Resources, specs: dict[str, JobSpec]) -> None:
        settings = resources.settings
        self._redis = single_node(resources.redis, "the arq intake")
        self._handover = Handover(resources, specs)
        self._queue = settings.queue_name
        self._arq = ArqKeys(settings.arq_queue_name)
        self._keep_result_ms = int(settings.keep_result_s * 1000)
        self._poll_s = settings.intake_poll_s

    async def run_forever(self) -> None:
        pubsub = await self._subscribe()
        try:
            while True:
                next_due_s = await self.take_due()
                wait_s = self._poll_s if pubsub is None else _IDLE_S
                if next_due_s is not None:
                    wait_s = min(wait_s, next_due_s)
                if pubsub is None:
                    await asyncio.sleep(wait_s)
                    continue
                try:
                    await pubsub.get_message(ignore_subscribe_messages=True, timeout=wait_s)
                except (RedisError, OSError) as exc:  # the subscription broke: poll until it is made again
                    log.warning("arq_intake_notifications_lost", error=repr(exc))
                    await _close(pubsub)
                    pubsub = await self._subscribe()
        finally:
            if pubsub is not None:
                await _close(pubsub)

    async def take_due(self) -> float | None:
        """Take every due job off arq's queue; seconds until the next deferred one falls due (None: none)."""
        now_ms = int(time.time() * 1000)
        while True:
            try:
                due = await self._redis.zrangebyscore(self._arq.queue, "-inf", now_ms, 0, _PAGE)
            except ResponseError as exc:
                if "WRONGTYPE" not in str(exc):
                    raise
                kind = _text(await self._redis.type(self._arq.queue))
                raise RedisError(f"arq's queue key {self._arq.queue!r} holds a {kind}, not arq's sorted set: set "
                                 "ARQ_QUEUE_NAME to the arq producers' queue, never Celery's") from exc  # fmt: skip
            ids = [_text(i) for i in due]
            if not ids:
                break
            payloads = await self._redis.mget([ArqKeys.job(i) for i in ids])
            for job_id, payload in zip(ids, payloads, strict=True):
                outcome = await self.handle(job_id, payload)
                INTAKE_MESSAGES.labels("arq", outcome).inc()
            if len(ids) < _PAGE:
                break
        upcoming = await self._redis.zrangebyscore(self._arq.queue, f"({now_ms}", "+inf", 0, 1, withscores=True)
        return max(upcoming[0][1] / 1000 - time.time(), 0.0) if upcoming else None

    async def handle(self, job_id: str, payload: bytes | None) -> str:
        if payload is None:  # expired in arq's own key before anyone ran it (arq drops those too)
            await self._redis.zrem(self._arq.queue, job_id)
            return "expired"
        try:
            job = envelope.decode_job(payload)
            spec, kwargs = self._handover.resolve(job.name, list(job.args), job.kwargs)
        except (PayloadError, UnknownJobError, JobArgumentsError) as exc:
            await self._refuse(job_id, f"{type(exc).__name__}: {exc}")
            return "refused"
        queued = False
        if not await self._handover.ran_before(job_id):  # else only parked: a crash came before parking
            meta = {ORIGIN: "arq", ARQ_QUEUE: self._arq.queue}
            queued = await self._handover.hand_over(spec, job_id, kwargs, meta=meta,
                                                    enqueued_ms=job.enqueue_time_ms or None)  # fmt: skip
        await self._redis.zadd(self._arq.queue, {job_id: time.time() * 1000 + PARKED_MS}, xx=True)
        return "taken" if queued else "duplicate"

    async def _refuse(self, job_id: str, reason: str) -> None:
        """Tell the sender (`Job.result()` raises the reason) and the operators (a failed row)."""
        log.warning("arq_job_refused", job_id=job_id, reason=reason)
        now = int(time.time() * 1000)
        result = envelope.serialize({"t": 1, "f": "<refused>", "a": [], "k": {}, "et": now, "s": False, "r": reason,
                                     "st": now, "ft": now, "q": self._arq.queue, "id": job_id})  # fmt: skip
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(ArqKeys.result(job_id), result, px=self._keep_result_ms or None)
            pipe.delete(ArqKeys.job(job_id))
            pipe.zrem(self._arq.queue, job_id)
            await pipe.execute()
        await self._handover.store.move(Transition(job_id, JobStatus.FAILED, name="<arq>", queue=self._queue,
                                          error=f"refused: {reason}"))  # fmt: skip

    async def _subscribe(self) -> PubSub | None:
        """Keyspace notifications for arq's queue, turned on if they are not; None if Redis will not."""
        try:
            await _enable_zset_notifications(self._redis)
            pubsub = self._redis.pubsub()
            db = self._redis.connection_pool.connection_kwargs.get("db", 0)
            await pubsub.subscribe(f"__keyspace@{db}__:{self._arq.queue}")
        except (RedisError, OSError) as exc:
            log.warning("arq_intake_polling", every_s=self._poll_s, reason=f"no keyspace notifications: {exc!r}")
            return None
        return pubsub


async def _enable_zset_notifications(redis: Redis) -> None:
    """Add keyspace events (K) for sorted-set commands (z) to what is on; raise if CONFIG is refused."""
    current: Any = await redis.config_get("notify-keyspace-events")
    flags = str(next(iter(current.values()), "")) if current else ""
    has_z = "z" in flags or "A" in flags
    if "K" in flags and has_z:
        return
    wanted = flags + ("K" if "K" not in flags else "") + ("z" if not has_z else "")
    try:
        await redis.config_set("notify-keyspace-events", wanted)
    except ResponseError as exc:
        raise RedisError(f"CONFIG SET notify-keyspace-events {wanted} refused: {exc}") from exc


async def _close(pubsub: PubSub) -> None:
    with contextlib.suppress(RedisError, OSError):
        await pubsub.aclose()  # type: ignore[no-untyped-call]


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value
