"""StoryMimi's jobs: the registry a worker runs (`python -m runner worker --jobs jobs:registry`)."""

from __future__ import annotations

from jobs.media import MEDIA_JOB, generate_scene_media, media_job_id
from jobs.services import open_story_services
from jobs.story import generate_story
from runner.registry import Registry

__all__ = ["MEDIA_JOB", "STORY_JOB", "media_job_id", "registry"]

STORY_JOB = generate_story.name

registry = Registry(specs=(generate_story, generate_scene_media), services=open_story_services, migrations=("jobs",))
