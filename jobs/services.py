"""The story jobs' process-lifetime services, opened once per worker over the runner's resources."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import structlog

from jobs.providers.base import ImageProvider, Providers, SpeechProvider, TextProvider
from jobs.providers.conversations import ElevenLabsConversations
from jobs.providers.elevenlabs import ElevenLabsSpeechProvider
from jobs.providers.http import provider_timeout
from jobs.providers.offline import offline_providers
from jobs.providers.openai import OpenAIImageProvider, OpenAISpeechProvider, OpenAITextProvider
from jobs.providers.retries import CallRetryPolicy
from jobs.providers.slotted import with_slots
from jobs.repository import StoryRepository
from jobs.settings import StorySettings, story_settings
from jobs.storage import LocalMediaStorage, MediaStorage
from runner.broker.slots import SlotHolder, SlotPool
from runner.resources import Resources

__all__ = ["StoryServices", "build_providers", "open_story_services", "provider_slot_pools"]

log = structlog.get_logger("jobs.services")


@dataclass(frozen=True)
class StoryServices:
    settings: StorySettings
    stories: StoryRepository
    storage: MediaStorage
    providers: Providers
    conversations: ElevenLabsConversations | None = None  # None: no key, transcripts are not fetched


def build_providers(settings: StorySettings, http: httpx.AsyncClient) -> Providers:
    """The configured providers over the process's one httpx client; the offline ones say what they are."""
    offline = offline_providers(settings.offline_latency_ms / 1000)
    timeout = provider_timeout(settings.http_connect_timeout_s, settings.http_read_timeout_s)
    retry = call_retry(settings)
    text: TextProvider = offline.text
    if settings.text_provider == "openai":
        text = OpenAITextProvider(
            http, base_url=settings.llm_base_url, api_key=settings.llm_api_key, model=settings.llm_model,
            timeout=timeout, json_mode=settings.llm_json_mode, retry=retry,
        )  # fmt: skip
    image: ImageProvider = offline.image
    if settings.image_provider == "openai":
        image = OpenAIImageProvider(http, base_url=settings.image_base_url, api_key=settings.image_api_key,
                                    model=settings.image_model, size=settings.image_size,
                                    send_seed=settings.image_send_seed, timeout=timeout, retry=retry)  # fmt: skip
    return Providers(text=text, image=image, speech=_speech(settings, http, timeout, offline.speech, retry))


def call_retry(settings: StorySettings) -> CallRetryPolicy:
    """How one provider call is retried inside its job (PROVIDER_CALL_RETRIES, PROVIDER_CALL_BUDGET_S)."""
    return CallRetryPolicy(retries=settings.provider_call_retries, budget_s=settings.provider_call_budget_s)


def _speech(
    settings: StorySettings,
    http: httpx.AsyncClient,
    timeout: httpx.Timeout,
    offline: SpeechProvider,
    retry: CallRetryPolicy,
) -> SpeechProvider:
    if settings.speech_provider == "elevenlabs":
        return ElevenLabsSpeechProvider(http, base_url=settings.speech_base_url, api_key=settings.speech_api_key,
                                        voice_id=settings.speech_voice_id, model_id=settings.speech_model,
                                        timeout=timeout, retry=retry)  # fmt: skip
    if settings.speech_provider == "openai":
        return OpenAISpeechProvider(
            http, base_url=settings.speech_base_url, api_key=settings.speech_api_key, model=settings.speech_model,
            voice=settings.speech_voice_id, timeout=timeout, retry=retry,
        )  # fmt: skip
    return offline


def _conversations(settings: StorySettings, http: httpx.AsyncClient) -> ElevenLabsConversations | None:
    key = settings.conversations_api_key
    if key is None and settings.speech_provider == "elevenlabs":
        key = settings.speech_api_key
    if key is None:
        return None
    timeout = provider_timeout(settings.http_connect_timeout_s, settings.http_read_timeout_s)
    return ElevenLabsConversations(
        http, base_url=settings.conversations_base_url, api_key=key, timeout=timeout, retry=call_retry(settings)
    )


def _say_which_are_offline(settings: StorySettings) -> None:
    kinds = {"text": settings.text_provider, "image": settings.image_provider, "speech": settings.speech_provider}
    offline = sorted(kind for kind, name in kinds.items() if name == "offline")
    if offline:
        log.warning(
            "offline_providers_in_use",
            kinds=offline,
            detail="deterministic placeholders made locally, no AI is called; set TEXT_PROVIDER, IMAGE_PROVIDER "
            "and SPEECH_PROVIDER (with their *_BASE_URL, *_API_KEY) for real ones",
            latency_ms=settings.offline_latency_ms,
        )


def provider_slot_pools(settings: StorySettings, providers: Providers) -> tuple[SlotPool, SlotPool, SlotPool]:
    """One shared slot pool per provider kind, named after the provider so two providers never share one."""

    def pool(kind: str, name: str, concurrency: int, per_minute: int) -> SlotPool:
        return SlotPool(f"provider:{kind}:{name}", concurrency, per_minute, max_wait_s=settings.provider_max_wait_s)

    return (
        pool("text", providers.text.name, settings.text_max_concurrency, settings.text_per_minute),
        pool("image", providers.image.name, settings.image_max_concurrency, settings.image_per_minute),
        pool("speech", providers.speech.name, settings.speech_max_concurrency, settings.speech_per_minute),
    )


@asynccontextmanager
async def open_story_services(resources: Resources) -> AsyncIterator[StoryServices]:
    settings = story_settings(resources.settings)
    providers = build_providers(settings, resources.http)
    _say_which_are_offline(settings)
    async with SlotHolder(resources.redis, prefix=settings.slot_prefix) as holder:
        yield StoryServices(
            conversations=_conversations(settings, resources.http),
            settings=settings,
            stories=StoryRepository(resources.db),
            storage=LocalMediaStorage(settings.media_path),
            providers=with_slots(providers, holder, *provider_slot_pools(settings, providers)),
        )
