"""The in-call retry policy, without servers: what is retried, the backoff and its jitter, Retry-After,
the count and time budget, and the loop's waits and last error."""

from __future__ import annotations

import random

import pytest

from jobs.providers.http import (
    ProviderBadResponse,
    ProviderBrokenBody,
    ProviderConnectionError,
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderServerError,
    ProviderTimeout,
)
from jobs.providers.retries import CallRetryPolicy, retry_reason, waiting_with
from runner.errors import TransientError

P = "openai"


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (ProviderRateLimited("429", provider=P, status=429), "rate_limited"),
        (ProviderServerError("502", provider=P, status=502), "server_error"),
        (ProviderTimeout("slow", provider=P), "timeout"),
        (ProviderConnectionError("reset", provider=P), "connection"),
        (ProviderBrokenBody("cut off", provider=P, status=200), "broken_body"),
        (ProviderRejected("401", provider=P, status=401), None),
        (ProviderBadResponse("not an image", provider=P, status=200), None),
        (ValueError("a bug"), None),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_what_is_retried(exc: BaseException, reason: str | None) -> None:
    """Transient errors (broken bodies among them) are retried inside the call, and are transient for the
    runner once the call gives up; other 4xx, bodies of the wrong kind and bugs are neither."""
    assert retry_reason(exc) == reason
    assert isinstance(exc, TransientError) == (reason is not None)
    policy = CallRetryPolicy()
    assert (policy.decide(exc, 1, 0.0) is not None) == (reason is not None)


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    """Waits of first_s * 2**(n-1), capped at max_s, each shortened by up to `jitter` of itself."""
    policy = CallRetryPolicy(retries=6, first_s=0.5, max_s=4.0, jitter=0.25, rng=random.Random(1))
    exc = ProviderServerError("500", provider=P, status=500)
    for retry, full in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 4.0)]:
        delays = [policy.decide(exc, retry, 0.0) for _ in range(50)]
        assert all(d is not None and 0.75 * full <= d <= full for d in delays), (retry, delays)
        assert len(set(delays)) > 1  # jittered


def test_retry_after_is_waited_at_least() -> None:
    """A 429's Retry-After is the least wait; a shorter or zero one still waits the backoff."""
    policy = CallRetryPolicy(first_s=0.5, jitter=0.0)
    assert policy.decide(ProviderRateLimited("", provider=P, retry_after_s=3.0), 1, 0.0) == 3.0
    assert policy.decide(ProviderRateLimited("", provider=P, retry_after_s=0.0), 1, 0.0) == 0.5
    assert policy.decide(ProviderRateLimited("", provider=P), 2, 0.0) == 1.0


def test_count_and_time_budget_bound_the_retries() -> None:
    """No retry past `retries`, nor one whose wait would end past `budget_s` since the first try."""
    policy = CallRetryPolicy(retries=2, budget_s=10.0, first_s=1.0, jitter=0.0)
    exc = ProviderTimeout("slow", provider=P)
    assert policy.decide(exc, 2, 0.0) == 2.0
    assert policy.decide(exc, 3, 0.0) is None
    assert policy.decide(exc, 1, 9.0) == 1.0
    assert policy.decide(exc, 1, 9.5) is None
    assert policy.decide(ProviderRateLimited("", provider=P, retry_after_s=20.0), 1, 0.0) is None
    assert CallRetryPolicy(retries=0).decide(exc, 1, 0.0) is None


async def test_run_waits_through_the_task_wait_and_returns_the_answer() -> None:
    """Failures that may pass are tried again; the waits go through `waiting_with`'s function."""
    policy = CallRetryPolicy(retries=2, first_s=0.5, jitter=0.0)
    failures: list[ProviderError] = [
        ProviderRateLimited("429", provider=P, status=429, retry_after_s=2.0),
        ProviderBrokenBody("cut off", provider=P, status=200),
    ]
    waits: list[float] = []

    async def call() -> str:
        if failures:
            raise failures.pop(0)
        return "answer"

    async def wait(delay: float) -> None:
        waits.append(delay)

    with waiting_with(wait):
        assert await policy.run(call, provider=P, kind="text") == "answer"
    assert waits == [2.0, 1.0]


async def test_run_raises_the_last_error_with_the_tries_it_took() -> None:
    """Out of retries: the last error itself (type, status, hint kept), its message saying the tries."""
    policy = CallRetryPolicy(retries=2, first_s=0.0, jitter=0.0)
    calls = 0

    async def call() -> str:
        nonlocal calls
        calls += 1
        raise ProviderServerError(f"HTTP 50{calls}", provider=P, status=500 + calls)

    with pytest.raises(ProviderServerError) as caught:
        await policy.run(call, provider=P, kind="image")
    assert calls == 3
    assert caught.value.status == 503
    assert str(caught.value).startswith("HTTP 503 [gave up after 3 tries in ")


async def test_run_raises_a_permanent_error_at_once() -> None:
    """A 4xx is raised on the first try, its message unchanged."""
    calls = 0

    async def call() -> str:
        nonlocal calls
        calls += 1
        raise ProviderRejected("HTTP 401", provider=P, status=401)

    with pytest.raises(ProviderRejected, match=r"^HTTP 401$"):
        await CallRetryPolicy().run(call, provider=P, kind="speech")
    assert calls == 1
