"""Every Redis key and key prefix the runner uses, defined here and nowhere else.

One queue's keys all carry the hash tag `{<queue>}`, so each Lua script, which touches one queue's keys,
stays in one Redis Cluster slot, and different queues spread over the slots. Every key starts with
`runner:`, so nothing another system writes for the same queue name (Celery's list `<queue>` and
`unacked`, kombu's `_kombu.*`, `celery-task-meta-*`, arq's `arq:*`) can be one of ours.

    runner:{q}:queue              sorted set of job ids, scored by the ms time they are due
    runner:{q}:job:<id>           the JSON job envelope (arq's shape)
    runner:{q}:lease:<id>         the lease: the owning worker's id, short TTL, renewed while the job runs
    runner:{q}:try:<id>           how many times the job was started
    runner:{q}:result:<id>        the JSON result envelope, kept KEEP_RESULT_S
    runner:{q}:abort              sorted set of job ids someone asked to cancel, scored by when
    runner:{q}:drain              sorted set of worker ids an operator asked to drain, scored by when
    runner:{q}:wake               tokens idle workers block on (BLPOP) instead of polling
    runner:{q}:idle               sorted set of idle workers ("<lease ms>:<worker>"), scored by when each lapses
    runner:{q}:leases:<worker>    ids a worker holds leases on, so its supervisor can free them when it dies
                                  (or, if that died too, the next supervisor on its host: fleet/predecessors.py)
    runner:{q}:inbox:<worker>     jobs an enqueue handed straight to that idle worker, already leased to it
    runner:{q}:sweeper            the sweeper's lock: one worker sweeps each period
    runner:{q}:workers            sorted set of the queue's live workers, scored by their last heartbeat (ms)
    runner:{q}:worker:<worker>    a worker's JSON self-report (host, pid, jobs, memory, loop lag), short TTL
    runner:{q}:probe              a readiness check's harmless write (finds OOM, READONLY, MISCONF), expires at once
    runner:{q}:cron:<name>        the last tick a periodic job was enqueued for (epoch s)
    runner:{q}:unique:<name>:<key> the id of the job holding a unique key, for its window (see runner/unique.py)
    runner:{q}:intake:celery      Celery messages the intake has taken and not yet handed to the runner
    <slot prefix>:{<name>}        slots of a shared limit held now, scored by expiry (see slots.py)
    <slot prefix>:{<name>}:minute the calls of the last minute

Keys other systems define, which the intakes read and the result reporters write (`CeleryKeys`, `ArqKeys`):
    <q>, <q>\x06\x163, ...6, ...9  Celery's queue list and its priority lists (kombu's Redis transport)
    celery-task-meta-<id>         Celery's result (and its pub/sub channel, which `.get()` waits on)
    <arq queue>                   arq's sorted set of job ids; arq:job:<id>, arq:in-progress:<id>, arq:result:<id>
They are not under one hash tag: the intakes are for a single Redis or Sentinel, not Cluster.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

__all__ = ["NAMESPACE", "TRY_COUNTER_TTL_MS", "ArqKeys", "CeleryKeys", "QueueKeys", "SlotKeys", "expected_type"]

NAMESPACE = "runner"
TRY_COUNTER_TTL_MS = 88_400_000  # a try counter outlives any job's retries (arq's value)


# The type (as TYPE names it) the runner keeps in each queue key, by the name after the hash tag.
_TYPES = {"queue": "zset", "job": "string", "lease": "string", "try": "string", "result": "string",
          "abort": "zset", "drain": "zset", "wake": "list", "idle": "zset", "leases": "set", "inbox": "list",
          "sweeper": "string", "workers": "zset", "worker": "string", "probe": "string", "intake": "list",
          "cron": "string", "unique": "string"}  # fmt: skip
_QUEUE_KEY = re.compile(rf"^{NAMESPACE}:\{{[^}}]*\}}:([a-z]+)(?::|$)")


def expected_type(key: str) -> str | None:
    """The type the runner keeps at one of its queue keys ("zset", "list", ...); None for any other key."""
    match = _QUEUE_KEY.match(key)
    return _TYPES.get(match.group(1)) if match else None


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The keys of one queue. Use `QueueKeys.of(queue)`; instances are cached and immutable."""

    queue: str
    base: str  # "runner:{<queue>}"

    @staticmethod
    @functools.cache
    def of(queue: str) -> QueueKeys:
        if not queue or "{" in queue or "}" in queue:
            raise ValueError(f"a queue name must be non-empty and free of braces (they make hash tags), got {queue!r}")
        return QueueKeys(queue, f"{NAMESPACE}:{{{queue}}}")

    @property
    def jobs(self) -> str:
        """The queue itself: job ids scored by due time."""
        return f"{self.base}:queue"

    @property
    def job_prefix(self) -> str:
        return f"{self.base}:job:"

    @property
    def lease_prefix(self) -> str:
        return f"{self.base}:lease:"

    @property
    def try_prefix(self) -> str:
        return f"{self.base}:try:"

    @property
    def result_prefix(self) -> str:
        return f"{self.base}:result:"

    @property
    def leases_prefix(self) -> str:
        return f"{self.base}:leases:"

    @property
    def inbox_prefix(self) -> str:
        return f"{self.base}:inbox:"

    @property
    def abort(self) -> str:
        return f"{self.base}:abort"

    def cron(self, name: str) -> str:
        return f"{self.base}:cron:{name}"

    def unique(self, name: str, key: str) -> str:
        """A unique key of job `name`: its value is the id of the job holding it."""
        return f"{self.base}:unique:{name}:{key}"

    def unique_takeovers(self, name: str, key: str) -> str:
        """How many debounces the unique key's jobs took: orders the writes of their rows' arguments."""
        return f"{self.base}:unique-takeovers:{name}:{key}"

    @property
    def celery_intake(self) -> str:
        return f"{self.base}:intake:celery"

    @property
    def drain(self) -> str:
        return f"{self.base}:drain"

    @property
    def wake(self) -> str:
        return f"{self.base}:wake"

    @property
    def idle(self) -> str:
        return f"{self.base}:idle"

    @property
    def sweeper(self) -> str:
        return f"{self.base}:sweeper"

    @property
    def workers(self) -> str:
        return f"{self.base}:workers"

    @property
    def probe(self) -> str:
        return f"{self.base}:probe"

    @property
    def shared(self) -> tuple[str, ...]:
        """The keys every worker of the queue shares (not one job's or one worker's): what /ready checks."""
        return (self.jobs, self.wake, self.idle, self.abort, self.drain, self.workers)

    @property
    def worker_prefix(self) -> str:
        return f"{self.base}:worker:"

    def worker(self, worker_id: str) -> str:
        return self.worker_prefix + worker_id

    def job(self, job_id: str) -> str:
        return self.job_prefix + job_id

    def lease(self, job_id: str) -> str:
        return self.lease_prefix + job_id

    def tries(self, job_id: str) -> str:
        return self.try_prefix + job_id

    def result(self, job_id: str) -> str:
        return self.result_prefix + job_id

    def leases(self, worker_id: str) -> str:
        return self.leases_prefix + worker_id

    def inbox(self, worker_id: str) -> str:
        return self.inbox_prefix + worker_id


@dataclass(frozen=True, slots=True)
class SlotKeys:
    """The two keys of one shared limit, under one hash tag: slots held now, and calls of the last minute."""

    held: str
    minute: str

    @staticmethod
    def of(prefix: str, name: str) -> SlotKeys:
        base = f"{prefix}:{{{name}}}"
        return SlotKeys(base, f"{base}:minute")


@dataclass(frozen=True, slots=True)
class CeleryKeys:
    """What a Celery producer writes for a queue (kombu's Redis transport) and reads back (Celery's Redis
    result backend). Fixed by Celery: not ours to rename."""

    queue: str

    PRIORITY_SEP = "\x06\x16"  # kombu's separator between a queue's name and its priority
    PRIORITY_STEPS = (0, 3, 6, 9)  # kombu's default; priority 0 is the plain list and is served first

    @property
    def lists(self) -> list[str]:
        """The queue's lists, highest priority first."""
        return [self.queue if p == 0 else f"{self.queue}{self.PRIORITY_SEP}{p}" for p in self.PRIORITY_STEPS]

    @staticmethod
    def meta(task_id: str) -> str:
        return f"celery-task-meta-{task_id}"


@dataclass(frozen=True, slots=True)
class ArqKeys:
    """What an arq producer writes (`ArqRedis.enqueue_job`) and reads (`Job.status()`, `Job.result()`)."""

    queue: str  # arq's queue: a sorted set of job ids, scored by due ms

    @staticmethod
    def job(job_id: str) -> str:
        return f"arq:job:{job_id}"

    @staticmethod
    def in_progress(job_id: str) -> str:
        return f"arq:in-progress:{job_id}"

    @staticmethod
    def result(job_id: str) -> str:
        return f"arq:result:{job_id}"
