"""A unique rule is checked when the registry is built; its key comes from the enqueue's arguments."""

from __future__ import annotations

import pytest

from runner.context import JobContext
from runner.errors import ConfigError, JobArgumentsError
from runner.registry import Registry, job
from runner.settings import Settings
from runner.unique import Unique


def settings() -> Settings:
    return Settings(_env_file=None)  # type: ignore[call-arg]


def test_a_template_key_is_filled_from_the_arguments_and_a_function_key_called():
    assert Unique("user:{user_id}:{kind}", for_s=5).key_for("j", {"user_id": 42, "kind": "x", "more": 1}) == "user:42:x"
    assert Unique(lambda kw: f"u{kw['a'] + 1}", for_s=5).key_for("j", {"a": 1}) == "u2"
    with pytest.raises(JobArgumentsError, match=r"needs the argument 'user_id'; pass it to enqueue"):
        Unique("user:{user_id}", for_s=5).key_for("j", {})


def test_a_template_naming_no_parameter_is_refused_at_registry_build():
    @job("u.bad", unique=Unique("user:{nobody}", for_s=5))
    async def bad(ctx: JobContext, *, user_id: int) -> None: ...

    with pytest.raises(ConfigError, match=r"names \['nobody'\], not one of its parameters \['user_id'\]"):
        Registry((bad,)).resolved(settings())


@pytest.mark.parametrize(
    ("for_s", "mode", "message"), [(0, "dedupe", "over 0 seconds"), (5, "throttle", "mode must be one of")]
)
def test_a_bad_window_or_mode_is_refused(for_s: float, mode: str, message: str):
    with pytest.raises(ConfigError, match=message):
        Unique("k", for_s=for_s, mode=mode)  # type: ignore[arg-type]


def test_a_parameter_may_not_take_an_enqueue_keyword_name():
    @job("u.clash")
    async def clash(ctx: JobContext, *, unique_key: str) -> None: ...

    with pytest.raises(ConfigError, match=r"'unique_key' is one of JobClient\.enqueue's own keywords"):
        Registry((clash,)).resolved(settings())
