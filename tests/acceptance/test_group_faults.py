"""Fan-out and join with real worker processes: a worker SIGKILLed while the last member ends."""

from __future__ import annotations

import time
import uuid

import orjson
import pytest

from runner.client import JobClient
from runner.group import JobCall
from runner.resources import Resources
from runner.settings import Settings
from runner.status import JobStatus
from tests.acceptance import group_jobs
from tests.acceptance.conftest import MakeFleet
from tests.conftest import wait_for

pytestmark = pytest.mark.slow

# How long after the last member returns its worker is killed: across the end's bookkeeping (status
# write with the member's end, the join's row, its push, the Redis finish) and just past it.
DIE_AFTER_MS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 9.0, 15.0)


async def test_worker_killed_as_the_last_member_ends_still_runs_the_callback_exactly_once(
    resources: Resources, settings: Settings, fleet: MakeFleet
):
    """For each delay, a group of four whose last member's worker is SIGKILLed that long after the member
    returns: every callback runs and sees all four results; none runs twice, unless its own first run was
    on a killed worker (a callback is at least once, like any job)."""
    running = await fleet(registry="tests.acceptance.group_jobs:registry", workers=2, sweep_interval_s=0.5,
                          sweep_stale_after_s=1, lease_ttl_s=3).start()  # fmt: skip
    client = JobClient(resources, group_jobs.registry.resolved(settings))
    report = []
    for n, delay in enumerate(DIE_AFTER_MS):
        tag = f"{settings.queue_name}:g{n}"
        members = [JobCall("grp.member_then_die", {"tag": tag, "value": v}) for v in (1, 2, 3)]
        last = {"tag": tag, "value": 4, "sleep_s": 0.3, "die_after_ms": delay}
        handle = await client.enqueue_group([*members, JobCall("grp.member_then_die", last)],
                                            then=JobCall("grp.record_join", {"tag": tag}),
                                            group_id=f"kill-{uuid.uuid4().hex[:10]}")  # fmt: skip
        started = time.monotonic()
        await handle.join.result(timeout=40)
        took = time.monotonic() - started - 0.3
        killed = {int(pid) for pid in await resources.redis.lrange(f"{tag}:killed", 0, -1)}
        runs = [orjson.loads(r) for r in await resources.redis.lrange(tag, 0, -1)]
        assert runs and all(r["results"] == [10, 20, 30, 40] for r in runs), runs
        assert all(r["pid"] in killed for r in runs[:-1]), f"callback ran {len(runs)} times: {runs}"
        last_row = await client.get(handle.member_ids[3])
        join_row = await client.get(handle.join.job_id)
        assert last_row is not None and join_row is not None
        assert (last_row.status, join_row.status) == (JobStatus.COMPLETED, JobStatus.COMPLETED)
        swept = any(handle.join.job_id in e.get("joins", []) for e in running.events("sweep_joined"))
        redriven = "re-enqueued by the sweeper" in (join_row.error or "")
        by = "the sweeper wrote the join" if swept else "the sweeper re-drove the join" if redriven else "in time"
        report.append(f"{delay}ms: member tries {last_row.attempts}, callback runs {len(runs)}, {by}, {took:.2f}s")

        async def worker_back() -> bool:
            return len(running.worker_pids()) == 2

        await wait_for(worker_back, timeout=20)
    print("\nmeasured group kills:\n  " + "\n  ".join(report))
