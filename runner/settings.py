"""All configuration, read once per entry point from the environment (and `.env`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Runner, API and provider settings. Each field maps to the upper-case environment variable."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    # Servers. Unset means: start embedded ones under DATA_DIR (see runner.devservers).
    redis_url: str | None = None
    database_url: str | None = None
    data_dir: Path = Path(".data")
    embedded_redis_port: int = Field(6390, ge=1, le=65535)
    embedded_postgres_port: int = Field(5440, ge=1, le=65535)

    # Queue and workers.
    queue_name: str = Field(
        "storymimi", min_length=1, pattern=r"^[^{}]+$", description="no braces: they make hash tags"
    )
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=64, description="default: CPU count")
    worker_concurrency: int = Field(10, ge=1, le=10_000)
    job_timeout_s: float = Field(3600, gt=0)
    job_soft_timeout_s: float = Field(3300, gt=0)
    job_max_tries: int = Field(3, ge=1)
    max_jobs_per_worker: int = Field(200, ge=0, description="0 disables recycling by job count")
    max_memory_per_worker_mb: int = Field(512, ge=0, description="0 disables recycling by memory")
    lease_ttl_s: float = Field(30, gt=0.2, description="a crashed worker's job runs again after this")
    poll_interval_s: float = Field(
        1.0, gt=0, description="fallback poll of an idle worker; enqueues wake it at once, deferred jobs on time"
    )
    abort_poll_s: float = Field(0.5, gt=0, description="how soon a cancel request reaches a running job")
    shutdown_grace_s: float = Field(30, ge=0)
    sweep_interval_s: float = Field(30, gt=0, description="how often one worker looks for stuck status rows")
    sweep_stale_after_s: float = Field(30, ge=0, description="a row unmoved this long is checked against Redis")
    keep_result_s: float = Field(3600, ge=0)
    startup_retry_s: float = Field(60, ge=0, description="how long to retry Redis/Postgres at start-up")
    outage_retry_s: float = Field(60, ge=0, description="how long the runner's own writes ride out an outage")

    db_pool_size: int = Field(20, ge=2, le=200, description="Postgres connections per process")

    # API.
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    media_base_url: str | None = Field(None, description="public URL of MEDIA_DIR; default: the API's /media")

    metrics_port: int | None = Field(None, ge=1, le=65535, description="supervisor's own /metrics, for `make worker`")

    # Logging.
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"

    # Stories.
    story_scenes: int = Field(5, ge=1, le=20, description="scenes the LLM is asked for")

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
    # Shared limits per provider kind, across all worker processes (0 a minute: no per-minute limit).
    text_max_concurrency: int = Field(16, ge=1)
    image_max_concurrency: int = Field(16, ge=1)
    speech_max_concurrency: int = Field(16, ge=1)
    text_per_minute: int = Field(0, ge=0)
    image_per_minute: int = Field(0, ge=0)
    speech_per_minute: int = Field(0, ge=0)
    slot_prefix: str = Field("runner:slots", min_length=1, description="Redis key prefix of the shared slot pools")
    provider_max_wait_s: float = Field(30, gt=0, description="wait for a provider slot, then retry the job later")
    provider_connect_timeout_s: float = Field(5, gt=0)
    provider_read_timeout_s: float = Field(120, gt=0)
    media_dir: Path | None = Field(None, description="where media files go; default DATA_DIR/media")

    @model_validator(mode="after")
    def _soft_below_hard(self) -> Settings:
        if self.job_soft_timeout_s > self.job_timeout_s:
            raise ValueError(
                f"JOB_SOFT_TIMEOUT_S ({self.job_soft_timeout_s}) must not exceed "
                f"JOB_TIMEOUT_S ({self.job_timeout_s}): the soft limit warns before the hard one stops the job"
            )
        return self

    @property
    def media_path(self) -> Path:
        return self.media_dir if self.media_dir is not None else self.data_dir / "media"
