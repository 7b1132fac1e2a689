"""The benchmark suite still runs: a quick pass of every system and workload produces numbers.
(Speed is judged by `make bench`, never here.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ENV = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}  # own servers


def run(*argv: str, timeout: float) -> str:
    done = subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.timeout(300)
def test_quick_job_benchmarks_give_numbers_for_every_system():
    """W1-W3 and starvation run against this runner, arq and Celery, and every cell has a number."""
    table = run("bench.run", "--quick", timeout=280)
    results = json.loads((ROOT / "bench" / "results" / "latest.json").read_text())
    assert "| workload |" in table
    records = results["records"]
    assert {r["system"] for r in records} == {"storymimi", "arq-default", "arq-tuned", "celery-prefork"}
    failed = [r for r in records if "error" in r["result"]]
    assert not failed, failed
    ours = [r["result"] for r in records if r["system"] == "storymimi"]
    assert {r["workload"] for r in ours} == {"noop", "sleep", "latency", "starvation"}
    assert all(r["jobs_per_s"] > 0 or (r["p50_ms"] or 0) > 0 for r in ours)


@pytest.mark.timeout(200)
def test_story_memory_and_api_benchmarks_give_numbers():
    """The story workload, the worker-memory run and the API load each print their table row."""
    stories = run("bench.stories", "--stories", "3", timeout=120)
    assert "| 3 | 0 |" in stories
    rss = run("bench.rss", "--jobs", "30", timeout=150)
    assert "| no recycling |" in rss and "| recycle every 200 jobs |" in rss
    api = run("bench.api_load", "--clients", "8", "--seconds", "1", timeout=120)
    assert "| requests | errors |" in api
