"""The Celery intake as `make run` runs it (its own process under the supervisor), fed by a real Celery
client configured like the old backend: SIGKILL the intake while it takes messages in; the supervisor
restarts it, it re-drives what it held, and every task runs exactly once. A story sent the old way
(`generate_story_task.delay(story_id, request_dict, user_id)`) is created and completed."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest

from runner.broker.keys import QueueKeys
from runner.resources import Resources
from runner.settings import Settings
from tests.acceptance.fleet import Fleet
from tests.acceptance.legacy_jobs import runs_key
from tests.conftest import Celery, wait_for

pytestmark = pytest.mark.slow
TASKS = 600


@pytest.fixture
async def intake_fleet(settings: Settings, tmp_path: Path) -> AsyncIterator[Callable[[], Fleet]]:
    made: list[Fleet] = []

    def make() -> Fleet:
        made.append(Fleet(settings, tmp_path, registry="tests.acceptance.legacy_jobs:registry", celery_intake="true",
                          offline_latency_ms="5"))  # fmt: skip
        return made[-1]

    yield make
    for fleet in made:
        fleet.close()


def intake_pid(fleet: Fleet) -> int | None:
    assert fleet.process is not None
    for child in psutil.Process(fleet.process.pid).children():
        if "intake" in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
            return child.pid
    return None


async def rows(resources: Resources, settings: Settings, status: str | None = None) -> int:
    count: int = await resources.db.fetchval(
        "SELECT count(*) FROM runner_jobs WHERE queue = $1 AND ($2::text IS NULL OR status = $2)",
        settings.queue_name, status,
    )  # fmt: skip
    return count


async def test_a_sigkilled_intake_loses_nothing_and_runs_nothing_twice(
    intake_fleet: Any, celery: Celery, resources: Resources, settings: Settings
):
    story_id = str(uuid.uuid4())
    request = {"title": "The Old Way", "prompt": "a story sent by the old backend's Celery producer", "user_id": "u1"}
    calls = [{"how": "delay", "name": "story_task.generate", "args": [story_id, request, "u1"]}]
    calls += [{"how": "delay", "name": "legacy.count", "args": [n]} for n in range(TASKS)]
    task_ids = await celery("send", orjson.dumps(calls).decode())
    story_task, counted = task_ids[0], task_ids[1:]

    fleet = intake_fleet()
    await fleet.start()
    await wait_for(lambda: _at_least(resources, settings, TASKS // 4), timeout=30, every=0.005)
    killed = intake_pid(fleet)
    assert killed is not None
    os.kill(killed, signal.SIGKILL)
    taken_when_killed = await rows(resources, settings)

    async def all_done() -> bool:
        return await rows(resources, settings, "completed") >= TASKS + 1 + 5  # + the story's 5 media jobs

    await wait_for(all_done, timeout=90, every=0.2)
    runs = await resources.redis.mget([runs_key(t) for t in counted])
    assert [int(r or 0) for r in runs] == [1] * TASKS  # each exactly once
    assert await resources.redis.llen(QueueKeys.of(settings.queue_name).celery_intake) == 0
    got = await celery("get", story_task, "30")
    assert got["result"]["story_id"] == story_id and got["result"]["scenes"] == 5
    story = await resources.db.fetchrow("SELECT status, user_id, title FROM stories WHERE story_id = $1",
                                        uuid.UUID(story_id))  # fmt: skip
    assert story is not None and dict(story) == {"status": "completed", "user_id": "u1", "title": "The Old Way"}
    restarted = intake_pid(fleet)
    assert restarted is not None and restarted != killed
    redriven = [e.get("messages") for e in fleet.events("celery_intake_redriven")]
    print(f"\nintake SIGKILLed with {taken_when_killed} of {TASKS + 1} taken in; re-driven after restart: {redriven}")


async def _at_least(resources: Resources, settings: Settings, n: int) -> bool:
    return await rows(resources, settings) >= n
