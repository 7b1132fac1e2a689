"""API keys are kept out of logs and errors: stories whose provider calls fail (401, 500) against our fake
provider server, which echoes the key back in its error messages, leave the key in no rendered log line,
no job or story error, no API answer and no result kept in Redis."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import pytest

from jobs import registry
from runner.broker.keys import QueueKeys
from runner.resources import Resources
from runner.settings import Settings
from tests.conftest import RunWorker, api_client
from tests.fakes.provider_server import FakeProviderServer, Reply
from tests.integration.test_story_flow import post_story, until_story

TEXT_KEY = "sk-text-SECRET-3f9a1c7e5b2d"
IMAGE_KEY = "sk-image-SECRET-8d2e4f6a0c1b"
SPEECH_KEY = "xi-SECRET-1b3d5f7e9a2c4e"
KEYS = (TEXT_KEY, IMAGE_KEY, SPEECH_KEY)


@pytest.fixture
async def fake() -> AsyncIterator[FakeProviderServer]:
    async with FakeProviderServer() as server:
        yield server


@contextmanager
def rendered_logs() -> Iterator[io.StringIO]:
    """Every log line of this process as the root handler renders it (structlog and stdlib loggers alike)."""
    root = logging.getLogger()
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(root.handlers[0].formatter)
    root.addHandler(handler)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)


def keyed_settings(settings: Settings, fake: FakeProviderServer) -> Settings:
    return settings.model_copy(update={
        "text_provider": "openai", "llm_base_url": fake.openai_url, "llm_api_key": TEXT_KEY,
        "image_provider": "openai", "image_base_url": fake.openai_url, "image_api_key": IMAGE_KEY,
        "speech_provider": "elevenlabs", "speech_base_url": fake.base_url, "speech_api_key": SPEECH_KEY,
        "story_scenes": 2, "job_max_tries": 2,
    })  # fmt: skip


async def test_provider_failures_never_show_the_api_key(
    settings: Settings, resources: Resources, fake: FakeProviderServer, run_worker: RunWorker
) -> None:
    """A 401 on the story call and 500s on every image and speech call, each echoing the key sent: both
    stories fail with the provider's (redacted) words, and none of the three keys appears anywhere."""
    settings = keyed_settings(settings, fake)
    echo = "Incorrect API key provided: {key}. You can find your API key at https://example.invalid"
    fake.script("chat", [Reply.openai_error(401, echo.format(key=TEXT_KEY))])
    with rendered_logs() as logs:
        await run_worker(registry, settings)
        async with api_client(settings) as api:
            rejected = await post_story(api)
            first = await until_story(api, rejected["story_id"], "completed", "failed")
            fake.script("images", [Reply.openai_error(500, echo.format(key=IMAGE_KEY))] * 50)  # every call
            fake.script("tts", [Reply.elevenlabs_error(500, echo.format(key=SPEECH_KEY))] * 50)
            failing = await post_story(api)
            second = await until_story(api, failing["story_id"], "completed", "failed", timeout=30)
            answers = [(await api.get(f"/stories/{s['story_id']}/status")).text for s in (rejected, failing)]
            job_ids = [r["job_id"] for r in await resources.db.fetch(
                "SELECT job_id FROM runner_jobs WHERE queue = $1", settings.queue_name)]  # fmt: skip
            answers += [(await api.get(f"/jobs/{j}")).text for j in job_ids]
    assert (first["status"], second["status"]) == ("failed", "failed"), (first, second)
    assert fake.requests_to("chat")[0].headers["authorization"] == f"Bearer {TEXT_KEY}"
    assert fake.requests_to("images")[0].headers["authorization"] == f"Bearer {IMAGE_KEY}"
    assert fake.requests_to("tts")[0].headers["xi-api-key"] == SPEECH_KEY
    errors = [r["error"] for r in await resources.db.fetch(
        "SELECT error FROM runner_jobs WHERE queue = $1 AND error IS NOT NULL "
        "UNION ALL SELECT error FROM stories WHERE story_id = ANY($2::uuid[]) AND error IS NOT NULL",
        settings.queue_name, [rejected["story_id"], failing["story_id"]])]  # fmt: skip
    kept = QueueKeys.of(settings.queue_name).result_prefix + "*"
    results = [await resources.redis.get(k) or b"" async for k in resources.redis.scan_iter(kept)]
    text = logs.getvalue()
    for key in KEYS:
        leaks = [line for line in text.splitlines() if key in line]
        assert not leaks, leaks[:3]
        assert not [e for e in errors if key in e]
        assert not [a for a in answers if key in a]
        assert not [r for r in results if key.encode() in r]
    assert "Incorrect API key provided: [redacted]" in text, "the provider's words were never logged"
    assert any("[redacted]" in e for e in errors) and len(errors) >= 3, errors
    assert len(answers) >= 5 and len(results) >= 3, (answers, results)
