"""The story workflow the API calls: create a story and queue its job, read it, delete it.

The API only speaks HTTP; the ids, the SQL and the order of the writes live here. Creating writes the
story and its job's `pending` row in one statement, then puts the job in Redis; if Redis refuses, both
rows are removed again, so a failed request leaves nothing behind. Deleting first asks the story's jobs
(the story job and one media job per scene it really has) to stop.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import structlog

from jobs.ids import STORY_JOB, media_job_id, story_job_id
from jobs.repository import SceneRecord, StoryRecord, StoryRepository
from jobs.storage import MediaStorage
from runner.client import JobClient

__all__ = ["StoryProgress", "StoryWorkflow"]

log = structlog.get_logger("jobs.stories")
_IDEMPOTENCY_NAMESPACE = uuid.UUID("0b6f2a8e-3d1c-4e57-8f4a-49646d4b6579")


@dataclass(frozen=True, slots=True)
class StoryProgress:
    story: StoryRecord
    scenes_total: int
    scenes_done: int


class StoryWorkflow:
    """Stories as the API sees them. Borrows the client, repository and storage it is given."""

    def __init__(self, client: JobClient, stories: StoryRepository, storage: MediaStorage) -> None:
        self._client = client
        self._stories = stories
        self._storage = storage

    async def create(self, *, user_id: str, title: str, prompt: str, idempotency_key: str | None = None) -> StoryRecord:
        """A new `pending` story with its generation queued. With an idempotency key, a retried request
        returns the story the first one created. If the queue refuses (Redis down), nothing is kept and
        the error is raised."""
        story_id = (
            uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"{user_id}\n{idempotency_key}") if idempotency_key else uuid.uuid4()
        )
        if idempotency_key and (existing := await self._stories.get(story_id)) is not None:
            return existing
        job_id, kwargs = story_job_id(story_id), {"story_id": str(story_id)}
        job = self._client.pending(STORY_JOB, job_id=job_id, kwargs=kwargs)
        story = await self._stories.create(story_id=story_id, user_id=user_id, title=title, prompt=prompt, job=job)
        try:
            await self._client.push(STORY_JOB, job_id=job_id, kwargs=kwargs)
        except BaseException as exc:
            await asyncio.shield(self._stories.delete_unstarted(story_id, job_id))
            log.error("enqueue_failed", story_id=str(story_id), error=repr(exc))
            raise
        return story

    async def get(self, story_id: uuid.UUID) -> StoryRecord | None:
        return await self._stories.get(story_id)

    async def scenes(self, story_id: uuid.UUID) -> list[SceneRecord]:
        return await self._stories.scenes(story_id)

    async def progress(self, story_id: uuid.UUID) -> StoryProgress | None:
        story = await self._stories.get(story_id)
        if story is None:
            return None
        scenes = await self._stories.scenes(story_id)
        done = sum(1 for s in scenes if s.image_key and s.audio_key)
        return StoryProgress(story, len(scenes), done)

    async def delete(self, story_id: uuid.UUID) -> bool:
        """Stop the story's jobs, then delete its rows and media; False if there was no such story."""
        story = await self._stories.get(story_id)
        if story is None:
            return False
        scenes = await self._stories.scenes(story_id)
        job_ids = [story.job_id, *(media_job_id(story_id, s.sequence) for s in scenes)]
        await asyncio.gather(*(self._client.request_cancel(job_id) for job_id in job_ids if job_id is not None))
        if not await self._stories.delete(story_id):
            return False
        await self._storage.delete_prefix(f"stories/{story_id}")
        return True
