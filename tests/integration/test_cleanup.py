"""The media clean-up: the folders of stories without a row go, a batch a run, and nothing else does; the
worker runs it on its schedule; and media a running scene job stored after its story was deleted are found."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import orjson

from jobs import registry
from jobs.cleanup import MEDIA_CLEANUP_JOB, remove_orphaned_media
from jobs.ids import media_job_id
from jobs.repository import StoryRepository
from jobs.storage import LocalMediaStorage
from runner.resources import Resources
from runner.status import TERMINAL, JobStatus
from tests.conftest import MakeSettings, RunWorker, api_client, wait_for


async def add_story_row(resources: Resources) -> uuid.UUID:
    story_id = uuid.uuid4()
    await resources.db.execute(
        "INSERT INTO stories (story_id, user_id, title, prompt) VALUES ($1, 'cleanup-user', 't', 'p')", story_id
    )
    return story_id


async def add_media(storage: LocalMediaStorage, folder: str, *, age_s: float = 7200) -> Path:
    """Two files in stories/<folder>/, the folder last changed `age_s` ago."""
    for name in ("scene-01.png", "scene-01.wav"):
        await storage.put(f"stories/{folder}/{name}", b"media", "application/octet-stream")
    path = storage.root / "stories" / folder
    os.utime(path, (time.time() - age_s, time.time() - age_s))
    return path


async def test_only_old_folders_of_stories_without_a_row_go_a_batch_a_run(resources: Resources, tmp_path: Path):
    """Three orphans (oldest first, two a run), a live story, a recent orphan and a foreign folder."""
    storage, stories = LocalMediaStorage(tmp_path / "media"), StoryRepository(resources.db)
    live = await add_media(storage, str(await add_story_row(resources)), age_s=9000)
    orphans = [await add_media(storage, str(uuid.uuid4()), age_s=8000 - n) for n in range(3)]
    recent = await add_media(storage, str(uuid.uuid4()), age_s=10)
    foreign = await add_media(storage, "not-a-story", age_s=9000)

    first = await remove_orphaned_media(storage, stories, batch=2, min_age_s=60)
    assert (first.folders, first.recent, first.files, first.more, first.failed) == (6, 1, 4, True, [])
    assert first.removed == [o.name for o in orphans[:2]] and first.foreign == ["not-a-story"]
    assert [o.exists() for o in orphans] == [False, False, True]
    second = await remove_orphaned_media(storage, stories, batch=2, min_age_s=60)
    assert (second.removed, second.more) == ([orphans[2].name], False)
    again = await remove_orphaned_media(storage, stories, batch=2, min_age_s=60)
    assert (again.removed, again.files, again.folders) == ([], 0, 3)  # idempotent: nothing left to do
    assert live.is_dir() and recent.is_dir() and foreign.is_dir()
    assert len(list(live.iterdir())) == 2


async def test_the_story_workers_run_it_on_its_schedule(
    make_settings: MakeSettings, resources: Resources, run_worker: RunWorker, tmp_path: Path
):
    """`make worker`'s registry schedules it: with MEDIA_CLEANUP_CRON every second, an orphan goes at once."""
    settings = make_settings(media_cleanup_cron="* * * * * *", media_cleanup_min_age_s=0, media_dir=tmp_path / "m")
    orphan = await add_media(LocalMediaStorage(tmp_path / "m"), str(uuid.uuid4()))
    live = await add_media(LocalMediaStorage(tmp_path / "m"), str(await add_story_row(resources)))
    await run_worker(registry, settings)

    async def gone() -> bool:
        return not orphan.exists()

    async def recorded() -> bool:
        rows = await resources.db.fetch(
            "SELECT result FROM runner_jobs WHERE queue = $1 AND name = $2 AND status = 'completed'",
            settings.queue_name, MEDIA_CLEANUP_JOB,
        )  # fmt: skip
        return any(orjson.loads(row["result"])["removed"] == [orphan.name] for row in rows)

    await wait_for(gone, 10)
    await wait_for(recorded, 10)  # the run that removed it says so in its result
    assert live.is_dir()


async def test_media_stored_after_the_story_was_deleted_are_left_behind_then_removed(
    make_settings: MakeSettings, resources: Resources, run_worker: RunWorker, tmp_path: Path
):
    """The bug the clean-up exists for: DELETE asks the running media job to stop, but the job hears it only
    at the worker's next abort poll (made long here), and stores its files after the folder was removed."""
    settings = make_settings(offline_latency_ms=400, abort_poll_s=60, media_dir=tmp_path / "m")
    await run_worker(registry, settings)
    async with api_client(settings) as api:
        created = await api.post("/stories/", json={"title": "T", "prompt": "a late kite", "user_id": "cleanup",
                                                    "num_scenes": 1})  # fmt: skip
        story_id = created.json()["story_id"]
        media = media_job_id(story_id, 1)

        async def media_running() -> bool:
            row = await api.get(f"/jobs/{media}")
            return row.status_code == 200 and row.json()["status"] == JobStatus.PROCESSING

        await wait_for(media_running, 20)
        assert (await api.delete(f"/stories/{story_id}")).json() == {"success": True}

        async def media_ended() -> bool:
            return (await api.get(f"/jobs/{media}")).json()["status"] in TERMINAL

        await wait_for(media_ended, 20)
    folder = tmp_path / "m" / "stories" / story_id
    assert sorted(p.name for p in folder.iterdir()) == ["scene-01.png", "scene-01.wav"]  # left behind
    storage, stories = LocalMediaStorage(tmp_path / "m"), StoryRepository(resources.db)
    report = await remove_orphaned_media(storage, stories, batch=10, min_age_s=0)
    assert report.removed == [story_id] and not folder.exists()
