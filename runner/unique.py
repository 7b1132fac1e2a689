"""Unique jobs: one job per key of a job name within a window, deduplicated or debounced.

    @job("stats.refresh", unique=Unique("user:{user_id}", for_s=60))      # the key built from the arguments
    await client.enqueue("stats.refresh", user_id=42)
    await client.enqueue("mail.digest", user_id=42, unique_key="user:42", unique_for_s=300, unique_mode="debounce")

dedupe    the first enqueue of a key opens the window; until it closes, an enqueue with that key returns
          a handle on that first job (waiting, running or ended) and enqueues nothing.
debounce  the job waits out the window before it starts; an enqueue with that key while it still waits (even
          past its due time, behind busy workers) gives it the new arguments and moves its start to now +
          window, under the same job id, so only the last arguments run, once. A job that has started (or
          is being retried, or ended) is never touched: the next enqueue makes a new job, which waits its
          own window.

Both are decided inside the enqueue script, in the same round trip, so concurrent enqueues of one key
(from any number of processes) make one job.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, get_args

from runner.errors import ConfigError, JobArgumentsError

__all__ = ["Unique", "UniqueMode", "UniqueOutcome"]

UniqueMode = Literal["dedupe", "debounce"]


class UniqueOutcome(StrEnum):
    """What the enqueue script did with a unique enqueue (its reply codes 0-4)."""

    REFUSED = "refused"  # no job held the key, and a job with this id exists already: left as it is
    QUEUED = "queued"  # a new job, which now holds the key
    DEDUPLICATED = "deduplicated"  # the key's job was returned; nothing was enqueued
    DEBOUNCED = "debounced"  # the key's waiting job took these arguments and a later start


@dataclass(frozen=True)
class Unique:
    """A job's uniqueness: `key` is a template over its arguments ("user:{user_id}") or a function of them."""

    key: str | Callable[[Mapping[str, Any]], str]
    for_s: float
    mode: UniqueMode = "dedupe"

    def __post_init__(self) -> None:
        if not self.for_s > 0:
            raise ConfigError(f"a unique job's window must be over 0 seconds, got for_s={self.for_s!r}")
        if self.mode not in get_args(UniqueMode):
            raise ConfigError(f"a unique job's mode must be one of {get_args(UniqueMode)}, got {self.mode!r}")

    def check(self, job_name: str, params: Iterable[str]) -> None:
        """At registry build: a template may only name the job's parameters."""
        if callable(self.key):
            return
        fields = {name for _, name, _, _ in string.Formatter().parse(self.key) if name is not None}
        unknown = sorted(fields - set(params))
        if unknown or "" in fields:
            raise ConfigError(
                f"job {job_name!r}: unique key {self.key!r} names {unknown or 'a positional field'}, not one of its "
                f"parameters {sorted(params)}; write fields as {{name}}"
            )

    def key_for(self, job_name: str, kwargs: Mapping[str, Any]) -> str:
        """The key of one enqueue, from its arguments."""
        if callable(self.key):
            return self.key(kwargs)
        try:
            return self.key.format_map(kwargs)
        except KeyError as exc:
            raise JobArgumentsError(
                f"job {job_name!r}: its unique key {self.key!r} needs the argument {exc.args[0]!r}; pass it to enqueue"
            ) from None
