"""Providers behind shared limits: every call takes a slot of its provider's limit (concurrency and
per-minute, counted across all worker processes in Redis) before it goes out. See runner.limits."""

from __future__ import annotations

from jobs.providers.base import (
    ImageProvider,
    Media,
    Providers,
    SceneDraft,
    SpeechProvider,
    StoryDraft,
    TextProvider,
    VisualProfile,
)
from runner.broker.slots import Limit, Limiter

__all__ = ["LimitedImage", "LimitedSpeech", "LimitedText", "limited"]


class LimitedText:
    def __init__(self, inner: TextProvider, limiter: Limiter, limit: Limit) -> None:
        self.inner, self.limiter, self.limit, self.name = inner, limiter, limit, inner.name

    async def write_story(self, *, title: str, prompt: str, scene_count: int) -> StoryDraft:
        async with self.limiter.slot(self.limit):
            return await self.inner.write_story(title=title, prompt=prompt, scene_count=scene_count)

    async def visual_profile(self, *, story: StoryDraft) -> VisualProfile:
        async with self.limiter.slot(self.limit):
            return await self.inner.visual_profile(story=story)

    async def scene_image_prompt(self, *, scene: SceneDraft, profile: VisualProfile) -> str:
        async with self.limiter.slot(self.limit):
            return await self.inner.scene_image_prompt(scene=scene, profile=profile)


class LimitedImage:
    def __init__(self, inner: ImageProvider, limiter: Limiter, limit: Limit) -> None:
        self.inner, self.limiter, self.limit, self.name = inner, limiter, limit, inner.name

    async def generate_image(self, *, prompt: str, seed: int) -> Media:
        async with self.limiter.slot(self.limit):
            return await self.inner.generate_image(prompt=prompt, seed=seed)


class LimitedSpeech:
    def __init__(self, inner: SpeechProvider, limiter: Limiter, limit: Limit) -> None:
        self.inner, self.limiter, self.limit, self.name = inner, limiter, limit, inner.name

    async def synthesize(self, *, text: str) -> Media:
        async with self.limiter.slot(self.limit):
            return await self.inner.synthesize(text=text)


def limited(providers: Providers, limiter: Limiter, text: Limit, image: Limit, speech: Limit) -> Providers:
    """The same providers, each call taking a slot of its limit first."""
    return Providers(
        text=LimitedText(providers.text, limiter, text),
        image=LimitedImage(providers.image, limiter, image),
        speech=LimitedSpeech(providers.speech, limiter, speech),
    )
