"""What every intake does with a job another system's producer sent: find the registered job of that name,
give its positional arguments their names and check them, and hand it to the runner under its id."""

from __future__ import annotations

from typing import Any

from runner.broker.enqueue import Enqueuer
from runner.errors import UnknownJobError
from runner.registry import JobSpec
from runner.resources import Resources
from runner.status import JobStatus
from runner.store.jobs import JobStore, PendingJob

__all__ = ["Handover"]


class Handover:
    """Borrows the process's resources."""

    def __init__(self, resources: Resources, specs: dict[str, JobSpec]) -> None:
        self.store = JobStore(resources.db)
        self._enqueuer = Enqueuer(resources.redis)
        self._specs = specs

    def resolve(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> tuple[JobSpec, dict[str, Any]]:
        """The job `name` and its arguments as keywords, checked; UnknownJobError or JobArgumentsError says why not."""
        spec = self._specs.get(name)
        if spec is None:
            raise UnknownJobError(f"no job named {name!r} is registered with this runner; known: {sorted(self._specs)}")
        named = spec.keywords(args, kwargs)
        spec.bind((), named)  # validated now, so a refusal reaches the sender, not a failed run
        return spec, named

    async def ran_before(self, job_id: str) -> bool:
        """Whether this id's job was handed over before and has left `pending` (it ran or runs)."""
        row = await self.store.get(job_id)
        return row is not None and row.status is not JobStatus.PENDING

    async def hand_over(
        self,
        spec: JobSpec,
        job_id: str,
        kwargs: dict[str, Any],
        *,
        meta: dict[str, str],
        defer_s: float = 0.0,
        enqueued_ms: int | None = None,
    ) -> bool:
        """Enqueue the job under `job_id` and write its row; False if a job with that id was there already.

        Push, then record (they commute, as in JobClient.enqueue): the job starts without waiting for the row's
        commit. A second push is refused by the enqueue script, a second row by its key."""
        assert spec.queue is not None
        queued = await self._enqueuer.enqueue(spec.queue, job_id, spec.name, kwargs, defer_s=defer_s, meta=meta,
                                              enqueued_ms=enqueued_ms)  # fmt: skip
        await self.store.insert_pending(PendingJob(job_id, spec.name, spec.queue, kwargs, spec.max_tries))
        return queued
