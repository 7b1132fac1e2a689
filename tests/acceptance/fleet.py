"""A real worker fleet for fault tests: `python -m runner run --no-api` (supervisor + workers) as
`make worker` starts it, pointed at the session's servers, with its JSON log readable as events."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import psutil

from runner.resources import Resources
from runner.settings import Settings
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]


class Fleet:
    """One supervisor process and its workers. Signals go only to processes this fleet started."""

    def __init__(self, settings: Settings, log_dir: Path, *, registry: str = "jobs:registry", **env: Any) -> None:
        self.settings = settings
        self.log_path = log_dir / f"fleet-{uuid.uuid4().hex[:6]}.log"
        self.registry = registry
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "DATABASE_"))},
            "REDIS_URL": settings.redis_url or "", "DATABASE_URL": str(settings.database_url),
            "REDIS_SENTINELS": settings.redis_sentinels or "", "REDIS_SENTINEL_MASTER": settings.redis_sentinel_master,
            "REDIS_CLUSTER_NODES": settings.redis_cluster_nodes or "",
            "QUEUE_NAME": settings.queue_name, "SLOT_PREFIX": settings.slot_prefix,
            "DATA_DIR": str(settings.data_dir), "LOG_FORMAT": "json",
            "WORKERS": "2", "WORKER_CONCURRENCY": "10", "OFFLINE_LATENCY_MS": "50",
            **{k.upper(): str(v) for k, v in env.items()},
        }  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def _spawn(self) -> None:
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "runner", "run", "--no-api", "--registry", self.registry],
            cwd=ROOT, env=self.env, stdout=self._log, stderr=self._log, start_new_session=True,
        )  # fmt: skip

    async def start(self) -> Fleet:
        self._spawn()
        workers = int(self.env["WORKERS"])

        async def started() -> bool:
            assert self.process is not None and self.process.poll() is None, self.tail()
            return len(self.events("worker_started")) >= workers

        await wait_for(started, timeout=30, every=0.05)
        return self

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        lines = self.log_path.read_bytes().splitlines() if self.log_path.exists() else []
        parsed = [orjson.loads(line) for line in lines if line.startswith(b"{")]
        return [e for e in parsed if name is None or e.get("event") == name]

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def worker_pids(self) -> list[int]:
        assert self.process is not None
        children = psutil.Process(self.process.pid).children()
        return [p.pid for p in children if "worker" in p.cmdline() and p.status() != psutil.STATUS_ZOMBIE]

    def steady_worker_pid(self) -> int:
        """A worker that is not retiring: killing one that is (recycled, its replacement already started)
        starts no replacement, so a test waiting for one would wait in vain."""
        retiring = {e["pid"] for e in self.events("child_retiring")}
        steady = [pid for pid in self.worker_pids() if pid not in retiring]
        assert steady, f"every worker is retiring: {self.tail()}"
        return steady[0]

    def sigterm(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    async def wait(self, timeout: float) -> int:
        assert self.process is not None
        return await asyncio.to_thread(self.process.wait, timeout)

    def kill_everything(self) -> None:
        """SIGKILL the supervisor and its workers at once, as if the host died."""
        assert self.process is not None
        tree = [self.process.pid, *self.worker_pids()]
        for pid in tree:
            os.kill(pid, signal.SIGKILL)
        self.process.wait(10)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            workers = self.worker_pids()
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
            for pid in workers:
                if psutil.pid_exists(pid):
                    os.kill(pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()


async def stories_in(resources: Resources, story_ids: list[str], status: str) -> int:
    count: int = await resources.db.fetchval(
        "SELECT count(*) FROM stories WHERE story_id = ANY($1::uuid[]) AND status = $2", story_ids, status
    )
    return count


async def until_stories(resources: Resources, story_ids: list[str], status: str, timeout: float = 40) -> None:
    async def check() -> bool:
        return await stories_in(resources, story_ids, status) == len(story_ids)

    await wait_for(check, timeout, every=0.05)


async def assert_each_story_completed_once(resources: Resources, settings: Settings, story_ids: list[str]) -> None:
    """Completed, five scenes each, exactly ten media files each, no temp files, job rows completed."""
    assert await stories_in(resources, story_ids, "completed") == len(story_ids)
    scenes = await resources.db.fetch(
        "SELECT story_id, count(*) AS n, count(DISTINCT sequence) AS d FROM scenes "
        "WHERE story_id = ANY($1::uuid[]) GROUP BY story_id",
        story_ids,
    )
    assert sorted((r["n"], r["d"]) for r in scenes) == [(5, 5)] * len(story_ids)
    for story_id in story_ids:
        files = sorted(p.name for p in (settings.media_path / "stories" / story_id).iterdir())
        assert files == [f"scene-0{i}.{ext}" for i in range(1, 6) for ext in ("png", "wav")], files
    jobs = await resources.db.fetch(
        "SELECT status, count(*) AS n FROM runner_jobs WHERE job_id = ANY($1::text[]) GROUP BY status",
        [f"story_task.generate:{s}" for s in story_ids],
    )
    assert {r["status"]: r["n"] for r in jobs} == {"completed": len(story_ids)}


def now() -> float:
    return time.time()


def lost_and_duplicated(fleets: list[Fleet], story_ids: list[str]) -> tuple[int, int]:
    """Across every fleet's log: story jobs never completed, and completions beyond one per job."""
    done: dict[str, int] = {}
    for fleet in fleets:
        for event in fleet.events("job_completed"):
            done[event["job_id"]] = done.get(event["job_id"], 0) + 1
    wanted = [f"story_task.generate:{s}" for s in story_ids]
    return sum(1 for j in wanted if j not in done), sum(done.get(j, 0) - 1 for j in wanted if j in done)


async def post_stories(api: Any, count: int, *, prompt: str = "a lighthouse that learns to swim",
                       user_id: str = "fault-tests") -> list[str]:  # fmt: skip
    """POST `count` stories at once through the API; their ids (each must be accepted: 202)."""
    body = {"title": "", "prompt": prompt, "user_id": user_id}
    responses = await asyncio.gather(*(api.post("/stories/", json=body) for _ in range(count)))
    assert [r.status_code for r in responses] == [202] * count, [r.text for r in responses if r.status_code != 202]
    return [r.json()["story_id"] for r in responses]


async def processing_jobs(resources: Resources, settings: Settings) -> int:
    count: int = await resources.db.fetchval(
        "SELECT count(*) FROM runner_jobs WHERE queue = $1 AND status = 'processing'", settings.queue_name
    )
    return count


async def until_processing(resources: Resources, settings: Settings, at_least: int) -> None:
    async def check() -> bool:
        return await processing_jobs(resources, settings) >= at_least

    await wait_for(check, 20, every=0.01)


def no_loss_no_duplicates(fleet: Any, story_ids: list[str]) -> str:
    """Assert that across the fleets `fleet` (the `fleet` fixture) made every story job completed exactly once;
    say so for the measured line."""
    lost, duplicated = lost_and_duplicated(fleet.made, story_ids)
    assert (lost, duplicated) == (0, 0)
    return f"lost {lost}, duplicated {duplicated}"


def at(event: dict[str, Any]) -> float:
    """An event's time (epoch s) from the JSON log's ISO timestamp."""
    return datetime.fromisoformat(event["timestamp"]).timestamp()
