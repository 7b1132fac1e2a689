"""Providers: the text, image and speech back ends a story job uses, behind small Protocols."""

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
from jobs.providers.offline import (
    OfflineImageProvider,
    OfflineSpeechProvider,
    OfflineTextProvider,
    offline_providers,
)

__all__ = [
    "ImageProvider",
    "Media",
    "OfflineImageProvider",
    "OfflineSpeechProvider",
    "OfflineTextProvider",
    "Providers",
    "SceneDraft",
    "SpeechProvider",
    "StoryDraft",
    "TextProvider",
    "VisualProfile",
    "offline_providers",
]
