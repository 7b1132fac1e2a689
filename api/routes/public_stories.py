"""The public story library: categorized, a filtered list (keyset pages), one story with its scenes."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response

from api.deps import State
from api.errors import NOT_FOUND, SERVER_DOWN
from api.paging import cursor_param
from api.schemas.public_stories import (
    AgeRating,
    CategorizedOut,
    Category,
    Difficulty,
    PublicSceneOut,
    PublicStoryDetailOut,
    PublicStoryOut,
)
from jobs.public_stories import PublicStory, PublicStoryFilter

__all__ = ["router"]

router = APIRouter(prefix="/stories/public", tags=["public stories"], responses=SERVER_DOWN)


@router.get("/categorized", response_model=CategorizedOut)
async def categorized(state: State) -> CategorizedOut:
    """The newest published stories grouped by category (categories in order of first appearance)."""
    stories, _ = await state.public.list(PublicStoryFilter(), limit=100)
    grouped: dict[str, list[PublicStoryOut]] = {}
    for story in stories:
        grouped.setdefault(story.category, []).append(_summary(story))
    return CategorizedOut(categories=list(grouped), stories=grouped)


@router.get("", response_model=list[PublicStoryOut])
@router.get("/", response_model=list[PublicStoryOut], include_in_schema=False)
async def list_public(
    state: State,
    response: Response,
    category: Category | None = None,
    featured: bool | None = None,
    age_rating: AgeRating | None = None,
    difficulty: Difficulty | None = None,
    tags: Annotated[list[str] | None, Query(max_length=20)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> list[PublicStoryOut]:
    """Published stories matching every filter given (any of `tags`), newest first. The next page's
    cursor is in the `X-Next-Cursor` header."""
    where = PublicStoryFilter(category, featured, age_rating, difficulty, tuple(tags or ()))
    stories, next_cursor = await state.public.list(where, limit=limit, after=cursor_param(cursor))
    if next_cursor:
        response.headers["X-Next-Cursor"] = next_cursor
    return [_summary(s) for s in stories]


@router.get("/{story_id}", response_model=PublicStoryDetailOut, responses=NOT_FOUND)
async def public_story(story_id: uuid.UUID, state: State) -> PublicStoryDetailOut:
    story = await state.public.get(story_id)
    if story is None:
        raise HTTPException(404, f"public story {story_id} not found")
    scenes = [PublicSceneOut.model_validate(s) for s in story.scenes if isinstance(s, dict)]
    return PublicStoryDetailOut(**_summary(story).model_dump(), scenes=scenes, published=story.published)


def _summary(story: PublicStory) -> PublicStoryOut:
    return PublicStoryOut.model_validate(story, from_attributes=True)
