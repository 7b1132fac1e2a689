"""The runner's pytest plugin: the job system under test is the real one (Redis, Postgres, workers).

Loaded in every pytest run of an environment where the runner is installed (the `pytest11` entry point
`runner.testing.plugin`; `-p runner.testing.plugin` where plugin autoloading is off, `-p no:runner.testing.plugin`
to turn it off). Importing it imports nothing heavy and starts nothing: each fixture does its work when a test
asks for it.

    runner_servers              session: REDIS_URL / DATABASE_URL, else embedded Valkey and PostgreSQL 18
    runner_registry             the Registry the workers run; default: the `runner_registry` ini option
                                (module:attribute). Override the fixture to give another.
    runner_settings_overrides   {} ; override (or parametrize) to change the test's settings
    runner_settings             the registry's settings class on a queue of this test's own
    runner_resources            opened process resources, migrations applied
    runner_client               a runner.client.JobClient for the registry's jobs
    runner_harness              a JobRunnerHarness with no worker started yet
    job_runner                  the harness with a worker running in the test's event loop
    job_runner_process          the harness with a worker running as a real process

Async fixtures run in pytest-asyncio's loop for their scope (`asyncio_default_fixture_loop_scope`): keep it
the tests' loop scope, so the worker runs in the test's own loop.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pytest

if TYPE_CHECKING:
    from runner.client import JobClient
    from runner.registry import Registry
    from runner.resources import Resources
    from runner.settings import Settings
    from runner.testing.harness import JobRunnerHarness
    from runner.testing.servers import RunnerServers

__all__ = [
    "job_runner",
    "job_runner_process",
    "runner_client",
    "runner_harness",
    "runner_registry",
    "runner_resources",
    "runner_servers",
    "runner_settings",
    "runner_settings_overrides",
]

F = TypeVar("F", bound=Callable[..., Any])
REGISTRY_INI = "runner_registry"


def _async_fixture(fn: F) -> F:
    """pytest-asyncio's fixture (so its strict mode works too), or a plain one if it is missing (which
    `runner_settings` reports)."""
    try:
        import pytest_asyncio
    except ImportError:  # pragma: no cover
        return cast(F, pytest.fixture(fn))
    return cast(F, pytest_asyncio.fixture(fn))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(REGISTRY_INI, "the job Registry the runner fixtures' workers run, as module:attribute", default="")


@pytest.fixture(scope="session")
def runner_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunnerServers]:
    """Redis and Postgres for the session: REDIS_URL / DATABASE_URL if set, else embedded ones started here."""
    from runner.testing.servers import open_servers

    with open_servers(tmp_path_factory.mktemp("runner-servers"), os.environ) as servers:
        yield servers


@pytest.fixture
def runner_registry(request: pytest.FixtureRequest) -> Registry:
    """The Registry named by the `runner_registry` ini option; override this fixture to give one directly."""
    from runner.registry import Registry

    path = str(request.config.getini(REGISTRY_INI))
    if not path:
        pytest.fail(
            "the runner fixtures need your job Registry: set `runner_registry = package.module:name` in the pytest "
            "ini (or [tool.pytest.ini_options]), or override the `runner_registry` fixture to return it",
            pytrace=False,
        )
    module_name, _, attribute = path.partition(":")
    found = getattr(importlib.import_module(module_name), attribute, None) if attribute else None
    if not isinstance(found, Registry):
        pytest.fail(f"runner_registry = {path!r} must name a runner.Registry as module:attribute, "
                    f"found {type(found).__name__}", pytrace=False)  # fmt: skip
    return found


@pytest.fixture
def runner_settings_overrides() -> dict[str, Any]:
    """Settings this test changes (e.g. {"worker_concurrency": 1}); override or parametrize it."""
    return {}


@pytest.fixture
def runner_settings(
    runner_servers: RunnerServers,
    runner_registry: Registry,
    runner_settings_overrides: dict[str, Any],
    tmp_path: Path,
) -> Settings:
    """The registry's settings for this test: a queue of its own on the session's servers."""
    if importlib.util.find_spec("pytest_asyncio") is None:  # pragma: no cover
        pytest.fail("the runner fixtures are async: pip install pytest-asyncio", pytrace=False)
    from runner.testing.harness import harness_settings

    return harness_settings(runner_registry, redis_url=runner_servers.redis_url,
                            database_url=runner_servers.database_url, data_dir=tmp_path / "runner-data",
                            **runner_settings_overrides)  # fmt: skip


@_async_fixture
async def runner_resources(runner_settings: Settings, runner_registry: Registry) -> AsyncIterator[Resources]:
    """The process resources (Postgres and Redis pools, httpx client) with every migration applied."""
    from runner.resources import open_resources
    from runner.store.migrations import apply_migrations

    async with open_resources(runner_settings) as resources:
        await _refuse_a_live_database(resources, runner_settings)
        await apply_migrations(resources.db, ["runner", *runner_registry.migrations])
        yield resources


async def _refuse_a_live_database(resources: Resources, settings: Settings) -> None:
    """Stop before migrating or writing a database that holds real jobs (a DATABASE_URL left set in the shell
    for a dev or production server): only databases without the runner's tables, or whose queues' names all
    start with `test` (this plugin's `test-…`, a suite's own), are used."""
    has_table = await resources.db.fetchval("SELECT to_regclass('runner_jobs') IS NOT NULL")
    if not has_table:
        return
    other = await resources.db.fetchval(
        "SELECT queue FROM runner_jobs WHERE queue NOT LIKE 'test%' AND queue <> $1 LIMIT 1", settings.queue_name
    )
    if other is not None:
        from runner.errors import ConfigError

        raise ConfigError(
            f"DATABASE_URL names a database with jobs of queue {other!r}, not a test database: the runner's pytest "
            "plugin writes test jobs and applies migrations there. Point DATABASE_URL (and REDIS_URL) at test "
            "servers, or unset them to use embedded ones."
        )


@pytest.fixture
def runner_client(runner_harness: JobRunnerHarness) -> JobClient:
    """A JobClient for the registry's jobs on this test's queue."""
    return runner_harness.client


@_async_fixture
async def runner_harness(
    request: pytest.FixtureRequest,
    runner_settings: Settings,
    runner_registry: Registry,
    runner_resources: Resources,
    tmp_path: Path,
) -> AsyncIterator[JobRunnerHarness]:
    """A JobRunnerHarness on this test's queue, no worker started; the workers it starts stop at teardown."""
    from runner.testing.harness import JobRunnerHarness
    from runner.testing.worker_process import find_registry_path

    path = find_registry_path(runner_registry) or str(request.config.getini(REGISTRY_INI)) or None
    harness = JobRunnerHarness(runner_settings, runner_registry, runner_resources, log_dir=tmp_path / "runner-logs",
                               registry_path=path)  # fmt: skip
    try:
        yield harness
    finally:
        await harness.stop_workers()


@_async_fixture
async def job_runner(runner_harness: JobRunnerHarness) -> JobRunnerHarness:
    """The harness with a worker running in the test's event loop."""
    await runner_harness.start_worker()
    return runner_harness


@_async_fixture
async def job_runner_process(runner_harness: JobRunnerHarness) -> JobRunnerHarness:
    """The harness with a worker running as a real process (`python -m runner worker`)."""
    await runner_harness.start_worker(process=True)
    return runner_harness
