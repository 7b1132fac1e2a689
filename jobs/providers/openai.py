"""OpenAI-compatible providers: chat completions, image generations and speech over plain HTTP.

The same wire format is spoken by OpenAI, OpenRouter, Together, vLLM and Ollama, so `base_url` (up to and
including `/v1`) picks the service. Every provider borrows the worker's one `httpx.AsyncClient` and goes
through `jobs.providers.http.request`, so timeouts, size caps and errors are handled in one place (see its
error tree), and through a CallRetryPolicy, so 429, 5xx, timeouts, dropped connections and cut-off bodies
are tried again inside the call (see jobs.providers.retries). Model output that cannot be used raises
ProviderBadResponse (permanent); the story and the visual profile get one second chance first: the
validation error is sent back to the model, which is asked to correct its JSON.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import structlog
from pydantic import SecretStr

from jobs.providers.base import MAX_SCENES, Media, SceneDraft, StoryDraft, VisualProfile
from jobs.providers.http import (
    DEFAULT_TIMEOUT,
    MAX_JSON_BYTES,
    MAX_MEDIA_BYTES,
    ProviderBadResponse,
    ProviderRateLimited,
    ProviderResponse,
    ProviderServerError,
    bearer,
    image_media,
    mp3_media,
    request,
    secret,
    snippet,
)
from jobs.providers.retries import DEFAULT_CALL_RETRY, CallRetryPolicy
from jobs.providers.story_json import StoryJsonError, parse_story, parse_visual_profile

__all__ = ["OpenAIImageProvider", "OpenAISpeechProvider", "OpenAITextProvider"]

T = TypeVar("T")
log = structlog.get_logger("jobs.providers.openai")

STORY_SYSTEM = """You write short, gentle illustrated stories for children.
Reply with one JSON object and nothing else, in exactly this shape:
{"title": "the story's title", "scenes": [{"title": "the scene's title", "text": "the scene's story text, \
3 to 6 sentences", "image_prompt": "one vivid illustration of this scene: who, where, doing what"}]}
Rules: exactly {scene_count} scenes, in story order; every field is a non-empty string; a title has at most \
200 characters, a text at most 4000, an image_prompt at most 2000."""

PROFILE_SYSTEM = """You are the art director of a picture book. Decide what must look the same in every \
illustration of the story below. Reply with one JSON object and nothing else, in exactly this shape:
{"characters": "each character's look: species or age, colours, clothes, features", \
"setting": "the world's look: places, time of day, season", "base_style": "the art style, medium and palette"}
Every field is one non-empty string; characters and setting at most 2000 characters, base_style at most 1000."""

SCENE_PROMPT_SYSTEM = """You write prompts for a text-to-image model. Combine the book's visual profile with \
one scene into a single prompt of at most 120 words: the characters exactly as described, the setting, the art \
style, and the scene's moment. Reply with the prompt only: no preface, no quotes, no markdown."""

RETRY_PROMPT = """Your reply could not be used: {reason}.
Reply again with only the corrected JSON object, in the required shape, with exactly {scene_count} scenes."""

PROFILE_RETRY_PROMPT = """Your reply could not be used: {reason}.
Reply again with only the corrected JSON object: characters, setting and base_style, each one non-empty string."""

MAX_IMAGE_PROMPT = 2000
_QUOTES = "\"'\u201c\u201d\u2018\u2019"  # straight and curly quotes a model may wrap its prompt in
_STORY_CONTEXT_CHARS = 12_000  # how much of a story the profile request shows the model
_PREVIOUS_REPLY_CHARS = 16_000  # how much of a broken reply goes back with the retry


class OpenAITextProvider:
    """Writes the story, its visual profile and its image prompts with an OpenAI-compatible chat model."""

    name = "openai"

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str,
        api_key: str | SecretStr | None,
        model: str,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        json_mode: bool = True,
        retry: CallRetryPolicy = DEFAULT_CALL_RETRY,
    ) -> None:
        self.client = client
        self.url = f"{_base(base_url)}/chat/completions"
        self.api_key = secret(api_key)
        self.model = _required("model", model)
        self.timeout = timeout
        self.json_mode = json_mode  # send response_format json_object; turn off for servers that reject it
        self.retry = retry

    async def write_story(self, *, title: str, prompt: str, scene_count: int) -> StoryDraft:
        if not 1 <= scene_count <= MAX_SCENES:
            raise ValueError(f"scene_count must be between 1 and {MAX_SCENES}, got {scene_count}")
        given = " ".join(title.split())[:200].strip()
        messages = [
            _message("system", STORY_SYSTEM.replace("{scene_count}", str(scene_count))),
            _message("user", _story_request(title, prompt, scene_count)),
        ]
        story = await self._json_reply(
            messages,
            "story",
            lambda content: parse_story(content, max_scenes=scene_count, title=given),
            RETRY_PROMPT.replace("{scene_count}", str(scene_count)),
        )
        return StoryDraft(title=given, scenes=story.scenes) if given else story

    async def visual_profile(self, *, story: StoryDraft) -> VisualProfile:
        scenes = "\n\n".join(f"{scene.title}\n{scene.text}" for scene in story.scenes)
        messages = [
            _message("system", PROFILE_SYSTEM),
            _message("user", f"Title: {story.title}\n\n{scenes}"[:_STORY_CONTEXT_CHARS]),
        ]
        return await self._json_reply(messages, "visual profile", parse_visual_profile, PROFILE_RETRY_PROMPT)

    async def scene_image_prompt(self, *, scene: SceneDraft, profile: VisualProfile) -> str:
        messages = [
            _message("system", SCENE_PROMPT_SYSTEM),
            _message(
                "user",
                f"Characters: {profile.characters}\nSetting: {profile.setting}\nStyle: {profile.base_style}\n"
                f"Scene: {scene.title}. {scene.image_prompt}",
            ),
        ]
        _, content = await self._chat(messages, json=False)
        cleaned = clean_image_prompt(content)
        if cleaned:
            return cleaned
        log.warning("scene_image_prompt_empty", provider=self.name, model=self.model, reply=snippet(content, 120))
        return clean_image_prompt(
            f"{profile.base_style}. {profile.characters}. {profile.setting}. {scene.image_prompt}"
        )

    async def _json_reply(
        self, messages: list[dict[str, str]], what: str, parse: Callable[[str], T], retry_prompt: str
    ) -> T:
        """The model's JSON reply, parsed. An unusable one is sent back once with the reason (the model is
        asked to correct it); a second unusable one is a ProviderBadResponse saying why."""
        _, content = await self._chat(messages, json=True)
        try:
            return parse(content)
        except StoryJsonError as first:
            log.info("model_json_retry", what=what, provider=self.name, model=self.model, reason=str(first))
            messages = [
                *messages,
                _message("assistant", content[:_PREVIOUS_REPLY_CHARS]),
                _message("user", retry_prompt.format(reason=first)),
            ]
        reply, content = await self._chat(messages, json=True)
        return _or_bad(reply, what, lambda: parse(content))

    async def _chat(self, messages: list[dict[str, str]], *, json: bool) -> tuple[ProviderResponse, str]:
        """One chat completion (tried again inside the call if it may pass): the reply and the text of its
        first choice ("" if the model gave none)."""
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        if json and self.json_mode:
            body["response_format"] = {"type": "json_object"}

        async def once() -> tuple[ProviderResponse, str]:
            reply = await request(
                self.client,
                "POST",
                self.url,
                provider=self.name,
                api_key_header=bearer(self.api_key),
                timeouts=self.timeout,
                max_bytes=MAX_JSON_BYTES,
                json=body,
            )
            return reply, chat_content(reply)

        return await self.retry.run(once, provider=self.name, kind="text")


class OpenAIImageProvider:
    """Generates images with an OpenAI-compatible `/images/generations` endpoint (OpenAI, Together, ...)."""

    name = "openai"

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str,
        api_key: str | SecretStr | None,
        model: str,
        size: str = "1024x1024",
        send_seed: bool = True,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        max_bytes: int = MAX_MEDIA_BYTES,
        retry: CallRetryPolicy = DEFAULT_CALL_RETRY,
    ) -> None:
        self.client = client
        self.url = f"{_base(base_url)}/images/generations"
        self.api_key = secret(api_key)
        self.model = _required("model", model)
        self.size = size
        self.send_seed = send_seed  # Together and most open servers take a seed; OpenAI's own API rejects it
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.retry = retry

    async def generate_image(self, *, prompt: str, seed: int) -> Media:
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "n": 1,
            "size": self.size,
            "response_format": "b64_json",
        }
        if self.send_seed:
            body["seed"] = seed

        async def once() -> tuple[ProviderResponse, dict[str, Any]]:
            reply = await request(
                self.client,
                "POST",
                self.url,
                provider=self.name,
                api_key_header=bearer(self.api_key),
                timeouts=self.timeout,
                max_bytes=self.max_bytes * 4 // 3 + 64 * 1024,  # base64 inside JSON
                json=body,
            )
            return reply, _first_image(reply)

        reply, image = await self.retry.run(once, provider=self.name, kind="image")
        if isinstance(image.get("b64_json"), str) and image["b64_json"]:
            return image_media(_b64(image["b64_json"], reply), reply=reply)
        if isinstance(image.get("url"), str) and image["url"]:
            return await self._download(image["url"], reply)
        raise reply.bad("data[0] holding neither 'b64_json' nor 'url'")

    async def _download(self, url: str, reply: ProviderResponse) -> Media:
        """The image behind a result URL. The API key is NOT sent: the URL may be on another host (a CDN)."""
        if url.startswith("data:"):
            return image_media(_b64(url.partition(",")[2], reply), reply=reply)
        downloaded = await self.retry.run(
            lambda: request(
                self.client,
                "GET",
                url,
                provider=self.name,
                api_key_header={},
                timeouts=self.timeout,
                max_bytes=self.max_bytes,
                follow_redirects=True,
            ),
            provider=self.name,
            kind="image",
        )
        return image_media(downloaded.content, reply=downloaded)


class OpenAISpeechProvider:
    """Reads text aloud with an OpenAI-compatible `/audio/speech` endpoint; MP3 out."""

    name = "openai"

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str,
        api_key: str | SecretStr | None,
        model: str,
        voice: str,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        max_bytes: int = MAX_MEDIA_BYTES,
        retry: CallRetryPolicy = DEFAULT_CALL_RETRY,
    ) -> None:
        self.client = client
        self.url = f"{_base(base_url)}/audio/speech"
        self.api_key = secret(api_key)
        self.model = _required("model", model)
        self.voice = _required("voice", voice)
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.retry = retry

    async def synthesize(self, *, text: str) -> Media:
        reply = await self.retry.run(
            lambda: request(
                self.client,
                "POST",
                self.url,
                provider=self.name,
                api_key_header=bearer(self.api_key),
                timeouts=self.timeout,
                max_bytes=self.max_bytes,
                json={"model": self.model, "input": text, "voice": self.voice, "response_format": "mp3"},
                headers={"Accept": "audio/mpeg"},
            ),
            provider=self.name,
            kind="speech",
        )
        return mp3_media(reply.content, reply=reply)


# --- wire format helpers ----------------------------------------------------------------------------


def chat_content(reply: ProviderResponse) -> str:
    """The text of `choices[0].message.content` ("" when the model gave none, e.g. a refusal)."""
    body = reply.json_object()
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _embedded_error(reply, body) or reply.bad("a chat completion without choices[0]")
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}]
        content = "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    if content is not None and not isinstance(content, str):
        raise reply.bad(f"choices[0].message.content of type {type(content).__name__} where text was expected")
    return content or ""


def clean_image_prompt(text: str) -> str:
    """A model's image prompt as one line: fences, wrapping quotes and a "Prompt:" label removed, capped."""
    text = _unquote(" ".join(text.replace("```", " ").split()))
    if text[:7].lower() == "prompt:":
        text = _unquote(text[7:].strip())
    if len(text) <= MAX_IMAGE_PROMPT:
        return text
    cut = text[:MAX_IMAGE_PROMPT].rsplit(" ", 1)[0]
    return (cut or text[:MAX_IMAGE_PROMPT]).rstrip(" ,.;:")


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        return text[1:-1].strip()
    return text


def _embedded_error(reply: ProviderResponse, body: dict[str, Any]) -> Exception | None:
    """An error sent with HTTP 200 (OpenRouter does this when the upstream model fails), classified by its code."""
    error = body.get("error")
    if not isinstance(error, dict):
        return None
    code = error.get("code")
    said = snippet(str(error.get("message") or error))
    head = f"{reply.provider}: {reply.where} answered HTTP {reply.status_code} with an error inside: {said!r}"
    if code == 429:
        return ProviderRateLimited(f"{head}. Rate limited: retry later", provider=reply.provider, status=429)
    if isinstance(code, int) and code >= 500:
        return ProviderServerError(f"{head}. The model failed; retrying may help", provider=reply.provider, status=code)
    return ProviderBadResponse(
        f"{head}. Check the model and parameters", provider=reply.provider, status=reply.status_code
    )


def _first_image(reply: ProviderResponse) -> dict[str, Any]:
    data = reply.json_object().get("data")
    if not isinstance(data, list) or not data or not isinstance(data[0], dict):
        raise reply.bad("an images response without data[0]")
    return data[0]


def _b64(text: str, reply: ProviderResponse) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise reply.bad(f"image data that is not valid base64 ({exc})") from exc


def _or_bad(reply: ProviderResponse, what: str, parse: Callable[[], T]) -> T:
    """parse(), with a StoryJsonError turned into a permanent ProviderBadResponse saying what was wrong."""
    try:
        return parse()
    except StoryJsonError as exc:
        raise ProviderBadResponse(
            f"{reply.provider}: the model's {what} could not be used ({exc}). "
            "Try another model, or one that supports JSON output",
            provider=reply.provider,
            status=reply.status_code,
        ) from exc


def _message(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def _story_request(title: str, prompt: str, scene_count: int) -> str:
    title = " ".join(title.split())
    named = f"Title: {title}" if title else "Title: choose a short, warm title"
    return f"{named}\nStory idea: {prompt.strip()}\nWrite exactly {scene_count} scenes."


def _base(base_url: str) -> str:
    return _required("base_url", base_url).rstrip("/")


def _required(name: str, value: str) -> str:
    if not value or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value.strip()
