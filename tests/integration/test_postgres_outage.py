"""Postgres away: start-up waits for it with backoff, and /ready names it while it is down. Each test
uses a Postgres of this module's own, so the session's shared servers are never stopped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from runner.client import JobClient
from runner.devservers import EmbeddedPostgres
from runner.resources import open_resources
from runner.status import JobStatus
from tests.conftest import MakeSettings, RunWorker, api_client, wait_for
from tests.integration.test_worker import REGISTRY


@pytest.fixture(scope="module")
def own_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """A Postgres of this module's own (initdb done once), on its own port and data folder."""
    with EmbeddedPostgres(tmp_path_factory.mktemp("own-postgres")) as server:
        yield server


async def start_after(server: EmbeddedPostgres, delay_s: float) -> None:
    await asyncio.sleep(delay_s)
    await asyncio.to_thread(server.start)


async def test_a_worker_waits_for_postgres_coming_up_during_start_up(
    make_settings: MakeSettings, run_worker: RunWorker, own_postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    """With Postgres down, a worker's start-up retries it (startup_connect_retry, server=postgres, with
    growing waits) instead of failing, connects once it is up a second later, and then runs jobs."""
    settings = make_settings(database_url=own_postgres.url, startup_retry_s=30)
    own_postgres.stop()
    late = asyncio.create_task(start_after(own_postgres, 1.0))
    began = time.monotonic()
    try:
        with capture_logs() as logs:
            await run_worker(REGISTRY, settings)
        ready_after = time.monotonic() - began
    finally:
        await late
    retries = [e for e in logs if e["event"] == "startup_connect_retry"]
    assert retries, "start-up never had to retry: Postgres was not down"
    assert {e["server"] for e in retries} == {"postgres"}
    waits = [e["retry_in_s"] for e in retries]
    assert waits == sorted(waits) and waits[-1] > waits[0], waits
    assert ready_after >= 1.0
    async with open_resources(settings) as resources:
        client = JobClient(resources, REGISTRY.resolved(settings))
        job_id = f"after-outage-{settings.queue_name}"
        await client.enqueue("probe.record", job_id=job_id, tag="after-outage")

        async def completed() -> bool:
            row = await client.get(job_id)
            return row is not None and row.status is JobStatus.COMPLETED

        await wait_for(completed, 10)


async def test_ready_names_postgres_while_it_is_down(
    make_settings: MakeSettings, own_postgres: EmbeddedPostgres
) -> None:
    """/ready: 200 with both up; 503 with checks["postgres"] "down: ..." (Redis still "ok") while
    Postgres is stopped; 200 again once it is back, without restarting the API."""
    own_postgres.start()
    settings = make_settings(database_url=own_postgres.url)
    async with api_client(settings) as api:
        assert (await api.get("/ready")).status_code == 200
        await asyncio.to_thread(own_postgres.stop)
        try:
            down = await api.get("/ready")
            assert down.status_code == 503, down.text
            checks = down.json()["checks"]
            assert checks["postgres"].startswith("down"), checks
            assert checks["redis"] == "ok", checks
        finally:
            await asyncio.to_thread(own_postgres.start)

        async def ready_again() -> bool:
            return (await api.get("/ready")).status_code == 200

        await wait_for(ready_again, 10, every=0.1)
