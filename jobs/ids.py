"""The StoryMimi job names and ids. Ids are derived from the story, so enqueueing the same work twice
runs it once: the status row insert and the enqueue script both refuse a second copy."""

from __future__ import annotations

import uuid

__all__ = ["COMPLETE_JOB", "MEDIA_JOB", "STORY_JOB", "media_group_id", "media_job_id", "story_job_id"]

STORY_JOB = "story_task.generate"
MEDIA_JOB = "media_task.generate"
COMPLETE_JOB = "story_task.complete"  # the media group's join: completes or fails the story


def story_job_id(story_id: uuid.UUID | str) -> str:
    return f"{STORY_JOB}:{story_id}"


def media_job_id(story_id: uuid.UUID | str, sequence: int) -> str:
    """One per scene, so a re-run of the story job cannot enqueue a scene's media twice."""
    return f"{MEDIA_JOB}:{story_id}:{sequence}"


def media_group_id(story_id: uuid.UUID | str) -> str:
    """The story's scene media jobs as one group (runner.group); its join's job id adds `:join`."""
    return f"story_media:{story_id}"
