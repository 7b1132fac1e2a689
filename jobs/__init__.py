"""StoryMimi's jobs: the registry a worker runs (`python -m runner worker --registry jobs:registry`)."""

from __future__ import annotations

from jobs.cleanup import clean_orphaned_media
from jobs.completion import complete_story
from jobs.ids import MEDIA_JOB, STORY_JOB, media_job_id, story_job_id
from jobs.media import generate_scene_media
from jobs.services import open_story_services
from jobs.settings import StorySettings
from jobs.story import generate_story
from runner.registry import Registry

__all__ = ["MEDIA_JOB", "STORY_JOB", "media_job_id", "registry", "story_job_id"]

registry = Registry(
    specs=(generate_story, generate_scene_media, complete_story, clean_orphaned_media),
    services=open_story_services,
    migrations=("jobs",),
    settings=StorySettings,
)
