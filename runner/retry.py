"""Retry policy: a frozen value with a pure `decide(exc, attempt)`; no I/O, unit-tested without servers."""

from __future__ import annotations

import email.utils
import math
import random
import time
from dataclasses import dataclass, field

from runner.backoff import Backoff
from runner.errors import PermanentError, TransientError

__all__ = ["RetryPolicy", "is_transient", "parse_retry_after", "retry_after_s"]


def is_transient(exc: BaseException) -> bool:
    """Whether an error may pass with time. Unknown errors count as permanent: retry only what we know."""
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, PermanentError):
        return False
    status = _http_status(exc)
    if status is not None:
        return status == 429 or status >= 500
    return isinstance(exc, ConnectionError | TimeoutError) or _is_lost_connection(exc)


def retry_after_s(exc: BaseException) -> float | None:
    """The server's wait hint: a TransientError's `retry_after_s`, or an HTTP error's Retry-After header."""
    hint = getattr(exc, "retry_after_s", None)
    if isinstance(hint, int | float) and hint >= 0:
        return float(hint)
    response = getattr(exc, "response", None)
    return parse_retry_after(getattr(response, "headers", {}).get("retry-after") if response is not None else None)


def parse_retry_after(header: str | None, *, now: float | None = None) -> float | None:
    """A Retry-After header as seconds from now (>= 0): delay-seconds or an HTTP date (RFC 9110 10.2.3);
    None if absent or unreadable."""
    if not header:
        return None
    try:
        seconds = float(header)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(header).timestamp()
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when - (time.time() if now is None else now)
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def _http_status(exc: BaseException) -> int | None:
    import httpx

    return exc.response.status_code if isinstance(exc, httpx.HTTPStatusError) else None


def _is_lost_connection(exc: BaseException) -> bool:
    # Imported lazily: the policy stays importable (and testable) without the drivers' import cost.
    import asyncpg
    import httpx
    import redis.exceptions

    transient: tuple[type[BaseException], ...] = (
        httpx.TransportError,
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        asyncpg.exceptions.PostgresConnectionError,  # SQLSTATE class 08
        asyncpg.exceptions.OperatorInterventionError,  # class 57: admin or crash shutdown, cannot connect now
        asyncpg.exceptions.TooManyConnectionsError,
        asyncpg.exceptions.InterfaceError,  # includes ConnectionDoesNotExistError
        asyncpg.exceptions.InternalClientError,  # a query cut off by the server going away
    )
    return isinstance(exc, transient)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped; honours a transient error's Retry-After."""

    max_tries: int = 3
    base_delay_s: float = 1.0
    max_delay_s: float = 300.0
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def decide(self, exc: BaseException, attempt: int) -> float | None:
        """Seconds to wait before the next try, or None to fail now. `attempt` counts from 1."""
        if attempt >= self.max_tries or not is_transient(exc):
            return None
        hint = retry_after_s(exc)
        if hint is not None:
            return min(hint, self.max_delay_s)
        delay = Backoff(self.base_delay_s, self.max_delay_s).delay(attempt)
        return delay * (1 - self.jitter * self.rng.random())
