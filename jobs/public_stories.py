"""The public story library (curated, published stories the app shows everyone), read-only here."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from runner.store.keyset import Cursor

__all__ = ["PublicStory", "PublicStoryFilter", "PublicStoryRepository"]


@dataclass(frozen=True, slots=True)
class PublicStory:
    id: uuid.UUID
    title: str
    description: str | None
    cover_image_url: str | None
    tags: list[str]
    duration: str
    featured: bool
    view_count: int
    age_rating: str
    language: str
    category: str
    difficulty_level: str
    published: bool
    scenes: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> PublicStory:
        values = dict(r)
        values["tags"] = orjson.loads(values["tags"])
        values["scenes"] = orjson.loads(values["scenes"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class PublicStoryFilter:
    category: str | None = None
    featured: bool | None = None
    age_rating: str | None = None
    difficulty: str | None = None
    tags: tuple[str, ...] = ()  # any of them


class PublicStoryRepository:
    """Borrows the pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def list(
        self, where: PublicStoryFilter, *, limit: int, after: Cursor | None = None
    ) -> tuple[list[PublicStory], str | None]:
        """Published stories matching every given filter, newest first; and the next page's cursor."""
        rows = await self._pool.fetch(
            "SELECT * FROM public_stories WHERE published "
            "AND ($1::text IS NULL OR category = $1) AND ($2::bool IS NULL OR featured = $2) "
            "AND ($3::text IS NULL OR age_rating = $3) AND ($4::text IS NULL OR difficulty_level = $4) "
            "AND (cardinality($5::text[]) = 0 OR tags ?| $5::text[]) "
            "AND ($6::timestamptz IS NULL OR (created_at, id) < ($6, $7::uuid)) "
            "ORDER BY created_at DESC, id DESC LIMIT $8",
            where.category, where.featured, where.age_rating, where.difficulty, list(where.tags),
            after.created_at if after else None, uuid.UUID(after.id) if after else None, limit + 1,
        )  # fmt: skip
        stories = [PublicStory.from_record(r) for r in rows[:limit]]
        more = len(rows) > limit and stories
        return stories, Cursor(stories[-1].created_at, str(stories[-1].id)).encode() if more else None

    async def get(self, story_id: uuid.UUID) -> PublicStory | None:
        record = await self._pool.fetchrow("SELECT * FROM public_stories WHERE id = $1 AND published", story_id)
        return PublicStory.from_record(record) if record is not None else None
