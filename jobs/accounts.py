"""Deleting an account: the user's stories (their jobs stopped, rows and media removed), then the user."""

from __future__ import annotations

from jobs.stories import StoryWorkflow
from jobs.story_lists import StoryLists
from jobs.users import UserRepository

__all__ = ["Accounts", "WrongCredentialsError"]


class WrongCredentialsError(ValueError):
    """No user has this id and email."""


class Accounts:
    """Borrows the repositories and the story workflow."""

    def __init__(self, users: UserRepository, lists: StoryLists, stories: StoryWorkflow) -> None:
        self._users = users
        self._lists = lists
        self._stories = stories

    async def delete(self, user_id: str, email: str) -> int:
        """Delete the account whose id and email (any case) match; return how many stories went with it."""
        user = await self._users.get(user_id)
        if user is None or user.email != email.strip().lower():
            raise WrongCredentialsError("Invalid user credentials")
        deleted = 0
        while page := (await self._lists.of_user(user_id, limit=100)).stories:
            for story in page:
                deleted += await self._stories.delete(story.story_id)
        await self._users.delete(user_id)
        return deleted
