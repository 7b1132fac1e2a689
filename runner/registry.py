"""The job registry: each job is a small value (name, coroutine, limits, retry policy, hooks).

A job is a plain coroutine `async def fn(ctx: JobContext, *, arg: T, ...) -> JSON`, or a plain `def` of the
same shape for blocking code, which the worker runs in a thread (`JobContext.run_sync`). Its keyword-only
parameters are its JSON arguments; they are checked against the signature and validated with pydantic
before the job runs, so a payload with wrong arguments fails with a reason instead of half-running.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import TypeAdapter, ValidationError

from runner.errors import ConfigError, JobArgumentsError, UnknownJobError
from runner.priority import check_priority
from runner.retry import RetryPolicy
from runner.settings import Settings
from runner.unique import Unique

if TYPE_CHECKING:
    from runner.context import JobContext
    from runner.resources import Resources

__all__ = ["FailureHook", "JobCoroutine", "JobSpec", "Registry", "ServicesFactory", "job"]

JobCoroutine = Callable[..., Awaitable[Any]]
FailureHook = Callable[["JobContext", str], Awaitable[None]]
ServicesFactory = Callable[["Resources"], AbstractAsyncContextManager[Any]]


@dataclass(frozen=True)
class JobSpec:
    """One registered job. Unset limits take their defaults from Settings at registry build time.

    A soft limit at or above the hard limit means none: the job gets no warning before it is stopped."""

    name: str
    coroutine: JobCoroutine
    queue: str | None = None
    timeout_s: float | None = None
    soft_timeout_s: float | None = None
    retry: RetryPolicy | None = None
    # kwargs bound into every log line of the job (e.g. "story_id"); the runner knows no more of them.
    log_fields: tuple[str, ...] = ()
    # Called when the job ends failed or cancelled for any reason, including ones its code never saw
    # (hard timeout, bad arguments, a worker that kept dying): how domain rows avoid staying stuck.
    on_failure: FailureHook | None = None
    # The names positional arguments take, in order, for producers that send them (a Celery `.delay(a, b)`,
    # an arq `enqueue_job(name, a, b)`); default: the keyword-only parameters in signature order.
    positional: tuple[str, ...] | None = None
    # Periodic: enqueued once per tick of this cron expression across the whole fleet (5 fields, or 6 with
    # seconds last), with its defaults as arguments; ticks missed while no worker ran are skipped, or with
    # cron_missed="once" the latest of them runs once. A function of the settings reads the expression from
    # them at registry build (None or "": not scheduled).
    cron: str | Callable[[Settings], str | None] | None = None
    cron_missed: Literal["skip", "once"] = "skip"
    # One job per key within a window, deduplicated or debounced (runner/unique.py); an enqueue's own
    # unique_key / unique_for_s / unique_mode take precedence.
    unique: Unique | None = None
    # 0-9, higher first: a head start on the queue's other due jobs (runner/priority.py); an enqueue's own
    # `priority=` takes precedence.
    priority: int = 0
    _params: Mapping[str, TypeAdapter[Any]] = field(default_factory=dict, compare=False, repr=False)
    _required: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    def with_defaults(self, settings: Settings) -> JobSpec:
        """This spec with every unset limit filled in from settings and its signature read."""
        params, required = _read_signature(self.name, self.coroutine)
        cron = (self.cron(settings) if callable(self.cron) else self.cron) or None
        if cron is not None:
            _check_cron(self.name, cron, required)
        if self.unique is not None:
            self.unique.check(self.name, params)
        timeout_s = self.timeout_s or settings.job_timeout_s
        # A job with its own hard limit keeps the global soft/hard proportion (3300/3600 by default).
        soft_s = self.soft_timeout_s or timeout_s * settings.job_soft_timeout_s / settings.job_timeout_s
        return JobSpec(
            name=self.name,
            coroutine=self.coroutine,
            queue=self.queue or settings.queue_name,
            timeout_s=timeout_s,
            soft_timeout_s=soft_s if soft_s < timeout_s else None,  # at or past the hard limit: no warning
            retry=self.retry or RetryPolicy(max_tries=settings.job_max_tries),
            log_fields=self.log_fields,
            on_failure=self.on_failure,
            positional=self.positional,
            cron=cron,
            cron_missed=self.cron_missed,
            unique=self.unique,
            priority=check_priority(self.priority),
            _params=params,
            _required=required,
        )

    @property
    def max_tries(self) -> int:
        return self.retry.max_tries if self.retry else 1

    def keywords(self, args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Positional arguments given their names (`positional`, else the signature's order), merged with
        the keyword ones; raise JobArgumentsError for too many, or a value given both ways."""
        if not args:
            return kwargs
        names = self.positional if self.positional is not None else tuple(self._params)
        if len(args) > len(names):
            raise JobArgumentsError(
                f"job {self.name!r} takes at most {len(names)} positional arguments {list(names)}, got {len(args)}"
            )
        named = dict(zip(names, args, strict=False))
        both = sorted(set(named) & set(kwargs))
        if both:
            raise JobArgumentsError(f"job {self.name!r} got {both} both as positional and keyword arguments")
        return {**named, **kwargs}

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Validate JSON arguments against the signature; raise JobArgumentsError saying what is wrong.
        Positional ones (from producers that send them) take their names first (see `keywords`)."""
        kwargs = self.keywords(args, kwargs)
        unknown = sorted(kwargs.keys() - self._params.keys())
        missing = sorted(self._required - kwargs.keys())
        if unknown or missing:
            raise JobArgumentsError(
                f"job {self.name!r} expects arguments {sorted(self._params)}; "
                f"unknown: {unknown or 'none'}, missing: {missing or 'none'}"
            )
        bound: dict[str, Any] = {}
        for key, value in kwargs.items():
            try:
                bound[key] = self._params[key].validate_python(value)
            except ValidationError as exc:
                first = exc.errors()[0]
                raise JobArgumentsError(
                    f"job {self.name!r} argument {key!r}={value!r} is invalid: {first['msg']}"
                ) from None
        return bound


def job(
    name: str,
    *,
    queue: str | None = None,
    timeout_s: float | None = None,
    soft_timeout_s: float | None = None,
    retry: RetryPolicy | None = None,
    log_fields: Iterable[str] = (),
    on_failure: FailureHook | None = None,
    positional: Iterable[str] | None = None,
    cron: str | Callable[[Settings], str | None] | None = None,
    cron_missed: Literal["skip", "once"] = "skip",
    unique: Unique | None = None,
    priority: int = 0,
) -> Callable[[JobCoroutine], JobSpec]:
    """Decorator: turn a coroutine function into a JobSpec named `name` (Celery-compatible names welcome).
    A plain `def` becomes a job run in one of the worker's threads, under the same limits and retries."""

    def register(fn: Callable[..., Any]) -> JobSpec:
        if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn) or not callable(fn):
            raise ConfigError(f"job {name!r} must be an `async def` coroutine function or a plain `def`, got {fn!r}")
        coroutine = fn if inspect.iscoroutinefunction(fn) else _in_thread(fn)
        return JobSpec(name, coroutine, queue, timeout_s, soft_timeout_s, retry, tuple(log_fields), on_failure,
                       tuple(positional) if positional is not None else None, cron, cron_missed, unique,
                       check_priority(priority))  # fmt: skip

    return register


@dataclass(frozen=True)
class Registry:
    """The jobs a worker can run, and the services they need beyond the runner's own resources."""

    specs: tuple[JobSpec, ...]
    # Opens the registry's own process-lifetime services (providers, storage) over the runner's resources.
    services: ServicesFactory | None = None
    # Packages whose `sql/` migrations must be applied before these jobs run (the runner's own come first).
    migrations: tuple[str, ...] = ()
    # The settings class these jobs read (the runner's, or a subclass with their own fields); an entry
    # point builds it once with `registry.settings()`.
    settings: type[Settings] = Settings

    def __post_init__(self) -> None:
        names = [spec.name for spec in self.specs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"job names must be unique; registered twice: {duplicates}")

    def resolved(self, settings: Settings) -> dict[str, JobSpec]:
        return {spec.name: spec.with_defaults(settings) for spec in self.specs}

    def get(self, name: str) -> JobSpec:
        for spec in self.specs:
            if spec.name == name:
                return spec
        raise UnknownJobError(f"no job named {name!r}; known jobs: {sorted(s.name for s in self.specs)}")


def _check_cron(name: str, cron: str, required: frozenset[str]) -> None:
    from croniter import croniter

    if not croniter.is_valid(cron):
        raise ConfigError(f"job {name!r}: cron={cron!r} is not a cron expression (5 fields, or 6 with seconds last)")
    if required:
        raise ConfigError(f"job {name!r} runs on a schedule, so it gets no arguments: give {sorted(required)} defaults")


def _in_thread(fn: Callable[..., Any]) -> JobCoroutine:
    """A coroutine that runs the blocking job `fn` in a worker thread (its signature and hints kept)."""

    @functools.wraps(fn)
    async def run_in_thread(ctx: JobContext, /, **kwargs: Any) -> Any:
        return await ctx.run_sync(fn, ctx, **kwargs)

    return run_in_thread


_ENQUEUE_KEYWORDS = frozenset({"job_id", "unique_key", "unique_for_s", "unique_mode"})  # not job arguments


def _read_signature(name: str, coroutine: JobCoroutine) -> tuple[dict[str, TypeAdapter[Any]], frozenset[str]]:
    hints = typing.get_type_hints(coroutine)
    params: dict[str, TypeAdapter[Any]] = {}
    required: set[str] = set()
    for param in list(inspect.signature(coroutine).parameters.values())[1:]:
        if param.kind is not inspect.Parameter.KEYWORD_ONLY:
            raise ConfigError(
                f"job {name!r}: parameter {param.name!r} must be keyword-only "
                f"(write `async def fn(ctx, *, {param.name}: ...)`)"
            )
        if param.name in _ENQUEUE_KEYWORDS:
            raise ConfigError(f"job {name!r}: parameter {param.name!r} is one of JobClient.enqueue's own keywords "
                              f"{sorted(_ENQUEUE_KEYWORDS)}; rename it")  # fmt: skip
        params[param.name] = TypeAdapter(hints.get(param.name, Any))
        if param.default is inspect.Parameter.empty:
            required.add(param.name)
    return params, frozenset(required)
