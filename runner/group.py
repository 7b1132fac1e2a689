"""Fan-out and join: a group of jobs, and a callback that runs once when every one of them has ended.

    group = await ctx.jobs.enqueue_group(
        [JobCall("media.render", {"scene": n}, job_id=f"render:{story}:{n}") for n in range(1, 6)],
        then=JobCall("story.publish", {"story": story}),
        group_id=f"renders:{story}",
    )

The callback (`then`) runs once all members have ended, however each ended: completed, failed after
its retries, cancelled, refused (bad arguments), stopped at its hard time limit, or given up after its
worker kept dying. It reads their ends with `await ctx.group()` (a GroupResults: `ok`, `results`,
`failures`). Unlike Celery's chord, the join cannot be lost or made twice: each member's end is
recorded with its final status row, in one statement, and the callback's row is written once, by
whoever records the last end, under the job id `<group_id>:join` (runner.store.groups). A writer that
dies before pushing it leaves a `pending` row that the sweeper enqueues. The callback is a job like any
other: it runs at least once (again if its worker dies mid-run), so make it idempotent. It may start
before the last member's `on_failure` hook has finished (the hook runs after the member's end is
recorded): a callback must not rely on what a member's hook does.

A group id names the group for good: making it again (its maker re-ran) pushes only those of its jobs
that never started. Members must be new jobs; a member retried by an operator after it ended keeps its
first end in the group.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runner.store.groups import GroupMemberTakenError, GroupResults, MemberOutcome, join_id_for

if TYPE_CHECKING:
    from runner.client import EnqueueResult, JobClient

__all__ = ["GroupHandle", "GroupMemberTakenError", "GroupResults", "JobCall", "MemberOutcome", "join_id_for"]


@dataclass(frozen=True, slots=True)
class JobCall:
    """A job to enqueue: its name, its JSON keyword arguments, and its id (None: one is made from the
    group's id; the callback's is always `<group_id>:join`)."""

    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    job_id: str | None = None


@dataclass(frozen=True, slots=True)
class GroupHandle:
    """What `enqueue_group` made: the group, its members' ids, and `join`, a handle on the callback job
    (`await handle.join.result(timeout=...)`)."""

    group_id: str
    member_ids: tuple[str, ...]
    join: EnqueueResult
    created: bool  # False: the group existed already (only its unstarted jobs were pushed again)
    client: JobClient = field(repr=False, compare=False)

    async def outcomes(self) -> GroupResults:
        """The members and how each has ended so far (status None while it runs)."""
        results = await self.client.group_results(self.group_id)
        assert results is not None, f"group {self.group_id!r} has no row"
        return results

    async def cancel(self) -> list[str]:
        """Ask the workers to stop every member still running; the callback then runs with their ends."""
        return await self.client.cancel_group(self.group_id)
