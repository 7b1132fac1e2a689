"""The offline providers: deterministic, honest, real PNG and WAV bytes, simulated latency."""

from __future__ import annotations

import io
import struct
import time
import wave
import zlib
from collections.abc import Awaitable, Callable

import pytest

from jobs.providers import (
    OfflineImageProvider,
    OfflineSpeechProvider,
    OfflineTextProvider,
    Providers,
    StoryDraft,
    offline_providers,
)
from jobs.providers.offline import OFFLINE_MARKER

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def parse_png(data: bytes) -> tuple[int, int, bytes, list[bytes]]:
    """Return width, height, the decompressed IDAT data and the chunk types, checking every CRC."""
    assert data[:8] == PNG_SIGNATURE
    offset, kinds, idat = 8, [], b""
    width = height = 0
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        payload = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(kind + payload), f"bad CRC in {kind!r}"
        if kind == b"IHDR":
            width, height, depth, color_type = struct.unpack(">IIBB", payload[:10])
            assert (depth, color_type) == (8, 2)  # 8-bit RGB
        elif kind == b"IDAT":
            idat += payload
        kinds.append(kind)
        offset += 12 + length
    assert offset == len(data)
    return width, height, zlib.decompress(idat), kinds


async def test_story_has_requested_scenes_and_marker() -> None:
    story = await OfflineTextProvider(0).write_story(title="", prompt="A brave fox", scene_count=5)
    assert len(story.scenes) == 5
    assert story.title
    for scene in story.scenes:
        assert OFFLINE_MARKER in scene.text
        assert scene.title
        assert scene.image_prompt
        assert scene.text.count(".") >= 2  # a couple of real sentences, not just the marker


async def test_story_keeps_given_title_and_derives_missing_one() -> None:
    text = OfflineTextProvider(0)
    given = await text.write_story(title="Mimi's Moon", prompt="a cat on the moon", scene_count=1)
    derived = await text.write_story(title="", prompt="Write a story about a cat on the moon", scene_count=1)
    assert given.title == "Mimi's Moon"
    assert derived.title == "A Cat on the Moon"


async def test_story_is_deterministic_and_varies_with_prompt() -> None:
    text = OfflineTextProvider(0)
    first = await text.write_story(title="T", prompt="a dragon who bakes", scene_count=4)
    again = await text.write_story(title="T", prompt="a dragon who bakes", scene_count=4)
    other = await text.write_story(title="T", prompt="a snail who races", scene_count=4)
    assert first == again
    assert first != other


@pytest.mark.parametrize("count", [0, 21])
async def test_story_rejects_bad_scene_count(count: int) -> None:
    with pytest.raises(ValueError, match="scene_count"):
        await OfflineTextProvider(0).write_story(title="", prompt="x", scene_count=count)


async def test_profile_and_image_prompt_are_deterministic() -> None:
    text = OfflineTextProvider(0)
    story = await text.write_story(title="Owl", prompt="an owl who is afraid of the dark", scene_count=2)
    profile = await text.visual_profile(story=story)
    assert profile == await text.visual_profile(story=story)
    assert "offline placeholder" in profile.base_style
    prompt = await text.scene_image_prompt(scene=story.scenes[1], profile=profile)
    assert prompt == await text.scene_image_prompt(scene=story.scenes[1], profile=profile)
    assert profile.base_style in prompt
    assert story.scenes[1].image_prompt in prompt


async def test_image_is_a_valid_png() -> None:
    media = await OfflineImageProvider(0).generate_image(prompt="a red balloon", seed=1)
    assert (media.content_type, media.extension) == ("image/png", "png")
    width, height, pixels, kinds = parse_png(media.data)
    assert (width, height) == (128, 128)
    assert len(pixels) == height * (1 + width * 3)
    assert kinds[0] == b"IHDR"
    assert kinds[-1] == b"IEND"
    assert len(media.data) < 50_000


async def test_image_is_deterministic_and_varies_with_prompt_and_seed() -> None:
    image = OfflineImageProvider(0)
    first = await image.generate_image(prompt="a red balloon", seed=1)
    assert first == await image.generate_image(prompt="a red balloon", seed=1)
    assert first.data != (await image.generate_image(prompt="a blue kite", seed=1)).data
    assert first.data != (await image.generate_image(prompt="a red balloon", seed=2)).data


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("hi", 0.5), ("x" * 100, 2.0), ("x" * 1000, 4.0)],
)
async def test_speech_is_a_valid_wav(text: str, seconds: float) -> None:
    media = await OfflineSpeechProvider(0).synthesize(text=text)
    assert (media.content_type, media.extension) == ("audio/wav", "wav")
    with wave.open(io.BytesIO(media.data), "rb") as audio:
        assert audio.getnchannels() == 1
        assert audio.getsampwidth() == 2
        assert audio.getframerate() == 16_000
        assert audio.getnframes() / audio.getframerate() == pytest.approx(seconds)
        frames = audio.readframes(audio.getnframes())
    assert len(frames) == audio.getnframes() * 2
    assert any(frames)  # not silence


async def test_speech_is_deterministic_and_varies_with_text() -> None:
    speech = OfflineSpeechProvider(0)
    text = "The little fox looked up at the stars and smiled."
    first = await speech.synthesize(text=text)
    assert first == await speech.synthesize(text=text)
    assert first.data != (await speech.synthesize(text=text.replace("fox", "owl"))).data


async def test_latency_is_applied_to_each_call() -> None:
    story = await OfflineTextProvider(0).write_story(title="", prompt="p", scene_count=1)
    profile = await OfflineTextProvider(0).visual_profile(story=story)
    providers = offline_providers(0.05)
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: providers.text.write_story(title="", prompt="p", scene_count=1),
        lambda: providers.text.visual_profile(story=story),
        lambda: providers.text.scene_image_prompt(scene=story.scenes[0], profile=profile),
        lambda: providers.image.generate_image(prompt="p", seed=0),
        lambda: providers.speech.synthesize(text="p"),
    ]
    for call in calls:
        started = time.perf_counter()
        await call()
        assert time.perf_counter() - started >= 0.05


def test_offline_providers_are_wired_and_named() -> None:
    providers = offline_providers(0)
    assert isinstance(providers, Providers)
    assert {providers.text.name, providers.image.name, providers.speech.name} == {"offline"}


@pytest.mark.parametrize("latency", [-0.1, float("nan"), float("inf")])
def test_bad_latency_is_rejected(latency: float) -> None:
    with pytest.raises(ValueError, match="latency_s"):
        offline_providers(latency)


def test_story_draft_limits_scene_count() -> None:
    scene = {"title": "t", "text": "x", "image_prompt": "p"}
    with pytest.raises(ValueError, match="at least 1"):
        StoryDraft(title="t", scenes=[])
    with pytest.raises(ValueError, match="at most 20"):
        StoryDraft.model_validate({"title": "t", "scenes": [scene] * 21})
