"""The one boundary where provider HTTP happens: every request, timeout, size cap and error translation.

Providers call `request()` with the worker's shared `httpx.AsyncClient` (borrowed, never created per call).
It applies the provider's connect/read timeouts, streams the body and stops past `max_bytes`, and turns
every foreign failure into one of these, classified for the runner's retry policy:

ProviderError                          a provider call failed; carries `provider` and `status` (HTTP or None)
├── ProviderTransientError             runner TransientError: retried with backoff
│   ├── ProviderTimeout                connect, read, write or pool timeout; HTTP 408
│   ├── ProviderConnectionError        refused, reset or dropped connection
│   ├── ProviderRateLimited            HTTP 429; `retry_after_s` from the Retry-After header
│   ├── ProviderServerError            HTTP 5xx
│   └── ProviderBrokenBody             a 2xx body cut off or not the JSON promised (garbled on the way)
└── ProviderPermanentError             runner PermanentError: the job fails at once (also: a bad base URL)
    ├── ProviderRejected               HTTP 4xx other than 408 and 429: bad key, bad model, bad request
    └── ProviderBadResponse            body malformed, oversized, of the wrong kind, or unusable

The five transient kinds above are first tried again inside the call (see jobs.providers.retries); only
what is left over reaches the runner's retry policy.

Messages name the provider, the method and URL (without query), the status, a short (<= 300 chars) snippet
of what the provider said, and what to do. API keys never appear: the values of `api_key_header` are
redacted from anything a provider echoes back, and are not part of any message or log line.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, cast

import httpx
import orjson
from pydantic import SecretStr

from jobs.providers.base import Media
from runner.errors import PermanentError, TransientError
from runner.retry import parse_retry_after

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_JSON_BYTES",
    "MAX_MEDIA_BYTES",
    "ProviderBadResponse",
    "ProviderBrokenBody",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderPermanentError",
    "ProviderRateLimited",
    "ProviderRejected",
    "ProviderResponse",
    "ProviderServerError",
    "ProviderTimeout",
    "ProviderTransientError",
    "bearer",
    "image_media",
    "mp3_media",
    "provider_timeout",
    "request",
    "secret",
    "snippet",
]

MAX_JSON_BYTES = 2 * 1024 * 1024  # chat completions and error bodies are far smaller
MAX_MEDIA_BYTES = 20 * 1024 * 1024  # a 1024x1024 PNG or a few minutes of MP3 fit easily
ERROR_BODY_BYTES = 64 * 1024  # read at most this much of an error body, for its message
SNIPPET_CHARS = 300
DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=5.0)
_REDACTED = "[redacted]"


# --- errors -----------------------------------------------------------------------------------------


class ProviderError(Exception):
    """A provider call failed."""

    provider: str
    status: int | None


class ProviderTransientError(ProviderError, TransientError):
    """A provider call failed in a way that may pass; the job is retried."""

    def __init__(
        self, message: str = "", *, provider: str, status: int | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.provider = provider
        self.status = status

    def __reduce__(self) -> tuple[Any, ...]:  # keyword-only arguments: pickle them by name
        fields = {"provider": self.provider, "status": self.status, "retry_after_s": self.retry_after_s}
        return _restore, (type(self), str(self), fields)


class ProviderTimeout(ProviderTransientError):
    """The provider did not connect or answer within the timeout."""


class ProviderConnectionError(ProviderTransientError):
    """The connection to the provider was refused, reset or dropped."""


class ProviderRateLimited(ProviderTransientError):
    """The provider answered 429 Too Many Requests."""


class ProviderServerError(ProviderTransientError):
    """The provider answered with a 5xx server error."""


class ProviderBrokenBody(ProviderTransientError):
    """A 2xx answer whose body is cut off or is not the JSON promised: transfers get garbled and proxies
    answer with error pages. (A base URL that is not the API keeps answering so: its tries run out.)"""


class ProviderPermanentError(ProviderError, PermanentError):
    """A provider call failed in a way that retrying cannot fix; the job fails at once."""

    def __init__(self, message: str = "", *, provider: str, status: int | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.status = status

    def __reduce__(self) -> tuple[Any, ...]:
        return _restore, (type(self), str(self), {"provider": self.provider, "status": self.status})


def _restore(cls: type[ProviderError], message: str, fields: dict[str, Any]) -> ProviderError:
    return cls(message, **fields)


class ProviderRejected(ProviderPermanentError):
    """The provider refused the request (4xx): check the API key, the model and the parameters."""


class ProviderBadResponse(ProviderPermanentError):
    """The provider's answer is malformed, too large, or not what was asked for."""


# --- helpers providers use --------------------------------------------------------------------------


def provider_timeout(connect_s: float, read_s: float) -> httpx.Timeout:
    """Timeouts for one provider: `connect_s` to connect, `read_s` for each read, write and pool wait."""
    return httpx.Timeout(read_s, connect=connect_s)


def secret(value: str | SecretStr | None) -> SecretStr | None:
    """An API key as a SecretStr (so reprs never show it); empty means none."""
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    return SecretStr(raw) if raw else None


def bearer(api_key: SecretStr | None) -> dict[str, str]:
    """The `Authorization: Bearer` header, or none for key-less servers (local vLLM, Ollama)."""
    return {"Authorization": f"Bearer {api_key.get_secret_value()}"} if api_key is not None else {}


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    """Whitespace collapsed and cut to `limit` characters, marking the cut."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- the request ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderResponse:
    """A successful (2xx) answer whose body has been read in full, within the size cap."""

    provider: str
    where: str  # "POST https://host/path", for messages
    status_code: int
    headers: httpx.Headers
    content: bytes

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object, or ProviderBadResponse saying what came instead."""
        try:
            value = orjson.loads(self.content)
        except orjson.JSONDecodeError as exc:
            raise self.broken(exc) from exc
        if not isinstance(value, dict):
            raise self.bad(f"JSON of type {type(value).__name__} where an object was expected")
        return value

    def bad(self, what: str) -> ProviderBadResponse:
        """A ProviderBadResponse for this answer: `what` describes what came instead of what was expected."""
        body = snippet(self.content[:1024].decode("utf-8", "replace"))
        return ProviderBadResponse(
            f"{self.provider}: {self.where} answered HTTP {self.status_code} with {what}; body starts {body!r}. "
            "The provider or base URL does not speak the expected API: check the base URL and model",
            provider=self.provider,
            status=self.status_code,
        )

    def broken(self, exc: orjson.JSONDecodeError) -> ProviderBrokenBody:
        """A ProviderBrokenBody for this answer: its body is cut off or not JSON at all."""
        size = len(self.content)
        what = "an empty body" if not size else f"{size:,} bytes that are not valid JSON ({exc})"
        body = snippet(self.content[:1024].decode("utf-8", "replace"))
        return ProviderBrokenBody(
            f"{self.provider}: {self.where} answered HTTP {self.status_code} with {what}; body starts {body!r}. "
            "Cut off or garbled on the way, or not the API expected: if it keeps happening, check the base URL",
            provider=self.provider,
            status=self.status_code,
        )


async def request(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    provider: str,
    api_key_header: Mapping[str, str],
    timeouts: httpx.Timeout,
    max_bytes: int,
    json: Any = None,
    headers: Mapping[str, str] | None = None,
    follow_redirects: bool = False,
) -> ProviderResponse:
    """Send one request and read its body (at most `max_bytes`); raise a ProviderError for anything but 2xx."""
    target, shown = _target(url)
    where = f"{method} {shown}"
    secrets = _secrets(api_key_header)
    send_headers = {**(headers or {}), **api_key_header}
    try:
        async with client.stream(
            method, target, json=json, headers=send_headers, timeout=timeouts, follow_redirects=follow_redirects
        ) as response:
            if not 200 <= response.status_code < 300:
                error_body = await _read_some(response, ERROR_BODY_BYTES)
                raise _status_error(provider, where, response, error_body, secrets)
            content = await _read_capped(response, provider, where, max_bytes)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise _transport_error(provider, where, exc) from exc
    return ProviderResponse(provider, where, response.status_code, response.headers, content)


async def _read_capped(response: httpx.Response, provider: str, where: str, max_bytes: int) -> bytes:
    """The whole (decoded) body, or ProviderBadResponse as soon as it is known to pass `max_bytes`."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _oversized(provider, where, response.status_code, max_bytes, f"Content-Length {int(declared):,}")
    chunks: list[bytes] = []
    total = 0
    async with aclosing(_body(response)) as body:
        async for chunk in body:
            total += len(chunk)
            if total > max_bytes:
                raise _oversized(provider, where, response.status_code, max_bytes, f"{total:,} bytes so far")
            chunks.append(chunk)
    return b"".join(chunks)


async def _read_some(response: httpx.Response, limit: int) -> str:
    """Up to `limit` bytes of an error body as text; the rest is left unread."""
    chunks: list[bytes] = []
    total = 0
    async with aclosing(_body(response)) as body:
        async for chunk in body:
            chunks.append(chunk)
            total += len(chunk)
            if total >= limit:
                break
    return b"".join(chunks)[:limit].decode("utf-8", "replace")


def _body(response: httpx.Response) -> AsyncGenerator[bytes, None]:
    """The decoded body chunks; httpx's aiter_bytes is an async generator, closed by `aclosing` on early exit."""
    return cast("AsyncGenerator[bytes, None]", response.aiter_bytes())


def _oversized(provider: str, where: str, status: int, max_bytes: int, seen: str) -> ProviderBadResponse:
    return ProviderBadResponse(
        f"{provider}: {where} answered HTTP {status} with a body larger than the {max_bytes:,}-byte cap ({seen}); "
        "the read was stopped. Check the base URL, or raise the provider's size cap if such bodies are expected",
        provider=provider,
        status=status,
    )


# --- translation ------------------------------------------------------------------------------------


def _status_error(provider: str, where: str, response: httpx.Response, body: str, secrets: list[str]) -> ProviderError:
    """The ProviderError for a non-2xx status, with what the provider said (redacted) and what to do."""
    status = response.status_code
    said = _redact(snippet(_error_message(body) or "(empty body)"), secrets)
    request_id = response.headers.get("x-request-id") or response.headers.get("request-id")
    head = f"{provider}: {where} answered HTTP {status}: {said!r}" + (
        f" (request id {request_id})" if request_id else ""
    )
    if status == 429:
        wait = parse_retry_after(response.headers.get("retry-after"))
        hint = f"retry after {wait:g} s" if wait is not None else "retry later with backoff"
        return ProviderRateLimited(
            f"{head}. Rate limited: {hint}", provider=provider, status=status, retry_after_s=wait
        )
    if status == 408:
        return ProviderTimeout(
            f"{head}. The provider timed out the request; retrying may help", provider=provider, status=status
        )
    if status >= 500:
        return ProviderServerError(f"{head}. The provider failed; retrying may help", provider=provider, status=status)
    if 400 <= status < 500:
        return ProviderRejected(f"{head}. {_rejected_hint(status)}", provider=provider, status=status)
    return ProviderBadResponse(
        f"{head}. Expected a 2xx answer; check the base URL (redirects are not followed)",
        provider=provider,
        status=status,
    )


def _rejected_hint(status: int) -> str:
    if status in (401, 403):
        return "The API key was refused: check that it is set, valid, and allowed to use this model"
    if status == 404:
        return "Nothing there: check the base URL, the model name and the voice id"
    return "The provider refused the request: check the model name and the request parameters"


def _transport_error(provider: str, where: str, exc: httpx.HTTPError | httpx.InvalidURL) -> ProviderError:
    """The ProviderError for an httpx failure (no status): timeouts and lost connections are transient."""
    what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return ProviderTimeout(
            f"{provider}: {where} timed out ({what}); the provider is slow or unreachable, retrying may help",
            provider=provider,
        )
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return ProviderPermanentError(
            f"{provider}: cannot send {where} ({what}); the base URL must be an absolute http:// or https:// URL",
            provider=provider,
        )
    if isinstance(exc, httpx.TransportError):
        return ProviderConnectionError(
            f"{provider}: {where} failed on the connection ({what}); retrying may help", provider=provider
        )
    if isinstance(exc, httpx.DecodingError):  # a compressed body cut off or garbled
        return ProviderBrokenBody(
            f"{provider}: {where} answered with an unreadable body ({what}); retrying may help", provider=provider
        )
    return ProviderBadResponse(f"{provider}: {where} could not be read ({what})", provider=provider)


def _error_message(body: str) -> str:
    """What an error body says: its JSON message if it has one (OpenAI, ElevenLabs, FastAPI), else the text."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    return _message_in(value) or body


def _message_in(value: Any, depth: int = 0) -> str | None:
    """{"error": {"message", "code"}} (OpenAI), {"detail": {"message", "status"}} (ElevenLabs), lists, strings."""
    if isinstance(value, str) or depth > 4:
        return value if isinstance(value, str) and value else None
    if isinstance(value, list):
        parts = [m for m in (_message_in(item, depth + 1) for item in value[:5]) if m]
        return "; ".join(parts) or None
    if not isinstance(value, dict):
        return None
    message = next((value[k] for k in ("message", "msg") if isinstance(value.get(k), str) and value[k]), None)
    if message is not None:
        code = next((value[k] for k in ("status", "code", "type") if isinstance(value.get(k), str)), None)
        return f"{message} ({code})" if code else message
    for key in ("error", "detail", "errors"):
        found = _message_in(value.get(key), depth + 1)
        if found:
            return found
    return None


def _secrets(api_key_header: Mapping[str, str]) -> list[str]:
    """Every form of the key that could be echoed back: the header values and the token after "Bearer "."""
    found: set[str] = set()
    for value in api_key_header.values():
        found.add(value)
        scheme, _, token = value.partition(" ")
        if token and scheme.lower() == "bearer":
            found.add(token.strip())
    return sorted((s for s in found if len(s) >= 4), key=len, reverse=True)


def _redact(text: str, secrets: list[str]) -> str:
    for value in secrets:
        text = text.replace(value, _REDACTED)
    return text


def _target(url: str) -> tuple[httpx.URL | str, str]:
    """What to send `url` as, and how to show it. A provider's endpoints are the same few URLs on every call:
    they are parsed once (httpx's URL parser validated each character of each, twice a call with the display
    form, a sixth of a busy worker's CPU). A URL with a query (a signed download's, one of a kind) is not kept."""
    if "?" in url or "#" in url:
        return url, _display_url(url)
    return _endpoint(url)


@functools.lru_cache(maxsize=64)
def _endpoint(url: str) -> tuple[httpx.URL | str, str]:
    try:
        parsed: httpx.URL | str = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        parsed = url  # sent as it is: httpx raises its error inside the call, where it is reported
    return parsed, _display_url(url)


def _display_url(url: str) -> str:
    """The URL without user info, query or fragment (signed download URLs carry tokens there)."""
    try:
        return str(httpx.URL(url).copy_with(userinfo=b"", query=None, fragment=None))
    except (httpx.InvalidURL, httpx.UnsupportedProtocol, TypeError, ValueError):
        return url.split("?", 1)[0].split("#", 1)[0].rpartition("@")[2]


# --- media bodies -----------------------------------------------------------------------------------

_IMAGE_KINDS = (
    (b"\x89PNG\r\n\x1a\n", "image/png", "png"),
    (b"\xff\xd8\xff", "image/jpeg", "jpg"),
)


def image_media(data: bytes, *, reply: ProviderResponse) -> Media:
    """PNG, JPEG or WEBP bytes as Media, typed by their magic numbers (not by headers); else ProviderBadResponse."""
    for magic, content_type, extension in _IMAGE_KINDS:
        if data.startswith(magic):
            return Media(data=data, content_type=content_type, extension=extension)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return Media(data=data, content_type="image/webp", extension="webp")
    raise reply.bad(f"{len(data):,} bytes that are not a PNG, JPEG or WEBP image (first bytes {data[:12]!r})")


def mp3_media(data: bytes, *, reply: ProviderResponse) -> Media:
    """MP3 bytes (an ID3 tag or an MPEG frame sync first) as Media; else ProviderBadResponse."""
    if data.startswith(b"ID3") or (len(data) >= 2 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return Media(data=data, content_type="audio/mpeg", extension="mp3")
    raise reply.bad(f"{len(data):,} bytes that are not MP3 audio (first bytes {data[:12]!r})")
