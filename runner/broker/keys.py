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
    runner:{q}:inbox:<worker>     jobs an enqueue handed straight to that idle worker, already leased to it
    runner:{q}:sweeper            the sweeper's lock: one worker sweeps each period
    runner:{q}:workers            sorted set of the queue's live workers, scored by their last heartbeat (ms)
    runner:{q}:worker:<worker>    a worker's JSON self-report (host, pid, jobs, memory, loop lag), short TTL
    <slot prefix>:{<name>}        slots of a shared limit held now, scored by expiry (see slots.py)
    <slot prefix>:{<name>}:minute the calls of the last minute
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

__all__ = ["NAMESPACE", "TRY_COUNTER_TTL_MS", "QueueKeys", "SlotKeys"]

NAMESPACE = "runner"
TRY_COUNTER_TTL_MS = 88_400_000  # a try counter outlives any job's retries (arq's value)


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
