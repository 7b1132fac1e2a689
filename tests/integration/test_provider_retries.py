"""Retries inside one provider call, against the fake server: what is tried again, how often, how long it
waits, what it says when it gives up, and that shared slot pools still hold while calls wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY

from jobs.providers.elevenlabs import ElevenLabsSpeechProvider
from jobs.providers.http import (
    ProviderBadResponse,
    ProviderBrokenBody,
    ProviderRateLimited,
    ProviderRejected,
    ProviderServerError,
)
from jobs.providers.openai import OpenAIImageProvider, OpenAITextProvider
from jobs.providers.retries import CallRetryPolicy
from jobs.providers.slotted import SlottedSpeech
from runner.broker.slots import SlotHolder, SlotPool
from runner.errors import TransientError
from runner.http import new_client
from runner.resources import Resources
from runner.settings import Settings
from tests.conftest import wait_for
from tests.fakes.provider_server import FAKE_MP3, FakeProviderServer, Reply, chat_completion, story_json
from tests.integration.test_providers import FAST, KEY, KINDS, Kind, assert_no_key

QUICK = CallRetryPolicy(retries=2, budget_s=10, first_s=0.01, max_s=0.05)
KIND_OF_ROUTE = {"chat": "text", "images": "image", "speech": "speech", "tts": "speech"}
by_kind = pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])


@pytest.fixture(scope="module")
async def provider_server() -> AsyncIterator[FakeProviderServer]:
    """One fake provider server for the module."""
    async with FakeProviderServer() as server:
        yield server


@pytest.fixture
def fake(provider_server: FakeProviderServer) -> FakeProviderServer:
    """The fake server with no scripts, files or recorded requests left from other tests."""
    provider_server.reset()
    return provider_server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with new_client() as client:
        yield client


def retries_counted(provider: str, kind: str, reason: str) -> float:
    """runner_provider_retries for these labels, in this process."""
    labels = {"provider": provider, "kind": kind, "reason": reason}
    return REGISTRY.get_sample_value("runner_provider_retries_total", labels) or 0.0


def provider_name(kind: Kind) -> str:
    return "elevenlabs" if kind.route == "tts" else "openai"


@by_kind
async def test_429_and_5xx_are_tried_again_inside_the_call(
    kind: Kind, http: httpx.AsyncClient, fake: FakeProviderServer
) -> None:
    """A 429 (its Retry-After waited out) then a 503: the third try's answer is the call's; both counted."""
    fake.script(kind.route, [kind.error(429, "slow down", headers={"Retry-After": "0.3"}), kind.error(503, "busy")])
    labels = (provider_name(kind), KIND_OF_ROUTE[kind.route])
    before = [retries_counted(*labels, reason) for reason in ("rate_limited", "server_error")]
    started = time.monotonic()
    assert await kind.call(kind.build(http, fake, FAST, QUICK)) is not None
    assert time.monotonic() - started >= 0.3
    assert len(fake.requests_to(kind.route)) == 3
    after = [retries_counted(*labels, reason) for reason in ("rate_limited", "server_error")]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1]


@by_kind
async def test_timeout_and_dropped_connection_are_tried_again(
    kind: Kind, http: httpx.AsyncClient, fake: FakeProviderServer
) -> None:
    """No answer within the read timeout, then a body cut off by a dropped connection: both tried again."""
    fake.script(kind.route, [Reply.slow(2.0), Reply.dropped(b"x" * 4000, 100)])
    assert await kind.call(kind.build(http, fake, FAST, QUICK)) is not None
    assert len(fake.requests_to(kind.route)) == 3


def chat_reply_bytes() -> bytes:
    return orjson.dumps(chat_completion(story_json(3)))


@pytest.mark.parametrize(
    "broken",
    [
        Reply.raw(chat_reply_bytes()[:80]),
        Reply.raw(b"<html><body>502 Bad Gateway</body></html>", content_type="text/html"),
        Reply.raw(b""),
        Reply.dropped(chat_reply_bytes(), 50),
    ],
    ids=["cut-off", "html-page", "empty", "dropped"],
)
async def test_broken_json_bodies_are_tried_again(
    broken: Reply, http: httpx.AsyncClient, fake: FakeProviderServer
) -> None:
    """A 200 whose JSON is cut off, an HTML page, empty or dropped mid-body is asked for again."""
    fake.script("chat", [broken])
    fake.script("images", [broken])
    text = OpenAITextProvider(http, base_url=fake.openai_url, api_key=KEY, model="m", timeout=FAST, retry=QUICK)
    image = OpenAIImageProvider(http, base_url=fake.openai_url, api_key=KEY, model="i", timeout=FAST, retry=QUICK)
    assert len((await text.write_story(title="", prompt="a fox", scene_count=3)).scenes) == 3
    assert (await image.generate_image(prompt="a fox", seed=1)).extension == "png"
    assert (len(fake.requests_to("chat")), len(fake.requests_to("images"))) == (2, 2)


@by_kind
async def test_gives_up_after_its_retries_saying_how_many_tries(
    kind: Kind, http: httpx.AsyncClient, fake: FakeProviderServer
) -> None:
    """Three 5xx: the last error is raised, still transient for the runner, with the tries it took."""
    fake.script(kind.route, [kind.error(500, "down"), kind.error(502, "down"), kind.error(503, "still down")])
    with pytest.raises(ProviderServerError) as caught:
        await kind.call(kind.build(http, fake, FAST, QUICK))
    assert isinstance(caught.value, TransientError)
    assert caught.value.status == 503
    assert "still down" in str(caught.value)
    assert "[gave up after 3 tries in " in str(caught.value)
    assert len(fake.requests_to(kind.route)) == 3
    assert_no_key(caught.value)


@by_kind
async def test_client_errors_are_not_tried_again(kind: Kind, http: httpx.AsyncClient, fake: FakeProviderServer) -> None:
    """401: the key is wrong, and another try cannot fix that; one request, no note about tries."""
    fake.script(kind.route, [kind.error(401, "Invalid API key")])
    with pytest.raises(ProviderRejected) as caught:
        await kind.call(kind.build(http, fake, FAST, QUICK))
    assert "gave up" not in str(caught.value)
    assert len(fake.requests_to(kind.route)) == 1


async def test_retry_after_past_the_budget_is_left_to_the_runner(
    http: httpx.AsyncClient, fake: FakeProviderServer
) -> None:
    """A Retry-After longer than the call's budget is not waited out inside the job: raised at once, with
    the hint for the runner's retry policy."""
    fake.script("chat", [Reply.openai_error(429, "wait", headers={"Retry-After": "30"})])
    short = CallRetryPolicy(retries=2, budget_s=5, first_s=0.01)
    text = OpenAITextProvider(http, base_url=fake.openai_url, api_key=KEY, model="m", timeout=FAST, retry=short)
    with pytest.raises(ProviderRateLimited) as caught:
        await text.write_story(title="", prompt="a fox", scene_count=3)
    assert caught.value.retry_after_s == 30
    assert len(fake.requests_to("chat")) == 1


async def test_a_body_of_the_wrong_kind_is_not_tried_again(http: httpx.AsyncClient, fake: FakeProviderServer) -> None:
    """A whole, valid answer that is not what was asked for (JSON instead of MP3) fails at once."""
    fake.script("tts", [Reply(json={"ok": True})])
    speech = ElevenLabsSpeechProvider(
        http, base_url=fake.base_url, api_key=KEY, voice_id="v", model_id="m", timeout=FAST, retry=QUICK
    )
    with pytest.raises(ProviderBadResponse, match="not MP3 audio") as caught:
        await speech.synthesize(text="Hello.")
    assert not isinstance(caught.value, ProviderBrokenBody)
    assert len(fake.requests_to("tts")) == 1


# --- slots ------------------------------------------------------------------------------------------


def slotted_speech(
    http: httpx.AsyncClient, fake: FakeProviderServer, holder: SlotHolder, pool: SlotPool, **retry: Any
) -> SlottedSpeech:
    policy = CallRetryPolicy(**{"retries": 2, "budget_s": 10, "first_s": 0.01, "max_s": 0.05, **retry})
    speech = ElevenLabsSpeechProvider(
        http, base_url=fake.base_url, api_key=KEY, voice_id="v", model_id="m", timeout=FAST, retry=policy
    )
    return SlottedSpeech(speech, holder, pool)


async def test_a_call_waiting_to_retry_gives_its_slot_back(
    resources: Resources, settings: Settings, http: httpx.AsyncClient, fake: FakeProviderServer
) -> None:
    """Pool of one: while one call waits out a 429's Retry-After, another call takes the slot and finishes;
    then the first takes a slot again for its retry."""
    pool = SlotPool(f"test-retry-wait-{settings.queue_name}", concurrency=1, max_wait_s=10)
    fake.script("tts", [Reply.elevenlabs_error(429, "too many requests", headers={"Retry-After": "0.6"})])
    async with SlotHolder(resources.redis, prefix=settings.slot_prefix) as holder:
        speech = slotted_speech(http, fake, holder, pool)
        waiting = asyncio.create_task(speech.synthesize(text="first"))

        async def first_sent() -> bool:
            return bool(fake.requests_to("tts"))

        await wait_for(first_sent, timeout=5, every=0.01)
        await asyncio.sleep(0.05)  # the 429 is back; the first call is waiting
        async with asyncio.timeout(0.5):  # well within the first call's wait
            assert (await speech.synthesize(text="second")).data == FAKE_MP3
        assert not waiting.done()
        assert (await asyncio.wait_for(waiting, 5)).data == FAKE_MP3
    bodies = [r.json["text"] for r in fake.requests_to("tts")]
    assert bodies == ["first", "second", "first"]
    assert fake.max_in_flight == 1


async def test_retries_never_exceed_the_pools_concurrency(
    resources: Resources, settings: Settings, http: httpx.AsyncClient, fake: FakeProviderServer
) -> None:
    """Eight calls at once on a pool of two, a third of their tries failing: all succeed, at most two in flight."""
    pool = SlotPool(f"test-retry-conc-{settings.queue_name}", concurrency=2, max_wait_s=10)
    mp3 = Reply(body=FAKE_MP3, content_type="audio/mpeg")
    fake.script(
        "tts", [Reply.slow(0.03, Reply.elevenlabs_error(500, "boom") if n % 3 == 1 else mp3) for n in range(24)]
    )
    async with SlotHolder(resources.redis, prefix=settings.slot_prefix) as holder:
        speech = slotted_speech(http, fake, holder, pool, retries=5)
        results = await asyncio.wait_for(asyncio.gather(*(speech.synthesize(text=f"call {n}") for n in range(8))), 20)
    assert [m.data for m in results] == [FAKE_MP3] * 8
    assert len(fake.requests_to("tts")) > 8  # some were retries
    assert fake.max_in_flight == 2
