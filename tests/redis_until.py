"""Waiting, in plain blocking code, for a test Redis (a sentinel group, a cluster) to reach a state."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

__all__ = ["until"]


def until(check: Callable[[], bool], what: str, timeout: float = 15) -> None:
    """Return once `check()` is true (a Redis error counts as not yet); raise naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout}s")
        time.sleep(0.05)
