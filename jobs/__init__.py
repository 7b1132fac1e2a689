"""StoryMimi's jobs: the registry a worker runs (`python -m runner worker --jobs jobs:registry`)."""

from __future__ import annotations

from jobs.services import open_story_services
from jobs.story import generate_story
from runner.registry import Registry

__all__ = ["STORY_JOB", "registry"]

STORY_JOB = generate_story.name

registry = Registry(specs=(generate_story,), services=open_story_services, migrations=("jobs",))
