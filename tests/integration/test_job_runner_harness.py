"""The pytest plugin's harness (runner.testing) against the session's real servers: its waits end when the jobs
have, and when they cannot they fail at once or at their timeout, saying what is left and which workers run."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from runner.context import JobContext
from runner.errors import JobFailedError, PermanentError, TransientError
from runner.registry import Registry, job
from runner.resources import Resources
from runner.retry import RetryPolicy
from runner.settings import Settings
from runner.status import JobStatus
from runner.testing import JobRunnerHarness, RunnerServers, open_servers
from runner.testing.worker_process import find_registry_path, settings_env
from tests.conftest import Servers


@job("harness.echo")
async def echo(ctx: JobContext, *, value: Any, sleep_s: float = 0.0) -> Any:
    await asyncio.sleep(sleep_s)
    return value


@job("harness.fail")
async def fail(ctx: JobContext, *, reason: str) -> None:
    raise PermanentError(reason)


@job("harness.retry_then_spawn", retry=RetryPolicy(max_tries=2, base_delay_s=0.3, jitter=0))
async def retry_then_spawn(ctx: JobContext, *, value: str) -> str:
    """Fails its first try (a retry 0.3 s later), then enqueues a child that takes 0.3 s; returns its id."""
    if ctx.attempt == 1:
        raise TransientError("the first try fails")
    child = await ctx.jobs.enqueue("harness.echo", job_id=f"{ctx.job_id}:child", value=value, sleep_s=0.3)
    return child.job_id


REGISTRY = Registry(specs=(echo, fail, retry_then_spawn))


@pytest.fixture(scope="session")
def runner_servers(servers: Servers) -> RunnerServers:
    """The plugin's fixtures on the suite's own servers (an override, as a user's conftest could do)."""
    return RunnerServers(servers.redis.url, servers.postgres.url)


@pytest.fixture
def runner_registry() -> Registry:
    return REGISTRY


async def test_each_test_gets_a_queue_of_its_own_and_the_migrations(
    runner_settings: Settings, runner_resources: Resources
):
    """The settings name a fresh queue on the given servers; the runner's tables exist."""
    assert runner_settings.queue_name.startswith("test-") and runner_settings.slot_prefix.endswith(
        runner_settings.queue_name
    )
    assert (runner_settings.max_jobs_per_worker, runner_settings.max_memory_per_worker_mb) == (0, 0)
    applied = await runner_resources.db.fetchval("SELECT count(*) FROM schema_migrations WHERE namespace = 'runner'")
    assert applied >= 1
    assert await runner_resources.db.fetchval("SELECT to_regclass('runner_jobs') IS NOT NULL")


async def test_run_until_idle_waits_for_retries_and_the_jobs_they_enqueue(job_runner: JobRunnerHarness):
    """Idle means every job ended: not while a retry waits (0.3 s), nor while the child it enqueues runs (0.3 s)."""
    parent = await job_runner.enqueue("harness.retry_then_spawn", value="v")
    started = time.monotonic()
    await job_runner.run_until_idle(timeout=15)
    assert time.monotonic() - started >= 0.5
    child_id = await job_runner.result(parent, timeout=0)
    child = await job_runner.row(child_id)
    assert child is not None and (child.status, child.result, child.parent_id) == ("completed", "v", parent.job_id)
    assert await job_runner.status(parent.job_id) is JobStatus.COMPLETED


async def test_run_until_idle_times_out_naming_what_is_left(job_runner: JobRunnerHarness):
    """Past its timeout, run_until_idle fails saying which jobs are unfinished, in what state, and the workers."""
    handle = await job_runner.enqueue("harness.echo", value=1, sleep_s=30)
    started = time.monotonic()
    with pytest.raises(TimeoutError) as raised:
        await job_runner.run_until_idle(timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 5
    message = str(raised.value)
    assert f"queue {job_runner.queue!r} holds 1 unfinished jobs (1 due or running, 0 waiting for a retry)" in message
    assert f"{handle.job_id} (harness.echo, processing, attempt 1/3)" in message
    assert "this test's: 1 in its event loop, 0 processes" in message
    await handle.cancel()  # the handle's cancel; the worker stops the job
    with pytest.raises(JobFailedError, match="ended cancelled"):
        await job_runner.result(handle)
    await job_runner.run_until_idle()


async def test_run_until_idle_fails_at_once_when_no_worker_runs(runner_harness: JobRunnerHarness):
    """Without a worker there is nothing to wait for: it fails now, not after its timeout, and says so."""
    handle = await runner_harness.enqueue("harness.echo", value=1)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"and no worker runs it: use the job_runner fixture") as raised:
        await runner_harness.run_until_idle(timeout=30)
    assert time.monotonic() - started < 5
    assert f"{handle.job_id} (harness.echo, pending, attempt 0/3)" in str(raised.value)
    await runner_harness.start_worker()
    await runner_harness.run_until_idle()
    assert await runner_harness.result(handle, timeout=0) == 1


async def test_result_of_a_failed_job_raises_job_failed_error(job_runner: JobRunnerHarness):
    """result() returns a job's value, or raises JobFailedError with its status and error."""
    failed = await job_runner.enqueue("harness.fail", reason="no such order")
    with pytest.raises(JobFailedError, match="ended failed: PermanentError: no such order") as raised:
        await job_runner.result(failed.job_id)
    assert (raised.value.job_id, raised.value.status) == (failed.job_id, "failed")
    assert await job_runner.result(await job_runner.enqueue("harness.echo", value={"a": [1]})) == {"a": [1]}


async def test_result_times_out_saying_which_workers_run(runner_harness: JobRunnerHarness):
    """A result that does not come in time names the job's state and the workers (none here)."""
    handle = await runner_harness.enqueue("harness.echo", value=1)
    with pytest.raises(TimeoutError, match=r"is still pending after 0\.2s; Workers reporting .*: 0 \(this test's: 0"):
        await runner_harness.result(handle, timeout=0.2)


async def test_a_worker_that_cannot_start_raises_its_error_at_start(runner_harness: JobRunnerHarness):
    """A registry whose services fail to open: start_worker raises that error (and teardown does not again)."""

    def broken_services(resources: Resources) -> Any:
        raise RuntimeError("the services could not open")

    runner_harness.registry = Registry(specs=REGISTRY.specs, services=broken_services)
    with pytest.raises(RuntimeError, match="the services could not open"):
        await runner_harness.start_worker()
    assert runner_harness.workers == []


async def test_a_worker_process_needs_the_registry_by_path(runner_harness: JobRunnerHarness):
    """A process imports its registry: the harness found this module's, and says what to do without one."""
    assert runner_harness.registry_path == f"{__name__}:REGISTRY" == find_registry_path(REGISTRY)
    assert find_registry_path(Registry(specs=(echo,))) is None
    runner_harness.registry_path = None
    with pytest.raises(RuntimeError, match=r"set `runner_registry = package\.module:name` in the pytest ini"):
        await runner_harness.start_worker(process=True)


def test_settings_reach_a_process_through_its_environment(runner_settings: Settings, monkeypatch: pytest.MonkeyPatch):
    """What a worker process reads from settings_env() is the test's settings, field for field."""
    env = settings_env(runner_settings, {"REDIS_SENTINELS": "10.0.0.1:26379"})
    assert "REDIS_SENTINELS" not in env  # None in the test's settings: not inherited from the parent
    for name in type(runner_settings).model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert type(runner_settings)(_env_file=None).model_dump() == runner_settings.model_dump()


def test_given_server_urls_start_no_server(tmp_path: Path):
    """With REDIS_URL and DATABASE_URL set, those are used and nothing is started."""
    environ = {"REDIS_URL": "redis://127.0.0.1:1/0", "DATABASE_URL": "postgresql://u@127.0.0.1:1/db"}
    with open_servers(tmp_path / "servers", environ) as servers:
        assert servers == RunnerServers(environ["REDIS_URL"], environ["DATABASE_URL"], embedded=())
    assert not (tmp_path / "servers").exists()
