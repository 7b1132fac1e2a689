"""The story job, `story_task.generate`: the old Celery pipeline's first half, as a coroutine.

load the story -> mark it processing -> the LLM writes title and scenes -> save them -> visual profile
and base style -> one `media_task.generate` job per scene (see jobs.media), which run concurrently, as
one group (runner.group) whose join, `story_task.complete` (jobs.completion), completes the story or
fails it naming the scene. A re-run reuses the saved draft instead of asking the LLM again, and finds
its group instead of making another.
Any error that survives the retry policy marks the story failed with the error text (`on_failure`,
which also covers hard timeouts, cancellation and bad payloads).

Producers of the old backend, unchanged (a Celery `generate_story_task.delay(story_id, request_dict,
user_id)` taken in by the Celery intake), send the story's request with the job: a story that does not
exist yet is then created from it, under the id they chose.
"""

from __future__ import annotations

import uuid
from typing import Any

from jobs.ids import COMPLETE_JOB, MEDIA_JOB, STORY_JOB, media_group_id, media_job_id
from jobs.providers.conversations import transcript_prompt
from jobs.repository import NewStory, StoryRecord, StoryStatus
from jobs.services import StoryServices
from runner.context import JobContext
from runner.errors import PermanentError
from runner.group import GroupMemberTakenError, JobCall
from runner.registry import job

__all__ = ["OLD_TASK_ARGS", "StoryNotFoundError", "generate_story", "mark_story_failed"]

# The old Celery task's positional parameters: `generate_story_task(self, story_id, request_dict, user_id)`.
OLD_TASK_ARGS = ("story_id", "request_dict", "user_id")


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


@job(STORY_JOB, log_fields=("story_id",), on_failure=mark_story_failed, positional=OLD_TASK_ARGS)
async def generate_story(
    ctx: JobContext, *, story_id: uuid.UUID, request_dict: dict[str, Any] | None = None, user_id: str | None = None
) -> dict[str, Any]:
    services: StoryServices = ctx.services
    stories, text = services.stories, services.providers.text
    story = await stories.get(story_id)
    if story is None and request_dict is not None:
        story = await stories.adopt(_old_request(story_id, request_dict, user_id), job_id=ctx.job_id)
    if story is None:
        raise StoryNotFoundError(f"story {story_id} does not exist (deleted before its job ran?)")
    if story.status in (StoryStatus.COMPLETED, StoryStatus.FAILED):
        ctx.log.info("story_already_final", status=story.status)
        return {"story_id": str(story_id), "status": story.status.value, "skipped": True}
    await stories.move(story_id, StoryStatus.PROCESSING)
    saved = await stories.saved_draft(story_id)
    if saved is None:
        prompt = await _prompt(ctx, services, story)
        scenes = story.num_scenes or services.settings.story_scenes
        draft = await text.write_story(title=story.title, prompt=prompt, scene_count=scenes)
        await stories.save_draft(story_id, draft)
        profile = await text.visual_profile(story=draft)
        if story.style:  # the client's style hint leads every image prompt of the story
            profile = profile.model_copy(update={"base_style": f"{story.style} style; {profile.base_style}"[:1000]})
        await stories.save_visual_profile(story_id, profile)
        scene_count = len(draft.scenes)
    else:
        scene_count = len(saved[0].scenes)
    scenes_media = [
        JobCall(MEDIA_JOB, {"story_id": str(story_id), "sequence": n}, job_id=media_job_id(story_id, n))
        for n in range(1, scene_count + 1)
    ]
    try:
        group = await ctx.jobs.enqueue_group(
            scenes_media, then=JobCall(COMPLETE_JOB, {"story_id": str(story_id)}), group_id=media_group_id(story_id)
        )
    except GroupMemberTakenError:  # its media jobs were enqueued, ungrouped, by a release before joins:
        # they complete the story themselves (jobs.media); any that release never enqueued are enqueued the
        # same way now (ids deduplicate the others).
        for call in scenes_media:
            await ctx.jobs.enqueue(call.name, job_id=call.job_id or "", **call.kwargs)
        ctx.log.info("scene_media_enqueued_before_groups", scenes=scene_count)
        return {"story_id": str(story_id), "scenes": scene_count, "media_jobs": scene_count}
    ctx.log.info("scene_media_enqueued", scenes=scene_count, reused_draft=saved is not None, new_group=group.created)
    return {"story_id": str(story_id), "scenes": scene_count, "media_jobs": scene_count}


def _old_request(story_id: uuid.UUID, request: dict[str, Any], user_id: str | None) -> NewStory:
    """The old backend's StoryRequest (`title`, `prompt`, `user_id`; this API's `style` and `num_scenes`
    too) as a new story; a request without a title or prompt cannot make one."""
    title, prompt = request.get("title"), request.get("prompt")
    if not isinstance(title, str) or not title.strip() or not isinstance(prompt, str) or not prompt.strip():
        raise PermanentError(f"story {story_id} does not exist and its request has no title and prompt: {request!r}")
    owner = user_id or request.get("user_id")
    num_scenes = request.get("num_scenes")
    return NewStory(
        story_id=story_id, user_id=str(owner or "unknown"), title=title.strip()[:200], prompt=prompt.strip(),
        style=str(request["style"]) if request.get("style") else None,
        num_scenes=num_scenes if isinstance(num_scenes, int) and 1 <= num_scenes <= 20 else None,
    )  # fmt: skip


async def _prompt(ctx: JobContext, services: StoryServices, story: StoryRecord) -> str:
    """The story's prompt; for a story made from a conversation, the transcript's (fetched once, kept)."""
    if not (story.fetch_transcript and story.conversation_id) or services.conversations is None:
        return story.prompt
    transcript = await services.conversations.transcript(story.conversation_id)
    if not transcript:
        ctx.log.warning("conversation_transcript_empty", conversation_id=story.conversation_id)
        return story.prompt
    prompt = transcript_prompt(transcript)
    await services.stories.set_prompt(story.story_id, prompt)
    return prompt
