"""Users: create, read, update, their stories and "My Creations" (keyset pages), statistics, deletion."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status

from api.deps import AppState, State
from api.errors import BAD_BODY, NOT_FOUND, SERVER_DOWN, ErrorOut
from api.paging import cursor_param
from api.routes.stories import story_row
from api.schemas import StoryRow
from api.schemas.users import (
    CreationOut,
    CreationsOut,
    CreationStatsOut,
    DeletedAccountOut,
    PaginationOut,
    UserCreate,
    UserOut,
    UserUpdate,
)
from jobs.accounts import WrongCredentialsError
from jobs.repository import StoryRecord, StoryStatus
from jobs.users import NewUser, UserExistsError, UserRecord

__all__ = ["router"]

router = APIRouter(prefix="/users", tags=["users"], responses=SERVER_DOWN)
UserIdPath = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[^\x00]+$")]
_PROGRESS = {StoryStatus.PENDING: 0, StoryStatus.PROCESSING: 50, StoryStatus.COMPLETED: 100, StoryStatus.FAILED: 0}
EXISTS: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorOut, "description": "A user with this id or email exists"}
}


@router.post("/", status_code=status.HTTP_201_CREATED, response_model=UserOut, responses={**EXISTS, **BAD_BODY})
async def create_user(body: UserCreate, state: State) -> UserOut:
    user_id = body.resolved_id()
    new = NewUser(
        user_id=user_id, email=body.email, display_name=body.display_name or body.username,
        created_at=body.created_at or datetime.now(UTC), firebase_uid=body.firebase_uid or user_id,
        profile_source=body.profile_source, is_active=body.is_active, metadata=body.metadata,
    )  # fmt: skip
    try:
        return _user_out(await state.users.create(new))
    except UserExistsError as exc:
        raise HTTPException(409, str(exc)) from None


@router.delete("/delete-account", response_model=DeletedAccountOut, responses=BAD_BODY)
async def delete_account(
    state: State,
    user_id: Annotated[str, Query(min_length=1, max_length=128, pattern=r"^[^\x00]+$")],
    email: Annotated[str, Query(min_length=1, max_length=254, pattern=r"^[^\x00]+$")],
) -> DeletedAccountOut:
    """Delete the account whose id and email match, with all its stories (their jobs stopped first)."""
    try:
        deleted = await state.accounts.delete(user_id, email)
    except WrongCredentialsError as exc:
        raise HTTPException(400, str(exc)) from None
    return DeletedAccountOut(message="Account and all associated data successfully deleted", stories_deleted=deleted)


@router.get("/{user_id}", response_model=UserOut, responses=NOT_FOUND)
async def get_user(user_id: UserIdPath, state: State) -> UserOut:
    return _user_out(await _user_or_404(state, user_id))


@router.patch("/{user_id}", response_model=UserOut, responses={**NOT_FOUND, **EXISTS, **BAD_BODY})
async def update_user(user_id: UserIdPath, body: UserUpdate, state: State) -> UserOut:
    """Change the fields given (`username` is the old name of `display_name`)."""
    changes = body.changes()
    if not changes:
        raise HTTPException(400, "No valid fields to update")
    try:
        user = await state.users.update(user_id, changes)
    except UserExistsError as exc:
        raise HTTPException(409, str(exc)) from None
    if user is None:
        raise HTTPException(404, "User not found")
    return _user_out(user)


@router.get("/{user_id}/stories", response_model=list[StoryRow])
async def user_stories(
    user_id: UserIdPath,
    state: State,
    request: Request,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> list[StoryRow]:
    """The user's stories, newest first (an unknown user has none); next page: `X-Next-Cursor`."""
    page = await state.lists.of_user(user_id, limit=limit, after=cursor_param(cursor))
    if page.next_cursor:
        response.headers["X-Next-Cursor"] = page.next_cursor
    return [story_row(state, request, s) for s in page.stories]


@router.get("/{user_id}/creations", response_model=CreationsOut, responses=NOT_FOUND)
async def creations(
    user_id: UserIdPath,
    state: State,
    request: Request,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
    limit: Annotated[int, Query(ge=1, le=50)] = 10,
    status_filter: Annotated[StoryStatus | None, Query()] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> CreationsOut:
    """The app's "My Creations": the user's stories, a page at a time. Pass the previous page's
    `pagination.next_cursor` as `cursor` (keyset paging); `page` alone is kept for the old clients."""
    user = await _user_or_404(state, user_id)
    wanted = status_filter.value if status_filter else None
    if cursor is not None or page == 1:
        found = await state.lists.of_user(user_id, limit=limit, after=cursor_param(cursor), status=wanted)
    else:
        found = await state.lists.offset_page_of_user(user_id, page=page, limit=limit, status=wanted)
    scenes = await state.lists.scene_progress([s.story_id for s in found.stories])
    total = await state.lists.count_of_user(user_id, status=wanted)
    stats = await state.lists.stats_of_user(user_id)
    pages = max(1, math.ceil(total / limit))
    return CreationsOut(
        stories=[_creation(state, request, s, scenes.get(s.story_id, (0, 0))) for s in found.stories],
        pagination=PaginationOut(current_page=page, total_pages=pages, total_stories=total, stories_per_page=limit,
                                 has_next_page=found.next_cursor is not None, has_previous_page=page > 1,
                                 next_cursor=found.next_cursor),
        user_info={"user_id": user.user_id, "display_name": user.display_name, "email": user.email,
                   "total_creations": stats.total, "completed_stories": stats.by_status[StoryStatus.COMPLETED],
                   "processing_stories": stats.by_status[StoryStatus.PROCESSING]},
        filters={"applied_status_filter": wanted, "available_statuses": [s.value for s in StoryStatus]},
    )  # fmt: skip


@router.get("/{user_id}/creations/stats", response_model=CreationStatsOut, responses=NOT_FOUND)
async def creation_stats(user_id: UserIdPath, state: State) -> CreationStatsOut:
    user = await _user_or_404(state, user_id)
    stats = await state.lists.stats_of_user(user_id)
    total, by = stats.total, stats.by_status

    def share(n: int) -> float:
        return round(n / total * 100, 1) if total else 0

    months = 1
    if stats.first_created is not None:
        months = max(1, math.ceil((datetime.now(UTC) - stats.first_created).days / 30))
    return CreationStatsOut(
        user_info={"user_id": user.user_id, "display_name": user.display_name, "email": user.email},
        overview={"total_creations": total, "completed_stories": by[StoryStatus.COMPLETED],
                  "processing_stories": by[StoryStatus.PROCESSING], "pending_stories": by[StoryStatus.PENDING],
                  "failed_stories": by[StoryStatus.FAILED], "success_rate": share(by[StoryStatus.COMPLETED])},
        activity={"recent_creations": stats.recent_30_days,
                  "avg_creation_time_minutes": round(stats.avg_minutes_to_complete or 0, 1),
                  "last_creation_date": stats.last_created, "most_active_day": stats.most_active_day},
        performance={"completion_rate": share(by[StoryStatus.COMPLETED]), "failure_rate": share(by[StoryStatus.FAILED]),
                     "avg_stories_per_month": round(total / months, 1)},
    )  # fmt: skip


async def _user_or_404(state: AppState, user_id: str) -> UserRecord:
    user = await state.users.get(user_id)
    if user is None:
        raise HTTPException(404, "User not found")
    return user


def _user_out(user: UserRecord) -> UserOut:
    return UserOut.model_validate(user, from_attributes=True)


def _creation(state: AppState, request: Request, story: StoryRecord, scene_progress: tuple[int, int]) -> CreationOut:
    scenes, done = scene_progress
    percent = _PROGRESS[story.status]
    if story.status is StoryStatus.PROCESSING and scenes:
        percent = 50 + 50 * done // scenes
    return CreationOut(
        story_id=story.story_id, title=story.title, status=story.status.value, created_at=story.created_at,
        updated_at=story.updated_at, cover_image_url=state.media_url(request, story.cover_image_key),
        user_id=story.user_id, is_completed=story.status is StoryStatus.COMPLETED,
        is_processing=story.status is StoryStatus.PROCESSING, is_failed=story.status is StoryStatus.FAILED,
        can_view=story.status in (StoryStatus.COMPLETED, StoryStatus.FAILED),
        can_retry=story.status is StoryStatus.FAILED, progress_percentage=percent, scene_count=scenes,
    )  # fmt: skip
