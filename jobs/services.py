"""The story jobs' process-lifetime services, opened once per worker over the runner's resources."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog

from jobs.providers.base import Providers
from jobs.providers.limited import limited
from jobs.providers.offline import offline_providers
from jobs.repository import StoryRepository
from jobs.storage import LocalMediaStorage, MediaStorage
from runner.errors import ConfigError
from runner.limits import Limit, Limiter
from runner.resources import Resources
from runner.settings import Settings

__all__ = ["StoryServices", "build_providers", "open_story_services", "provider_limits"]

log = structlog.get_logger("jobs.services")


@dataclass(frozen=True)
class StoryServices:
    stories: StoryRepository
    storage: MediaStorage
    providers: Providers


def build_providers(settings: Settings) -> Providers:
    """The configured providers. Only the offline ones exist so far; others say so instead of faking."""
    chosen = {settings.text_provider, settings.image_provider, settings.speech_provider}
    if chosen != {"offline"}:
        raise ConfigError(
            f"providers {sorted(chosen - {'offline'})} are not available in this build yet; "
            "set TEXT_PROVIDER, IMAGE_PROVIDER and SPEECH_PROVIDER to 'offline'"
        )
    log.warning(
        "offline_providers_in_use",
        detail="stories, images and audio are deterministic placeholders made locally; no AI is called",
        latency_ms=settings.offline_latency_ms,
    )
    return offline_providers(settings.offline_latency_ms / 1000)


def provider_limits(settings: Settings, providers: Providers) -> tuple[Limit, Limit, Limit]:
    """One shared limit per provider kind, named after the provider so two providers never share one."""

    def limit(kind: str, name: str, concurrency: int, per_minute: int) -> Limit:
        return Limit(f"provider:{kind}:{name}", concurrency, per_minute, max_wait_s=settings.provider_max_wait_s)

    return (
        limit("text", providers.text.name, settings.text_max_concurrency, settings.text_per_minute),
        limit("image", providers.image.name, settings.image_max_concurrency, settings.image_per_minute),
        limit("speech", providers.speech.name, settings.speech_max_concurrency, settings.speech_per_minute),
    )


@asynccontextmanager
async def open_story_services(resources: Resources) -> AsyncIterator[StoryServices]:
    settings = resources.settings
    providers = build_providers(settings)
    async with Limiter(resources.redis, prefix=settings.limit_prefix) as limiter:
        yield StoryServices(
            stories=StoryRepository(resources.db),
            storage=LocalMediaStorage(settings.media_path),
            providers=limited(providers, limiter, *provider_limits(settings, providers)),
        )
