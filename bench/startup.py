"""How soon a newly spawned worker starts its first job: from the supervisor starting it (its `child_started`
log line) to that worker's first job starting (the job notes its pid and the time), with jobs waiting.

    python -m bench.startup                      # forked (what `make run` does), then exec'd, 300 jobs each
    python -m bench.startup --modes fork --jobs 300

Embedded servers in a temporary folder; the jobs (bench.drivers.startup_jobs, 20 ms each) are queued before
the fleet starts: one worker process (WORKERS=1, WORKER_CONCURRENCY=1) that retires every
MAX_JOBS_PER_WORKER=10 jobs, so the supervisor keeps spawning replacements while the queue is full. The
first worker (`cold`: the fleet is starting too) is reported apart from its replacements (`warm`); each
line also splits the time at the worker's `worker_started` (its connections open, migrations checked).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from bench.drivers.startup_jobs import STARTS_KEY, registry
from runner.client import JobClient
from runner.devservers import EmbeddedPostgres, EmbeddedValkey
from runner.resources import open_resources
from runner.settings import Settings
from runner.store.migrations import apply_migrations

ROOT = Path(__file__).resolve().parents[1]
HOLD_S = 0.02


@dataclass
class Spawn:
    pid: int
    started_at: float  # the supervisor's child_started
    ready_at: float | None  # the worker's worker_started
    first_job_at: float | None


def _ts(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp()


def spawns(log_path: Path, starts: list[bytes]) -> list[Spawn]:
    events = [orjson.loads(line) for line in log_path.read_bytes().splitlines() if line.startswith(b"{")]
    ready = {e["worker_id"]: _ts(e) for e in events if e.get("event") == "worker_started"}
    first: dict[int, float] = {}
    for item in starts:
        pid, at = item.split()
        first.setdefault(int(pid), float(at))
    return [
        Spawn(e["pid"], _ts(e), ready.get(e["instance"]), first.get(e["pid"]))
        for e in events
        if e.get("event") == "child_started"
    ]


async def enqueue(settings: Settings, jobs: int) -> None:
    async with open_resources(settings) as resources:
        await apply_migrations(resources.db, ["runner", *registry.migrations])
        await resources.redis.delete(STARTS_KEY)
        client = JobClient(resources, registry.resolved(settings))
        for start in range(0, jobs, 100):
            await asyncio.gather(
                *(client.enqueue("bench.note_start", hold_s=HOLD_S) for _ in range(start, min(jobs, start + 100)))
            )


async def noted(settings: Settings) -> list[bytes]:
    async with open_resources(settings) as resources:
        items: list[bytes] = await resources.redis.lrange(STARTS_KEY, 0, -1)  # type: ignore[misc]  # redis-py types list commands as sync|async
        return items


async def measure(mode: str, base_env: dict[str, str], data: Path, jobs: int) -> list[Spawn]:
    queue = f"bench-startup-{uuid.uuid4().hex[:6]}"
    env = {**base_env, "QUEUE_NAME": queue, "WORKERS": "1", "WORKER_CONCURRENCY": "1", "MAX_JOBS_PER_WORKER": "10",
           "LOG_FORMAT": "json", "LOG_LEVEL": "INFO", "DATA_DIR": str(data)}  # fmt: skip
    settings = Settings(_env_file=None, redis_url=env["REDIS_URL"], database_url=env["DATABASE_URL"], queue_name=queue)
    await enqueue(settings, jobs)
    log_path = data / f"fleet-{mode}-{queue}.log"
    with log_path.open("wb") as log:
        fleet = subprocess.Popen(
            [sys.executable, "-m", "bench.fleetproc", mode, "--no-api", "--registry", "bench.drivers.startup_jobs:registry"],
            cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60 + jobs * HOLD_S * 4
            while len(starts := await noted(settings)) < jobs:
                if fleet.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the {mode} fleet stopped or stalled; see {log_path}")
                await asyncio.sleep(0.2)
        finally:
            fleet.send_signal(signal.SIGTERM)
            fleet.wait(60)
    return spawns(log_path, starts)


def row(mode: str, kind: str, spawned: list[Spawn]) -> str:
    done = [s for s in spawned if s.first_job_at is not None and s.ready_at is not None]
    if not done:
        return f"| {mode} | {kind} | 0 | - | - | - | - |"
    to_job = sorted((s.first_job_at - s.started_at) * 1000 for s in done)  # type: ignore[operator]
    to_ready = [(s.ready_at - s.started_at) * 1000 for s in done]  # type: ignore[operator]
    return (f"| {mode} | {kind} | {len(done)} | {statistics.median(to_ready):.0f} | {statistics.median(to_job):.0f} | "
            f"{to_job[0]:.0f} | {to_job[-1]:.0f} |")  # fmt: skip


async def main(modes: list[str], jobs: int) -> None:
    lines = []
    with ExitStack() as stack:
        data = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-startup-")))
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
        env["REDIS_URL"] = stack.enter_context(EmbeddedValkey(data)).url
        env["DATABASE_URL"] = stack.enter_context(EmbeddedPostgres(data)).url
        for mode in modes:
            spawned = await measure(mode, env, data, jobs)
            lines += [row(mode, "cold (fleet start)", spawned[:1]), row(mode, "warm (replacements)", spawned[1:])]
    print(f"\nSpawn to first job of a worker ({jobs} jobs of {HOLD_S * 1000:.0f} ms queued first, one worker retiring "
          "every 10 jobs)\n")  # fmt: skip
    print("| children | worker | spawns | to worker_started ms (p50) | to first job ms (p50) | min | max |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(lines))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="+", default=["fork", "exec"], choices=["fork", "exec"])
    parser.add_argument("--jobs", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(main(args.modes, args.jobs))
