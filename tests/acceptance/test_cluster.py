"""Redis Cluster with real servers (tests/redis_cluster.py: three masters, each with a replica): a fleet of
real processes runs stories while the master serving the queue's slot is SIGKILLed (its replica takes over),
while a worker is SIGKILLed, and while the queue's slot is moved to another master key batch by key batch
(ASK, TRYAGAIN, then MOVED). Every story completes, once.

Each test reports what it measured (run pytest with -s to see the lines starting with `measured`)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from runner.broker.keys import QueueKeys
from runner.resources import Resources
from runner.settings import Settings
from tests.acceptance.conftest import MakeFleet
from tests.acceptance.fleet import (
    assert_each_story_completed_once,
    at,
    no_loss_no_duplicates,
    now,
    post_stories,
    until_processing,
    until_stories,
)
from tests.conftest import MakeSettings, wait_for
from tests.redis_cluster import NODE_TIMEOUT_MS, RedisClusterGroup, key_slot

pytestmark = pytest.mark.slow


@pytest.fixture
def group(tmp_path: Path) -> Iterator[RedisClusterGroup]:
    """Three masters with a replica each on free loopback ports, stopped by PID at teardown."""
    made = RedisClusterGroup(tmp_path / "cluster")
    try:
        made.start()
        yield made
    finally:
        made.stop()


@pytest.fixture
def settings(make_settings: MakeSettings, group: RedisClusterGroup) -> Settings:
    """This test's settings, with Redis through the cluster (no REDIS_URL)."""
    return make_settings(redis_url=None, redis_cluster_nodes=group.nodes_setting)


def queue_slot(settings: Settings) -> int:
    return key_slot(QueueKeys.of(settings.queue_name).jobs)


async def test_the_queues_master_killed_mid_run_is_replaced_by_its_replica(
    api: httpx.AsyncClient, resources: Resources, settings: Settings, group: RedisClusterGroup, fleet: MakeFleet
):
    """SIGKILL the master serving the queue's slot with 50 stories in flight, then a worker: the replica is
    promoted, every process follows (lost connections, then MOVED), the supervisor frees the dead worker's
    leases on the new master, and every story completes once. What the replica had not yet received when its
    master died is re-driven from Postgres by the sweeper."""
    running = await fleet(sweep_interval_s=0.5, sweep_stale_after_s=2).start()
    story_ids = await post_stories(api, 50)
    await until_processing(resources, settings, 10)
    master = group.master_of_slot(queue_slot(settings))
    replica = group.replica_of(master)
    killed_at = now()
    master.kill()
    promoted_s = await group.wait_promoted(replica)

    started = len(running.events("worker_started"))
    os.kill(running.steady_worker_pid(), signal.SIGKILL)

    async def replaced() -> bool:
        return len(running.events("worker_started")) > started

    await wait_for(replaced, 30, every=0.05)
    await until_stories(resources, story_ids, "completed", timeout=120)
    await assert_each_story_completed_once(resources, settings, story_ids)
    outcome = no_loss_no_duplicates(fleet, story_ids)
    assert not running.events("child_exit_hook_failed"), running.tail()
    starts = sorted(at(e) for e in running.events("job_started"))
    first_s = min(t for t in starts if t > killed_at + NODE_TIMEOUT_MS / 2000) - killed_at
    repaired = sum(len(e["requeued"]) for e in running.events("sweep_repaired"))
    print(
        f"\nmeasured cluster failover: master :{master.port} SIGKILLed, replica :{replica.port} promoted after "
        f"{promoted_s:.2f}s (node timeout {NODE_TIMEOUT_MS} ms), first job started after the kill at "
        f"{first_s:.2f}s; {repaired} jobs re-driven from Postgres by the sweeper; a worker SIGKILLed and replaced; "
        f"{outcome}"
    )
    assert first_s < promoted_s + 5, "the workers took more than 5 s to claim from the promoted replica"


async def test_the_queues_slot_moved_mid_run_is_followed(
    api: httpx.AsyncClient, resources: Resources, settings: Settings, group: RedisClusterGroup, fleet: MakeFleet
):
    """Move the queue's slot to another master while 50 stories run, ten keys a MIGRATE, as a reshard does:
    for a while the slot's keys are split between two nodes (ASK, TRYAGAIN), then the slot is the target's
    (MOVED). Every story completes once."""
    await fleet().start()
    story_ids = await post_stories(api, 50)
    await until_processing(resources, settings, 10)
    slot = queue_slot(settings)
    source = group.master_of_slot(slot)
    target = group.other_master(source)
    started = now()
    moved = await group.move_slot(slot, target, batch=10, pause_s=0.02)
    took_s = now() - started
    assert group.master_of_slot(slot) is target
    await until_stories(resources, story_ids, "completed", timeout=120)
    await assert_each_story_completed_once(resources, settings, story_ids)
    outcome = no_loss_no_duplicates(fleet, story_ids)
    failed = await resources.db.fetchval(
        "SELECT count(*) FROM runner_jobs WHERE queue = $1 AND status = 'failed'", settings.queue_name
    )
    print(
        f"\nmeasured slot move: slot {slot} moved :{source.port} -> :{target.port}, {moved} keys in batches of 10 "
        f"over {took_s:.2f}s while 50 stories ran; {failed} jobs failed; {outcome}"
    )
    assert failed == 0
