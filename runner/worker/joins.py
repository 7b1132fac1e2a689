"""Joins: once a group's last member has ended, its join callback is written and pushed, once.

The worker calls `after_members_ended` with the groups whose members' ends its status write recorded
(runner.store.jobs `JobStore.apply`); the sweeper calls `repair` for groups whose writer died between
that commit and the join's. Whoever writes a join pushes it; if it dies before the push, the join's
`pending` row is re-driven by the sweeper like any job missing from Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import structlog

from runner.broker.enqueue import Enqueuer
from runner.resources import Resources
from runner.store.groups import GroupStore
from runner.store.jobs import PendingJob
from runner.worker.outage import ride_out

__all__ = ["Joins"]

log = structlog.get_logger("runner.worker.joins")


class Joins:
    """Writes and pushes join callbacks. Borrows the process's resources."""

    def __init__(self, resources: Resources, *, outage_s: float, priorities: Mapping[str, int] | None = None) -> None:
        """`priorities`: each job name's registered priority (a join is pushed with its callback's)."""
        self._groups = GroupStore(resources.db)
        self._enqueuer = Enqueuer(resources.redis)
        self._outage_s = outage_s
        self._priorities = priorities or {}

    async def after_members_ended(self, group_ids: Sequence[str]) -> list[str]:
        """Write and push the joins of these groups that have no member left running; their job ids.
        Never raises: a join not written or not pushed here is the sweeper's to finish."""
        if not group_ids:
            return []
        try:
            joins = await ride_out(lambda: self._groups.write_joins(group_ids), what="join", budget_s=self._outage_s)
        except Exception as exc:
            log.warning("join_deferred_to_sweeper", groups=list(group_ids), error=repr(exc))
            return []
        await asyncio.gather(*(self._push(join) for join in joins))
        return [join.job_id for join in joins]

    async def repair(self, queue: str, limit: int) -> list[str]:
        """Joins on `queue` whose last member ended but which were never written (their writer died)."""
        return await self.after_members_ended(await self._groups.unjoined(queue, limit))

    async def _push(self, join: PendingJob) -> None:
        meta = {"parent": join.parent_id} if join.parent_id else None
        priority = self._priorities.get(join.name, 0)
        try:
            queued = await ride_out(
                lambda: self._enqueuer.enqueue(
                    join.queue, join.job_id, join.name, join.args, meta=meta, priority=priority
                ),
                what="join_push",
                budget_s=self._outage_s,
            )
        except Exception as exc:  # its row is pending: the sweeper enqueues it
            log.warning("join_push_deferred_to_sweeper", join_id=join.job_id, error=repr(exc))
            return
        log.info("group_joined", join_id=join.job_id, join_name=join.name, queued=queued)
