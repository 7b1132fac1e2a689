"""The story job, `story_task.generate`: the old Celery pipeline as one coroutine on the worker's loop.

load the story -> mark it processing -> the LLM writes title and scenes -> save them -> visual profile
and base style -> per scene: image prompt, then image and narration together, stored, scene row updated
-> the first image becomes the cover -> completed. Any error that survives the retry policy marks the
story failed with the error text (through `on_failure`, which also covers hard timeouts and bad payloads).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from jobs.providers.base import SceneDraft, VisualProfile
from jobs.repository import StoryStatus
from jobs.services import StoryServices
from runner.context import JobContext
from runner.errors import PermanentError
from runner.registry import job

__all__ = ["StoryNotFoundError", "generate_story", "mark_story_failed"]


class StoryNotFoundError(PermanentError):
    """The story row does not exist (never created, or deleted before the job ran)."""


async def mark_story_failed(ctx: JobContext, error: str) -> None:
    """on_failure hook: the story says failed, with the reason, whatever stopped its job."""
    try:
        story_id = uuid.UUID(str(ctx.kwargs.get("story_id")))
    except ValueError:
        return  # the payload had no usable story id: there is no story row to mark
    services: StoryServices = ctx.services
    if await services.stories.move(story_id, StoryStatus.FAILED, error=error):
        ctx.log.info("story_failed", story_id=str(story_id), error=error)


@job("story_task.generate", log_fields=("story_id",), on_failure=mark_story_failed)
async def generate_story(ctx: JobContext, *, story_id: uuid.UUID) -> dict[str, Any]:
    services: StoryServices = ctx.services
    stories, text = services.stories, services.providers.text
    story = await stories.get(story_id)
    if story is None:
        raise StoryNotFoundError(f"story {story_id} does not exist (deleted before its job ran?)")
    if story.status in (StoryStatus.COMPLETED, StoryStatus.FAILED):
        ctx.log.info("story_already_final", status=story.status)
        return {"story_id": str(story_id), "status": story.status.value, "skipped": True}
    await stories.move(story_id, StoryStatus.PROCESSING)
    draft = await text.write_story(title=story.title, prompt=story.prompt, scene_count=ctx.settings.story_scenes)
    await stories.save_draft(story_id, draft)
    profile = await text.visual_profile(story=draft)
    await stories.save_visual_profile(story_id, profile)
    image_keys = [
        await _make_scene_media(services, story_id, sequence, scene, profile)
        for sequence, scene in enumerate(draft.scenes, 1)
    ]
    if not await stories.complete(story_id, cover_image_key=image_keys[0]):
        ctx.log.warning("story_not_completed", reason="story left `processing` while its job ran")
    ctx.log.info("story_completed", scenes=len(draft.scenes))
    return {"story_id": str(story_id), "status": "completed", "scenes": len(draft.scenes)}


async def _make_scene_media(
    services: StoryServices, story_id: uuid.UUID, sequence: int, scene: SceneDraft, profile: VisualProfile
) -> str:
    """Generate, store and record one scene's image and narration; return the image's storage key."""
    providers = services.providers
    image_prompt = await providers.text.scene_image_prompt(scene=scene, profile=profile)
    image, audio = await asyncio.gather(
        providers.image.generate_image(prompt=image_prompt, seed=sequence),
        providers.speech.synthesize(text=scene.text),
    )
    base = f"stories/{story_id}/scene-{sequence:02d}"  # deterministic: a re-run overwrites, never adds
    image_key = await services.storage.put(f"{base}.{image.extension}", image.data, image.content_type)
    audio_key = await services.storage.put(f"{base}.{audio.extension}", audio.data, audio.content_type)
    await services.stories.save_scene_media(
        story_id, sequence, image_prompt=image_prompt, image_key=image_key, audio_key=audio_key
    )
    return image_key
