"""The story's join, `story_task.complete`: run once, when every scene's media job has ended.

All scenes' media jobs completed -> the story is completed (its cover the first scene's image). One
failed -> the story fails naming the scene that failed first and why; all that ended otherwise were
cancelled (a user's cancel, a story failed or deleted by hand) -> it fails with reason `cancelled`. A story
no longer `processing` is left as it is. If this job itself cannot finish, its failure hook fails the
story: a story never stays `processing`.
"""

from __future__ import annotations

import uuid
from typing import Any

from jobs.ids import COMPLETE_JOB
from jobs.repository import StoryStatus
from jobs.services import StoryServices
from jobs.story import mark_story_failed
from runner.context import JobContext
from runner.group import GroupResults
from runner.registry import job
from runner.status import JobStatus

__all__ = ["complete_story", "failure_reason"]


def failure_reason(group: GroupResults) -> str | None:
    """Why the story failed, from its scenes' jobs: the first real failure, naming its scene; None if all
    completed."""
    failures = group.failures
    if not failures:
        return None
    failed = [m for m in failures if m.status is JobStatus.FAILED]
    if not failed:
        return "cancelled"
    first = failed[0]
    return f"scene {first.kwargs.get('sequence', first.position)}: {first.error}"


@job(COMPLETE_JOB, log_fields=("story_id",), on_failure=mark_story_failed, priority=2)  # see media.py
async def complete_story(ctx: JobContext, *, story_id: uuid.UUID) -> dict[str, Any]:
    services: StoryServices = ctx.services
    stories = services.stories
    reason = failure_reason(await ctx.group())
    if reason is None and await stories.complete(story_id):
        ctx.log.info("story_completed")
        return {"story_id": str(story_id), "status": StoryStatus.COMPLETED.value}
    if reason is None:  # every job completed, yet the story did not: say what is missing rather than hang
        missing = [s.sequence for s in await stories.scenes(story_id) if not (s.image_key and s.audio_key)]
        reason = f"scenes {missing} have no media although their jobs completed" if missing else None
    if reason is not None and await stories.move(story_id, StoryStatus.FAILED, error=reason):
        ctx.log.info("story_failed", error=reason)
        return {"story_id": str(story_id), "status": StoryStatus.FAILED.value, "error": reason}
    story = await stories.get(story_id)  # failed or deleted by hand meanwhile: nothing to do
    return {"story_id": str(story_id), "status": story.status.value if story else "deleted", "skipped": True}
