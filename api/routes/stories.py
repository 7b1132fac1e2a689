"""Stories: create (enqueues the story job), read, status, delete. Routes and shapes as the old backend."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated

import structlog
from fastapi import APIRouter, Header, HTTPException, Request, Response, status
from redis.exceptions import RedisError

from api.deps import AppState, State
from api.schemas import SceneOut, StoryCreate, StoryCreated, StoryOut, StoryStatusOut
from jobs import STORY_JOB, media_job_id
from jobs.repository import SceneRecord, StoryRecord

__all__ = ["router"]

log = structlog.get_logger("api.stories")
router = APIRouter(prefix="/stories", tags=["stories"])
_IDEMPOTENCY_NAMESPACE = uuid.UUID("0b6f2a8e-3d1c-4e57-8f4a-49646d4b6579")


def story_job_id(story_id: uuid.UUID) -> str:
    """The story job's id is derived from the story, so enqueueing a story twice runs it once."""
    return f"{STORY_JOB}:{story_id}"


@router.post("/", status_code=status.HTTP_202_ACCEPTED, response_model=StoryCreated)
async def create_story(
    body: StoryCreate,
    state: State,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> StoryCreated:
    """Create a story and queue its generation. With an Idempotency-Key, a retried request returns the
    story the first one created instead of making another."""
    story_id = (
        uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"{body.user_id}\n{idempotency_key}") if idempotency_key else uuid.uuid4()
    )
    if idempotency_key and (existing := await state.stories.get(story_id)) is not None:
        return _created(existing)
    job_id = story_job_id(story_id)
    kwargs = {"story_id": str(story_id)}
    job = state.jobs.pending(STORY_JOB, job_id=job_id, kwargs=kwargs)
    story = await state.stories.create(
        story_id=story_id, user_id=body.user_id, title=body.title, prompt=body.prompt, job=job
    )
    try:
        await state.jobs.push(STORY_JOB, job_id=job_id, kwargs=kwargs)
    except (RedisError, OSError) as exc:
        await _undo_create(state, story_id, job_id)
        log.error("enqueue_failed", story_id=str(story_id), error=repr(exc))
        raise HTTPException(503, "the job queue (Redis) is unavailable; nothing was saved, please retry") from exc
    return _created(story)


@router.get("/{story_id}", response_model=StoryOut)
async def get_story(story_id: uuid.UUID, state: State, request: Request) -> StoryOut:
    story = await _story_or_404(state, story_id)
    scenes = await state.stories.scenes(story_id)
    return StoryOut(
        story_id=story.story_id,
        title=story.title,
        status=story.status.value,
        scenes=[_scene_out(state, request, s) for s in scenes],
        user_id=story.user_id,
        cover_image_url=state.media_url(request, story.cover_image_key),
        error=story.error,
        created_at=story.created_at,
        updated_at=story.updated_at,
    )


@router.get("/{story_id}/status", response_model=StoryStatusOut)
async def get_story_status(story_id: uuid.UUID, state: State) -> StoryStatusOut:
    story = await _story_or_404(state, story_id)
    scenes = await state.stories.scenes(story_id)
    return StoryStatusOut(
        story_id=story.story_id,
        status=story.status.value,
        error=story.error,
        job_id=story.job_id,
        scenes_total=len(scenes),
        scenes_done=sum(1 for s in scenes if s.image_key and s.audio_key),
        updated_at=story.updated_at,
    )


@router.delete("/{story_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_story(story_id: uuid.UUID, state: State) -> Response:
    """Delete the story, its scenes and media; a job still generating it is cancelled first."""
    story = await _story_or_404(state, story_id)
    scenes = await state.stories.scenes(story_id)
    jobs = [story.job_id, *(media_job_id(story_id, s.sequence) for s in scenes)]
    await asyncio.gather(*(state.jobs.request_cancel(job_id) for job_id in jobs if job_id is not None))
    if not await state.stories.delete(story_id):
        raise HTTPException(404, f"story {story_id} not found")
    await state.storage.delete_prefix(f"stories/{story_id}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _story_or_404(state: AppState, story_id: uuid.UUID) -> StoryRecord:
    story = await state.stories.get(story_id)
    if story is None:
        raise HTTPException(404, f"story {story_id} not found")
    return story


async def _undo_create(state: AppState, story_id: uuid.UUID, job_id: str) -> None:
    async with state.resources.db.acquire() as conn, conn.transaction():
        await conn.execute("DELETE FROM stories WHERE story_id = $1", story_id)
        await state.jobs.store.forget_pending(job_id, conn=conn)


def _created(story: StoryRecord) -> StoryCreated:
    return StoryCreated(
        status=story.status.value,
        title=story.title,
        error=story.error,
        story_id=story.story_id,
        user_id=story.user_id,
        created_at=story.created_at,
        updated_at=story.updated_at,
    )


def _scene_out(state: AppState, request: Request, scene: SceneRecord) -> SceneOut:
    return SceneOut(
        scene_id=scene.scene_id,
        story_id=scene.story_id,
        sequence=scene.sequence,
        title=scene.title,
        text=scene.text,
        image_prompt=scene.image_prompt,
        image_url=state.media_url(request, scene.image_key),
        audio_url=state.media_url(request, scene.audio_key),
        created_at=scene.created_at,
        updated_at=scene.updated_at,
    )
