"""Postgres: groups of jobs and their join callbacks (see runner.group).

A group is written whole with its members' `pending` rows, in one transaction, before any member is
pushed. A member's end is copied onto its member row by the statement that makes its status row final
(runner.store.jobs `_TRANSITIONS`), so it lands exactly once whichever path ended it. The join is then
written by `write_joins`, called after that statement commits: it writes the callback's `pending` row
for each group with no member left running. Two writers may both see the last member end; the
callback's job id (the runner_jobs primary key) lets one of them write it, and only that one pushes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from runner.errors import PermanentError
from runner.status import JobStatus
from runner.store.jobs import PendingJob

__all__ = ["GroupMemberTakenError", "GroupResults", "GroupStore", "MemberOutcome", "NewGroup", "join_id_for"]


def join_id_for(group_id: str) -> str:
    """The join callback's job id: one per group, so it can be written and pushed only once."""
    return f"{group_id}:join"


class GroupMemberTakenError(PermanentError):
    """A new group named a job that exists already: a member must be a new job, or its end could be missed."""


@dataclass(frozen=True, slots=True)
class NewGroup:
    group_id: str
    members: Sequence[PendingJob]
    join: PendingJob
    parent_id: str | None = None


@dataclass(frozen=True, slots=True)
class MemberOutcome:
    """One member of a group: how it ended (status None while it runs), with its arguments."""

    position: int  # 1-based, in the order the members were given
    job_id: str
    name: str
    kwargs: dict[str, Any]
    status: JobStatus | None
    result: Any
    error: str | None
    ended_at: datetime | None


@dataclass(frozen=True, slots=True)
class GroupResults:
    """A group's members in the order they were given; for its join, every one has ended."""

    group_id: str
    members: tuple[MemberOutcome, ...]

    @property
    def ok(self) -> bool:
        """Every member completed."""
        return all(m.status is JobStatus.COMPLETED for m in self.members)

    @property
    def results(self) -> list[Any]:
        """The completed members' results, in member order."""
        return [m.result for m in self.members if m.status is JobStatus.COMPLETED]

    @property
    def failures(self) -> list[MemberOutcome]:
        """The members that ended failed or cancelled, the first to end first."""
        ended = [m for m in self.members if m.status in (JobStatus.FAILED, JobStatus.CANCELLED)]
        return sorted(ended, key=lambda m: (m.ended_at is None, m.ended_at, m.position))


_INSERT_GROUP = """
INSERT INTO runner_groups (group_id, join_id, join_name, join_queue, join_args, join_max_tries, parent_id, size)
VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8)
ON CONFLICT (group_id) DO NOTHING
"""

_INSERT_MEMBERS = """
INSERT INTO runner_group_members (group_id, position, job_id, name)
SELECT $1, m.position, m.job_id, m.name FROM unnest($2::int[], $3::text[], $4::text[]) AS m(position, job_id, name)
"""

_INSERT_PENDING_MANY = """
INSERT INTO runner_jobs (job_id, name, queue, args, status, max_tries, parent_id)
SELECT t.job_id, t.name, t.queue, t.args::jsonb, 'pending', t.max_tries, $6
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[]) AS t(job_id, name, queue, args, max_tries)
ON CONFLICT (job_id) DO NOTHING
RETURNING job_id
"""

# A group made again (its maker re-ran): the jobs of it never started, to push again (a push of a job
# that is queued does nothing); its join too, if it was written and has not started.
_STILL_PENDING = """
SELECT j.job_id, j.name, j.queue, j.args, j.max_tries, j.parent_id FROM runner_jobs AS j
WHERE j.status = 'pending' AND j.job_id IN (
    SELECT job_id FROM runner_group_members WHERE group_id = $1
    UNION ALL SELECT join_id FROM runner_groups WHERE group_id = $1 AND joined_at IS NOT NULL)
"""

# Groups among $1 with no member left running get their join's pending row, once: a second writer's
# insert waits for the first's commit, then does nothing. In join-id order, so two writers never deadlock.
_WRITE_JOINS = """
WITH ready AS (
    SELECT g.* FROM runner_groups AS g
    WHERE g.group_id = ANY($1::text[]) AND g.joined_at IS NULL
      AND NOT EXISTS (SELECT 1 FROM runner_group_members AS m WHERE m.group_id = g.group_id AND m.status IS NULL)
    ORDER BY g.join_id
), written AS (
    INSERT INTO runner_jobs (job_id, name, queue, args, status, max_tries, parent_id)
    SELECT join_id, join_name, join_queue, join_args, 'pending', join_max_tries, parent_id FROM ready
    ON CONFLICT (job_id) DO NOTHING
    RETURNING job_id, name, queue, args, max_tries, parent_id
), stamped AS (
    UPDATE runner_groups SET joined_at = now() WHERE join_id IN (SELECT job_id FROM written)
)
SELECT * FROM written
"""

_UNJOINED = """
SELECT g.group_id FROM runner_groups AS g
WHERE g.join_queue = $1 AND g.joined_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM runner_group_members AS m WHERE m.group_id = g.group_id AND m.status IS NULL)
ORDER BY g.created_at LIMIT $2
"""

_MEMBERS = """
SELECT m.position, m.job_id, m.name, m.status, m.result, m.error, m.ended_at, j.args
FROM runner_group_members AS m LEFT JOIN runner_jobs AS j ON j.job_id = m.job_id
WHERE m.group_id = $1 ORDER BY m.position
"""

_FORGET_JOINED = """
WITH gone AS (
    DELETE FROM runner_groups WHERE group_id IN (
        SELECT g.group_id FROM runner_groups AS g
        WHERE g.join_queue = $1 AND g.joined_at < $2
          -- a join still to run needs its group (ctx.group()): kept until the join's row has ended or is gone
          AND NOT EXISTS (SELECT 1 FROM runner_jobs AS j
                          WHERE j.job_id = g.join_id AND j.status NOT IN ('completed', 'failed', 'cancelled'))
        ORDER BY g.joined_at LIMIT $3
    ) RETURNING 1
)
SELECT count(*) FROM gone
"""


class GroupStore:
    """Reads and writes of `runner_groups` and `runner_group_members`. Borrows the pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, group: NewGroup) -> tuple[bool, list[PendingJob]]:
        """Write the group, its members and their pending rows (an empty group's join at once), in one
        transaction. Returns whether it is new, and the jobs to push: all of a new group's; of a group
        made before, those that never started. Raises GroupMemberTakenError if a member exists already."""
        members, join = group.members, group.join
        async with self._pool.acquire() as conn, conn.transaction():
            created = await conn.execute(
                _INSERT_GROUP, group.group_id, join.job_id, join.name, join.queue, orjson.dumps(join.args).decode(),
                join.max_tries, group.parent_id, len(members),
            )  # fmt: skip
            if created != "INSERT 0 1":
                return False, [_pending(r) for r in await conn.fetch(_STILL_PENDING, group.group_id)]
            try:
                await conn.execute(_INSERT_MEMBERS, group.group_id, list(range(1, len(members) + 1)),
                                   [m.job_id for m in members], [m.name for m in members])  # fmt: skip
            except asyncpg.UniqueViolationError:
                raise GroupMemberTakenError(f"group {group.group_id!r}: a member is already in another group "
                                            f"(members {[m.job_id for m in members]})") from None  # fmt: skip
            inserted = {
                r["job_id"] for r in await conn.fetch(_INSERT_PENDING_MANY, *_columns(members), group.parent_id)
            }
            if taken := [m.job_id for m in members if m.job_id not in inserted]:
                raise GroupMemberTakenError(
                    f"group {group.group_id!r}: jobs {taken} exist already; a member must be a new job (its end "
                    "might have been recorded before it joined): give the members new job ids"
                )
            if members:
                return True, list(members)
            joins = await self._write_joins(conn, [group.group_id])  # nothing to wait for: join at once
        return True, joins

    async def write_joins(self, group_ids: Sequence[str]) -> list[PendingJob]:
        """Write the join of each of these groups that has no member left running, unless written already;
        the joins this call wrote, for the caller to push (it alone does)."""
        if not group_ids:
            return []
        async with self._pool.acquire() as conn:
            return await self._write_joins(conn, group_ids)

    async def _write_joins(self, conn: Any, group_ids: Sequence[str]) -> list[PendingJob]:
        return [_pending(r) for r in await conn.fetch(_WRITE_JOINS, sorted(set(group_ids)))]

    async def unjoined(self, queue: str, limit: int) -> list[str]:
        """Groups (joining on `queue`) with every member ended and no join written: their writer died."""
        return [r["group_id"] for r in await self._pool.fetch(_UNJOINED, queue, limit)]

    async def group_of_join(self, join_id: str) -> str | None:
        """The group whose join callback is job `join_id`, if any."""
        group_id: str | None = await self._pool.fetchval(
            "SELECT group_id FROM runner_groups WHERE join_id = $1", join_id
        )
        return group_id

    async def results(self, group_id: str) -> GroupResults | None:
        """The group's members and how each ended so far; None if there is no such group."""
        async with self._pool.acquire() as conn:
            if await conn.fetchval("SELECT 1 FROM runner_groups WHERE group_id = $1", group_id) is None:
                return None
            rows = await conn.fetch(_MEMBERS, group_id)
        return GroupResults(group_id, tuple(_outcome(r) for r in rows))

    async def running(self, group_id: str) -> list[str]:
        """The group's members that have not ended."""
        rows = await self._pool.fetch(
            "SELECT job_id FROM runner_group_members WHERE group_id = $1 AND status IS NULL ORDER BY position",
            group_id,
        )
        return [r["job_id"] for r in rows]

    async def forget_joined(self, queue: str, before: datetime, limit: int) -> int:
        """Delete up to `limit` groups joining on `queue` whose join was written before `before`."""
        deleted: int = await self._pool.fetchval(_FORGET_JOINED, queue, before, limit)
        return deleted


def _columns(jobs: Sequence[PendingJob]) -> tuple[list[Any], ...]:
    return (
        [j.job_id for j in jobs], [j.name for j in jobs], [j.queue for j in jobs],
        [orjson.dumps(j.args).decode() for j in jobs], [j.max_tries for j in jobs],
    )  # fmt: skip


def _pending(r: asyncpg.Record) -> PendingJob:
    return PendingJob(r["job_id"], r["name"], r["queue"], orjson.loads(r["args"]), r["max_tries"], r["parent_id"])


def _outcome(r: asyncpg.Record) -> MemberOutcome:
    return MemberOutcome(
        position=r["position"], job_id=r["job_id"], name=r["name"],
        kwargs=orjson.loads(r["args"]) if r["args"] is not None else {},
        status=JobStatus(r["status"]) if r["status"] is not None else None,
        result=orjson.loads(r["result"]) if r["result"] is not None else None,
        error=r["error"], ended_at=r["ended_at"],
    )  # fmt: skip
