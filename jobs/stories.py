"""The story workflow the API calls: create a story and queue its job, change or read it, delete it.

The API only speaks HTTP; the ids, the SQL and the order of the writes live here. Creating writes the
story and its job's `pending` row in one statement, then puts the job in Redis; if Redis refuses, both
rows are removed again, so a failed request leaves nothing behind. Deleting first asks the story's jobs
(the story job and one media job per scene it really has) to stop.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, replace
from enum import StrEnum

import structlog

from jobs.ids import STORY_JOB, media_job_id, story_job_id
from jobs.repository import NewStory, SceneRecord, StoryRecord, StoryRepository, StoryStatus
from jobs.storage import MediaStorage
from runner.client import JobClient

__all__ = ["StatusChange", "StoryProgress", "StoryWorkflow"]

log = structlog.get_logger("jobs.stories")
_IDEMPOTENCY_NAMESPACE = uuid.UUID("0b6f2a8e-3d1c-4e57-8f4a-49646d4b6579")


@dataclass(frozen=True, slots=True)
class StoryProgress:
    story: StoryRecord
    scenes_total: int
    scenes_done: int


class StatusChange(StrEnum):
    MOVED = "moved"
    UNCHANGED = "unchanged"  # it had that status already
    REFUSED = "refused"  # not a move the story may make (completed and failed are final)
    NOT_FOUND = "not_found"


class StoryWorkflow:
    """Stories as the API sees them. Borrows the client, repository and storage it is given."""

    def __init__(self, client: JobClient, stories: StoryRepository, storage: MediaStorage) -> None:
        self._client = client
        self._stories = stories
        self._storage = storage

    @property
    def repository(self) -> StoryRepository:
        return self._stories

    async def create(self, story: NewStory, *, idempotency_key: str | None = None) -> StoryRecord:
        """A new `pending` story with its generation queued (`story.story_id` is replaced). With an
        idempotency key, a retried request returns the story the first one created. If the queue refuses
        (Redis down), nothing is kept and the error is raised."""
        key = f"{story.user_id}\n{idempotency_key}"
        story = replace(story, story_id=uuid.uuid5(_IDEMPOTENCY_NAMESPACE, key) if idempotency_key else uuid.uuid4())
        if idempotency_key and (existing := await self._stories.get(story.story_id)) is not None:
            return existing
        job_id, kwargs = story_job_id(story.story_id), {"story_id": str(story.story_id)}
        job = self._client.pending(STORY_JOB, job_id=job_id, kwargs=kwargs)
        created = await self._stories.create(story, job=job)
        try:
            await self._client.push(STORY_JOB, job_id=job_id, kwargs=kwargs)
        except BaseException as exc:
            await asyncio.shield(self._stories.delete_unstarted(story.story_id, job_id))
            log.error("enqueue_failed", story_id=str(story.story_id), error=repr(exc))
            raise
        return created

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

    async def set_status(self, story_id: uuid.UUID, status: StoryStatus) -> tuple[StatusChange, StoryRecord | None]:
        """Move the story by hand, along the moves a story may make; failing it stops its jobs."""
        story = await self._stories.get(story_id)
        if story is None:
            return StatusChange.NOT_FOUND, None
        if story.status is status:
            return StatusChange.UNCHANGED, story
        if status is StoryStatus.PENDING or not await self._stories.move(story_id, status, error=_by_hand(status)):
            return StatusChange.REFUSED, story
        if status is StoryStatus.FAILED:
            await self._cancel_jobs(story)
        return StatusChange.MOVED, await self._stories.get(story_id)

    async def delete(self, story_id: uuid.UUID) -> bool:
        """Stop the story's jobs, then delete its rows and media; False if there was no such story."""
        story = await self._stories.get(story_id)
        if story is None:
            return False
        await self._cancel_jobs(story)
        if not await self._stories.delete(story_id):
            return False
        await self._storage.delete_prefix(f"stories/{story_id}")
        return True

    async def _cancel_jobs(self, story: StoryRecord) -> None:
        scenes = await self._stories.scenes(story.story_id)
        job_ids = [story.job_id, *(media_job_id(story.story_id, s.sequence) for s in scenes)]
        await asyncio.gather(*(self._client.request_cancel(job_id) for job_id in job_ids if job_id is not None))


def _by_hand(status: StoryStatus) -> str | None:
    return "failed by a status update" if status is StoryStatus.FAILED else None
