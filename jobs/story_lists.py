"""Read-only lists of stories: search, the newest, one user's (keyset pages), and a user's statistics.

Every list is one indexed query ordered by (created_at, story_id) descending; see runner.store.keyset.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from jobs.repository import StoryRecord, StoryStatus
from runner.store.keyset import Cursor, contains_pattern

__all__ = ["StoryLists", "StoryPage", "UserStoryStats"]


@dataclass(frozen=True, slots=True)
class StoryPage:
    stories: list[StoryRecord]
    next_cursor: str | None  # None: this was the last page


@dataclass(frozen=True, slots=True)
class UserStoryStats:
    by_status: dict[StoryStatus, int]
    recent_30_days: int
    avg_minutes_to_complete: float | None
    first_created: datetime | None
    last_created: datetime | None
    most_active_day: str | None  # YYYY-MM-DD

    @property
    def total(self) -> int:
        return sum(self.by_status.values())


class StoryLists:
    """Borrows the pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def search(self, text: str, *, limit: int, after: Cursor | None = None) -> StoryPage:
        """Stories whose title or prompt contains `text` (any case), newest first."""
        return await self._page("(title ILIKE $1 OR prompt ILIKE $1)", [contains_pattern(text)], limit, after)

    async def recent(self, *, limit: int, after: Cursor | None = None) -> StoryPage:
        return await self._page("true", [], limit, after)

    async def of_user(
        self, user_id: str, *, limit: int, after: Cursor | None = None, status: str | None = None
    ) -> StoryPage:
        if status is None:
            return await self._page("user_id = $1", [user_id], limit, after)
        return await self._page("user_id = $1 AND status = $2", [user_id, status], limit, after)

    async def count_of_user(self, user_id: str, *, status: str | None = None) -> int:
        count: int = await self._pool.fetchval(
            "SELECT count(*) FROM stories WHERE user_id = $1 AND ($2::text IS NULL OR status = $2)", user_id, status
        )
        return count

    async def offset_page_of_user(self, user_id: str, *, page: int, limit: int, status: str | None) -> StoryPage:
        """The old clients' `page=N` without a cursor: an offset, kept only for them (prefer cursors)."""
        rows = await self._pool.fetch(
            "SELECT * FROM stories WHERE user_id = $1 AND ($2::text IS NULL OR status = $2) "
            "ORDER BY created_at DESC, story_id DESC OFFSET $3 LIMIT $4",
            user_id, status, (page - 1) * limit, limit + 1,
        )  # fmt: skip
        return _to_page(rows, limit)

    async def scene_progress(self, story_ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[int, int]]:
        """(scenes, scenes with their media) of each story, in one query for a whole page."""
        rows = await self._pool.fetch(
            "SELECT story_id, count(*) AS total, "
            "count(*) FILTER (WHERE image_key IS NOT NULL AND audio_key IS NOT NULL) AS done "
            "FROM scenes WHERE story_id = ANY($1::uuid[]) GROUP BY story_id",
            story_ids,
        )
        return {r["story_id"]: (int(r["total"]), int(r["done"])) for r in rows}

    async def stats_of_user(self, user_id: str) -> UserStoryStats:
        row = await self._pool.fetchrow(_STATS, user_id)
        assert row is not None
        by_status = {s: int(row[s.value]) for s in StoryStatus}
        avg = row["avg_minutes"]
        return UserStoryStats(by_status, int(row["recent"]), float(avg) if avg is not None else None,
                              row["first_created"], row["last_created"], row["busiest_day"])  # fmt: skip

    async def _page(self, where: str, params: list[object], limit: int, after: Cursor | None) -> StoryPage:
        n = len(params)
        if after is not None:
            where += f" AND (created_at, story_id) < (${n + 1}::timestamptz, ${n + 2}::uuid)"
            params = [*params, after.created_at, uuid.UUID(after.id)]
        rows = await self._pool.fetch(
            f"SELECT * FROM stories WHERE {where} ORDER BY created_at DESC, story_id DESC LIMIT ${len(params) + 1}",
            *params, limit + 1,
        )  # fmt: skip
        return _to_page(rows, limit)


def _to_page(rows: list[asyncpg.Record], limit: int) -> StoryPage:
    stories = [StoryRecord.from_record(r) for r in rows[:limit]]
    more = len(rows) > limit
    last = stories[-1] if stories else None
    cursor = Cursor(last.created_at, str(last.story_id)).encode() if more and last is not None else None
    return StoryPage(stories, cursor)


_STATS = """
SELECT count(*) FILTER (WHERE status = 'pending')    AS pending,
       count(*) FILTER (WHERE status = 'processing') AS processing,
       count(*) FILTER (WHERE status = 'completed')  AS completed,
       count(*) FILTER (WHERE status = 'failed')     AS failed,
       count(*) FILTER (WHERE created_at > now() - interval '30 days') AS recent,
       avg(extract(epoch FROM updated_at - created_at) / 60) FILTER (WHERE status = 'completed') AS avg_minutes,
       min(created_at) AS first_created,
       max(created_at) AS last_created,
       (SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') FROM stories WHERE user_id = $1
        GROUP BY 1 ORDER BY count(*) DESC, 1 DESC LIMIT 1) AS busiest_day
FROM stories WHERE user_id = $1
"""
