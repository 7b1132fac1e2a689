"""What a request handler borrows from the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from jobs.accounts import Accounts
from jobs.conversations import Conversations
from jobs.public_stories import PublicStoryRepository
from jobs.settings import StorySettings
from jobs.stories import StoryWorkflow
from jobs.story_lists import StoryLists
from jobs.users import UserRepository
from runner.client import JobClient
from runner.resources import Resources

__all__ = ["AppState", "State", "get_state"]


@dataclass(frozen=True)
class AppState:
    settings: StorySettings
    resources: Resources
    client: JobClient
    stories: StoryWorkflow
    lists: StoryLists
    users: UserRepository
    public: PublicStoryRepository
    conversations: Conversations
    accounts: Accounts

    def media_url(self, request: Request, key: str | None) -> str | None:
        if key is None:
            return None
        base = self.settings.media_base_url or str(request.url_for("media", path=""))
        return f"{base.rstrip('/')}/{key}"


async def get_state(request: Request) -> AppState:
    # async on purpose: FastAPI runs a plain `def` dependency in a worker thread, one hand-off per
    # request, which cost the POST route a fifth of its throughput.
    state: AppState = request.app.state.storymimi
    return state


State = Annotated[AppState, Depends(get_state)]
