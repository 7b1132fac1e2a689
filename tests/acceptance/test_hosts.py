"""Many hosts, one Redis and one Postgres: each host is a Linux network namespace with an address of its own
and a hostname of its own (tests/acceptance/netns.py), running a real fleet (`python -m runner run --no-api`)
against a Valkey and a Postgres on a server host. A host killed mid-run (every process in it, SIGKILL) has
its jobs run again on the others within the lease, nothing lost or completed twice; a fleet restarted on that
host frees its predecessor's leases at once. Worker ids, presence, the sweeper's lock, the provider slot pools
and the metrics are per host where they must be and shared where they must be.

Skipped, saying why, where network namespaces cannot be made (not root, no CAP_NET_ADMIN, no iproute2)."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobs.settings import StorySettings
from runner.broker.keys import QueueKeys, SlotKeys
from runner.fleet.logs import configure_logging
from runner.ops.workers import list_workers
from runner.resources import Resources, open_resources
from runner.settings import Settings
from runner.store.migrations import apply_migrations
from tests.acceptance.fleet import ROOT, Fleet, assert_each_story_completed_once, lost_and_duplicated, until_stories
from tests.acceptance.netns import NamespaceError, NetnsPostgres, NetnsValkey, Network
from tests.conftest import api_client, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

METRICS_PORT = 9464
StartFleet = Callable[..., Fleet]


@pytest.fixture(scope="module")
def network() -> Iterator[Network]:
    """Three worker hosts and a server host; every namespace and veth is gone after the module."""
    try:
        made = Network(hosts=3)
    except NamespaceError as exc:
        pytest.skip(f"many-host tests run hosts in Linux network namespaces, which cannot be made here: {exc}")
    try:
        yield made
    finally:
        made.close()
    assert made.leftovers() == [], "namespaces or veths outlived the test"


@pytest.fixture(scope="module")
def server_host(network: Network, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Valkey and Postgres inside the server host's namespace, on its address; (REDIS_URL, DATABASE_URL)."""
    configure_logging("INFO", "console")  # as the session's `servers` does (a no-op when it already has)
    data_dir = tmp_path_factory.mktemp("server-host")
    with NetnsValkey(data_dir, network) as redis, NetnsPostgres(data_dir, network) as postgres:
        yield redis.url, postgres.url


@pytest.fixture
def settings(server_host: tuple[str, str], tmp_path: Path) -> StorySettings:
    """This test's settings (a queue of its own) for the test process, which reaches the server host over
    its own veth; the hosts get the same servers and queue."""
    queue = f"hosts:{uuid.uuid4().hex[:8]}"
    return StorySettings(  # type: ignore[call-arg]
        _env_file=None, redis_url=server_host[0], database_url=server_host[1], data_dir=tmp_path,
        media_dir=tmp_path / "media", queue_name=queue, slot_prefix=f"runner:slots:{queue}", log_format="console",
    )  # fmt: skip


@pytest.fixture
async def resources(settings: Settings) -> AsyncIterator[Resources]:
    async with open_resources(settings) as opened:
        await apply_migrations(opened.db, ["runner", "jobs"])
        yield opened


class HostFleet(Fleet):
    """A fleet started on one simulated host: in its namespace, under its hostname."""

    def __init__(self, settings: StorySettings, log_dir: Path, network: Network, host: str, **env: Any) -> None:
        addr = network.hosts[host][1]
        super().__init__(settings, log_dir, data_dir=log_dir / host, media_dir=settings.media_path, host=addr,
                         metrics_port=METRICS_PORT, db_pool_size=5, **env)  # fmt: skip
        self.host, self.addr, self._argv = host, addr, network.host_argv(host)

    def _spawn(self) -> None:
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [*self._argv, sys.executable, "-m", "runner", "run", "--no-api", "--registry", self.registry],
            cwd=ROOT, env=self.env, stdout=self._log, stderr=self._log, start_new_session=True,
        )  # fmt: skip


@pytest.fixture
def start_fleet(settings: StorySettings, network: Network, tmp_path: Path) -> Iterator[StartFleet]:
    """Make fleets on the simulated hosts (`start_fleet(host, **env)`), each killed at teardown."""
    made: list[Fleet] = []

    def make(host: str, **env: Any) -> Fleet:
        made.append(HostFleet(settings, tmp_path, network, host, **env))
        return made[-1]

    make.made = made  # type: ignore[attr-defined]
    yield make
    for fleet in made:
        fleet.close()


async def post_stories(api: httpx.AsyncClient, count: int, tag: str) -> list[str]:
    body = {"title": "", "prompt": "a lighthouse that learns to swim", "user_id": f"hosts-{tag}"}
    responses = await asyncio.gather(*(api.post("/stories/", json=body) for _ in range(count)))
    assert all(r.status_code == 202 for r in responses), [r.text for r in responses if r.status_code != 202][:1]
    return [r.json()["story_id"] for r in responses]


async def held_by(resources: Resources, settings: Settings, host: str) -> dict[str, set[str]]:
    """The job ids each worker of `host` holds leases on, by worker id (SCAN, as an operator would)."""
    keys = QueueKeys.of(settings.queue_name)
    held: dict[str, set[str]] = {}
    async for key in resources.redis.scan_iter(match=f"{keys.leases_prefix}{host}:*", count=1000):
        members = await resources.redis.smembers(key)  # type: ignore[misc]
        if members:
            held[key.decode()[len(keys.leases_prefix) :]] = {m.decode() for m in members}
    return held


async def until_held(resources: Resources, settings: Settings, host: str, at_least: int) -> set[str]:
    found: set[str] = set()

    async def check() -> bool:
        nonlocal found
        found = set().union(*(await held_by(resources, settings, host)).values())
        return len(found) >= at_least

    await wait_for(check, 30, every=0.02)
    return found


async def reruns_after(resources: Resources, story_ids: list[str], since: float) -> list[tuple[str, str, datetime]]:
    """(job id, worker, started at) of each attempt of the stories' jobs that ran again (a crash counts as a
    try) and started after `since`."""
    rows = await resources.db.fetch(
        "SELECT job_id, worker, started_at FROM runner_job_attempts WHERE job_id LIKE ANY($1::text[]) "
        "AND attempt >= 2 AND started_at > to_timestamp($2) ORDER BY started_at",
        [f"%:{s}%" for s in story_ids], since,
    )  # fmt: skip
    return [(r["job_id"], r["worker"], r["started_at"]) for r in rows]


async def completed_before(resources: Resources, job_ids: set[str], since: float) -> set[str]:
    rows = await resources.db.fetch(
        "SELECT DISTINCT job_id FROM runner_job_attempts WHERE job_id = ANY($1::text[]) AND outcome = 'completed' "
        "AND finished_at <= to_timestamp($2)",
        sorted(job_ids), since,
    )  # fmt: skip
    return {r["job_id"] for r in rows}


def logged_at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


async def test_a_lost_hosts_jobs_run_again_on_the_other_hosts_and_a_restart_there_frees_them_at_once(
    resources: Resources, settings: Settings, network: Network, start_fleet: StartFleet
):
    """Three hosts, 30 stories: host-1 loses power (every process in it SIGKILLed). Its jobs run again on
    host-2 and host-3 once their leases lapse (the default LEASE_TTL_S), every story completes exactly once.
    Then host-1 runs a fleet again, is killed again with jobs in hand, and a fleet started there at once
    frees its dead predecessor's leases before the lease would lapse."""
    lease_s = settings.lease_ttl_s
    fleets = {h: start_fleet(h, offline_latency_ms=400) for h in network.hosts}
    await asyncio.gather(*(f.start() for f in fleets.values()))
    async with api_client(settings) as api:
        # 1. Host loss: the leases are the bound.
        story_ids = await post_stories(api, 30, "loss")
        held = await until_held(resources, settings, "host-1", at_least=5)
        network.kill_host("host-1")
        killed_at = time.time()
        fleets["host-1"].process.wait(10)  # type: ignore[union-attr]
        await until_stories(resources, story_ids, "completed", timeout=60)
        await assert_each_story_completed_once(resources, settings, story_ids)
        reruns = await reruns_after(resources, story_ids, killed_at)
        lost, duplicated = lost_and_duplicated(start_fleet.made, story_ids)  # type: ignore[attr-defined]
        assert reruns, "host-1's jobs all ended before the kill: the test proved nothing"
        recovery = max(at.timestamp() for _, _, at in reruns) - killed_at
        print(f"\nmeasured host loss (3 hosts, lease {lease_s:g} s): host-1 held {len(held)}+ jobs, "
              f"{len(reruns)} ran again on {sorted({w.split(':')[0] for _, w, _ in reruns})}, the last "
              f"{recovery:.2f}s after the kill; lost {lost}, duplicated {duplicated}")  # fmt: skip
        # None lost: every story's row completed, once (above). `lost` counts log lines, and a job that completed on
        # host-1 just before the kill may have had its `job_completed` line die with host-1's processes.
        assert duplicated == 0, (lost, duplicated)
        assert held <= {job_id for job_id, _, _ in reruns} | await completed_before(resources, held, killed_at)
        assert all(not w.startswith("host-1:") for _, w, _ in reruns), reruns
        # The last renewal was at most a third of the lease before the kill; an idle worker claims within a poll.
        assert lease_s * 2 / 3 - 0.5 < recovery < lease_s + settings.poll_interval_s + 1.5

        # 2. A fleet restarted on the same host frees its predecessor's leases at once.
        await start_fleet("host-1", offline_latency_ms=400).start()
        story_ids = await post_stories(api, 20, "restart")
        held = await until_held(resources, settings, "host-1", at_least=5)
        dead = network.kill_host("host-1")
        killed_at = time.time()
        successor = start_fleet("host-1", offline_latency_ms=400)
        await successor.start()
        await until_stories(resources, story_ids, "completed", timeout=60)
        await assert_each_story_completed_once(resources, settings, story_ids)
        reruns = await reruns_after(resources, story_ids, killed_at)
        lost, duplicated = lost_and_duplicated(start_fleet.made, story_ids)  # type: ignore[attr-defined]
    (released,) = successor.events("predecessor_leases_released")
    freed_after = logged_at(released) - killed_at
    recovery = max(at.timestamp() for _, _, at in reruns) - killed_at
    print(f"measured restart on the same host: {released['jobs']} leases of {len(released['workers'])} dead "
          f"workers freed {freed_after:.2f}s after the kill (scan and release {released['took_ms']} ms), the last "
          f"of {len(reruns)} jobs ran again {recovery:.2f}s after it (lease {lease_s:g} s); lost {lost}, "
          f"duplicated {duplicated}")  # fmt: skip
    assert duplicated == 0, (lost, duplicated)  # none lost: the rows say so (above); see the first part
    # Each freed lease ran again, but for a job that completed just before the kill and died before its lease was
    # dropped: its row is final, so the claim that follows finishes it unrun.
    freed = set(released["job_ids"])
    rerun_ids = {job_id for job_id, _, _ in reruns}
    assert len(freed) == released["jobs"] and rerun_ids <= freed, (reruns, released)
    assert freed - rerun_ids <= await completed_before(resources, freed, killed_at), (reruns, released)
    assert held <= rerun_ids | await completed_before(resources, held, killed_at), (held, reruns)
    assert all(w.startswith("host-1:") and int(w.split(":")[1]) in dead for w in released["workers"]), released
    assert recovery < lease_s * 2 / 3 - 0.5, "the jobs waited for their leases to lapse: none was freed at start"


async def test_hosts_keep_their_own_ids_and_metrics_and_share_the_sweeper_lock_and_provider_slots(
    resources: Resources, settings: Settings, network: Network, start_fleet: StartFleet
):
    """Three hosts at once: each host's workers are listed under its hostname; one sweeper leads each
    period, taken in turn by workers of different hosts; a provider pool of 6 is never held more than 6 at
    once across the hosts, though all of them call it; each host's /metrics counts its own jobs only."""
    interval_s, pool_size = 0.5, 6
    env = {"offline_latency_ms": 150, "sweep_interval_s": interval_s, "image_max_concurrency": pool_size}
    fleets = {h: start_fleet(h, **env) for h in network.hosts}
    await asyncio.gather(*(f.start() for f in fleets.values()))

    async def listed() -> bool:
        workers = await list_workers(resources.redis, settings.queue_name)
        return sorted((w.host, w.worker_id.split(":")[0]) for w in workers) == sorted(2 * [(h, h) for h in fleets])

    await wait_for(listed, 10, every=0.1)  # each worker under its host's name, its id starting with it
    clients = {c["addr"].rsplit(":", 1)[0] for c in await resources.redis.client_list()}
    assert {f.addr for f in fleets.values()} | {network.root_addr} <= clients, clients  # each from its own address

    image_pool = SlotKeys.of(settings.slot_prefix, "provider:image:offline").held
    sweeper = QueueKeys.of(settings.queue_name).sweeper
    peak, leaders, taken = 0, [], []  # slots held at most; sweeper lock holders; when each lock was taken

    async def watch() -> None:
        nonlocal peak
        last_ttl = -2
        while True:
            now_ms = int(time.time() * 1000)
            async with resources.redis.pipeline(transaction=False) as pipe:
                pipe.zcount(image_pool, now_ms, "+inf")
                pipe.get(sweeper)
                pipe.pttl(sweeper)
                held, leader, ttl = await pipe.execute()
            peak = max(peak, held)
            if ttl > 0 and (last_ttl <= 0 or ttl > last_ttl + 20):  # a new lock: when was it taken?
                taken.append(time.monotonic() - (interval_s * 1000 - ttl) / 1000)
                leaders.append(leader.decode())
            last_ttl = ttl
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    try:
        async with api_client(settings) as api:
            story_ids = await post_stories(api, 24, "shared")
            await until_stories(resources, story_ids, "completed", timeout=60)
        await asyncio.sleep(interval_s * 2)
    finally:
        watcher.cancel()
    await assert_each_story_completed_once(resources, settings, story_ids)
    rows = await resources.db.fetch(
        "SELECT DISTINCT split_part(worker, ':', 1) AS host FROM runner_job_attempts "
        "WHERE job_id LIKE 'media_task.generate:%' AND job_id LIKE ANY($1::text[])",
        [f"%{s}%" for s in story_ids],
    )
    callers = sorted(r["host"] for r in rows)
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(taken)]
    lead_hosts = sorted({leader.split(":")[0] for leader in leaders})
    async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
        scraped = {f.host: (await http.get(f"http://{f.addr}:{METRICS_PORT}/metrics")).text for f in fleets.values()}
    counted = {host: completed_jobs(text) for host, text in scraped.items()}
    logged = {f.host: len(f.events("job_completed")) for f in fleets.values()}
    print(f"\nmeasured hosts: workers per host {dict(sorted((h, 2) for h in fleets))}; image pool of {pool_size} "
          f"held {peak} at most, called from {callers}; sweeper lock taken {len(taken)} times by {lead_hosts}, "
          f"{min(gaps):.3f}s apart at least (period {interval_s:g} s); "
          f"jobs completed per host's /metrics {counted} (logs {logged})")  # fmt: skip
    assert callers == sorted(fleets), "not every host called the image provider: the pool was not shared"
    assert peak == pool_size, f"{peak} image slots held at once across the hosts, limit {pool_size}"
    assert len(lead_hosts) >= 2, f"the sweeper lock stayed on {lead_hosts}"
    assert all(gap > interval_s * 0.9 for gap in gaps), f"two sweepers led within one period: {gaps}"
    assert counted == logged and sum(counted.values()) == len(story_ids) * 7  # story, 5 scenes, the join


def completed_jobs(metrics_text: str) -> int:
    """runner_jobs_total{outcome="completed"} over every job name, from a /metrics page."""
    return int(
        sum(
            s.value
            for family in text_string_to_metric_families(metrics_text)
            for s in family.samples
            if s.name == "runner_jobs_total" and s.labels.get("outcome") == "completed"
        )
    )
