"""Priorities within a queue: a bounded head start on the due time.

A queue is one sorted set scored by due time and claimed lowest score first, in one round trip; a second
set per priority would cost every script a look at each. So a job of priority p (0-9, higher goes first)
that is due when enqueued is scored p * PRIORITY_STEP_S earlier: it goes ahead of every job that has
waited less than that much longer. A job that has waited longer than any head start goes first whatever
its priority, so no priority starves another. A deferred job (`defer_s`, a retry's backoff) takes its
place at its due time, as priority 0.

The score's fraction carries p (score = due - p * step + p / 10; a ms timestamp as a double keeps four
decimals), so a reader of the queue (the oldest-waiting metric) can take the head start back out.
"""

from __future__ import annotations

__all__ = ["MAX_PRIORITY", "PRIORITY_STEP_S", "check_priority", "due_of", "score"]

PRIORITY_STEP_S = 60
MAX_PRIORITY = 9
_STEP_MS = PRIORITY_STEP_S * 1000


def check_priority(priority: int) -> int:
    if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= MAX_PRIORITY:
        raise ValueError(f"priority must be an int 0-{MAX_PRIORITY} (higher goes first), got {priority!r}")
    return priority


def score(due_ms: int, now_ms: int, priority: int) -> str:
    """The queue score of a job due at `due_ms`, enqueued at `now_ms`, as the scripts take it."""
    if not priority or due_ms > now_ms:
        return str(due_ms)
    return f"{due_ms - priority * _STEP_MS}.{priority}"


def due_of(score: float) -> float:
    """The due time (ms) a queue score stands for: the score with its head start taken back out."""
    priority = round((score % 1) * 10)
    return score - priority / 10 + priority * _STEP_MS
