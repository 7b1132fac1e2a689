"""Users and their creations, in the old backend's shapes (its `UserCreate`, `UserResponse`, "My Creations")."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.text import Email, ShortText, UserId

__all__ = [
    "CreationOut",
    "CreationStatsOut",
    "CreationsOut",
    "DeletedAccountOut",
    "PaginationOut",
    "UserCreate",
    "UserOut",
    "UserUpdate",
]

ProfileSource = Literal["firebase_auth", "manual", "other"]


class UserCreate(BaseModel):
    """The Flutter app sends every field; the old web page sent only `email` and `username`."""

    model_config = ConfigDict(extra="ignore")

    user_id: UserId | None = Field(None, description="default: a new UUID")
    email: Email
    display_name: ShortText | None = Field(None, description="default: the email's local part")
    username: ShortText | None = Field(None, description="the old web page's name for display_name")
    created_at: datetime | None = Field(None, description="default: now")
    firebase_uid: UserId | None = Field(None, description="default: user_id")
    profile_source: ProfileSource = "firebase_auth"
    is_active: bool = True
    metadata: dict[str, Any] | None = None

    def resolved_id(self) -> str:
        return self.user_id or str(uuid.uuid4())


class UserUpdate(BaseModel):
    """Any of the fields; the old model's required extras (`user_id`, `created_at`) are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    email: Email | None = None
    display_name: ShortText | None = None
    username: ShortText | None = None
    firebase_uid: UserId | None = None
    profile_source: ProfileSource | None = None
    is_active: bool | None = None
    cover_image_url: ShortText | None = None
    metadata: dict[str, Any] | None = None

    def changes(self) -> dict[str, Any]:
        given = self.model_dump(exclude_unset=True, exclude_none=True)
        if "username" in given:
            given.setdefault("display_name", given.pop("username"))
        return given


class UserOut(BaseModel):
    user_id: str
    email: str
    display_name: str | None
    created_at: datetime
    firebase_uid: str
    profile_source: str
    is_active: bool
    updated_at: datetime | None
    cover_image_url: str | None
    metadata: dict[str, Any]


class CreationOut(BaseModel):
    story_id: uuid.UUID
    title: str
    status: str
    created_at: datetime
    updated_at: datetime
    cover_image_url: str | None
    user_id: str
    is_completed: bool
    is_processing: bool
    is_failed: bool
    can_view: bool
    can_retry: bool
    estimated_completion_time: str | None = None
    progress_percentage: int
    scene_count: int
    duration_minutes: int = 0
    tags: list[str] = []
    category: str = "general"
    age_rating: str = "all"
    difficulty_level: str = "beginner"


class PaginationOut(BaseModel):
    current_page: int
    total_pages: int
    total_stories: int
    stories_per_page: int
    has_next_page: bool
    has_previous_page: bool
    next_cursor: str | None = Field(None, description="pass as `cursor` for the next page (keyset paging)")


class CreationsOut(BaseModel):
    stories: list[CreationOut]
    pagination: PaginationOut
    user_info: dict[str, Any]
    filters: dict[str, Any]


class CreationStatsOut(BaseModel):
    user_info: dict[str, Any]
    overview: dict[str, Any]
    activity: dict[str, Any]
    performance: dict[str, Any]


class DeletedAccountOut(BaseModel):
    message: str
    stories_deleted: int
