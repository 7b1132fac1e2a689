"""Offline providers: deterministic, network-free stand-ins for the real text, image and speech APIs.

They are honest about being fake: every scene text carries an "(offline placeholder text)" marker and
the PNGs carry a tEXt comment saying so. Output is still real: the images are valid PNGs and the
narration is a valid WAV, so storage, serving and the front end are exercised end to end. Each call
sleeps `latency_s` once, so jobs behave like I/O-bound work against a remote API.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import math
import re
import struct
import sys
import wave
import zlib
from array import array
from functools import lru_cache

from jobs.providers.base import MAX_SCENES, Media, Providers, SceneDraft, StoryDraft, VisualProfile

__all__ = [
    "OFFLINE_MARKER",
    "OfflineImageProvider",
    "OfflineSpeechProvider",
    "OfflineTextProvider",
    "offline_providers",
    "render_png",
    "render_wav",
]

OFFLINE_MARKER = "(offline placeholder text)"

# Image: 128x128 RGB, a 4x4 grid of 32 px blocks with a vertical shade, under 1 KB once compressed.
IMAGE_SIZE = 128
BLOCK = 32
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Audio: 16 kHz mono 16-bit; 0.02 s per character, clamped to 0.5..4 s; one tone per 0.25 s.
SAMPLE_RATE = 16_000
SECONDS_PER_CHAR = 0.02
MIN_AUDIO_S = 0.5
MAX_AUDIO_S = 4.0
TONE_S = 0.25
GAP_S = 0.04  # silence between tones, so it sounds like syllables rather than one drone
AMPLITUDE = 0.3 * 32767
# Periods in samples (200..500 Hz); whole periods start and end at zero, so cuts never click.
TONE_PERIODS = (80, 71, 64, 53, 48, 40, 36, 32)

_OPENINGS = (
    "Once upon a time, there was {subject}.",
    "In a quiet corner of the world lived {subject}.",
    "Long ago, on a bright morning, the story of {subject} began.",
    "Not so far from here, there was {subject}.",
)
_MIDDLES = (
    "One day something unexpected happened, and everyone held their breath.",
    "A gentle wind carried a secret that nobody had heard before.",
    "Friends gathered to help, each bringing a small and clever idea.",
    "The path grew winding, but curiosity was stronger than worry.",
    "A tiny surprise was waiting just around the corner.",
    "Laughter echoed as a new plan took shape.",
)
_DETAILS = (
    "The stars seemed to twinkle a little brighter.",
    "Even the trees leaned in to listen.",
    "It was a small step, but it mattered a lot.",
    "Nobody felt alone anymore.",
    "The day felt full of possibility.",
)
_TURNS = (
    "Our friend took a deep breath and kept going.",
    "Our friend smiled, feeling a little braver.",
    "Our friend paused, then giggled at the idea.",
)
_ENDINGS = (
    "And when the sun went down, everyone was home, warm and happy.",
    "In the end, the adventure became a favourite bedtime memory.",
    "So the day ended with a smile and a quiet goodnight.",
)
# Prompts often start with an instruction; the story's subject is what follows it.
_PROMPT_PREFIX = re.compile(
    r"^(?:please\s+)?(?:(?:write|tell)(?:\s+me)?\s+)?(?:a\s+)?(?:short\s+|bedtime\s+)*stor(?:y|ies)\s+(?:about|of)\s+",
    re.IGNORECASE,
)
_SMALL_WORDS = frozenset({"a", "an", "and", "at", "by", "for", "in", "of", "on", "or", "the", "to", "with"})
_SCENE_TITLES = (
    "A New Day",
    "The Surprise",
    "Helping Hands",
    "The Winding Path",
    "A Clever Idea",
    "Around the Corner",
)


def _digest(*parts: str | int) -> bytes:
    """A stable 32-byte hash of the parts (unlike hash(), it does not change between processes)."""
    joined = "\x1f".join(str(part) for part in parts)
    return hashlib.sha256(joined.encode("utf-8")).digest()


def _check_latency(latency_s: float) -> float:
    if not math.isfinite(latency_s) or latency_s < 0:
        raise ValueError(f"latency_s must be a finite number >= 0, got {latency_s!r}")
    return latency_s


def _clip(text: str, limit: int) -> str:
    """Collapse whitespace and cut to `limit` characters at a word boundary when possible."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return (cut or text[:limit]).rstrip(" ,.;:")


# --- text -------------------------------------------------------------------------------------------


def _subject(prompt: str) -> str:
    """The prompt as a noun phrase: "Write a story about a brave fox." -> "a brave fox"."""
    subject = _clip(_PROMPT_PREFIX.sub("", _clip(prompt, 200)), 80).rstrip(".!?")
    return subject[0].lower() + subject[1:] if subject else "a small, curious friend"


def _derive_title(prompt: str) -> str:
    """Title case of the prompt's subject: "a fox in the dark" -> "A Fox in the Dark"."""
    words = _clip(_subject(prompt), 60).split()
    titled = [w if i and w in _SMALL_WORDS else w[:1].upper() + w[1:] for i, w in enumerate(words)]
    return " ".join(titled)


def _scene_text(index: int, count: int, subject: str, seed: bytes) -> str:
    """Two or three sentences (opening or middle, detail or turn, ending on the last), then the marker."""
    last = index == count - 1
    if index == 0:
        sentences = [_OPENINGS[seed[0] % len(_OPENINGS)].format(subject=subject)]
    else:
        sentences = [_MIDDLES[(seed[1] + index) % len(_MIDDLES)]]
    coin = seed[8 + index] % 2  # seed has 32 bytes, scenes at most 20
    if not last or count == 1 or coin:
        sentences.append(_DETAILS[(seed[2] + index) % len(_DETAILS)])
    if last:
        sentences.append(_ENDINGS[seed[3] % len(_ENDINGS)])
    elif index > 0 and coin:
        sentences.append(_TURNS[(seed[4] + index) % len(_TURNS)])
    sentences.append(OFFLINE_MARKER)
    return " ".join(sentences)


def _scene(index: int, count: int, subject: str, seed: bytes) -> SceneDraft:
    if index == count - 1 and count > 1:
        scene_title = "Home Again"
    else:  # rotate from a hashed start, so neighbouring scenes never share a title
        scene_title = _SCENE_TITLES[(seed[5] + index) % len(_SCENE_TITLES)]
    text = _scene_text(index, count, subject, seed)
    image_prompt = f"{scene_title}: {_clip(subject, 120)}, scene {index + 1} of {count}"
    return SceneDraft(title=scene_title, text=text, image_prompt=image_prompt)


class OfflineTextProvider:
    """Writes a tiny placeholder story from templates; no model involved."""

    name = "offline"

    def __init__(self, latency_s: float = 0.0) -> None:
        self.latency_s = _check_latency(latency_s)

    async def write_story(self, *, title: str, prompt: str, scene_count: int) -> StoryDraft:
        await asyncio.sleep(self.latency_s)
        if not 1 <= scene_count <= MAX_SCENES:
            raise ValueError(f"scene_count must be between 1 and {MAX_SCENES}, got {scene_count}")
        seed = _digest("story", title, prompt)
        subject = _subject(prompt)
        scenes = [_scene(i, scene_count, subject, seed) for i in range(scene_count)]
        story_title = _clip(title, 200) or _derive_title(prompt)
        return StoryDraft(title=story_title, scenes=scenes)

    async def visual_profile(self, *, story: StoryDraft) -> VisualProfile:
        await asyncio.sleep(self.latency_s)
        title = _clip(story.title, 200)
        return VisualProfile(
            characters=f"the hero of '{title}' and friends, drawn the same in every scene",
            setting=f"the storybook world of '{title}'",
            base_style="offline placeholder: flat pastel shapes",
        )

    async def scene_image_prompt(self, *, scene: SceneDraft, profile: VisualProfile) -> str:
        await asyncio.sleep(self.latency_s)
        prompt = (
            f"{profile.base_style}. Characters: {profile.characters}. "
            f"Setting: {profile.setting}. Scene: {scene.image_prompt}"
        )
        return _clip(prompt, 2000)


# --- image ------------------------------------------------------------------------------------------


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(kind))
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _pastel(raw: bytes) -> bytes:
    """Lift each channel into 128..255 so the blocks stay soft and light."""
    return bytes(128 + (channel >> 1) for channel in raw)


def _shade(color: bytes, factor: float) -> bytes:
    return bytes(int(channel * factor) for channel in color)


def _image_rows(seed: bytes) -> bytes:
    """Filter-0 scanlines: a grid of pastel blocks, darkening slightly towards the bottom of each block."""
    per_side = IMAGE_SIZE // BLOCK
    colors = [_pastel(seed[i * 3 : i * 3 + 3]) for i in range(per_side * per_side)]
    rows: list[bytes] = []
    for block_row in range(per_side):
        base = colors[block_row * per_side : (block_row + 1) * per_side]
        for band in range(BLOCK // 8):  # shade in 8-pixel bands: cheap, still visibly a gradient
            factor = 1.0 - 0.06 * band
            line = b"\x00" + b"".join(_shade(color, factor) * BLOCK for color in base)
            rows.append(line * 8)
    return b"".join(rows)


def render_png(prompt: str, seed: int) -> bytes:
    """A deterministic IMAGE_SIZE x IMAGE_SIZE RGB PNG whose colours come from (prompt, seed)."""
    digest = _digest("image", prompt, seed)
    colors = digest + _digest("image-more", prompt, seed)  # 64 bytes: enough for 16 RGB blocks
    ihdr = struct.pack(">IIBBBBB", IMAGE_SIZE, IMAGE_SIZE, 8, 2, 0, 0, 0)  # 8-bit truecolour
    comment = b"Comment\x00offline placeholder image"
    return b"".join(
        (
            PNG_SIGNATURE,
            _png_chunk(b"IHDR", ihdr),
            _png_chunk(b"tEXt", comment),
            _png_chunk(b"IDAT", zlib.compress(_image_rows(colors), 6)),
            _png_chunk(b"IEND", b""),
        )
    )


class OfflineImageProvider:
    """Draws a small block-pattern PNG; no model involved."""

    name = "offline"

    def __init__(self, latency_s: float = 0.0) -> None:
        self.latency_s = _check_latency(latency_s)

    async def generate_image(self, *, prompt: str, seed: int) -> Media:
        await asyncio.sleep(self.latency_s)
        return Media(data=render_png(prompt, seed), content_type="image/png", extension="png")


# --- speech -----------------------------------------------------------------------------------------


@lru_cache(maxsize=len(TONE_PERIODS))
def _period_bytes(period: int) -> bytes:
    """One sine period as little-endian 16-bit samples (computed once per pitch)."""
    samples = array("h", (round(AMPLITUDE * math.sin(2 * math.pi * i / period)) for i in range(period)))
    if sys.byteorder == "big":
        samples.byteswap()  # WAV is little-endian
    return samples.tobytes()


def _tone(period: int, samples: int) -> bytes:
    """`samples` samples: whole periods of the tone, a short gap, then silence to fill up."""
    voiced = max(0, samples - round(GAP_S * SAMPLE_RATE)) // period
    return _period_bytes(period) * voiced + b"\x00\x00" * (samples - voiced * period)


def _audio_samples(text: str) -> int:
    seconds = min(MAX_AUDIO_S, max(MIN_AUDIO_S, SECONDS_PER_CHAR * len(text)))
    return round(seconds * SAMPLE_RATE)


def render_wav(text: str) -> bytes:
    """A deterministic 16 kHz mono 16-bit WAV: a tune of short tones picked by the text's hash."""
    total = _audio_samples(text)
    per_tone = round(TONE_S * SAMPLE_RATE)
    digest = _digest("speech", text)
    frames: list[bytes] = []
    for index, start in enumerate(range(0, total, per_tone)):
        period = TONE_PERIODS[digest[index % len(digest)] % len(TONE_PERIODS)]
        frames.append(_tone(period, min(per_tone, total - start)))
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(b"".join(frames))
    return buffer.getvalue()


class OfflineSpeechProvider:
    """Hums a little tune instead of reading the text; no model involved."""

    name = "offline"

    def __init__(self, latency_s: float = 0.0) -> None:
        self.latency_s = _check_latency(latency_s)

    async def synthesize(self, *, text: str) -> Media:
        await asyncio.sleep(self.latency_s)
        return Media(data=render_wav(text), content_type="audio/wav", extension="wav")


def offline_providers(latency_s: float = 0.0) -> Providers:
    """All three offline providers with the same simulated latency per call."""
    return Providers(
        text=OfflineTextProvider(latency_s),
        image=OfflineImageProvider(latency_s),
        speech=OfflineSpeechProvider(latency_s),
    )
