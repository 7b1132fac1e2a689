"""Providers behind shared slot pools: every call takes a slot of its provider's pool (calls at once and
calls a minute, counted across all worker processes in Redis) before it goes out. See runner.broker.slots."""

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
from runner.broker.slots import SlotHolder, SlotPool

__all__ = ["SlottedImage", "SlottedSpeech", "SlottedText", "with_slots"]


class SlottedText:
    def __init__(self, inner: TextProvider, holder: SlotHolder, pool: SlotPool) -> None:
        self.inner, self.holder, self.pool, self.name = inner, holder, pool, inner.name

    async def write_story(self, *, title: str, prompt: str, scene_count: int) -> StoryDraft:
        async with self.holder.hold(self.pool):
            return await self.inner.write_story(title=title, prompt=prompt, scene_count=scene_count)

    async def visual_profile(self, *, story: StoryDraft) -> VisualProfile:
        async with self.holder.hold(self.pool):
            return await self.inner.visual_profile(story=story)

    async def scene_image_prompt(self, *, scene: SceneDraft, profile: VisualProfile) -> str:
        async with self.holder.hold(self.pool):
            return await self.inner.scene_image_prompt(scene=scene, profile=profile)


class SlottedImage:
    def __init__(self, inner: ImageProvider, holder: SlotHolder, pool: SlotPool) -> None:
        self.inner, self.holder, self.pool, self.name = inner, holder, pool, inner.name

    async def generate_image(self, *, prompt: str, seed: int) -> Media:
        async with self.holder.hold(self.pool):
            return await self.inner.generate_image(prompt=prompt, seed=seed)


class SlottedSpeech:
    def __init__(self, inner: SpeechProvider, holder: SlotHolder, pool: SlotPool) -> None:
        self.inner, self.holder, self.pool, self.name = inner, holder, pool, inner.name

    async def synthesize(self, *, text: str) -> Media:
        async with self.holder.hold(self.pool):
            return await self.inner.synthesize(text=text)


def with_slots(
    providers: Providers, holder: SlotHolder, text: SlotPool, image: SlotPool, speech: SlotPool
) -> Providers:
    """The same providers, each call taking a slot of its pool first."""
    return Providers(
        text=SlottedText(providers.text, holder, text),
        image=SlottedImage(providers.image, holder, image),
        speech=SlottedSpeech(providers.speech, holder, speech),
    )
