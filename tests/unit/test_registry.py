"""Jobs are registered as values; their JSON arguments are checked against the signature."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from runner.context import JobContext
from runner.errors import ConfigError, JobArgumentsError, UnknownJobError
from runner.registry import Registry, job
from runner.settings import Settings


@job("demo.greet", timeout_s=10)
async def greet(ctx: JobContext, *, user_id: uuid.UUID, times: int = 1) -> str:
    return "hi" * times


def settings() -> Settings:
    return Settings(_env_file=None, job_timeout_s=100, job_soft_timeout_s=90, job_max_tries=4)  # type: ignore[call-arg]


def test_defaults_come_from_settings_and_explicit_values_win():
    """Unset limits take the settings' values; the spec's own timeout stays."""
    spec = Registry((greet,)).resolved(settings())["demo.greet"]
    assert (spec.queue, spec.timeout_s, spec.soft_timeout_s, spec.max_tries) == ("storymimi", 10, 9, 4)


def test_soft_limit_at_or_above_hard_limit_means_none():
    """A soft limit that could never fire before the hard one is dropped."""

    @job("demo.same", timeout_s=5, soft_timeout_s=5)
    async def same(ctx: JobContext) -> None: ...

    assert Registry((same,)).resolved(settings())["demo.same"].soft_timeout_s is None


def test_positional_arguments_take_names_in_signature_order_or_as_declared():
    """What a Celery `.delay(a, b)` or an arq `enqueue_job(name, a, b)` sends maps onto keyword arguments."""
    user = uuid.uuid4()
    spec = Registry((greet,)).resolved(settings())["demo.greet"]
    assert spec.bind((str(user), "3"), {}) == {"user_id": user, "times": 3}
    assert spec.bind((str(user),), {"times": 2}) == {"user_id": user, "times": 2}

    @job("demo.declared", positional=("times", "user_id"))
    async def declared(ctx: JobContext, *, user_id: uuid.UUID, times: int = 1) -> None: ...

    spec = Registry((declared,)).resolved(settings())["demo.declared"]
    assert spec.bind((5, str(user)), {}) == {"user_id": user, "times": 5}


def test_arguments_are_validated_and_coerced():
    """JSON strings become the annotated types; defaults may be left out."""
    spec = Registry((greet,)).resolved(settings())["demo.greet"]
    user = uuid.uuid4()
    assert spec.bind((), {"user_id": str(user)}) == {"user_id": user}


@pytest.mark.parametrize(
    ("args", "kwargs", "says"),
    [
        ((str(uuid.UUID(int=1)), 2, 3), {}, "takes at most 2 positional arguments ['user_id', 'times'], got 3"),
        ((str(uuid.UUID(int=1)),), {"user_id": str(uuid.UUID(int=2))}, "got ['user_id'] both as positional"),
        ((), {}, "missing: ['user_id']"),
        ((), {"user_id": str(uuid.UUID(int=1)), "extra": 1}, "unknown: ['extra']"),
        ((), {"user_id": "not-a-uuid"}, "argument 'user_id'='not-a-uuid' is invalid"),
        ((), {"user_id": str(uuid.UUID(int=1)), "times": "many"}, "argument 'times'='many' is invalid"),
    ],
)
def test_bad_arguments_say_what_is_wrong(args: tuple[object, ...], kwargs: dict[str, object], says: str):
    """Too many or doubled positional, missing, unknown and mistyped arguments are each named."""
    spec = Registry((greet,)).resolved(settings())["demo.greet"]
    with pytest.raises(JobArgumentsError) as caught:
        spec.bind(args, kwargs)
    assert says in str(caught.value)


def test_registration_mistakes_are_caught_early():
    """Duplicate names, generators and positional parameters are configuration errors."""
    with pytest.raises(ConfigError, match="registered twice"):
        Registry((greet, greet))

    def generator(ctx: JobContext) -> Iterator[int]:
        yield 1

    with pytest.raises(ConfigError, match="coroutine function or a plain `def`"):
        job("demo.generator")(generator)

    @job("demo.positional")
    async def positional(ctx: JobContext, story_id: str) -> None: ...

    with pytest.raises(ConfigError, match="must be keyword-only"):
        Registry((positional,)).resolved(settings())


def test_unknown_job_lists_the_known_ones():
    """Looking up an unregistered name says which names exist."""
    with pytest.raises(UnknownJobError, match=r"known jobs: \['demo.greet'\]"):
        Registry((greet,)).get("demo.nope")


def test_soft_limit_above_hard_limit_is_refused():
    """Settings refuse a soft limit above the hard one, naming both variables."""
    with pytest.raises(ValueError, match="JOB_SOFT_TIMEOUT_S"):
        Settings(_env_file=None, job_timeout_s=10, job_soft_timeout_s=20)  # type: ignore[call-arg]
