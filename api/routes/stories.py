"""Stories: create (queues the story job), read, status, delete. Routes and shapes as the old backend.

HTTP only: the workflow (ids, rows, the enqueue and its undo, the delete's cancels) is jobs.stories's.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response, status

from api.deps import AppState, State
from api.errors import BAD_BODY, CONFLICT, NOT_FOUND, SERVER_DOWN
from api.paging import cursor_param
from api.schemas import SceneOut, StoryCreate, StoryCreated, StoryOut, StoryRow, StoryStatusOut, SuccessOut
from api.schemas.conversations import (
    ConversationStoryIn,
    ConversationStoryOut,
    TrackConversationIn,
    TrackConversationOut,
)
from jobs.conversations import ConversationStory, TrackedConversation
from jobs.repository import NewStory, SceneRecord, StoryRecord, StoryStatus
from jobs.stories import StatusChange
from jobs.story_lists import StoryPage

__all__ = ["router", "story_row"]

router = APIRouter(prefix="/stories", tags=["stories"], responses=SERVER_DOWN)


@router.post("/", status_code=status.HTTP_202_ACCEPTED, response_model=StoryCreated, responses=BAD_BODY)
async def create_story(
    body: StoryCreate,
    state: State,
    request: Request,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> StoryCreated:
    """Create a story and queue its generation. With an Idempotency-Key, a retried request returns the
    story the first one created instead of making another."""
    new = NewStory(uuid.uuid4(), body.user_id, body.title, body.prompt, style=body.style, num_scenes=body.num_scenes)
    story = await state.stories.create(new, idempotency_key=idempotency_key)
    return _created(state, request, story)


@router.get("/search/", response_model=list[StoryRow])
@router.get("/search", response_model=list[StoryRow], include_in_schema=False)
async def search_stories(
    state: State,
    request: Request,
    response: Response,
    q: Annotated[str, Query(min_length=1, max_length=200, pattern=r"^[^\x00]+$")],
    limit: Annotated[int, Query(ge=1, le=50)] = 10,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> list[StoryRow]:
    """Stories whose title or prompt contains `q` (any case), newest first; the next page's cursor is
    in the `X-Next-Cursor` header."""
    page = await state.lists.search(q, limit=limit, after=cursor_param(cursor))
    return _rows(state, request, response, page)


@router.get("/recent/", response_model=list[StoryRow])
@router.get("/recent", response_model=list[StoryRow], include_in_schema=False)
async def recent_stories(
    state: State,
    request: Request,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=50)] = 10,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> list[StoryRow]:
    """The newest stories of all users; the next page's cursor is in the `X-Next-Cursor` header."""
    page = await state.lists.recent(limit=limit, after=cursor_param(cursor))
    return _rows(state, request, response, page)


@router.post("/conversation-to-story", response_model=ConversationStoryOut, responses=BAD_BODY)
async def conversation_to_story(body: ConversationStoryIn, state: State) -> ConversationStoryOut:
    """A story written from an ElevenLabs conversation's transcript (fetched by the story job)."""
    if not body.conversation_id or not body.user_id:
        raise HTTPException(400, "Missing required fields: conversation_id, user_id")
    story = await state.conversations.story_from(
        ConversationStory(body.conversation_id, body.user_id, body.agent_id, body.fetch_transcript,
                          body.story_title, body.story_prompt)
    )  # fmt: skip
    return ConversationStoryOut(
        conversation_id=body.conversation_id, user_id=body.user_id, fetch_transcript=body.fetch_transcript,
        elevenlabs_available=state.settings.conversations_available, story_id=story.story_id,
    )  # fmt: skip


@router.post("/conversation-tracking", response_model=TrackConversationOut, responses=BAD_BODY)
async def track_conversation(body: TrackConversationIn, state: State) -> TrackConversationOut:
    """Record a finished conversation; with `create_story`, also make a story from it."""
    if not body.user_id or not body.conversation_id or not body.completed_at:
        raise HTTPException(400, "Missing required fields: user_id, conversation_id, completed_at")
    tracked = TrackedConversation(body.conversation_id, body.user_id, body.completed_at, body.metrics,
                                  body.create_story)  # fmt: skip
    story = await state.conversations.track(tracked)
    return TrackConversationOut(
        conversation_id=body.conversation_id, user_id=body.user_id, completed_at=body.completed_at,
        metrics=body.metrics, story_creation="scheduled" if story else None,
        story_id=story.story_id if story else None,
    )  # fmt: skip


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
        raise HTTPException(404, f"Story with ID {story_id} not found")
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


@router.put("/{story_id}/status", response_model=SuccessOut, responses={**NOT_FOUND, **BAD_BODY, **CONFLICT})
async def update_story_status(story_id: uuid.UUID, body: dict[str, str], state: State) -> SuccessOut:
    """Move the story by hand (`{"status": "failed"}`): only along the moves a story may make, so a
    completed or failed story stays so (409). Failing a story stops its jobs."""
    if "status" not in body:
        raise HTTPException(400, "Missing status field in request")
    try:
        wanted = StoryStatus(body["status"])
    except ValueError:
        raise HTTPException(400, f"Invalid status value. Valid values: {[s.value for s in StoryStatus]}") from None
    change, story = await state.stories.set_status(story_id, wanted)
    if change is StatusChange.NOT_FOUND:
        raise HTTPException(404, f"Story with ID {story_id} not found")
    if change is StatusChange.REFUSED:
        assert story is not None
        raise HTTPException(409, f"story {story_id} is {story.status.value}; it cannot become {wanted.value}")
    return SuccessOut()


@router.delete("/{story_id}", response_model=SuccessOut, responses=NOT_FOUND)
async def delete_story(story_id: uuid.UUID, state: State) -> SuccessOut:
    """Delete the story, its scenes and media; a job still generating it is cancelled first."""
    if not await state.stories.delete(story_id):
        raise HTTPException(404, f"Story with ID {story_id} not found")
    return SuccessOut()


async def _story_or_404(state: AppState, story_id: uuid.UUID) -> StoryRecord:
    story = await state.stories.get(story_id)
    if story is None:
        raise HTTPException(404, f"Story with ID {story_id} not found")
    return story


def _created(state: AppState, request: Request, story: StoryRecord) -> StoryCreated:
    return StoryCreated(
        status=story.status.value,
        title=story.title,
        error=story.error,
        story_id=story.story_id,
        user_id=story.user_id,
        cover_image_url=state.media_url(request, story.cover_image_key),
        created_at=story.created_at,
        updated_at=story.updated_at,
    )


def story_row(state: AppState, request: Request, story: StoryRecord) -> StoryRow:
    return StoryRow(
        story_id=story.story_id, title=story.title, prompt=story.prompt, status=story.status.value,
        error=story.error, user_id=story.user_id, style=story.style, num_scenes=story.num_scenes,
        story_metadata=story.visual_profile, source=story.source, updated_by=story.updated_by,
        cover_image_url=state.media_url(request, story.cover_image_key), created_at=story.created_at,
        updated_at=story.updated_at,
    )  # fmt: skip


def _rows(state: AppState, request: Request, response: Response, page: StoryPage) -> list[StoryRow]:
    if page.next_cursor:
        response.headers["X-Next-Cursor"] = page.next_cursor
    return [story_row(state, request, s) for s in page.stories]


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
