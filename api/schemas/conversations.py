"""The app's voice flow: ElevenLabs conversations made into stories, and finished conversations tracked."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.text import Prompt, ShortText, Title, UserId

__all__ = ["ConversationStoryIn", "ConversationStoryOut", "TrackConversationIn", "TrackConversationOut"]


class ConversationStoryIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    conversation_id: ShortText | None = None  # required: a missing one is a 400 naming it, as before
    user_id: UserId | None = None
    agent_id: ShortText | None = None
    fetch_transcript: bool = True
    story_title: Title | None = None
    story_prompt: Prompt | None = None


class ConversationStoryOut(BaseModel):
    status: str = "processing"
    conversation_id: str
    user_id: str
    message: str = "Story creation from conversation transcript has been scheduled"
    fetch_transcript: bool
    elevenlabs_available: bool
    story_id: uuid.UUID


class TrackConversationIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    user_id: UserId | None = None
    conversation_id: ShortText | None = None
    completed_at: ShortText | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    create_story: bool = False


class TrackConversationOut(BaseModel):
    status: str = "tracked"
    conversation_id: str
    user_id: str
    completed_at: str
    metrics: dict[str, Any]
    message: str = "Conversation completion tracked successfully"
    story_creation: str | None = None
    story_id: uuid.UUID | None = None
