"""Stories end to end, in process: API -> Redis -> worker -> Postgres -> media served by the API."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from jobs import registry
from jobs.providers.base import Media
from jobs.providers.offline import OFFLINE_MARKER, offline_providers
from jobs.providers.slotted import with_slots
from jobs.services import StoryServices, open_story_services, provider_slot_pools
from runner.broker.slots import SlotHolder
from runner.errors import PermanentError, TransientError
from runner.registry import Registry
from runner.resources import Resources
from runner.settings import Settings
from tests.conftest import RunWorker, wait_for

pytestmark = pytest.mark.also_on_cluster  # the broker's behaviour, again on Redis Cluster


async def post_story(api: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    body = {"title": "The Brave Kite", "prompt": "a kite that is afraid of heights", "user_id": "user-1", **overrides}
    response = await api.post("/stories/", json=body)
    assert response.status_code == 202, response.text
    created: dict[str, Any] = response.json()
    return created


async def until_story(api: httpx.AsyncClient, story_id: str, *statuses: str, timeout: float = 20) -> dict[str, Any]:
    story: dict[str, Any] = {}

    async def check() -> bool:
        nonlocal story
        story = (await api.get(f"/stories/{story_id}")).json()
        return story["status"] in statuses

    await wait_for(check, timeout)
    return story


async def test_story_goes_from_post_to_completed_with_media(api: httpx.AsyncClient, run_worker: RunWorker):
    """POST a story; the worker writes its scenes and media; the API serves them; the job row is completed."""
    await run_worker(registry)
    created = await post_story(api)
    assert created["status"] == "pending"
    assert set(created) == {"status", "title", "error", "story_id", "user_id", "cover_image_url", "created_at",
                            "updated_at"}  # fmt: skip
    story = await until_story(api, created["story_id"], "completed", "failed")
    assert story["status"] == "completed", story
    assert [s["sequence"] for s in story["scenes"]] == [1, 2, 3, 4, 5]
    assert all(OFFLINE_MARKER in s["text"] for s in story["scenes"])
    assert story["cover_image_url"] == story["scenes"][0]["image_url"]
    image = await api.get(story["scenes"][2]["image_url"])
    audio = await api.get(story["scenes"][2]["audio_url"])
    assert (image.status_code, image.headers["content-type"], image.content[:8]) == (
        200,
        "image/png",
        b"\x89PNG\r\n\x1a\n",
    )
    assert (audio.status_code, audio.headers["content-type"], audio.content[:4]) == (200, "audio/wav", b"RIFF")
    status = (await api.get(f"/stories/{created['story_id']}/status")).json()
    assert (status["scenes_done"], status["scenes_total"]) == (5, 5)
    job = (await api.get(f"/jobs/{status['job_id']}")).json()
    assert (job["status"], job["attempts"], job["name"]) == ("completed", 1, "story_task.generate")
    assert job["result"] == {"story_id": created["story_id"], "scenes": 5, "media_jobs": 5}
    media: list[dict[str, Any]] = []

    async def media_rows_completed() -> bool:  # the last one is recorded just after it completes the story
        nonlocal media
        media = [(await api.get(f"/jobs/media_task.generate:{created['story_id']}:{n}")).json() for n in range(1, 6)]
        return [m["status"] for m in media] == ["completed"] * 5

    await wait_for(media_rows_completed, timeout=5)
    assert [m["result"]["saved"] for m in media] == [True] * 5
    join: dict[str, Any] = {}

    async def join_completed() -> bool:  # the group's join completed the story, then its own row
        nonlocal join
        join = (await api.get(f"/jobs/story_media:{created['story_id']}:join")).json()
        return join["status"] == "completed"

    await wait_for(join_completed, timeout=5)
    assert (join["name"], join["attempts"]) == ("story_task.complete", 1)
    assert join["result"] == {"story_id": created["story_id"], "status": "completed"}


def registry_with(**providers: Any) -> Registry:
    """The real story registry, with some providers swapped for ones that fail."""

    @asynccontextmanager
    async def services(resources: Resources) -> AsyncIterator[StoryServices]:
        async with open_story_services(resources) as real:
            swapped = dataclasses.replace(offline_providers(0.001), **providers)
            limits = provider_slot_pools(resources.settings, swapped)
            async with SlotHolder(resources.redis, prefix=resources.settings.slot_prefix) as holder:
                yield dataclasses.replace(real, providers=with_slots(swapped, holder, *limits))

    return dataclasses.replace(registry, services=services)


class FailingImages:  # every call fails the same way
    name = "failing"

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    async def generate_image(self, *, prompt: str, seed: int) -> Media:
        self.calls += 1
        raise self.error


async def test_provider_error_marks_story_failed_with_the_error(api: httpx.AsyncClient, run_worker: RunWorker):
    """A permanent provider error fails the story at once, with the provider's message."""
    images = FailingImages(PermanentError("image API answered 400: prompt rejected"))
    await run_worker(registry_with(image=images))
    created = await post_story(api)
    story = await until_story(api, created["story_id"], "failed", "completed")
    assert story["status"] == "failed"
    assert re.fullmatch(r"scene [1-5]: PermanentError: image API answered 400: prompt rejected", story["error"])
    assert 1 <= images.calls <= 5  # no retries of a permanent error


async def test_failed_scene_fails_the_story_and_stops_its_other_media_jobs(
    api: httpx.AsyncClient, run_worker: RunWorker, settings: Settings
):
    """Scene 3's image keeps timing out: after JOB_MAX_TRIES the story fails naming scene 3, and the
    other scenes' media jobs, still busy, are stopped rather than finished."""
    images = OneSceneFails(failing_seed=3, others_take_s=5)
    await run_worker(registry_with(image=images))
    created = await post_story(api)
    story = await until_story(api, created["story_id"], "failed", timeout=4)
    assert story["error"] == "scene 3: TransientError: image API timed out"
    media = f"/jobs/media_task.generate:{created['story_id']}"
    job = (await api.get(f"{media}:3")).json()
    assert (job["status"], job["attempts"]) == ("failed", settings.job_max_tries)

    async def siblings_stopped() -> bool:
        rows = [(await api.get(f"{media}:{n}")).json() for n in (1, 2, 4, 5)]
        return [r["status"] for r in rows] == ["cancelled"] * 4

    await wait_for(siblings_stopped, timeout=3)
    assert images.failures == settings.job_max_tries


class OneSceneFails:
    name = "one-scene-fails"

    def __init__(self, failing_seed: int, others_take_s: float) -> None:
        self.failing_seed, self.others_take_s, self.failures = failing_seed, others_take_s, 0

    async def generate_image(self, *, prompt: str, seed: int) -> Media:
        if seed == self.failing_seed:
            self.failures += 1
            raise TransientError("image API timed out", retry_after_s=0.05)
        await asyncio.sleep(self.others_take_s)
        return await offline_providers(0).image.generate_image(prompt=prompt, seed=seed)


async def test_idempotency_key_returns_the_same_story(api: httpx.AsyncClient, run_worker: RunWorker):
    """A retried POST with the same Idempotency-Key creates one story and runs one job."""
    headers = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    body = {"title": "", "prompt": "a snail who wins a race", "user_id": "user-2"}
    first = await api.post("/stories/", json=body, headers=headers)
    second = await api.post("/stories/", json=body, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json()["story_id"] == second.json()["story_id"]
    await run_worker(registry)
    story = await until_story(api, first.json()["story_id"], "completed")
    assert len(story["scenes"]) == 5


async def test_delete_removes_story_scenes_and_media(api: httpx.AsyncClient, run_worker: RunWorker, settings: Settings):
    """DELETE removes the story, its scenes and its media files; later reads are 404."""
    await run_worker(registry)
    created = await post_story(api)
    await until_story(api, created["story_id"], "completed")
    media_dir = settings.media_path / "stories" / created["story_id"]
    assert len(list(media_dir.iterdir())) == 10
    deleted = await api.delete(f"/stories/{created['story_id']}")
    assert (deleted.status_code, deleted.json()) == (200, {"success": True})
    assert not media_dir.exists()
    assert (await api.get(f"/stories/{created['story_id']}")).status_code == 404
    assert (await api.delete(f"/stories/{created['story_id']}")).status_code == 404


async def test_cancelling_a_story_job_fails_the_story_with_reason_cancelled(
    api: httpx.AsyncClient, run_worker: RunWorker, make_settings: Any
):
    """POST /jobs/{id}/cancel on a running media job: job `cancelled`, story `failed` saying cancelled,
    and the story's other media jobs are stopped too."""
    await run_worker(registry_with(image=SlowImages()))
    created = await post_story(api)
    job_id = f"media_task.generate:{created['story_id']}:1"

    async def running() -> bool:
        response = await api.get(f"/jobs/{job_id}")
        return response.status_code == 200 and response.json()["status"] == "processing"

    await wait_for(running)
    response = await api.post(f"/jobs/{job_id}/cancel")
    assert response.status_code == 202, response.text
    story = await until_story(api, created["story_id"], "failed")
    assert story["error"] == "cancelled"

    async def all_cancelled() -> bool:
        rows = [(await api.get(f"/jobs/media_task.generate:{created['story_id']}:{n}")).json() for n in range(1, 6)]
        return [r["status"] for r in rows] == ["cancelled"] * 5

    await wait_for(all_cancelled, timeout=5)
    again = await api.post(f"/jobs/{job_id}/cancel")
    assert again.status_code == 409
    assert "already ended as cancelled" in again.json()["detail"]
    assert (await api.post("/jobs/nope/cancel")).status_code == 404


class SlowImages:
    name = "slow"

    async def generate_image(self, *, prompt: str, seed: int) -> Media:
        await asyncio.sleep(30)
        raise AssertionError("should have been cancelled")


async def test_metrics_count_outcomes_durations_and_queue_depth(
    api: httpx.AsyncClient, run_worker: RunWorker, settings: Settings
):
    """/metrics shows job outcomes and durations per job name, jobs in flight and the queue depth, which
    falls back to 0 once the last jobs have been taken off the queue (just after the story completes)."""
    await run_worker(registry)
    created = await post_story(api)
    await until_story(api, created["story_id"], "completed")
    depth = f'runner_queue_depth{{kind="all",queue="{settings.queue_name}"}}'
    media_done = 'runner_jobs_total{job_name="media_task.generate",outcome="completed"}'
    samples: dict[str, str] = {}

    async def drained() -> bool:
        nonlocal samples
        text = (await api.get("/metrics")).text
        samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
        return samples.get(depth) == "0.0" and float(samples.get(media_done, 0)) >= 5

    await wait_for(drained, timeout=5)
    assert float(samples['runner_jobs_total{job_name="story_task.generate",outcome="completed"}']) >= 1
    assert float(samples['runner_job_duration_seconds_count{job_name="story_task.generate",outcome="completed"}']) >= 1
    assert "runner_jobs_in_flight" in samples
    assert float(samples["runner_workers_alive"]) >= 1


class CountingImages:
    name = "counting"

    def __init__(self) -> None:
        self.now, self.peak, self.calls = 0, 0, 0

    async def generate_image(self, *, prompt: str, seed: int) -> Media:
        self.now, self.calls = self.now + 1, self.calls + 1
        self.peak = max(self.peak, self.now)
        await asyncio.sleep(0.1)
        self.now -= 1
        return await offline_providers(0).image.generate_image(prompt=prompt, seed=seed)


async def test_provider_concurrency_limit_holds_across_a_story_fan_out(
    api: httpx.AsyncClient, run_worker: RunWorker, settings: Settings
):
    """With IMAGE_MAX_CONCURRENCY=2, two stories' ten media jobs never have more than 2 image calls at once."""
    images = CountingImages()
    await run_worker(registry_with(image=images), settings.model_copy(update={"image_max_concurrency": 2}))
    created = [await post_story(api), await post_story(api)]
    for story in created:
        assert (await until_story(api, story["story_id"], "completed", "failed"))["status"] == "completed"
    assert (images.calls, images.peak) == (10, 2)


async def test_media_jobs_enqueued_before_groups_still_complete_or_fail_their_story(
    resources: Resources, settings: Settings, run_worker: RunWorker
):
    """Across the upgrade to grouped media: scene jobs enqueued one by one by the previous release (no group,
    no join) complete their story the old way, the last to save its media completing it; a failing one fails it."""
    from jobs.ids import MEDIA_JOB, media_job_id
    from jobs.repository import StoryRepository
    from runner.client import JobClient
    from tests.integration.test_repository import processing_story

    stories = StoryRepository(resources.db)
    client = JobClient(resources, registry.resolved(settings))
    done = await processing_story(stories, resources, scenes=3)
    broken = await processing_story(stories, resources, scenes=3)
    calls = [(done, n) for n in (1, 2, 3)] + [(broken, 4)]  # the broken story has no scene 4: that job fails
    await asyncio.gather(*(
        client.enqueue(MEDIA_JOB, job_id=media_job_id(story_id, n), story_id=str(story_id), sequence=n)
        for story_id, n in calls
    ))  # fmt: skip
    await run_worker(registry)

    async def ended(story_id: uuid.UUID) -> bool:
        story = await stories.get(story_id)
        return story is not None and story.status.value in ("completed", "failed")

    await wait_for(lambda: ended(done))
    await wait_for(lambda: ended(broken))
    completed, failed = await stories.get(done), await stories.get(broken)
    assert completed is not None and completed.status.value == "completed" and completed.cover_image_key is not None
    assert failed is not None and failed.status.value == "failed"
    assert failed.error is not None and failed.error.startswith("scene 4: PermanentError"), failed.error
