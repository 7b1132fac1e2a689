"""The example project's tests: its jobs on the real queue, through the runner's pytest plugin alone."""

from __future__ import annotations

import os

import pytest

from runner.errors import JobFailedError
from runner.status import JobStatus
from runner.testing import JobRunnerHarness


async def test_a_job_returns_its_value(job_runner: JobRunnerHarness):
    """A job enqueued through the harness runs on the test's worker and its return value is its result."""
    handle = await job_runner.enqueue("example.add", a=2, b=3)
    assert await job_runner.result(handle) == 5
    assert await handle.status() is JobStatus.COMPLETED


async def test_a_failing_job_raises_its_error(job_runner: JobRunnerHarness):
    """Awaiting a failed job's result raises JobFailedError with the job's own error."""
    handle = await job_runner.enqueue("example.refuse", reason="out of stock")
    with pytest.raises(JobFailedError, match="PermanentError: refused: out of stock"):
        await job_runner.result(handle.job_id)
    assert await job_runner.status(handle.job_id) is JobStatus.FAILED


async def test_run_until_idle_waits_for_the_retries(job_runner: JobRunnerHarness):
    """run_until_idle returns once the job has succeeded at its third try, not while a retry waits."""
    handle = await job_runner.enqueue("example.flaky", fail_times=2)
    await job_runner.run_until_idle()
    row = await job_runner.row(handle.job_id)
    assert row is not None
    assert (row.status, row.result, row.attempts) == (JobStatus.COMPLETED, 3, 3)


async def test_the_jobs_a_job_enqueues_run_too(job_runner: JobRunnerHarness):
    """A fan-out: run_until_idle waits for the children the parent enqueued, which name it as their parent."""
    parent = await job_runner.enqueue("example.double_all", numbers=[1, 2, 3])
    await job_runner.run_until_idle()
    children = await job_runner.result(parent, timeout=0)  # ended already: no wait
    for child, expected in zip(children, [2, 4, 6], strict=True):
        row = await job_runner.row(child)
        assert row is not None
        assert (row.status, row.result, row.parent_id) == (JobStatus.COMPLETED, expected, parent.job_id)


async def test_a_job_with_bad_arguments_is_refused_before_it_is_queued(job_runner: JobRunnerHarness):
    """The harness enqueues through the real client, which checks arguments against the job's signature."""
    with pytest.raises(Exception, match="expects arguments"):
        await job_runner.enqueue("example.add", a=1)


@pytest.mark.parametrize("runner_settings_overrides", [{"job_timeout_s": 0.3, "job_soft_timeout_s": 0.3}])
async def test_settings_overrides_reach_the_worker(job_runner: JobRunnerHarness):
    """A test changes its settings through runner_settings_overrides: here the hard time limit stops a nap."""
    handle = await job_runner.enqueue("example.nap", seconds=5)
    with pytest.raises(JobFailedError, match="JobTimeoutError"):
        await job_runner.result(handle)


async def test_a_worker_process_runs_the_jobs(job_runner_process: JobRunnerHarness):
    """With job_runner_process the worker is a real `python -m runner worker` process."""
    worker = job_runner_process.processes[0]
    nap = await job_runner_process.enqueue("example.nap", seconds=0)
    parent = await job_runner_process.enqueue("example.double_all", numbers=[21])
    await job_runner_process.run_until_idle(timeout=20)
    assert (await job_runner_process.result(nap)).split(":")[1] == str(worker.pid) != str(os.getpid())
    [child] = await job_runner_process.result(parent)
    assert await job_runner_process.result(child) == 42
