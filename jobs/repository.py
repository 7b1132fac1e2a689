"""Story and scene rows: reads, guarded status moves, idempotent upserts.

Story statuses move `pending -> processing -> completed | failed` only; completed and failed are final,
so a late write from a re-run cannot move a story backwards. Scenes are keyed by (story, sequence) with
a deterministic scene id, so a re-run updates them in place instead of adding copies.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import asyncpg
import orjson

from jobs.providers.base import SceneDraft, StoryDraft, VisualProfile
from runner.store.jobs import JobStore, PendingJob

__all__ = [
    "NewStory",
    "SceneRecord",
    "StoryRecord",
    "StoryRepository",
    "StoryStatus",
    "scene_id_for",
]


class StoryStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


_SOURCES: dict[StoryStatus, list[str]] = {
    StoryStatus.PROCESSING: ["pending", "processing"],
    StoryStatus.COMPLETED: ["processing"],
    StoryStatus.FAILED: ["pending", "processing"],
}


_SCENE_NAMESPACE = uuid.UUID("6f1d3c3e-4b0a-4d6e-9a53-53746f72794d")


def scene_id_for(story_id: uuid.UUID, sequence: int) -> uuid.UUID:
    """The same scene of the same story always has the same id, across re-runs."""
    return uuid.uuid5(_SCENE_NAMESPACE, f"{story_id}:{sequence}")


@dataclass(frozen=True, slots=True)
class StoryRecord:
    story_id: uuid.UUID
    user_id: str
    title: str
    prompt: str
    status: StoryStatus
    error: str | None
    job_id: str | None
    visual_profile: dict[str, Any] | None
    cover_image_key: str | None
    created_at: datetime
    updated_at: datetime
    style: str | None = None  # the client's style hint for the images
    num_scenes: int | None = None  # scenes the client asked for (else STORY_SCENES)
    source: str = "user"
    updated_by: str | None = None
    conversation_id: str | None = None  # made from an ElevenLabs conversation
    agent_id: str | None = None
    fetch_transcript: bool = False

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> StoryRecord:
        values = dict(r)
        values["status"] = StoryStatus(values["status"])
        if values["visual_profile"] is not None:
            values["visual_profile"] = orjson.loads(values["visual_profile"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class NewStory:
    """A story about to be created: what the client asked for."""

    story_id: uuid.UUID
    user_id: str
    title: str
    prompt: str
    style: str | None = None
    num_scenes: int | None = None
    source: str = "user"
    conversation_id: str | None = None
    agent_id: str | None = None
    fetch_transcript: bool = False


@dataclass(frozen=True, slots=True)
class SceneRecord:
    scene_id: uuid.UUID
    story_id: uuid.UUID
    sequence: int
    title: str
    text: str
    image_prompt: str
    image_key: str | None
    audio_key: str | None
    created_at: datetime
    updated_at: datetime


class StoryRepository:
    """SQL for stories and scenes. Borrows the pool (or a caller's connection, for transactions)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, story: NewStory, *, job: PendingJob) -> StoryRecord:
        """Insert the story and its job's pending row in one statement: both or neither, one round trip."""
        record = await self._pool.fetchrow(
            f"WITH {job.cte(first_param=11)} "
            "INSERT INTO stories (story_id, user_id, title, prompt, style, num_scenes, source, conversation_id, "
            "agent_id, fetch_transcript, job_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING *",
            story.story_id, story.user_id, story.title, story.prompt, story.style, story.num_scenes, story.source,
            story.conversation_id, story.agent_id, story.fetch_transcript, *job.params,
        )  # fmt: skip
        assert record is not None
        return StoryRecord.from_record(record)

    async def adopt(self, story: NewStory, *, job_id: str) -> StoryRecord:
        """The story a producer of the old backend sent with its job (a Celery `.delay(story_id, request_dict,
        user_id)`): created `pending` under its own id with this job, unless it exists already."""
        record = await self._pool.fetchrow(
            "WITH new AS (INSERT INTO stories (story_id, user_id, title, prompt, style, num_scenes, source, job_id) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (story_id) DO NOTHING RETURNING *) "
            "SELECT * FROM new UNION ALL SELECT * FROM stories WHERE story_id = $1 LIMIT 1",
            story.story_id, story.user_id, story.title, story.prompt, story.style, story.num_scenes, story.source,
            job_id,
        )  # fmt: skip
        assert record is not None
        return StoryRecord.from_record(record)

    async def set_prompt(self, story_id: uuid.UUID, prompt: str) -> None:
        """The prompt a conversation's transcript made, once the story job fetched it."""
        await self._pool.execute(
            "UPDATE stories SET prompt = $2, fetch_transcript = false, updated_at = now() WHERE story_id = $1",
            story_id,
            prompt,
        )

    async def get(self, story_id: uuid.UUID) -> StoryRecord | None:
        record = await self._pool.fetchrow("SELECT * FROM stories WHERE story_id = $1", story_id)
        return StoryRecord.from_record(record) if record is not None else None

    async def scenes(self, story_id: uuid.UUID) -> list[SceneRecord]:
        rows = await self._pool.fetch("SELECT * FROM scenes WHERE story_id = $1 ORDER BY sequence", story_id)
        return [SceneRecord(**dict(r)) for r in rows]

    async def move(self, story_id: uuid.UUID, status: StoryStatus, *, error: str | None = None) -> bool:
        """Move the story to `status` if allowed from where it is; True if it moved."""
        result = await self._pool.execute(
            "UPDATE stories SET status = $2, error = $3, updated_at = now() "
            "WHERE story_id = $1 AND status = ANY($4::text[])",
            story_id, status.value, error, _SOURCES[status],
        )  # fmt: skip
        return bool(result == "UPDATE 1")

    async def save_draft(self, story_id: uuid.UUID, draft: StoryDraft) -> None:
        """Store the written story: its title and one upserted row per scene; drop scenes beyond it."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE stories SET title = $2, updated_at = now() WHERE story_id = $1", story_id, draft.title
            )
            await conn.executemany(_UPSERT_SCENE, [_scene_args(story_id, i, s) for i, s in enumerate(draft.scenes, 1)])
            await conn.execute("DELETE FROM scenes WHERE story_id = $1 AND sequence > $2", story_id, len(draft.scenes))

    async def save_visual_profile(self, story_id: uuid.UUID, profile: VisualProfile) -> None:
        await self._pool.execute(
            "UPDATE stories SET visual_profile = $2::jsonb, updated_at = now() WHERE story_id = $1",
            story_id, orjson.dumps(profile.model_dump()).decode(),
        )  # fmt: skip

    async def saved_draft(self, story_id: uuid.UUID) -> tuple[StoryDraft, VisualProfile] | None:
        """The story and visual profile an earlier run saved, so a re-run does not ask the LLM again."""
        story = await self.get(story_id)
        scenes = await self.scenes(story_id)
        if story is None or story.visual_profile is None or not scenes:
            return None
        draft = StoryDraft(
            title=story.title,
            scenes=[SceneDraft(title=s.title, text=s.text, image_prompt=s.image_prompt) for s in scenes],
        )
        return draft, VisualProfile.model_validate(story.visual_profile)

    async def scene(self, story_id: uuid.UUID, sequence: int) -> SceneRecord | None:
        row = await self._pool.fetchrow(
            "SELECT * FROM scenes WHERE story_id = $1 AND sequence = $2", story_id, sequence
        )
        return SceneRecord(**dict(row)) if row is not None else None

    async def save_scene_media(
        self, story_id: uuid.UUID, sequence: int, *, image_prompt: str, image_key: str, audio_key: str
    ) -> bool:
        """Record a scene's media while its story is processing; False if the story failed, completed or
        vanished meanwhile (nothing is written). The story is completed by its media group's join."""
        result = await self._pool.execute(
            "UPDATE scenes SET image_prompt = $3, image_key = $4, audio_key = $5, updated_at = now() "
            "WHERE story_id = $1 AND sequence = $2 "
            "AND EXISTS (SELECT 1 FROM stories WHERE story_id = $1 AND status = 'processing')",
            story_id, sequence, image_prompt, image_key, audio_key,
        )  # fmt: skip
        return bool(result == "UPDATE 1")

    async def complete(self, story_id: uuid.UUID) -> bool:
        """Complete a processing story whose every scene has its media, its cover the first scene's image;
        True if it moved."""
        return bool(await self._pool.execute(_COMPLETE_IF_ALL_SCENES_DONE, story_id) == "UPDATE 1")

    async def delete_unstarted(self, story_id: uuid.UUID, job_id: str) -> None:
        """Undo `create` whose job never reached the queue: the story and its job's pending row, together."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM stories WHERE story_id = $1", story_id)
            await JobStore(self._pool).forget_pending(job_id, conn=conn)

    async def delete(self, story_id: uuid.UUID) -> bool:
        result = await self._pool.execute("DELETE FROM stories WHERE story_id = $1", story_id)
        return bool(result == "DELETE 1")

    async def existing(self, story_ids: list[uuid.UUID]) -> set[uuid.UUID]:
        """Which of these stories have a row (the media clean-up's question; one indexed lookup)."""
        rows = await self._pool.fetch("SELECT story_id FROM stories WHERE story_id = ANY($1::uuid[])", story_ids)
        return {r["story_id"] for r in rows}


_COMPLETE_IF_ALL_SCENES_DONE = """
UPDATE stories SET status = 'completed', error = NULL, updated_at = now(),
    cover_image_key = (SELECT image_key FROM scenes WHERE story_id = $1 ORDER BY sequence LIMIT 1)
WHERE story_id = $1 AND status = 'processing'
  AND NOT EXISTS (SELECT 1 FROM scenes WHERE story_id = $1 AND (image_key IS NULL OR audio_key IS NULL))
"""

_UPSERT_SCENE = """
INSERT INTO scenes (scene_id, story_id, sequence, title, text, image_prompt)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (story_id, sequence) DO UPDATE SET
    title = EXCLUDED.title, text = EXCLUDED.text, image_prompt = EXCLUDED.image_prompt, updated_at = now()
"""


def _scene_args(story_id: uuid.UUID, sequence: int, scene: SceneDraft) -> tuple[Any, ...]:
    return (scene_id_for(story_id, sequence), story_id, sequence, scene.title, scene.text, scene.image_prompt)
