"""ElevenLabs Conversational AI transcripts: `GET /v1/convai/conversations/{id}`, made into a story prompt.

The reply's `transcript` is a list of turns (`{"role": "user"|"agent", "message": ...}`); a conversation
still in progress is retried later (transient), one that does not exist fails its job with the reason.
The call goes over the same provider HTTP layer as the others (timeouts, size caps, keys kept out of
messages and logs, and 429/5xx/timeouts/broken bodies tried again inside the call: jobs.providers.retries).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from jobs.providers.http import (
    DEFAULT_TIMEOUT,
    MAX_JSON_BYTES,
    ProviderResponse,
    ProviderTransientError,
    request,
    secret,
)
from jobs.providers.retries import DEFAULT_CALL_RETRY, CallRetryPolicy

__all__ = ["ElevenLabsConversations", "transcript_prompt"]

MAX_TRANSCRIPT_CHARS = 3500  # the story prompt's own limit is 4000


class ElevenLabsConversations:
    """Reads conversation transcripts; borrows the worker's shared httpx client."""

    name = "elevenlabs-convai"

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str,
        api_key: str | SecretStr | None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        retry: CallRetryPolicy = DEFAULT_CALL_RETRY,
    ) -> None:
        self.client = client
        self.base_url = base_url.strip().rstrip("/")
        self.api_key = secret(api_key)
        self.timeout = timeout
        self.retry = retry

    async def transcript(self, conversation_id: str) -> str:
        """The conversation as "User: ..." / "Agent: ..." lines ("" if it has no turns with text)."""
        key = {"xi-api-key": self.api_key.get_secret_value()} if self.api_key is not None else {}

        async def once() -> tuple[ProviderResponse, dict[str, Any]]:  # tried again inside the call if it may pass
            reply = await request(
                self.client,
                "GET",
                f"{self.base_url}/v1/convai/conversations/{quote(conversation_id, safe='')}",
                provider=self.name,
                api_key_header=key,
                timeouts=self.timeout,
                max_bytes=MAX_JSON_BYTES,
            )
            return reply, reply.json_object()

        reply, body = await self.retry.run(once, provider=self.name, kind="transcript")
        if body.get("status") in ("initiated", "in-progress", "processing"):
            raise ProviderTransientError(
                f"{self.name}: conversation {conversation_id} is still {body['status']}; its transcript comes later",
                provider=self.name,
                retry_after_s=10,
            )
        turns = body.get("transcript")
        if not isinstance(turns, list):
            raise reply.bad("no `transcript` list")
        return _lines(turns)


def _lines(turns: list[Any]) -> str:
    lines = []
    for turn in turns:
        if isinstance(turn, dict) and isinstance(turn.get("message"), str) and turn["message"].strip():
            who = "User" if turn.get("role") == "user" else "Agent"
            lines.append(f"{who}: {turn['message'].strip()}")
    return "\n".join(lines)


def transcript_prompt(transcript: str) -> str:
    """The story prompt a transcript makes (the old backend's wording), cut to fit the prompt's limit."""
    if len(transcript) > MAX_TRANSCRIPT_CHARS:
        transcript = transcript[: MAX_TRANSCRIPT_CHARS - 1] + "…"
    return (
        f"Create a story based on the following conversation transcript:\n\n{transcript}\n\n"
        "Please create an engaging story that captures the essence and key moments of this conversation."
    )
