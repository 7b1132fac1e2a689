"""What every driver shares: the command line, the workloads' shape, measuring and the JSON result.

Standard library and redis-py only, so a driver can run in another system's virtual environment.

Workloads (the issue's names):
    noop        W1: N no-op jobs enqueued up front; jobs/s from the first start to the queue drained
    sleep       W2: N jobs that each await SLEEP_S, CONCURRENCY at once; jobs/s the same way
    latency     W3: an idle worker, one job every 1/RATE s; enqueue -> start, p50 / p99 in ms
    starvation  one worker busy with CONCURRENCY long jobs, a second idle: enqueue -> start of new jobs
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
LATENCY_KEY = "bench:latency"  # jobs LPUSH "their start time minus the enqueue time they were given" here


@dataclass
class Result:
    system: str
    workload: str
    jobs: int
    concurrency: int
    seconds: float = 0.0
    jobs_per_s: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    worker_rss_mib: float | None = None
    notes: dict[str, float | str] = field(default_factory=dict)


def parse_args(system: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"bench.drivers.{system}")
    parser.add_argument("--workload", choices=["noop", "sleep", "latency", "starvation"], required=True)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--sleep-s", type=float, default=0.1)
    parser.add_argument("--rate", type=float, default=50.0, help="jobs a second, for latency and starvation")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--queue", default=f"bench-{system}-{os.getpid()}")
    return parser.parse_args()


def emit(result: Result) -> None:
    print(json.dumps(asdict(result)), flush=True)


def percentiles(values_ms: list[float]) -> tuple[float, float]:
    ordered = sorted(values_ms)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered), p99


def spawn(argv: list[str], env: dict[str, str], log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a worker in its own session; its output goes to `log` (appended) if given, else nowhere."""
    with open(log, "ab") if log is not None else open(os.devnull, "wb") as out:  # the child keeps its own copy
        return subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=out,
                                start_new_session=True)  # fmt: skip


def log_tail(log: Path, lines: int = 5) -> str:
    """The last lines of a worker's log, for an error message that says why it stopped."""
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:])[-600:] or "(empty log)"


def stop(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM the process group (a worker and its children), SIGKILL what is left after `timeout`."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def tree_rss_mib(pid: int) -> float:
    """RSS of a process and its children (Celery's prefork pool lives in children)."""
    try:
        root = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20
    except psutil.NoSuchProcess:
        return 0.0


def wait_until(check: Callable[[], bool], timeout: float, every: float = 0.005, what: str = "condition") -> float:
    """Poll until `check()`; return the time.monotonic() at which it held."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            sys.exit(f"benchmark: {what} not reached within {timeout}s")
        time.sleep(every)
    return time.monotonic()
