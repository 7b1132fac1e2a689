"""One backoff schedule and retry loop for the runner's own waits."""

from __future__ import annotations

import pytest

from runner.backoff import Backoff, retry_with_backoff


def test_delays_grow_by_the_factor_and_stop_at_the_cap():
    assert [Backoff(0.1, 1.0).delay(n) for n in range(1, 7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert Backoff(0.5, 30.0, factor=3).delay(3) == 4.5


async def test_retries_what_it_is_told_until_success():
    calls, waits = [], []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("down")
        return "up"

    result = await retry_with_backoff(
        flaky, backoff=Backoff(0.001, 0.01), budget_s=5, retry_if=lambda e: isinstance(e, ConnectionError),
        on_retry=lambda exc, n, delay: waits.append((n, delay)),
    )  # fmt: skip
    assert (result, len(calls), waits) == ("up", 3, [(1, 0.001), (2, 0.002)])


async def test_an_error_it_may_not_retry_is_raised_at_once():
    calls = []

    async def broken() -> None:
        calls.append(1)
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError, match="a bug"):
        await retry_with_backoff(
            broken, backoff=Backoff(0.001, 0.01), budget_s=5,
            retry_if=lambda e: isinstance(e, ConnectionError), on_retry=lambda *_: None,
        )  # fmt: skip
    assert len(calls) == 1


async def test_the_last_error_is_raised_once_the_budget_is_spent():
    calls = []

    async def down() -> None:
        calls.append(1)
        raise ConnectionError(f"down {len(calls)}")

    with pytest.raises(ConnectionError):
        await retry_with_backoff(down, backoff=Backoff(0.02, 0.02), budget_s=0.1, retry_if=lambda e: True,
                                 on_retry=lambda *_: None)  # fmt: skip
    assert 3 <= len(calls) <= 7
