"""Story rows: re-runs upsert, statuses only move forwards, and a story completes once all its scenes have media."""

from __future__ import annotations

import asyncio
import uuid

from jobs.providers.base import SceneDraft, StoryDraft, VisualProfile
from jobs.repository import NewStory, StoryRepository, StoryStatus
from runner.resources import Resources
from runner.store.jobs import PendingJob


async def processing_story(stories: StoryRepository, resources: Resources, scenes: int) -> uuid.UUID:
    story_id = uuid.uuid4()
    job = PendingJob(f"job:{story_id}", "story_task.generate", "q", {"story_id": str(story_id)}, 3)
    await stories.create(NewStory(story_id, "u", "t", "p"), job=job)
    draft = StoryDraft(title="t", scenes=[SceneDraft(title=f"s{n}", text="x", image_prompt="y") for n in range(scenes)])
    await stories.save_draft(story_id, draft)
    await stories.save_visual_profile(story_id, VisualProfile(characters="c", setting="s", base_style="b"))
    assert await stories.move(story_id, StoryStatus.PROCESSING)
    return story_id


async def finish(stories: StoryRepository, story_id: uuid.UUID, n: int) -> bool:
    return await stories.save_scene_media(story_id, n, image_prompt="p", image_key=f"i{n}.png", audio_key=f"a{n}.wav")


async def test_a_story_completes_only_once_every_scene_has_its_media(resources: Resources):
    """`complete` (the media group's join) refuses while a scene lacks media, then completes with the first
    scene's image as cover; called again (or racing), it completes the story once."""
    stories = StoryRepository(resources.db)
    story_id = await processing_story(stories, resources, 3)
    assert [await finish(stories, story_id, n) for n in (1, 2)] == [True, True]
    assert not await stories.complete(story_id)
    assert await finish(stories, story_id, 3)
    assert sorted(await asyncio.gather(*(stories.complete(story_id) for _ in range(5)))) == [False] * 4 + [True]
    story = await stories.get(story_id)
    assert story is not None and (story.status, story.cover_image_key) == (StoryStatus.COMPLETED, "i1.png")


async def test_scene_of_a_failed_story_does_not_complete_it(resources: Resources):
    """A scene finishing after its story failed writes nothing and says so; the story cannot complete."""
    stories = StoryRepository(resources.db)
    story_id = await processing_story(stories, resources, 1)
    assert await stories.move(story_id, StoryStatus.FAILED, error="scene 2: boom")
    assert await finish(stories, story_id, 1) is False
    assert not await stories.complete(story_id)
    story = await stories.get(story_id)
    assert story is not None and (story.status, story.error) == (StoryStatus.FAILED, "scene 2: boom")
    assert [s.image_key for s in await stories.scenes(story_id)] == [None]


async def test_statuses_only_move_forwards(resources: Resources):
    """Completed and failed are final; a late `processing` write cannot reopen them."""
    stories = StoryRepository(resources.db)
    story_id = await processing_story(stories, resources, 1)
    await finish(stories, story_id, 1)
    assert await stories.complete(story_id)
    assert not await stories.move(story_id, StoryStatus.PROCESSING)
    assert not await stories.move(story_id, StoryStatus.FAILED, error="late")
    story = await stories.get(story_id)
    assert story is not None and story.status is StoryStatus.COMPLETED


async def test_saving_a_draft_again_updates_scenes_in_place(resources: Resources):
    """A re-run's draft upserts by (story, sequence) with the same scene ids, and drops extra scenes."""
    stories = StoryRepository(resources.db)
    story_id = await processing_story(stories, resources, 3)
    before = {s.sequence: s.scene_id for s in await stories.scenes(story_id)}
    await stories.save_draft(
        story_id, StoryDraft(title="t2", scenes=[SceneDraft(title="new", text="x", image_prompt="y")] * 2)
    )
    after = await stories.scenes(story_id)
    assert [(s.sequence, s.scene_id, s.title) for s in after] == [(1, before[1], "new"), (2, before[2], "new")]


async def test_story_and_its_job_row_are_written_together(resources: Resources):
    """The one statement that writes the story also writes its pending job row."""
    stories = StoryRepository(resources.db)
    story_id = await processing_story(stories, resources, 1)
    row = await resources.db.fetchrow("SELECT name, status, args FROM runner_jobs WHERE job_id = $1", f"job:{story_id}")
    assert row is not None
    assert (row["name"], row["status"]) == ("story_task.generate", "pending")
