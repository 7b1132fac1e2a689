"""A whole story over real HTTP: OpenAI-compatible text and images, ElevenLabs speech, all answered by
our local fake provider server, which throws in a 429, a 500, a timeout and malformed JSON on the way."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from structlog.testing import capture_logs

from jobs import registry
from jobs.providers.elevenlabs import ElevenLabsSpeechProvider
from jobs.providers.offline import OfflineTextProvider
from jobs.providers.openai import OpenAIImageProvider, OpenAITextProvider
from jobs.services import build_providers, open_story_services
from runner.http import new_client
from runner.resources import Resources
from runner.settings import Settings
from tests.conftest import RunWorker, api_client
from tests.fakes.provider_server import FakeProviderServer, Reply
from tests.integration.test_story_flow import post_story, until_story


@pytest.fixture
async def fake() -> AsyncIterator[FakeProviderServer]:
    async with FakeProviderServer() as server:
        yield server


def http_settings(settings: Settings, fake: FakeProviderServer) -> Settings:
    return settings.model_copy(update={
        "text_provider": "openai", "llm_base_url": fake.openai_url, "llm_api_key": "sk-text-secret",
        "image_provider": "openai", "image_base_url": fake.openai_url, "image_api_key": "sk-image-secret",
        "speech_provider": "elevenlabs", "speech_base_url": fake.base_url, "speech_api_key": "xi-secret",
        "http_read_timeout_s": 0.5, "story_scenes": 3,
    })  # fmt: skip


async def test_story_completes_through_provider_failures(
    settings: Settings, fake: FakeProviderServer, run_worker: RunWorker
):
    """429 (Retry-After), 500, a read timeout and malformed story JSON are each survived: retried by the
    runner or repaired by the provider, and the story completes with real media from the HTTP APIs."""
    settings = http_settings(settings, fake)
    fake.script("chat", [Reply.openai_error(429, "slow down", headers={"Retry-After": "0"}), Reply.chat("{not json")])
    fake.script("images", [Reply.openai_error(500, "upstream exploded")])
    fake.script("tts", [Reply(delay_s=2.0)])
    await run_worker(registry, settings)
    async with api_client(settings) as api:
        created = await post_story(api)
        story = await until_story(api, created["story_id"], "completed", "failed", timeout=20)
        assert story["status"] == "completed", story
        assert len(story["scenes"]) == 3
        audio = await api.get(story["scenes"][0]["audio_url"])
        assert (audio.status_code, audio.headers["content-type"]) == (200, "audio/mpeg")
        jobs = [(await api.get(f"/jobs/{j}")).json() for j in await job_ids(api, created["story_id"])]
    assert len(jobs) == 4 and all(j["status"] == "completed" for j in jobs)
    assert fake.pending("chat") == fake.pending("images") == fake.pending("tts") == 0, "the failures were not exercised"
    chats = fake.requests_to("chat")
    assert chats[0].headers["authorization"] == "Bearer sk-text-secret"
    assert fake.requests_to("tts")[0].headers["xi-api-key"] == "xi-secret"


async def job_ids(api: httpx.AsyncClient, story_id: str) -> list[str]:
    status = (await api.get(f"/stories/{story_id}/status")).json()
    return [status["job_id"], *(f"media_task.generate:{story_id}:{n}" for n in range(1, status["scenes_total"] + 1))]


async def test_http_providers_are_built_from_settings(settings: Settings, fake: FakeProviderServer):
    """TEXT/IMAGE/SPEECH_PROVIDER choose the real providers, all over the process's one httpx client."""
    async with new_client() as http:
        providers = build_providers(http_settings(settings, fake), http)
    assert isinstance(providers.text, OpenAITextProvider)
    assert isinstance(providers.image, OpenAIImageProvider)
    assert isinstance(providers.speech, ElevenLabsSpeechProvider)


async def test_offline_is_the_default_and_says_so(resources: Resources):
    """With no provider configured the offline ones are used, and a start-up warning says they are fake."""
    with capture_logs() as logs:
        async with open_story_services(resources) as services:
            assert isinstance(services.providers.text.inner, OfflineTextProvider)  # type: ignore[attr-defined]
    warning = next(e for e in logs if e["event"] == "offline_providers_in_use")
    assert warning["kinds"] == ["image", "speech", "text"]
    assert "no AI is called" in warning["detail"]
