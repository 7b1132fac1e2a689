"""Stories: create (queues the story job), read, status, delete. Routes and shapes as the old backend.

HTTP only: the workflow (ids, rows, the enqueue and its undo, the delete's cancels) is jobs.stories's.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Request, Response, status

from api.deps import AppState, State
from api.errors import BAD_BODY, NOT_FOUND, SERVER_DOWN
from api.schemas import SceneOut, StoryCreate, StoryCreated, StoryOut, StoryStatusOut
from jobs.repository import SceneRecord, StoryRecord

__all__ = ["router"]

router = APIRouter(prefix="/stories", tags=["stories"], responses=SERVER_DOWN)


@router.post("/", status_code=status.HTTP_202_ACCEPTED, response_model=StoryCreated, responses=BAD_BODY)
async def create_story(
    body: StoryCreate,
    state: State,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> StoryCreated:
    """Create a story and queue its generation. With an Idempotency-Key, a retried request returns the
    story the first one created instead of making another."""
    story = await state.stories.create(
        user_id=body.user_id, title=body.title, prompt=body.prompt, idempotency_key=idempotency_key
    )
    return _created(story)


@router.get("/{story_id}", response_model=StoryOut, responses=NOT_FOUND)
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


@router.get("/{story_id}/status", response_model=StoryStatusOut, responses=NOT_FOUND)
async def get_story_status(story_id: uuid.UUID, state: State) -> StoryStatusOut:
    progress = await state.stories.progress(story_id)
    if progress is None:
        raise HTTPException(404, f"story {story_id} not found")
    story = progress.story
    return StoryStatusOut(
        story_id=story.story_id,
        status=story.status.value,
        error=story.error,
        job_id=story.job_id,
        scenes_total=progress.scenes_total,
        scenes_done=progress.scenes_done,
        updated_at=story.updated_at,
    )


@router.delete("/{story_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
async def delete_story(story_id: uuid.UUID, state: State) -> Response:
    """Delete the story, its scenes and media; a job still generating it is cancelled first."""
    if not await state.stories.delete(story_id):
        raise HTTPException(404, f"story {story_id} not found")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _story_or_404(state: AppState, story_id: uuid.UUID) -> StoryRecord:
    story = await state.stories.get(story_id)
    if story is None:
        raise HTTPException(404, f"story {story_id} not found")
    return story


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
