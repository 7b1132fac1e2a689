"""Worker memory over 2,000 story jobs, with and without recycling (MAX_JOBS_PER_WORKER).

    make bench-rss            # or: python -m bench.rss --jobs 2000

Starts embedded servers in a temporary folder (unless REDIS_URL / DATABASE_URL are set), runs a real
`python -m runner run --no-api` fleet with one worker process, enqueues story jobs directly (rows + queue,
as the API does), samples the worker processes' RSS every 0.2 s, and prints one markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import psutil

from jobs import STORY_JOB, registry
from jobs.repository import NewStory, StoryRepository
from jobs.settings import StorySettings
from runner.client import JobClient
from runner.devservers import EmbeddedPostgres, EmbeddedValkey
from runner.resources import open_resources
from runner.settings import Settings
from runner.store.migrations import apply_migrations

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Run:
    label: str
    jobs: int
    seconds: float
    first_rss_mib: float
    last_rss_mib: float
    peak_rss_mib: float
    workers_seen: int


async def enqueue_stories(settings: Settings, count: int) -> list[str]:
    async with open_resources(settings) as resources:
        await apply_migrations(resources.db, ["runner", *registry.migrations])
        client, stories = JobClient(resources, registry.resolved(settings)), StoryRepository(resources.db)
        ids = []
        for _ in range(count):
            story_id = uuid.uuid4()
            job_id = f"{STORY_JOB}:{story_id}"
            job = client.pending(STORY_JOB, job_id=job_id, kwargs={"story_id": str(story_id)})
            await stories.create(NewStory(story_id, user_id="bench", title="", prompt="a bench story"), job=job)
            await client.push(STORY_JOB, job_id=job_id, kwargs={"story_id": str(story_id)})
            ids.append(str(story_id))
        return ids


async def finished(settings: Settings, ids: list[str]) -> int:
    async with open_resources(settings) as resources:
        count: int = await resources.db.fetchval(
            "SELECT count(*) FROM stories WHERE story_id = ANY($1::uuid[]) AND status IN ('completed', 'failed')", ids
        )
        return count


def worker_rss(supervisor: int) -> dict[int, float]:
    rss: dict[int, float] = {}
    for child in psutil.Process(supervisor).children():
        try:
            if "worker" in child.cmdline():
                rss[child.pid] = child.memory_info().rss / 2**20
        except psutil.NoSuchProcess:
            continue
    return rss


async def measure(label: str, base_env: dict[str, str], data_dir: Path, jobs: int, recycle_after: int) -> Run:
    queue = f"bench-rss-{uuid.uuid4().hex[:6]}"
    env = {**base_env, "QUEUE_NAME": queue, "WORKERS": "1", "WORKER_CONCURRENCY": "20", "OFFLINE_LATENCY_MS": "0",
           "MAX_JOBS_PER_WORKER": str(recycle_after), "MAX_MEMORY_PER_WORKER_MB": "0", "LOG_LEVEL": "WARNING",
           "DATA_DIR": str(data_dir)}  # fmt: skip
    settings = StorySettings(_env_file=None, redis_url=env["REDIS_URL"], database_url=env["DATABASE_URL"],
                        queue_name=queue, data_dir=data_dir)  # fmt: skip
    ids = await enqueue_stories(settings, jobs)
    fleet = subprocess.Popen([sys.executable, "-m", "runner", "run", "--no-api"], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    started, samples, seen = time.monotonic(), [], set()
    try:
        while (done := await finished(settings, ids)) < jobs:
            rss = worker_rss(fleet.pid)
            seen |= set(rss)
            samples += [(done, value) for value in rss.values()]
            await asyncio.sleep(0.2)
        seconds = time.monotonic() - started
        last = worker_rss(fleet.pid)
    finally:
        fleet.send_signal(signal.SIGTERM)
        fleet.wait(60)
    first = next((v for d, v in samples if d > 0), samples[0][1] if samples else 0.0)
    peak = max((v for _, v in samples), default=0.0)
    return Run(label, jobs, seconds, first, max(last.values(), default=0.0), peak, len(seen))


async def main(jobs: int) -> None:
    with ExitStack() as stack:
        env = dict(os.environ)
        data = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-rss-")))
        if not env.get("REDIS_URL"):
            env["REDIS_URL"] = stack.enter_context(EmbeddedValkey(data)).url
        if not env.get("DATABASE_URL"):
            env["DATABASE_URL"] = stack.enter_context(EmbeddedPostgres(data)).url
        runs = [await measure("no recycling", env, data, jobs, 0),
                await measure("recycle every 200 jobs", env, data, jobs, 200)]  # fmt: skip
    print(f"\nWorker RSS over {jobs} story jobs (1 worker process, 20 jobs at once, offline provider at 0 ms)\n")
    print("| run | seconds | jobs/s | RSS after 1st jobs MiB | RSS at end MiB | peak MiB | worker processes |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        print(f"| {r.label} | {r.seconds:.1f} | {r.jobs / r.seconds:.0f} | {r.first_rss_mib:.1f} | "
              f"{r.last_rss_mib:.1f} | {r.peak_rss_mib:.1f} | {r.workers_seen} |")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2000)
    asyncio.run(main(parser.parse_args().jobs))
