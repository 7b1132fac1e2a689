"""Request and response shapes, one module per kind of resource; compatible with the old backend's clients."""

from __future__ import annotations

from api.schemas.stories import (
    CancelOut,
    JobOut,
    RetryOut,
    SceneOut,
    StoryCreate,
    StoryCreated,
    StoryOut,
    StoryRow,
    StoryStatusOut,
    SuccessOut,
)

__all__ = [
    "CancelOut",
    "JobOut",
    "RetryOut",
    "SceneOut",
    "StoryCreate",
    "StoryCreated",
    "StoryOut",
    "StoryRow",
    "StoryStatusOut",
    "SuccessOut",
]
