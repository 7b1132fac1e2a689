"""Stories from ElevenLabs conversations, and the tracking of finished conversations (the app's voice flow).

`POST /stories/conversation-to-story` makes a story whose job fetches the conversation's transcript
first (jobs.providers.conversations) and writes the story from it. `POST /stories/conversation-tracking`
records a finished conversation, and with `create_story` makes a story from its metrics. Both answer at
once; unlike the old backend they say which story they made.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from jobs.repository import NewStory, StoryRecord
from jobs.stories import StoryWorkflow

__all__ = ["ConversationStory", "Conversations", "TrackedConversation"]


@dataclass(frozen=True, slots=True)
class ConversationStory:
    conversation_id: str
    user_id: str
    agent_id: str | None = None
    fetch_transcript: bool = True
    story_title: str | None = None
    story_prompt: str | None = None


@dataclass(frozen=True, slots=True)
class TrackedConversation:
    conversation_id: str
    user_id: str
    completed_at: str
    metrics: dict[str, Any]
    create_story: bool = False


class Conversations:
    """Borrows the pool and the story workflow."""

    def __init__(self, pool: asyncpg.Pool, stories: StoryWorkflow) -> None:
        self._pool = pool
        self._stories = stories

    async def story_from(self, request: ConversationStory) -> StoryRecord:
        """A story whose job writes it from the conversation's transcript (or from the given prompt)."""
        title = request.story_title or f"Conversation Story - {request.conversation_id[:8]}"
        prompt = request.story_prompt or (
            f"Create a story based on a conversation with ID: {request.conversation_id}\n"
            f"Agent ID: {request.agent_id}\nUser ID: {request.user_id}\n\n"
            "Please create an engaging story that could have emerged from this conversation."
        )
        story = NewStory(uuid.uuid4(), request.user_id, title[:200], prompt[:4000], source="conversation",
                         conversation_id=request.conversation_id, agent_id=request.agent_id,
                         fetch_transcript=request.fetch_transcript)  # fmt: skip
        return await self._stories.create(story, idempotency_key=f"conversation:{request.conversation_id}")

    async def track(self, tracked: TrackedConversation) -> StoryRecord | None:
        """Record a finished conversation (again: updated); with `create_story`, make its story once."""
        story = None
        if tracked.create_story:
            story = await self._stories.create(
                _metrics_story(tracked), idempotency_key=f"tracked:{tracked.conversation_id}"
            )
        await self._pool.execute(
            "INSERT INTO conversations (conversation_id, user_id, completed_at, metrics, story_id) "
            "VALUES ($1, $2, $3, $4::jsonb, $5) ON CONFLICT (conversation_id) DO UPDATE SET "
            "completed_at = EXCLUDED.completed_at, metrics = EXCLUDED.metrics, "
            "story_id = COALESCE(EXCLUDED.story_id, conversations.story_id), tracked_at = now()",
            tracked.conversation_id, tracked.user_id, tracked.completed_at, orjson.dumps(tracked.metrics).decode(),
            story.story_id if story else None,
        )  # fmt: skip
        return story


def _metrics_story(tracked: TrackedConversation) -> NewStory:
    m = tracked.metrics
    prompt = (
        "Create a story based on a conversation with the following characteristics:\n"
        f"- Duration: {m.get('duration_minutes', 0)} minutes\n- Total messages: {m.get('total_messages', 0)}\n"
        f"- User messages: {m.get('user_messages', 0)}\n- Agent messages: {m.get('agent_messages', 0)}\n"
        f"- Average response time: {m.get('avg_response_time', 0)} seconds\n"
        f"- Agent ID: {m.get('agent_id', 'unknown')}\n\n"
        "Please create an engaging story that captures the essence of this conversation."
    )
    title = f"Conversation Story - {tracked.conversation_id[:8]}"
    return NewStory(uuid.uuid4(), tracked.user_id, title, prompt[:4000], source="conversation",
                    conversation_id=tracked.conversation_id)  # fmt: skip
