"""The numbers the alerting rules (runner/ops/alerts.yml) read live at each scrape of the API's /metrics,
against the real servers: each server up, the age of the oldest job waiting, the live workers; and a
/metrics that still answers, with the fleet's metrics, while Redis is down."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from runner.broker.enqueue import Enqueuer
from runner.broker.keys import QueueKeys
from runner.client import JobClient
from runner.context import JobContext
from runner.devservers import EmbeddedValkey
from runner.registry import Registry, job
from runner.resources import Resources
from runner.settings import Settings
from tests.conftest import MakeSettings, RunWorker, api_client, wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@job("probe.nap")
async def nap(ctx: JobContext, *, seconds: float) -> None:
    await asyncio.sleep(seconds)


REGISTRY = Registry(specs=(nap,))


async def scrape(api: httpx.AsyncClient) -> Samples:
    response = await api.get("/metrics")
    assert response.status_code == 200, response.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def up(server: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("runner_server_up", (("server", server),))


def of_queue(name: str, settings: Settings) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (name, (("queue", settings.queue_name),))


async def test_both_servers_are_up_and_an_empty_queue_has_nothing_waiting(api: httpx.AsyncClient, settings: Settings):
    samples = await scrape(api)
    assert samples[up("redis")] == 1
    assert samples[up("postgres")] == 1
    assert samples[of_queue("runner_queue_oldest_due_age_seconds", settings)] == 0
    assert samples[of_queue("runner_queue_live_workers", settings)] == 0
    assert samples[("runner_queue_depth", (("kind", "due"), ("queue", settings.queue_name)))] == 0


async def test_the_oldest_due_age_grows_while_no_worker_takes_the_job(
    api: httpx.AsyncClient, resources: Resources, settings: Settings
):
    """A job enqueued with no worker waits: its age is counted from when it fell due, and keeps growing."""
    enqueued = time.time()
    assert await Enqueuer(resources.redis).enqueue(settings.queue_name, "waits", "probe.nap", {"seconds": 0})
    first = (await scrape(api))[of_queue("runner_queue_oldest_due_age_seconds", settings)]
    await asyncio.sleep(1.2)
    samples = await scrape(api)
    second = samples[of_queue("runner_queue_oldest_due_age_seconds", settings)]
    assert 0 <= first < second <= time.time() - enqueued + 0.1
    assert second - first >= 1.0
    assert samples[of_queue("runner_queue_live_workers", settings)] == 0
    assert samples[("runner_queue_depth", (("kind", "due"), ("queue", settings.queue_name)))] == 1


async def test_a_running_worker_is_counted_and_its_running_job_is_not_waiting(
    api: httpx.AsyncClient, resources: Resources, settings: Settings, run_worker: RunWorker
):
    """The in-process worker's presence report makes it a live worker; the job it runs stays in the queue
    (leased) but is not waiting, so the oldest due age stays 0 however long the job runs."""
    await run_worker(REGISTRY)
    samples: Samples = {}

    async def counted() -> bool:
        nonlocal samples
        samples = await scrape(api)
        return samples[of_queue("runner_queue_live_workers", settings)] == 1

    await wait_for(counted, timeout=10, every=0.2)  # a report every PRESENCE_S (2 s)
    client = JobClient(resources, REGISTRY.resolved(settings))
    await client.enqueue("probe.nap", job_id=f"{settings.queue_name}:nap", seconds=2.5)

    async def running() -> bool:
        nonlocal samples
        samples = await scrape(api)
        return samples[("runner_jobs_in_flight", ())] >= 1

    await wait_for(running, timeout=5, every=0.05)
    await asyncio.sleep(1.2)  # the running job has been due for over a second by now
    samples = await scrape(api)
    assert samples[("runner_queue_depth", (("kind", "due"), ("queue", settings.queue_name)))] == 1
    assert samples[of_queue("runner_queue_oldest_due_age_seconds", settings)] == 0
    assert samples[of_queue("runner_queue_live_workers", settings)] == 1


async def test_metrics_answer_200_with_redis_down_and_say_so(tmp_path: Path, make_settings: MakeSettings):
    """With Redis stopped under a live app, /metrics still answers 200 with the fleet's metrics and
    runner_server_up{server="redis"} 0, leaving the queue's numbers out; once Redis is back, so are they."""
    with EmbeddedValkey(tmp_path / "own-valkey") as own_redis:
        settings: Settings = make_settings(redis_url=own_redis.url)
        async with api_client(settings) as api:
            assert (await scrape(api))[up("redis")] == 1
            own_redis.stop()
            started = time.monotonic()
            samples = await scrape(api)
            assert time.monotonic() - started < 5, "a scrape must stay well within Prometheus's 10 s timeout"
            assert samples[up("redis")] == 0
            assert samples[up("postgres")] == 1
            assert ("runner_workers_alive", ()) in samples  # the fleet's own metrics are all there
            assert not [name for name, _ in samples if name.startswith("runner_queue_")]
            own_redis.start()
            back: Samples = {}

            async def recovered() -> bool:
                nonlocal back
                back = await scrape(api)
                return back[up("redis")] == 1

            await wait_for(recovered, timeout=10, every=0.2)
            assert back[of_queue("runner_queue_live_workers", settings)] == 0


async def test_each_queue_of_QUEUES_is_read_and_probed(make_settings: MakeSettings, resources: Resources):
    """With QUEUES, /metrics gives every queue's numbers (labelled by queue) and /ready probes each queue's
    keys: a foreign value in the second queue's key is named, though the first queue is fine."""
    base = make_settings()
    media = f"{base.queue_name}-media"
    settings = make_settings(queue_name=base.queue_name, queues=f"{base.queue_name}:3,{media}:1")
    assert settings.queue_names == [base.queue_name, media]
    assert await Enqueuer(resources.redis).enqueue(media, "on-media", "probe.nap", {"seconds": 0})
    async with api_client(settings) as api:
        samples = await scrape(api)
        assert samples[("runner_queue_depth", (("kind", "due"), ("queue", base.queue_name)))] == 0
        assert samples[("runner_queue_depth", (("kind", "due"), ("queue", media)))] == 1
        assert samples[("runner_queue_live_workers", (("queue", media),))] == 0
        assert samples[("runner_queue_oldest_due_age_seconds", (("queue", media),))] >= 0
        assert (await api.get("/ready")).status_code == 200
        foreign = QueueKeys.of(media).shared[-1]
        await resources.redis.delete(foreign)
        await resources.redis.set(foreign, "another system's value")
        try:
            ready = await api.get("/ready")
        finally:
            await resources.redis.delete(foreign)
    assert ready.status_code == 503
    assert "WRONGTYPE" in ready.json()["checks"]["redis"] and foreign in ready.json()["checks"]["redis"]
