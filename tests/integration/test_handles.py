"""An enqueue's result is a handle on the job: its status, its result awaited (the job's error raised), cancel."""

from __future__ import annotations

import pytest

from runner.errors import JobFailedError
from runner.resources import Resources
from runner.settings import Settings
from runner.status import JobStatus
from tests.conftest import RunWorker
from tests.integration.test_worker import REGISTRY, client_for

pytestmark = pytest.mark.also_on_cluster  # the broker's behaviour, again on Redis Cluster


async def test_a_handle_awaits_the_result_or_raises_the_jobs_error(
    resources: Resources, settings: Settings, run_worker: RunWorker
):
    client = client_for(resources, settings)
    q = settings.queue_name
    fine = await client.enqueue("probe.record", job_id=f"{q}:fine", tag="t1", sleep_s=0.2)
    broken = await client.enqueue("probe.flaky", job_id=f"{q}:broken", key=f"{q}-k", fail_times=9, permanent=True)
    assert await fine.status() is JobStatus.PENDING
    with pytest.raises(TimeoutError, match=r"is still pending after 0\.2s"):
        await fine.result(timeout=0.2)  # no worker yet
    await run_worker(REGISTRY)
    assert await fine.result(timeout=10) == {"tag": "t1"}
    assert await fine.status() is JobStatus.COMPLETED
    with pytest.raises(JobFailedError, match="ended failed: PermanentError: not fixable") as failed:
        await broken.result(timeout=10)
    assert failed.value.status == "failed" and failed.value.job_id == f"{q}:broken"


async def test_a_handle_cancels_its_job(resources: Resources, settings: Settings, run_worker: RunWorker):
    client = client_for(resources, settings)
    await run_worker(REGISTRY)
    sleepy = await client.enqueue("probe.record", job_id=f"{settings.queue_name}:sleepy", tag="z", sleep_s=30)
    row = await sleepy.cancel()
    assert row is not None and row.job_id == sleepy.job_id
    with pytest.raises(JobFailedError, match="ended cancelled"):
        await sleepy.result(timeout=10)
