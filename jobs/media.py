"""The scene media job, `media_task.generate`: one per scene, fanned out by the story job, run
concurrently across worker processes. It writes the scene's image prompt, makes the image and the
narration together, stores both, and records them; the last scene to finish completes the story.

If a scene's media fails after its retries, its story is failed saying which scene and why, and the
story's other media jobs are asked to stop; those that start anyway see the story is no longer
`processing` and return at once.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from jobs.ids import MEDIA_JOB, media_job_id
from jobs.providers.base import SceneDraft, VisualProfile
from jobs.repository import SceneOutcome, StoryStatus
from jobs.services import StoryServices
from runner.context import JobContext
from runner.errors import PermanentError
from runner.registry import job

__all__ = ["fail_story_for_scene", "generate_scene_media"]


async def fail_story_for_scene(ctx: JobContext, error: str) -> None:
    """on_failure: the story fails naming the scene and the reason; its other media jobs are stopped."""
    try:
        story_id, sequence = uuid.UUID(str(ctx.kwargs["story_id"])), int(ctx.kwargs["sequence"])
    except (KeyError, ValueError):
        return  # no usable story id in the payload: there is no story row to mark
    services: StoryServices = ctx.services
    reason = "cancelled" if error == "cancelled" else f"scene {sequence}: {error}"
    if await services.stories.move(story_id, StoryStatus.FAILED, error=reason):
        ctx.log.info("story_failed", story_id=str(story_id), error=reason)
    scenes = await services.stories.scenes(story_id)
    siblings = [media_job_id(story_id, s.sequence) for s in scenes if s.sequence != sequence]
    await asyncio.gather(*(ctx.jobs.request_cancel(job_id) for job_id in siblings))


@job(MEDIA_JOB, log_fields=("story_id", "sequence"), on_failure=fail_story_for_scene)
async def generate_scene_media(ctx: JobContext, *, story_id: uuid.UUID, sequence: int) -> dict[str, Any]:
    services: StoryServices = ctx.services
    story = await services.stories.get(story_id)
    scene = await services.stories.scene(story_id, sequence)
    if story is None or scene is None:
        raise PermanentError(f"story {story_id} scene {sequence} does not exist (deleted before its media ran?)")
    if story.status != StoryStatus.PROCESSING or story.visual_profile is None:
        ctx.log.info("scene_media_skipped", story_status=story.status)
        return {"story_id": str(story_id), "sequence": sequence, "skipped": story.status.value}
    if scene.image_key and scene.audio_key:  # a re-run after the media were stored: only finish the scene
        image_prompt, image_key, audio_key = scene.image_prompt, scene.image_key, scene.audio_key
    else:
        draft = SceneDraft(title=scene.title, text=scene.text, image_prompt=scene.image_prompt)
        profile = VisualProfile.model_validate(story.visual_profile)
        image_prompt, image_key, audio_key = await _make_media(services, story_id, sequence, draft, profile)
    outcome = await services.stories.finish_scene(
        story_id, sequence, image_prompt=image_prompt, image_key=image_key, audio_key=audio_key
    )
    if outcome is SceneOutcome.COMPLETED_STORY:
        ctx.log.info("story_completed", completed_by_scene=sequence)
    return {"story_id": str(story_id), "sequence": sequence, "outcome": outcome.value}


async def _make_media(
    services: StoryServices, story_id: uuid.UUID, sequence: int, scene: SceneDraft, profile: VisualProfile
) -> tuple[str, str, str]:
    providers = services.providers
    image_prompt = await providers.text.scene_image_prompt(scene=scene, profile=profile)
    image, audio = await asyncio.gather(
        providers.image.generate_image(prompt=image_prompt, seed=sequence),
        providers.speech.synthesize(text=scene.text),
    )
    base = f"stories/{story_id}/scene-{sequence:02d}"  # deterministic: a re-run overwrites, never adds
    image_key, audio_key = await asyncio.gather(
        services.storage.put(f"{base}.{image.extension}", image.data, image.content_type),
        services.storage.put(f"{base}.{audio.extension}", audio.data, audio.content_type),
    )
    return image_prompt, image_key, audio_key
