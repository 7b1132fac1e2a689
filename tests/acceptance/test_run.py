"""`python -m runner run` (what `make run` starts) as a real process tree: embedded servers, API and
workers, a story reaching `completed`, and a clean stop on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from runner.devservers import free_port
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """The whole product started as `make run` would, with its own embedded servers in tmp_path."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env |= {"DATA_DIR": str(tmp_path / "data"), "PORT": str(port), "WORKERS": "2", "LOG_FORMAT": "json",
            "EMBEDDED_REDIS_PORT": str(free_port()), "EMBEDDED_POSTGRES_PORT": str(free_port())}  # fmt: skip
    log = (tmp_path / "run.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "runner", "run"], cwd=ROOT, env=env, stdout=log, stderr=log)
    yield process, f"http://127.0.0.1:{port}", tmp_path / "run.log"
    if process.poll() is None:
        process.kill()
        process.wait(10)
    log.close()


async def test_make_run_serves_a_story_to_completed_and_stops_cleanly(
    running: tuple[subprocess.Popen[bytes], str, Path],
):
    """From a cold start, a posted story completes with fetchable media, and SIGTERM stops the whole tree."""
    process, base, log_path = running
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:

        async def api_ready() -> bool:
            assert process.poll() is None, log_path.read_text()[-3000:]
            try:
                return (await client.get("/ready")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_for(api_ready, timeout=60, every=0.1)
        body = {"title": "Moon Soup", "prompt": "a chef who cooks soup on the moon", "user_id": "u-accept"}
        posted = time.monotonic()
        story_id = (await client.post("/stories/", json=body)).json()["story_id"]

        async def completed() -> bool:
            return (await client.get(f"/stories/{story_id}/status")).json()["status"] in ("completed", "failed")

        await wait_for(completed, timeout=30, every=0.05)
        took = time.monotonic() - posted
        story = (await client.get(f"/stories/{story_id}")).json()
        assert story["status"] == "completed", story
        image = await client.get(story["cover_image_url"])
        assert (image.status_code, image.content[:4]) == (200, b"\x89PNG")
        metrics = (await client.get("/metrics")).text  # aggregated over the worker processes
        assert "runner_workers_alive 2.0" in metrics
        assert 'runner_jobs_total{job_name="story_task.generate",outcome="completed"} 1.0' in metrics
    print(f"\ncold start to ready {posted - started:.2f}s; story POST to completed {took:.2f}s")
    tree = psutil.Process(process.pid).children(recursive=True)
    assert len([p for p in tree if "runner" in " ".join(p.cmdline())]) == 3  # api + 2 workers
    process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(process.wait, 40) == 0
    assert not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
