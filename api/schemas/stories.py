"""Stories and jobs: request and response shapes, compatible with the old backend's clients (which
send `style` and `num_scenes`, and fields this API does not know: those are ignored)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.text import Prompt, Style, Title, UserId
from jobs.providers.base import MAX_SCENES

__all__ = [
    "CancelOut",
    "JobOut",
    "SceneOut",
    "StoryCreate",
    "StoryCreated",
    "StoryOut",
    "StoryRow",
    "StoryStatusOut",
    "SuccessOut",
]


class StoryCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")  # the old clients send fields of their own

    title: Title = Field("", description="optional; the LLM's title is used when empty")
    prompt: Prompt
    user_id: UserId
    style: Style | None = Field(None, description="a style hint for the images, e.g. fantasy or sci-fi")
    num_scenes: int | None = Field(None, ge=1, le=MAX_SCENES, description="default: STORY_SCENES")


class StoryCreated(BaseModel):
    status: str
    title: str
    error: str | None
    story_id: uuid.UUID
    user_id: str
    cover_image_url: str | None = None
    created_at: datetime
    updated_at: datetime


class SceneOut(BaseModel):
    scene_id: uuid.UUID
    story_id: uuid.UUID
    sequence: int
    title: str
    text: str
    image_prompt: str
    audio_prompt: str | None = None
    image_url: str | None
    audio_url: str | None
    created_at: datetime
    updated_at: datetime


class StoryOut(BaseModel):
    story_id: uuid.UUID
    title: str
    status: str
    scenes: list[SceneOut]
    user_id: str
    cover_image_url: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime


class StoryStatusOut(BaseModel):
    story_id: uuid.UUID
    status: str
    error: str | None
    job_id: str | None
    scenes_total: int
    scenes_done: int
    updated_at: datetime


class JobOut(BaseModel):
    job_id: str
    name: str
    queue: str
    args: dict[str, Any]
    status: str
    attempts: int
    max_tries: int
    worker: str | None
    error: str | None
    result: Any
    enqueued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime


class CancelOut(BaseModel):
    job_id: str
    status: str
    cancel_requested: bool


class RetryOut(BaseModel):
    job_id: str
    status: str  # pending: back in the queue


class StoryRow(BaseModel):
    """A story as the old list routes returned it (its whole row)."""

    story_id: uuid.UUID
    title: str
    prompt: str
    status: str
    error: str | None
    user_id: str
    style: str | None
    num_scenes: int | None
    story_metadata: dict[str, Any] | None
    source: str
    updated_by: str | None
    cover_image_url: str | None
    created_at: datetime
    updated_at: datetime


class SuccessOut(BaseModel):
    success: bool = True
