"""A supervisor starting on a host frees the leases its dead predecessor's workers left (runner.fleet.predecessors),
against real Redis and real processes: only this host's, only the dead ones', never a live supervisor's."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from runner.broker.enqueue import Enqueuer
from runner.broker.keys import QueueKeys
from runner.broker.queue import RedisQueue
from runner.fleet.predecessors import host_and_pid, release_predecessors, stale_worker_ids
from runner.resources import Resources
from runner.settings import Settings
from tests.conftest import MakeSettings

pytestmark = pytest.mark.also_on_cluster  # the broker's behaviour, again on Redis Cluster

HOST = "host-a"


def test_host_and_pid_reads_both_id_shapes():
    """The supervisor's ids and a lone worker's both name host and pid; other shapes name nothing."""
    assert host_and_pid("web-1:4242:worker-3.7") == ("web-1", 4242)
    assert host_and_pid("web-1:4242:9f86d0") == ("web-1", 4242)
    assert host_and_pid("web-1:4242:a:b") == ("web-1", 4242)
    for other in ("ghost", "w0", "web-1:4242", "web-1:pid:worker-1.1", ":4242:x"):
        assert host_and_pid(other) is None, other


@pytest.fixture
def sleeper() -> Iterator[Callable[..., int]]:
    """Start live processes (`sleeper(*extra_argv)` gives the pid), each killed at teardown."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*argv: str) -> int:
        started.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *argv]))
        return started[-1].pid

    yield start
    for process in started:
        process.kill()
        process.wait()


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


async def hold(resources: Resources, settings: Settings, worker_id: str) -> str:
    """Enqueue one job and lease it to `worker_id`, as that worker's claim would; the job's id."""
    job_id = f"job-of-{worker_id}"
    assert await Enqueuer(resources.redis).enqueue(settings.queue_name, job_id, "x.job", {})
    queue = RedisQueue(resources.redis, queue=settings.queue_name, worker_id=worker_id, lease_ttl_s=60)
    claim = await queue.claim(int(time.time() * 1000), 1, idle_for_s=1)
    assert [j.job_id for j in claim.jobs] == [job_id]
    return job_id


async def test_only_this_hosts_dead_workers_are_freed(
    resources: Resources, settings: Settings, sleeper: Callable[..., int]
):
    """Freed: a dead supervisor's workers, a dead lone worker, and ids naming our own pid (a predecessor
    that had it). Kept: a live supervisor's workers, a worker process still running (its supervisor died:
    it is stopping), another host's."""
    gone, gone_alone = dead_pid(), dead_pid()
    still_running = f"{HOST}:{dead_pid()}:worker-2.1"
    sleeper("--worker-id", still_running)
    freed_ids = [f"{HOST}:{gone}:worker-1.1", f"{HOST}:{gone}:worker-2.3", f"{HOST}:{gone_alone}:0a1b2c",
                 f"{HOST}:{os.getpid()}:worker-1.1"]  # fmt: skip
    kept_ids = [f"{HOST}:{sleeper()}:worker-1.1", still_running, f"other-host:{gone}:worker-1.1",
                f"{HOST}x:{gone}:worker-1.1"]  # fmt: skip
    jobs = {w: await hold(resources, settings, w) for w in [*freed_ids, *kept_ids]}
    assert sorted(await stale_worker_ids(resources.redis, settings.queue_name, HOST)) == sorted(freed_ids)
    freed = await release_predecessors(resources.redis, settings.queue_name, HOST, 60)
    assert freed == {w: [jobs[w]] for w in freed_ids}
    keys = QueueKeys.of(settings.queue_name)
    for w in freed_ids:
        assert await resources.redis.exists(keys.lease(jobs[w]), keys.leases(w)) == 0
    for w in kept_ids:
        assert await resources.redis.get(keys.lease(jobs[w])) == w.encode()
    # The freed jobs are claimable at once by anyone.
    taker = RedisQueue(resources.redis, queue=settings.queue_name, worker_id="taker", lease_ttl_s=60)
    claim = await taker.claim(int(time.time() * 1000), 100, idle_for_s=1)
    assert sorted(j.job_id for j in claim.jobs) == sorted(jobs[w] for w in freed_ids)


async def test_glob_characters_in_a_queue_or_host_name_match_only_themselves(
    resources: Resources, make_settings: MakeSettings
):
    """The SCAN pattern is escaped: a host named `h*` frees its own sets, not those of `hx`."""
    settings = make_settings(queue_name=f"q[1]*{os.getpid()}-{time.time_ns()}")
    gone = dead_pid()
    mine, theirs = f"h*:{gone}:worker-1.1", f"hx:{gone}:worker-1.1"
    for w in (mine, theirs):
        await hold(resources, settings, w)
    assert await stale_worker_ids(resources.redis, settings.queue_name, "h*") == [mine]
