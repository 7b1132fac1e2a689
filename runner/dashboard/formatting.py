"""How values read on a page: times in UTC, ages and durations in the unit that fits, JSON indented."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["FILTERS", "age", "compact_json", "duration", "pretty_json", "when", "when_epoch"]


def when(value: datetime | None) -> str:
    """`2025-06-01 12:00:03Z`; an em dash when there is no time."""
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def when_epoch(seconds: float) -> str:
    """`when` of a Unix time."""
    return when(datetime.fromtimestamp(seconds, UTC))


def duration(seconds: float | None) -> str:
    """0.042 s, 3.5 s, 2 min 5 s, 3 h 4 min."""
    if seconds is None:
        return "—"
    if seconds < 10:
        return f"{seconds:.3g} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def age(value: datetime | None, now: datetime | None = None) -> str:
    """How long ago `value` was: `3.5 s ago`."""
    if value is None:
        return "—"
    return duration(max(0.0, ((now or datetime.now(UTC)) - value).total_seconds())) + " ago"


def pretty_json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


def compact_json(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


FILTERS = {
    "when": when,
    "when_epoch": when_epoch,
    "duration": duration,
    "age": age,
    "pretty_json": pretty_json,
    "compact_json": compact_json,
}
