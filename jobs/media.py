"""The scene media job, `media_task.generate`: one per scene, fanned out by the story job as one group,
run concurrently across worker processes. It writes the scene's image prompt, makes the image and the
narration together, stores both, and records them. The group's join (jobs.completion) then completes
the story, once every scene's job has ended.

If a scene's media fails after its retries, the story's other media jobs are asked to stop at once, so
the join runs promptly and fails the story saying which scene and why.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from jobs.ids import MEDIA_JOB, media_group_id
from jobs.providers.base import SceneDraft, VisualProfile
from jobs.repository import StoryStatus
from jobs.services import StoryServices
from runner.context import JobContext
from runner.errors import PermanentError
from runner.registry import job

__all__ = ["generate_scene_media", "stop_other_scenes"]


async def stop_other_scenes(ctx: JobContext, error: str) -> None:
    """on_failure: the story's other media jobs are stopped, so its join fails it now, naming this scene."""
    try:
        story_id = uuid.UUID(str(ctx.kwargs["story_id"]))
    except (KeyError, ValueError):
        return  # no usable story id in the payload: its group cannot be named (the join still runs)
    if not await _grouped(ctx, story_id):  # enqueued by a release before groups: fail the story the old way
        reason = "cancelled" if error == "cancelled" else f"scene {ctx.kwargs.get('sequence')}: {error}"
        services: StoryServices = ctx.services
        if await services.stories.move(story_id, StoryStatus.FAILED, error=reason):
            ctx.log.info("story_failed", story_id=str(story_id), error=reason)
        return
    stopped = await ctx.jobs.cancel_group(media_group_id(story_id))
    ctx.log.info("other_scenes_stopped", story_id=str(story_id), jobs=len(stopped), error=error)


async def _grouped(ctx: JobContext, story_id: uuid.UUID) -> bool:
    """Whether the story's media jobs make a group (all do, but those enqueued by a release before groups,
    which are still running across the upgrade: each of those completes or fails its story itself)."""
    return await ctx.jobs.group_results(media_group_id(story_id)) is not None


# A story already started finishes before new ones start (its scenes, and its completion, get a head start on
# queued story jobs: runner.priority), so under a burst each story's time from submit to completed stays short.
@job(MEDIA_JOB, log_fields=("story_id", "sequence"), on_failure=stop_other_scenes, priority=1)
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
    saved = await services.stories.save_scene_media(
        story_id, sequence, image_prompt=image_prompt, image_key=image_key, audio_key=audio_key
    )
    if saved and not await _grouped(ctx, story_id) and await services.stories.complete(story_id):
        ctx.log.info("story_completed", completed_by_scene=sequence)  # the last of an ungrouped fan-out
    return {"story_id": str(story_id), "sequence": sequence, "saved": saved}


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
