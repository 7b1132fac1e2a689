"""METRICS_PORT: workers run without the API (`make worker`), and the supervisor serves the whole
fleet's Prometheus metrics itself (prometheus-client multiprocess mode)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from runner.client import JobClient
from runner.devservers import free_port
from runner.resources import Resources
from runner.settings import Settings
from tests.acceptance import probe_jobs
from tests.acceptance.fleet import Fleet
from tests.conftest import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
async def metrics_fleet(settings: Settings, tmp_path: Path) -> AsyncIterator[tuple[Fleet, int]]:
    """A two-worker probe fleet with no API and METRICS_PORT set; killed at teardown."""
    port = free_port()
    fleet = Fleet(settings, tmp_path, registry="tests.acceptance.probe_jobs:registry", workers=2, metrics_port=port)
    try:
        yield await fleet.start(), port
    finally:
        fleet.close()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_the_supervisor_serves_the_fleets_metrics_on_metrics_port(
    resources: Resources, settings: Settings, metrics_fleet: tuple[Fleet, int]
) -> None:
    """With METRICS_PORT and no API, GET :METRICS_PORT/metrics answers with runner_ metrics summed over
    the worker processes: two workers alive, and the 12 no-op jobs they ran counted as completed."""
    fleet, port = metrics_fleet
    client = JobClient(resources, probe_jobs.registry.resolved(settings))
    await asyncio.gather(*(client.enqueue("probe.noop", job_id=f"{settings.queue_name}:m{n}") for n in range(12)))
    completed = ("runner_jobs_total", (("job_name", "probe.noop"), ("outcome", "completed")))
    scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:

        async def counted() -> bool:
            nonlocal scraped
            response = await http.get("/metrics")
            assert response.status_code == 200, response.text
            scraped = samples(response.text)
            return scraped.get(completed) == 12

        await wait_for(counted, 15, every=0.1)
    assert fleet.events("metrics_url"), fleet.tail()
    assert scraped[("runner_workers_alive", ())] == 2
    assert scraped[("runner_job_duration_seconds_count", completed[1])] == 12
    names = {name for name, _ in scraped}
    print(f"\nmeasured metrics port: {sorted(n for n in names if n.startswith('runner_'))}")
    assert {"runner_jobs_total", "runner_jobs_in_flight", "runner_workers_alive"} <= names
