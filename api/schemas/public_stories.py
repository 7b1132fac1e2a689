"""The public story library, in the old backend's shapes (`PublicStorySummary`, `PublicStoryDetail`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel

__all__ = [
    "AgeRating",
    "CategorizedOut",
    "Category",
    "Difficulty",
    "PublicSceneOut",
    "PublicStoryDetailOut",
    "PublicStoryOut",
]  # fmt: skip

AgeRating = Literal["ALL", "3+", "6+", "9+", "12+"]
Difficulty = Literal["beginner", "intermediate", "advanced"]
Category = Literal["fantasy", "science-fiction", "adventure", "friendship", "animals", "mystery", "educational"]


class PublicStoryOut(BaseModel):
    id: uuid.UUID
    title: str
    description: str | None
    cover_image_url: str | None
    tags: list[str]
    duration: str
    featured: bool
    view_count: int
    age_rating: str
    category: str
    difficulty_level: str
    created_at: datetime
    updated_at: datetime


class PublicSceneOut(BaseModel):
    sequence: int
    text: str
    image_url: str | None = None
    audio_url: str | None = None


class PublicStoryDetailOut(PublicStoryOut):
    scenes: list[PublicSceneOut]
    published: bool


class CategorizedOut(BaseModel):
    categories: list[str]
    stories: dict[str, list[PublicStoryOut]]
