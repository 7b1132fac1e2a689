"""Retries inside one provider call, as the official SDKs make them (openai's client tries twice more).

A call is one HTTP exchange and the reading of its body. When it fails in a way that may pass, it is
tried again inside the job, before the job's own try is spent:

    reason          error (see the tree in jobs.providers.http)     wait before the retry
    rate_limited    ProviderRateLimited (429)                       Retry-After, at least the backoff
    server_error    ProviderServerError (5xx)                       backoff
    timeout         ProviderTimeout (connect/read timeout, 408)     backoff
    connection      ProviderConnectionError (refused, dropped)      backoff
    broken_body     ProviderBrokenBody (2xx cut off or not JSON)    backoff

Anything else is raised at once: other 4xx, a body of the wrong kind, a model's unusable output (which
has its own second chance: the model is asked again). The backoff is `Backoff(first_s, max_s)` with
jitter; a retry is made only while `retries` allows and it starts within `budget_s` of the first try.
Past that the last error is raised with the tries it took; all five kinds are transient, so the runner's
retry policy takes over (it honours the same Retry-After). Each retry is logged and counted in
`runner_provider_retries`.

While a call waits it holds no provider slot: the wait goes through the function `waiting_with` set for
the running task (jobs.providers.slotted gives the slot back and takes one again), else it just sleeps.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TypeVar

import structlog

from jobs.providers.http import (
    ProviderBrokenBody,
    ProviderConnectionError,
    ProviderError,
    ProviderRateLimited,
    ProviderServerError,
    ProviderTimeout,
    ProviderTransientError,
)
from runner.backoff import Backoff
from runner.fleet.metrics import PROVIDER_RETRIES

__all__ = ["DEFAULT_CALL_RETRY", "CallRetryPolicy", "Wait", "retry_reason", "waiting_with"]

T = TypeVar("T")
Wait = Callable[[float], Awaitable[None]]
log = structlog.get_logger("jobs.providers.retries")

_REASONS: tuple[tuple[type[ProviderError], str], ...] = (
    (ProviderRateLimited, "rate_limited"),
    (ProviderServerError, "server_error"),
    (ProviderTimeout, "timeout"),
    (ProviderConnectionError, "connection"),
    (ProviderBrokenBody, "broken_body"),
)
_wait: ContextVar[Wait | None] = ContextVar("provider_retry_wait", default=None)


def retry_reason(exc: BaseException) -> str | None:
    """Why `exc` is worth another try inside the call ("rate_limited", ...), or None if it is not."""
    return next((reason for kind, reason in _REASONS if isinstance(exc, kind)), None)


@contextmanager
def waiting_with(wait: Wait) -> Iterator[None]:
    """Within the block (in this task), a retry waits by awaiting `wait(seconds)` instead of sleeping."""
    token = _wait.set(wait)
    try:
        yield
    finally:
        _wait.reset(token)


@dataclass(frozen=True, slots=True)
class CallRetryPolicy:
    """At most `retries` more tries of one call, each starting within `budget_s` of the first; the waits
    grow from `first_s` to `max_s`, each shortened by up to `jitter` of itself, or follow Retry-After."""

    retries: int = 2
    budget_s: float = 300.0
    first_s: float = 0.5
    max_s: float = 8.0
    jitter: float = 0.25
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def decide(self, exc: BaseException, retry: int, elapsed_s: float) -> float | None:
        """Seconds to wait before retry number `retry` (from 1) of a call that began `elapsed_s` ago, or
        None to raise `exc` now: not retryable, out of retries, or the wait would end past the budget."""
        if retry > self.retries or retry_reason(exc) is None:
            return None
        delay = Backoff(self.first_s, self.max_s).delay(retry) * (1 - self.jitter * self.rng.random())
        hint = exc.retry_after_s if isinstance(exc, ProviderTransientError) else None
        if hint is not None:
            delay = max(delay, hint)
        return delay if elapsed_s + delay <= self.budget_s else None

    async def run(self, call: Callable[[], Awaitable[T]], *, provider: str, kind: str) -> T:
        """`call()`, tried again as `decide` says; the last error is raised, saying how many tries it took."""
        started = time.monotonic()
        retry = 1
        while True:
            try:
                return await call()
            except ProviderError as exc:
                elapsed = time.monotonic() - started
                delay = self.decide(exc, retry, elapsed)
                if delay is None:
                    _say_tries(exc, retry, elapsed)
                    raise
                reason = retry_reason(exc)
                PROVIDER_RETRIES.labels(provider, kind, reason).inc()
                log.info(
                    "provider_call_retry", provider=provider, kind=kind, reason=reason, retry=retry,
                    retries=self.retries, delay_s=round(delay, 3), error=str(exc),
                )  # fmt: skip
                await _wait_out(delay)
                retry += 1


DEFAULT_CALL_RETRY = CallRetryPolicy()


async def _wait_out(delay: float) -> None:
    wait = _wait.get()
    if wait is None:
        await asyncio.sleep(delay)
    else:
        await wait(delay)


def _say_tries(exc: ProviderError, tries: int, elapsed_s: float) -> None:
    """Add to the message of a call's last error how many tries the call took, if more than one."""
    if tries > 1 and exc.args and isinstance(exc.args[0], str):
        exc.args = (f"{exc.args[0]} [gave up after {tries} tries in {elapsed_s:.1f}s]", *exc.args[1:])
