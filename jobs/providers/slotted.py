"""Providers behind shared slot pools: every call takes a slot of its provider's pool (calls at once and
calls a minute, counted across all worker processes in Redis) before it goes out. See runner.broker.slots.

A call that waits to be retried (jobs.providers.retries) gives its slot back for the wait and takes one
again before the retry. So every try, first or retry, runs inside a slot and a pool's concurrency is
never exceeded; a retry is counted against the per-minute limit like any call (the provider counts it
too); and a call sitting out a 429's Retry-After does not keep a slot from calls that could go now. If
no slot frees up in time for the retry, the job is put back without using a try (RetryLaterError).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

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
from jobs.providers.retries import waiting_with
from runner.broker.slots import SlotHolder, SlotPool

__all__ = ["SlottedImage", "SlottedSpeech", "SlottedText", "in_slot", "with_slots"]

T = TypeVar("T")


class _Lease:
    """One call's slot of a pool, which it can give back while it waits and take again."""

    def __init__(self, holder: SlotHolder, pool: SlotPool) -> None:
        self._holder, self._pool = holder, pool
        self._held: AbstractAsyncContextManager[None] | None = None

    async def take(self) -> None:
        slot = self._holder.hold(self._pool)
        await slot.__aenter__()  # waits for a free slot, or raises RetryLaterError
        self._held = slot

    async def give_back(self) -> None:
        slot, self._held = self._held, None
        if slot is not None:
            await slot.__aexit__(None, None, None)

    async def wait(self, delay_s: float) -> None:
        """Sleep `delay_s` without the slot, then hold one again."""
        await self.give_back()
        await asyncio.sleep(delay_s)
        await self.take()


async def in_slot(holder: SlotHolder, pool: SlotPool, call: Callable[[], Awaitable[T]]) -> T:
    """`call()` holding a slot of `pool`, except while it waits to retry a provider request."""
    lease = _Lease(holder, pool)
    await lease.take()
    try:
        with waiting_with(lease.wait):
            return await call()
    finally:
        await lease.give_back()


class SlottedText:
    def __init__(self, inner: TextProvider, holder: SlotHolder, pool: SlotPool) -> None:
        self.inner, self.holder, self.pool, self.name = inner, holder, pool, inner.name

    async def write_story(self, *, title: str, prompt: str, scene_count: int) -> StoryDraft:
        return await in_slot(
            self.holder, self.pool, lambda: self.inner.write_story(title=title, prompt=prompt, scene_count=scene_count)
        )

    async def visual_profile(self, *, story: StoryDraft) -> VisualProfile:
        return await in_slot(self.holder, self.pool, lambda: self.inner.visual_profile(story=story))

    async def scene_image_prompt(self, *, scene: SceneDraft, profile: VisualProfile) -> str:
        return await in_slot(
            self.holder, self.pool, lambda: self.inner.scene_image_prompt(scene=scene, profile=profile)
        )


class SlottedImage:
    def __init__(self, inner: ImageProvider, holder: SlotHolder, pool: SlotPool) -> None:
        self.inner, self.holder, self.pool, self.name = inner, holder, pool, inner.name

    async def generate_image(self, *, prompt: str, seed: int) -> Media:
        return await in_slot(self.holder, self.pool, lambda: self.inner.generate_image(prompt=prompt, seed=seed))


class SlottedSpeech:
    def __init__(self, inner: SpeechProvider, holder: SlotHolder, pool: SlotPool) -> None:
        self.inner, self.holder, self.pool, self.name = inner, holder, pool, inner.name

    async def synthesize(self, *, text: str) -> Media:
        return await in_slot(self.holder, self.pool, lambda: self.inner.synthesize(text=text))


def with_slots(
    providers: Providers, holder: SlotHolder, text: SlotPool, image: SlotPool, speech: SlotPool
) -> Providers:
    """The same providers, each call taking a slot of its pool first."""
    return Providers(
        text=SlottedText(providers.text, holder, text),
        image=SlottedImage(providers.image, holder, image),
        speech=SlottedSpeech(providers.speech, holder, speech),
    )
