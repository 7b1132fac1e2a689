"""The retry policy decides from the error and the attempt alone."""

from __future__ import annotations

import random

import asyncpg
import httpx
import pytest
import redis.exceptions

from runner.errors import JobArgumentsError, PermanentError, TransientError
from runner.retry import RetryPolicy, is_transient


def policy(**kwargs: float) -> RetryPolicy:
    return RetryPolicy(rng=random.Random(7), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "exc",
    [TransientError("x"), httpx.ConnectTimeout("x"), httpx.ReadError("x"), redis.exceptions.ConnectionError("x"),
     ConnectionResetError(), TimeoutError(), asyncpg.exceptions.AdminShutdownError("57P01"),
     asyncpg.exceptions.ConnectionDoesNotExistError("gone"), asyncpg.exceptions.InternalClientError("state")],
)  # fmt: skip
def test_transient_errors_are_retried(exc: BaseException):
    """Timeouts, lost connections and TransientError are worth another try."""
    assert is_transient(exc)
    assert policy().decide(exc, attempt=1) is not None


@pytest.mark.parametrize("exc", [PermanentError("x"), JobArgumentsError("x"), ValueError("bug"), KeyError("k")])
def test_permanent_and_unknown_errors_fail_at_once(exc: BaseException):
    """Permanent errors and plain bugs are not retried."""
    assert policy().decide(exc, attempt=1) is None


def test_no_retry_after_the_last_try():
    """At attempt == max_tries the answer is to fail."""
    p = policy(max_tries=3)
    assert p.decide(TransientError(), 2) is not None
    assert p.decide(TransientError(), 3) is None


def test_backoff_grows_exponentially_within_jitter_and_cap():
    """Delay n lies in [base*2^(n-1)*(1-jitter), base*2^(n-1)], capped at max_delay_s."""
    p = policy(max_tries=20, base_delay_s=1.0, max_delay_s=30.0, jitter=0.5)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (9, 30.0)]:
        delay = p.decide(TransientError(), attempt)
        assert delay is not None
        assert ceiling * 0.5 <= delay <= ceiling


def test_retry_after_hint_wins_and_is_capped():
    """A server's Retry-After is honoured, but never beyond max_delay_s."""
    p = policy(max_delay_s=60.0)
    assert p.decide(TransientError(retry_after_s=7.5), 1) == 7.5
    assert p.decide(TransientError(retry_after_s=600), 1) == 60.0


def http_error(status: int, headers: dict[str, str] | None = None) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "http://provider.test/v1/chat/completions")
    response = httpx.Response(status, headers=headers or {}, request=request)
    return httpx.HTTPStatusError(f"HTTP {status}", request=request, response=response)


@pytest.mark.parametrize(("status", "retried"), [(429, True), (500, True), (503, True), (400, False), (404, False)])
def test_http_status_errors_are_classified(status: int, retried: bool):
    """429 and 5xx are transient; other 4xx are permanent."""
    assert (policy().decide(http_error(status), 1) is not None) is retried


def test_http_retry_after_header_is_honoured():
    """A 429's Retry-After seconds set the delay; an unparseable one falls back to backoff."""
    assert policy().decide(http_error(429, {"Retry-After": "12"}), 1) == 12.0
    delay = policy(base_delay_s=1.0).decide(http_error(429, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}), 1)
    assert delay is not None and delay <= 1.0


def test_retry_after_parses_seconds_and_http_dates():
    """One parser for both forms of RFC 9110's Retry-After; unreadable or absent means no hint."""
    from runner.retry import parse_retry_after

    now = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:50 GMT", now=now) == 30.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now=now) == 0.0  # in the past: now
    assert parse_retry_after("soon") is None
    assert parse_retry_after("") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("inf") is None


def test_http_date_retry_after_on_an_http_error_is_honoured():
    import email.utils
    import time

    import httpx

    when = email.utils.formatdate(time.time() + 40, usegmt=True)
    response = httpx.Response(429, headers={"retry-after": when}, request=httpx.Request("GET", "http://x"))
    delay = RetryPolicy(max_tries=3).decide(httpx.HTTPStatusError("x", request=response.request, response=response), 1)
    assert delay is not None and 38 <= delay <= 40
