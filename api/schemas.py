"""Request and response shapes, kept compatible with the existing StoryMimi client."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

__all__ = ["CancelOut", "JobOut", "SceneOut", "StoryCreate", "StoryCreated", "StoryOut", "StoryStatusOut"]

MAX_PROMPT_CHARS = 4000


def storable_text(value: str) -> str:
    """Text Postgres can store: no NUL character, no lone surrogate (it is refused, not mangled)."""
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (\\u0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (it has a lone surrogate such as \\ud800)") from None
    return value


Title = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200), AfterValidator(storable_text)]
Prompt = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_PROMPT_CHARS),
    AfterValidator(storable_text),
]
UserId = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@\-]+$"),
]


class StoryCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Title = Field("", description="optional; the LLM's title is used when empty")
    prompt: Prompt
    user_id: UserId


class StoryCreated(BaseModel):
    status: str
    title: str
    error: str | None
    story_id: uuid.UUID
    user_id: str
    created_at: datetime
    updated_at: datetime


class SceneOut(BaseModel):
    scene_id: uuid.UUID
    story_id: uuid.UUID
    sequence: int
    title: str
    text: str
    image_prompt: str
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
