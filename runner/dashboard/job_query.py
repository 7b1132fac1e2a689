"""The jobs page's filters as they travel in a URL (`?status=failed&status=cancelled&name=...&field=k=v
&since=...&until=...&error=...`): read into a `JobFilter`, and written back for links and forms.

Times without a zone (what a browser's datetime-local input sends) are UTC, as every time on the pages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from starlette.datastructures import QueryParams

from runner.ops.jobs import JobFilter
from runner.status import JobStatus

__all__ = ["MAX_LIMIT", "JobQuery", "QueryError", "page_size"]

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


class QueryError(ValueError):
    """A filter the jobs page cannot use; the message names it and what it expects."""


@dataclass(frozen=True, slots=True)
class JobQuery:
    statuses: tuple[JobStatus, ...] = ()
    name: str | None = None
    field: tuple[str, str] | None = None
    since: datetime | None = None
    until: datetime | None = None
    error: str | None = None

    @classmethod
    def parse(cls, params: QueryParams) -> JobQuery:
        return cls(
            statuses=tuple(_status(s) for s in params.getlist("status") if s),
            name=params.get("name") or None, field=_field(params.get("field") or ""),
            since=_time("since", params.get("since") or ""), until=_time("until", params.get("until") or ""),
            error=params.get("error") or None,
        )  # fmt: skip

    def where(self, queue: str) -> JobFilter:
        return JobFilter(queue, self.statuses, self.name, self.field, self.since, self.until, self.error)

    def params(self) -> dict[str, list[str]]:
        """The filters as query parameters (empty ones left out), for links that keep them."""
        values = {
            "status": [s.value for s in self.statuses],
            "name": [self.name] if self.name else [],
            "field": [f"{self.field[0]}={self.field[1]}"] if self.field else [],
            "since": [time_value(self.since)] if self.since else [],
            "until": [time_value(self.until)] if self.until else [],
            "error": [self.error] if self.error else [],
        }
        return {key: value for key, value in values.items() if value}

    @property
    def empty(self) -> bool:
        return not self.params()


def page_size(params: QueryParams) -> int:
    text = params.get("limit") or str(DEFAULT_LIMIT)
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise QueryError(f"limit must be a whole number from 1 to {MAX_LIMIT}, not {text!r}")
    return int(text)


def time_value(value: datetime) -> str:
    """What a datetime-local input shows: UTC, to the second, without a zone."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _status(text: str) -> JobStatus:
    try:
        return JobStatus(text)
    except ValueError:
        raise QueryError(f"status must be one of {', '.join(s.value for s in JobStatus)}, not {text!r}") from None


def _field(text: str) -> tuple[str, str] | None:
    if not text:
        return None
    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise QueryError(f"field must be an argument and its value, as story_id=..., not {text!r}")
    return key.strip(), value.strip()


def _time(name: str, text: str) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise QueryError(f"{name} must be a time such as 2025-06-01T12:00 (UTC), not {text!r}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
