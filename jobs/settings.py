"""StoryMimi's settings: the runner's, plus the story, its providers and its media. Read once per entry
point (`python -m runner worker` and the API build them through `registry.settings`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from runner.errors import ConfigError
from runner.settings import Settings

__all__ = ["StorySettings", "story_settings"]


class StorySettings(Settings):
    """Runner settings plus the story workload's. Each field maps to the upper-case environment variable."""

    # Stories.
    story_scenes: int = Field(5, ge=1, le=20, description="scenes the LLM is asked for")
    media_dir: Path | None = Field(None, description="where media files go; default DATA_DIR/media")
    media_base_url: str | None = Field(None, description="public URL of MEDIA_DIR; default: the API's /media")
    # The clean-up of deleted stories' media (jobs/cleanup.py).
    media_cleanup_cron: str = Field("17 3 * * *", description="when it runs (cron, UTC); '' for never")
    media_cleanup_batch: int = Field(500, ge=1, description="story folders it removes at most per run")
    media_cleanup_min_age_s: float = Field(
        3600, ge=0, description="a folder changed more recently is left for a later run (a write may be under way)"
    )

    # Story providers. "offline" is deterministic, local and fake; see jobs.providers.
    text_provider: Literal["offline", "openai"] = "offline"
    image_provider: Literal["offline", "openai"] = "offline"
    speech_provider: Literal["offline", "openai", "elevenlabs"] = "offline"
    offline_latency_ms: float = Field(50, ge=0)
    llm_base_url: str = "https://openrouter.ai/api/v1"
    llm_api_key: SecretStr | None = None
    llm_model: str = "google/gemini-2.0-flash-001"
    llm_json_mode: bool = Field(True, description="send response_format json_object (off for servers without it)")
    image_base_url: str = "https://api.together.xyz/v1"
    image_api_key: SecretStr | None = None
    image_model: str = "black-forest-labs/FLUX.1-schnell-Free"
    image_size: str = "1024x1024"
    image_send_seed: bool = Field(True, description="send a per-scene seed (OpenAI's own API rejects it)")
    speech_base_url: str = "https://api.elevenlabs.io"
    speech_api_key: SecretStr | None = None
    speech_voice_id: str = Field("21m00Tcm4TlvDq8ikWrM", description="ElevenLabs voice id, or OpenAI voice name")
    speech_model: str = "eleven_multilingual_v2"
    # ElevenLabs Conversational AI, for stories made from a conversation's transcript (no key: not fetched).
    conversations_base_url: str = "https://api.elevenlabs.io"
    conversations_api_key: SecretStr | None = Field(None, description="default: SPEECH_API_KEY with ElevenLabs")
    # Shared slot pools per provider kind, across all worker processes (0 a minute: no per-minute limit).
    text_max_concurrency: int = Field(16, ge=1)
    image_max_concurrency: int = Field(16, ge=1)
    speech_max_concurrency: int = Field(16, ge=1)
    text_per_minute: int = Field(0, ge=0)
    image_per_minute: int = Field(0, ge=0)
    speech_per_minute: int = Field(0, ge=0)
    provider_max_wait_s: float = Field(30, gt=0, description="wait for a provider slot, then retry the job later")
    provider_call_retries: int = Field(2, ge=0, le=10, description="retries of one provider call inside its job")
    provider_call_budget_s: float = Field(300, gt=0, description="a provider call's retries end within this")

    @property
    def conversations_available(self) -> bool:
        """Whether conversation transcripts can be fetched (an ElevenLabs key is set)."""
        return self.conversations_api_key is not None or (
            self.speech_provider == "elevenlabs" and self.speech_api_key is not None
        )

    @property
    def media_path(self) -> Path:
        return self.media_dir if self.media_dir is not None else self.data_dir / "media"


def story_settings(settings: Settings) -> StorySettings:
    """The story settings a process was started with; an error saying how to build them otherwise."""
    if not isinstance(settings, StorySettings):
        raise ConfigError(
            f"the story jobs need jobs.settings.StorySettings, got {type(settings).__name__}; "
            "build the settings with `jobs.registry.settings()`"
        )
    return settings
