"""HTTP providers against a real local server speaking their wire formats: results, retries, errors, limits.

These tests look at one request's translation, so the providers are built without in-call retries
(NO_RETRY); tests/integration/test_provider_retries.py covers the retries.
"""

from __future__ import annotations

import base64
import email.utils
import pickle
import socket
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from jobs.providers.base import Media, SceneDraft, StoryDraft, VisualProfile
from jobs.providers.elevenlabs import ElevenLabsSpeechProvider
from jobs.providers.http import (
    MAX_JSON_BYTES,
    ProviderBadResponse,
    ProviderBrokenBody,
    ProviderConnectionError,
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderServerError,
    ProviderTimeout,
    ProviderTransientError,
)
from jobs.providers.openai import OpenAIImageProvider, OpenAISpeechProvider, OpenAITextProvider
from jobs.providers.retries import CallRetryPolicy
from runner.errors import PermanentError, TransientError
from runner.http import new_client
from runner.retry import RetryPolicy
from tests.fakes.provider_server import FAKE_MP3, FakeProviderServer, Reply, chat_completion, story_json

KEY = "sk-test-SECRET-0123456789abcdef"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 64 + b"\xff\xd9"
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 32
FAST = httpx.Timeout(0.3, connect=1.0)
SMALL_MEDIA = 64 * 1024
NO_RETRY = CallRetryPolicy(retries=0)


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
    """The one shared client, as a worker process would hold it."""
    async with new_client() as client:
        yield client


# --- one table for the behaviour every provider shares ----------------------------------------------


@dataclass(frozen=True)
class Kind:
    """How to build and call one provider against the fake, and how its errors look on the wire."""

    name: str
    route: str
    build: Callable[[httpx.AsyncClient, FakeProviderServer, httpx.Timeout, CallRetryPolicy], Any]
    call: Callable[[Any], Awaitable[Any]]
    error: Callable[..., Reply]


KINDS = [
    Kind(
        "openai-text",
        "chat",
        lambda http, fake, t, r: OpenAITextProvider(
            http, base_url=fake.openai_url, api_key=KEY, model="m", timeout=t, retry=r
        ),
        lambda p: p.write_story(title="", prompt="a fox", scene_count=3),
        Reply.openai_error,
    ),
    Kind(
        "openai-image",
        "images",
        lambda http, fake, t, r: OpenAIImageProvider(
            http, base_url=fake.openai_url, api_key=KEY, model="img", timeout=t, max_bytes=SMALL_MEDIA, retry=r
        ),
        lambda p: p.generate_image(prompt="a fox", seed=7),
        Reply.openai_error,
    ),
    Kind(
        "openai-speech",
        "speech",
        lambda http, fake, t, r: OpenAISpeechProvider(
            http,
            base_url=fake.openai_url,
            api_key=KEY,
            model="tts-1",
            voice="alloy",
            timeout=t,
            max_bytes=SMALL_MEDIA,
            retry=r,
        ),
        lambda p: p.synthesize(text="Hello there."),
        Reply.openai_error,
    ),
    Kind(
        "elevenlabs",
        "tts",
        lambda http, fake, t, r: ElevenLabsSpeechProvider(
            http,
            base_url=fake.base_url,
            api_key=KEY,
            voice_id="v1",
            model_id="m1",
            timeout=t,
            max_bytes=SMALL_MEDIA,
            retry=r,
        ),
        lambda p: p.synthesize(text="Hello there."),
        Reply.elevenlabs_error,
    ),
]
by_kind = pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])


def assert_no_key(exc: BaseException) -> None:
    """The API key is in no message, repr or formatted traceback (including chained causes)."""
    shown = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    assert all(KEY not in text for text in shown), shown


async def failure(kind: Kind, http: httpx.AsyncClient, fake: FakeProviderServer, *replies: Reply) -> ProviderError:
    """Script `replies` for the kind's route, call the provider, and return the ProviderError it raised."""
    fake.script(kind.route, replies)
    with pytest.raises(ProviderError) as caught:
        await kind.call(kind.build(http, fake, FAST, NO_RETRY))
    assert_no_key(caught.value)
    return caught.value


@by_kind
async def test_429_is_rate_limited_with_retry_after(
    kind: Kind, http: httpx.AsyncClient, fake: FakeProviderServer
) -> None:
    """429 -> ProviderRateLimited, transient, carrying Retry-After seconds that the retry policy honours."""
    exc = await failure(kind, http, fake, kind.error(429, "Rate limit reached", headers={"Retry-After": "7"}))
    assert isinstance(exc, ProviderRateLimited)
    assert isinstance(exc, TransientError)
    assert exc.retry_after_s == 7.0
    assert exc.status == 429
    assert "Rate limit reached" in str(exc)
    assert RetryPolicy(max_tries=3).decide(exc, 1) == 7.0


async def test_provider_errors_survive_pickling(http: httpx.AsyncClient, fake: FakeProviderServer) -> None:
    """Errors keep their type, message and fields through pickle (keyword-only arguments included)."""
    for reply in (Reply.openai_error(429, "later", headers={"Retry-After": "3"}), Reply.openai_error(401, "no")):
        exc = await failure(KINDS[0], http, fake, reply)
        copy = pickle.loads(pickle.dumps(exc))
        assert type(copy) is type(exc)
        assert (str(copy), copy.provider, copy.status) == (str(exc), "openai", exc.status)
        assert getattr(copy, "retry_after_s", None) == getattr(exc, "retry_after_s", None)


async def test_retry_after_as_http_date(http: httpx.AsyncClient, fake: FakeProviderServer) -> None:
    """A Retry-After date becomes the seconds until then."""
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    exc = await failure(KINDS[0], http, fake, Reply.openai_error(429, "later", headers={"Retry-After": when}))
    assert isinstance(exc, ProviderRateLimited)
    assert exc.retry_after_s is not None and 25 <= exc.retry_after_s <= 31


@by_kind
@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_transient(
    kind: Kind, status: int, http: httpx.AsyncClient, fake: FakeProviderServer
) -> None:
    """5xx -> ProviderServerError, retried by the runner."""
    exc = await failure(kind, http, fake, kind.error(status, "upstream overloaded"))
    assert isinstance(exc, ProviderServerError)
    assert isinstance(exc, ProviderTransientError)
    assert isinstance(exc, TransientError)
    assert exc.status == status
    assert "upstream overloaded" in str(exc)


@by_kind
@pytest.mark.parametrize("status", [400, 401])
async def test_client_errors_are_permanent_with_provider_text_and_no_key(
    kind: Kind, status: int, http: httpx.AsyncClient, fake: FakeProviderServer
) -> None:
    """400/401 -> ProviderRejected (permanent); the provider's words are shown, the key is not, even when echoed."""
    exc = await failure(kind, http, fake, kind.error(status, f"Incorrect API key provided: {KEY}. Find yours"))
    assert isinstance(exc, ProviderRejected)
    assert isinstance(exc, PermanentError)
    assert not isinstance(exc, TransientError)
    assert "Incorrect API key provided: [redacted]. Find yours" in str(exc)
    assert f"HTTP {status}" in str(exc)
    assert RetryPolicy(max_tries=3).decide(exc, 1) is None


async def test_elevenlabs_error_detail_is_surfaced(http: httpx.AsyncClient, fake: FakeProviderServer) -> None:
    """ElevenLabs' {"detail": {"status", "message"}} shows as "message (status)"."""
    reply = Reply.elevenlabs_error(401, "You have exceeded your quota", code="quota_exceeded")
    exc = await failure(KINDS[3], http, fake, reply)
    assert "You have exceeded your quota (quota_exceeded)" in str(exc)
    assert "check that it is set" in str(exc)


async def test_long_error_body_is_cut_to_a_snippet(http: httpx.AsyncClient, fake: FakeProviderServer) -> None:
    """At most 300 characters of what the provider said make it into the message."""
    exc = await failure(KINDS[0], http, fake, Reply.raw(b"<html>" + b"x" * 5000, content_type="text/html"))
    assert isinstance(exc, ProviderBrokenBody)  # a 200 that is not JSON
    assert "x" * 300 not in str(exc)
    exc = await failure(KINDS[0], http, fake, Reply(status=400, body=b"y" * 5000, content_type="text/plain"))
    assert "y" * 299 + "…" in str(exc)
    assert "y" * 300 not in str(exc)


@by_kind
async def test_slow_reply_times_out_as_transient(kind: Kind, http: httpx.AsyncClient, fake: FakeProviderServer) -> None:
    """No answer within the read timeout -> ProviderTimeout, transient."""
    started = time.monotonic()
    exc = await failure(kind, http, fake, Reply.slow(3.0))
    assert isinstance(exc, ProviderTimeout)
    assert isinstance(exc, TransientError)
    assert time.monotonic() - started < 1.5


@by_kind
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_oversized_body_is_refused(
    kind: Kind, chunked: bool, http: httpx.AsyncClient, fake: FakeProviderServer
) -> None:
    """A body past the size cap stops the read -> ProviderBadResponse (permanent), declared or streamed."""
    size = MAX_JSON_BYTES + 1 if kind.route == "chat" else 4 * SMALL_MEDIA
    exc = await failure(kind, http, fake, Reply.raw(b"{" + b" " * size, chunked=chunked))
    assert isinstance(exc, ProviderBadResponse)
    assert isinstance(exc, PermanentError)
    assert "cap" in str(exc)


@by_kind
async def test_connection_refused_is_transient(kind: Kind, http: httpx.AsyncClient, fake: FakeProviderServer) -> None:
    """Nobody listening -> ProviderConnectionError, transient."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    closed = FakeProviderServer()
    closed.port = port  # a port nobody listens on: its URLs point there
    with pytest.raises(ProviderConnectionError) as caught:
        await kind.call(kind.build(http, closed, FAST, NO_RETRY))
    assert isinstance(caught.value, TransientError)
    assert_no_key(caught.value)


# --- text -------------------------------------------------------------------------------------------


def text_provider(http: httpx.AsyncClient, fake: FakeProviderServer, **options: Any) -> OpenAITextProvider:
    options.setdefault("retry", NO_RETRY)
    return OpenAITextProvider(http, base_url=fake.openai_url + "/", api_key=KEY, model="story-model", **options)


async def test_write_story_happy_path(http: httpx.AsyncClient, fake: FakeProviderServer) -> None:
    """A story with the requested scenes; key as Bearer, model, JSON mode and scene count on the wire."""
    story = await text_provider(http, fake).write_story(title="", prompt="A fox with a lantern", scene_count=4)
    assert len(story.scenes) == 4
    assert story.title == "The Lantern Fox"
    (sent,) = fake.requests_to("chat")
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.json["model"] == "story-model"
    assert sent.json["response_format"] == {"type": "json_object"}
    roles = [m["role"] for m in sent.json["messages"]]
    assert roles == ["system", "user"]
    assert "exactly 4 scenes" in sent.json["messages"][0]["content"]
    assert "A fox with a lantern" in sent.json["messages"][1]["content"]


async def test_write_story_keeps_given_title_and_can_skip_json_mode(
    http: httpx.AsyncClient, fake: FakeProviderServer
) -> None:
    """A title from the user wins over the model's; json_mode=False leaves response_format out."""
    provider = text_provider(http, fake, json_mode=False)
    story = await provider.write_story(title="  Fox   Night ", prompt="a fox", scene_count=2)
    assert story.title == "Fox Night"
    assert "response_format" not in fake.requests_to("chat")[0].json


async def test_write_story_repairs_fenced_truncated_reply(http: httpx.AsyncClient, fake: FakeProviderServer) -> None:
    """A fenced reply cut off inside its last scene keeps the whole scenes, with no second request."""
    full = story_json(3)
    cut = full[: full.index("part 3") + 4]
    fake.script("chat", [Reply.chat(f"Here it is:\n```json\n{cut}", finish_reason="length")])
    story = await text_provider(http, fake).write_story(title="", prompt="a fox", scene_count=3)
    assert [s.title for s in story.scenes] == ["Scene 1", "Scene 2"]
    assert len(fake.requests_to("chat")) == 1


async def test_write_story_retries_once_with_the_validation_error(
    http: httpx.AsyncClient, fake: FakeProviderServer
) -> None:
    """A reply that fails validation is sent back with the reason; a good second reply is used."""
    broken = '{"title": "T", "scenes": [{"title": "A", "image_prompt": "p"}]}'
    fake.script("chat", [Reply.chat(broken), Reply.chat(story_json(3))])
    story = await text_provider(http, fake).write_story(title="", prompt="a fox", scene_count=3)
    assert len(story.scenes) == 3
    first, second = fake.requests_to("chat")
    messages = second.json["messages"]
    assert messages[:2] == first.json["messages"]
    assert messages[2] == {"role": "assistant", "content": broken}
    assert messages[3]["role"] == "user"
    assert "scenes.0.text: Field required" in messages[3]["content"]
    assert "exactly 3 scenes" in messages[3]["content"]


async def test_write_story_empty_content_gets_the_retry_too(http: httpx.AsyncClient, fake: FakeProviderServer) -> None:
    """A reply with no content (a refusal, a filter) is retried once like broken JSON."""
    fake.script("chat", [Reply.chat(None, finish_reason="content_filter"), Reply.chat(story_json(2))])
    story = await text_provider(http, fake).write_story(title="", prompt="a fox", scene_count=2)
    assert len(story.scenes) == 2


async def test_write_story_broken_twice_is_permanent(http: httpx.AsyncClient, fake: FakeProviderServer) -> None:
    """Two unusable replies -> ProviderBadResponse (permanent) saying why; exactly two requests."""
    fake.script("chat", [Reply.chat("Once upon a time..."), Reply.chat('{"title": "T", "scenes": [')])
    with pytest.raises(ProviderBadResponse) as caught:
        await text_provider(http, fake).write_story(title="", prompt="a fox", scene_count=3)
    assert isinstance(caught.value, PermanentError)
    assert "could not be used" in str(caught.value)
    assert "cut off" in str(caught.value)
    assert len(fake.requests_to("chat")) == 2
    assert fake.pending("chat") == 0


@pytest.mark.parametrize(
    "body",
    [b"{not json", orjson.dumps(chat_completion(story_json(3)))[:60], b""],
    ids=["malformed", "truncated", "empty"],
)
async def test_cut_off_or_non_json_body_is_broken_and_transient(
    body: bytes, http: httpx.AsyncClient, fake: FakeProviderServer
) -> None:
    """A 200 whose body is cut off, empty or not JSON -> ProviderBrokenBody: transient (a garbled transfer
    passes), saying to check the base URL if it keeps happening. The model is not asked again."""
    fake.script("chat", [Reply.raw(body)])
    with pytest.raises(ProviderBrokenBody) as caught:
        await text_provider(http, fake).write_story(title="", prompt="a fox", scene_count=3)
    assert isinstance(caught.value, TransientError)
    assert "check the base URL" in str(caught.value)
    assert len(fake.requests_to("chat")) == 1


@pytest.mark.parametrize("body", [b'{"choices": []}', b"[1, 2]"], ids=["no-choices", "not-an-object"])
async def test_json_that_is_no_chat_completion_is_a_bad_response(
    body: bytes, http: httpx.AsyncClient, fake: FakeProviderServer
) -> None:
    """A 200 with whole JSON that is not a chat completion -> ProviderBadResponse (permanent) at once."""
    fake.script("chat", [Reply.raw(body)])
    with pytest.raises(ProviderBadResponse) as caught:
        await text_provider(http, fake).write_story(title="", prompt="a fox", scene_count=3)
    assert "check the base URL" in str(caught.value)
    assert len(fake.requests_to("chat")) == 1


async def test_error_inside_a_200_is_classified(http: httpx.AsyncClient, fake: FakeProviderServer) -> None:
    """OpenRouter-style {"error": {"code": 502}} with HTTP 200 -> ProviderServerError (transient)."""
    fake.script("chat", [Reply(json={"error": {"code": 502, "message": "upstream model crashed"}})])
    with pytest.raises(ProviderServerError, match="upstream model crashed"):
        await text_provider(http, fake).write_story(title="", prompt="a fox", scene_count=3)


async def test_visual_profile_and_scene_prompt(http: httpx.AsyncClient, fake: FakeProviderServer) -> None:
    """The profile comes from JSON mode; the scene prompt is plain text, trimmed."""
    provider = text_provider(http, fake)
    story = StoryDraft(title="T", scenes=[SceneDraft(title="A", text="Once.", image_prompt="a fox at night")])
    profile = await provider.visual_profile(story=story)
    assert profile.base_style.startswith("watercolour")
    fake.script("chat", [Reply.chat('  "Prompt: A red fox under the moon, watercolour."  ')])
    prompt = await provider.scene_image_prompt(scene=story.scenes[0], profile=profile)
    assert prompt == "A red fox under the moon, watercolour."
    profile_request, prompt_request = fake.requests_to("chat")
    assert profile_request.json["response_format"] == {"type": "json_object"}
    assert "base_style" in profile_request.json["messages"][0]["content"]
    assert "response_format" not in prompt_request.json
    assert "a fox at night" in prompt_request.json["messages"][1]["content"]


async def test_scene_prompt_is_capped_and_never_empty(http: httpx.AsyncClient, fake: FakeProviderServer) -> None:
    """A long prompt is cut to 2000 characters; an empty one falls back to the profile and the scene."""
    provider = text_provider(http, fake)
    scene = SceneDraft(title="A", text="Once.", image_prompt="a fox at night")
    profile = VisualProfile(characters="a fox", setting="woods", base_style="ink")
    fake.script("chat", [Reply.chat("word " * 1000), Reply.chat("   ")])
    assert len(await provider.scene_image_prompt(scene=scene, profile=profile)) <= 2000
    assert await provider.scene_image_prompt(scene=scene, profile=profile) == "ink. a fox. woods. a fox at night"


async def test_visual_profile_retries_once_with_the_validation_error(
    http: httpx.AsyncClient, fake: FakeProviderServer
) -> None:
    """A profile reply that fails validation is sent back with the reason; a good second reply is used."""
    broken = '{"characters": "a fox", "setting": ""}'
    fake.script("chat", [Reply.chat(broken)])  # then the default: a valid profile
    story = StoryDraft(title="T", scenes=[SceneDraft(title="A", text="Once.", image_prompt="p")])
    profile = await text_provider(http, fake).visual_profile(story=story)
    assert profile.base_style.startswith("watercolour")
    first, second = fake.requests_to("chat")
    messages = second.json["messages"]
    assert messages[:2] == first.json["messages"]
    assert messages[2] == {"role": "assistant", "content": broken}
    assert "base_style: Field required" in messages[3]["content"]
    assert second.json["response_format"] == {"type": "json_object"}


async def test_visual_profile_broken_twice_is_permanent(http: httpx.AsyncClient, fake: FakeProviderServer) -> None:
    """Two unusable profile replies -> ProviderBadResponse naming the missing field; exactly two requests."""
    fake.script("chat", [Reply.chat('{"characters": "a fox"}'), Reply.chat("I would draw it in ink.")])
    story = StoryDraft(title="T", scenes=[SceneDraft(title="A", text="Once.", image_prompt="p")])
    with pytest.raises(ProviderBadResponse, match="visual profile could not be used") as caught:
        await text_provider(http, fake).visual_profile(story=story)
    assert "no '{'" in str(caught.value)
    assert len(fake.requests_to("chat")) == 2


# --- image ------------------------------------------------------------------------------------------


def image_provider(http: httpx.AsyncClient, fake: FakeProviderServer, **options: Any) -> OpenAIImageProvider:
    options.setdefault("retry", NO_RETRY)
    return OpenAIImageProvider(http, base_url=fake.openai_url, api_key=KEY, model="flux", **options)


async def test_image_b64_happy_path(http: httpx.AsyncClient, fake: FakeProviderServer) -> None:
    """b64_json decodes to a PNG; model, prompt, size, seed and the key are on the wire."""
    media = await image_provider(http, fake, size="512x512").generate_image(prompt="a fox", seed=42)
    assert (media.content_type, media.extension) == ("image/png", "png")
    assert media.data.startswith(b"\x89PNG\r\n\x1a\n")
    (sent,) = fake.requests_to("images")
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.json == {
        "model": "flux", "prompt": "a fox", "n": 1, "size": "512x512", "response_format": "b64_json", "seed": 42,
    }  # fmt: skip


async def test_image_without_seed_for_openai(http: httpx.AsyncClient, fake: FakeProviderServer) -> None:
    """send_seed=False leaves the seed out (OpenAI's own API rejects it)."""
    await image_provider(http, fake, send_seed=False).generate_image(prompt="a fox", seed=42)
    assert "seed" not in fake.requests_to("images")[0].json


@pytest.mark.parametrize(
    ("data", "content_type", "extension"),
    [(PNG, "image/png", "png"), (JPEG, "image/jpeg", "jpg"), (WEBP, "image/webp", "webp")],
    ids=["png", "jpeg", "webp"],
)
async def test_image_via_url_is_downloaded_without_the_key(
    data: bytes, content_type: str, extension: str, http: httpx.AsyncClient, fake: FakeProviderServer
) -> None:
    """data[0].url is fetched; the type comes from magic bytes (not headers); the key stays with the API."""
    url = fake.add_file(f"out.{extension}", data, content_type="application/octet-stream")
    fake.script("images", [Reply.image_url(url + "?sig=abc")])
    media = await image_provider(http, fake).generate_image(prompt="a fox", seed=1)
    assert media == Media(data=data, content_type=content_type, extension=extension)
    (download,) = fake.requests_to("files")
    assert download.method == "GET"
    assert "authorization" not in download.headers


async def test_image_download_is_capped_and_checked(http: httpx.AsyncClient, fake: FakeProviderServer) -> None:
    """An oversized download, a missing file and a non-image are refused with clear reasons."""
    provider = image_provider(http, fake, max_bytes=1024)
    big = fake.add_file("big.png", PNG + b"\x00" * 4096)
    fake.script("images", [Reply.image_url(big), Reply.image_url(f"{fake.base_url}/files/missing.png")])
    with pytest.raises(ProviderBadResponse, match="1,024-byte cap"):
        await provider.generate_image(prompt="a fox", seed=1)
    with pytest.raises(ProviderRejected, match="HTTP 404"):
        await provider.generate_image(prompt="a fox", seed=1)
    fake.script("images", [Reply.image_b64(b"GIF89a not supported"), Reply(json={"data": [{}]})])
    with pytest.raises(ProviderBadResponse, match="not a PNG, JPEG or WEBP"):
        await provider.generate_image(prompt="a fox", seed=1)
    with pytest.raises(ProviderBadResponse, match="neither 'b64_json' nor 'url'"):
        await provider.generate_image(prompt="a fox", seed=1)


async def test_image_bad_base64_is_a_bad_response(http: httpx.AsyncClient, fake: FakeProviderServer) -> None:
    fake.script("images", [Reply(json={"data": [{"b64_json": "not base64!!"}]})])
    with pytest.raises(ProviderBadResponse, match="not valid base64"):
        await image_provider(http, fake).generate_image(prompt="a fox", seed=1)


# --- speech -----------------------------------------------------------------------------------------


async def test_openai_speech_happy_path(http: httpx.AsyncClient, fake: FakeProviderServer) -> None:
    """MP3 bytes come back as audio/mpeg; model, voice and input are on the wire."""
    provider = OpenAISpeechProvider(http, base_url=fake.openai_url, api_key=KEY, model="tts-1", voice="alloy")
    media = await provider.synthesize(text="Once upon a time.")
    assert media == Media(data=FAKE_MP3, content_type="audio/mpeg", extension="mp3")
    (sent,) = fake.requests_to("speech")
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.json == {"model": "tts-1", "input": "Once upon a time.", "voice": "alloy", "response_format": "mp3"}


async def test_elevenlabs_happy_path(http: httpx.AsyncClient, fake: FakeProviderServer) -> None:
    """The key goes in xi-api-key (not Authorization); voice in the path; text and model_id in the body."""
    provider = ElevenLabsSpeechProvider(
        http, base_url=fake.base_url, api_key=KEY, voice_id="21m00Tcm4TlvDq8ikWrM", model_id="eleven_multilingual_v2"
    )
    media = await provider.synthesize(text="Once upon a time.")
    assert media == Media(data=FAKE_MP3, content_type="audio/mpeg", extension="mp3")
    (sent,) = fake.requests_to("tts")
    assert sent.path == "/v1/text-to-speech/21m00Tcm4TlvDq8ikWrM"
    assert sent.headers["xi-api-key"] == KEY
    assert "authorization" not in sent.headers
    assert sent.headers["accept"] == "audio/mpeg"
    assert sent.json == {"text": "Once upon a time.", "model_id": "eleven_multilingual_v2"}
    assert KEY not in repr(provider.api_key)


@pytest.mark.parametrize("kind", KINDS[2:], ids=[k.name for k in KINDS[2:]])
async def test_speech_that_is_not_audio_is_refused(
    kind: Kind, http: httpx.AsyncClient, fake: FakeProviderServer
) -> None:
    """A 200 carrying JSON instead of MP3 -> ProviderBadResponse."""
    exc = await failure(kind, http, fake, Reply(json={"ok": True}))
    assert isinstance(exc, ProviderBadResponse)
    assert "not MP3 audio" in str(exc)


async def test_constructors_refuse_empty_settings(http: httpx.AsyncClient) -> None:
    """Empty model, voice or base URL is a configuration mistake caught at construction."""
    with pytest.raises(ValueError, match="model must be a non-empty string"):
        OpenAITextProvider(http, base_url="http://x/v1", api_key=None, model=" ")
    with pytest.raises(ValueError, match="base_url must be a non-empty string"):
        OpenAISpeechProvider(http, base_url="", api_key=None, model="m", voice="v")
    with pytest.raises(ValueError, match="voice_id must be a non-empty string"):
        ElevenLabsSpeechProvider(http, api_key=KEY, voice_id="", model_id="m")
