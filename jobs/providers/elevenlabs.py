"""ElevenLabs text to speech: `POST /v1/text-to-speech/{voice_id}`, MP3 out.

The key goes in the `xi-api-key` header. ElevenLabs reports errors as
`{"detail": {"status": "invalid_api_key", "message": "..."}}`; `jobs.providers.http` surfaces that message
(never the key) and classifies the status: 429 and 5xx are retried (first inside the call, see
jobs.providers.retries), other 4xx (a bad key, a used-up quota, an unknown voice) fail the job at once.
See the error tree in `jobs.providers.http`.
"""

from __future__ import annotations

from urllib.parse import quote

import httpx
from pydantic import SecretStr

from jobs.providers.base import Media
from jobs.providers.http import DEFAULT_TIMEOUT, MAX_MEDIA_BYTES, mp3_media, request, secret
from jobs.providers.retries import DEFAULT_CALL_RETRY, CallRetryPolicy

__all__ = ["ELEVENLABS_URL", "ElevenLabsSpeechProvider"]

ELEVENLABS_URL = "https://api.elevenlabs.io"


class ElevenLabsSpeechProvider:
    """Reads text aloud with an ElevenLabs voice; borrows the worker's shared httpx client."""

    name = "elevenlabs"

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str = ELEVENLABS_URL,
        api_key: str | SecretStr | None,
        voice_id: str,
        model_id: str,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        max_bytes: int = MAX_MEDIA_BYTES,
        retry: CallRetryPolicy = DEFAULT_CALL_RETRY,
    ) -> None:
        for field, value in (("base_url", base_url), ("voice_id", voice_id), ("model_id", model_id)):
            if not value or not value.strip():
                raise ValueError(f"{field} must be a non-empty string, got {value!r}")
        self.client = client
        self.url = f"{base_url.strip().rstrip('/')}/v1/text-to-speech/{quote(voice_id.strip(), safe='')}"
        self.api_key = secret(api_key)
        self.model_id = model_id.strip()
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.retry = retry

    async def synthesize(self, *, text: str) -> Media:
        key = {"xi-api-key": self.api_key.get_secret_value()} if self.api_key is not None else {}
        reply = await self.retry.run(
            lambda: request(
                self.client,
                "POST",
                self.url,
                provider=self.name,
                api_key_header=key,
                timeouts=self.timeout,
                max_bytes=self.max_bytes,
                json={"text": text, "model_id": self.model_id},
                headers={"Accept": "audio/mpeg"},
            ),
            provider=self.name,
            kind="speech",
        )
        return mp3_media(reply.content, reply=reply)
