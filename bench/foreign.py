"""Foreign producers' jobs: from an unchanged arq or Celery producer's enqueue to the job's start, through
the intakes, on a real `python -m runner run --no-api` (ARQ_INTAKE and CELERY_INTAKE on, WORKERS workers).

    make bench-foreign        # or: python -m bench.foreign --jobs 500 --rate 50

Each producer sends at a steady rate (the W3 shape: a mostly idle fleet, as a real producer meets it), each
job notes the seconds since its producer sent it (bench/foreign_jobs.py). Embedded servers in a temporary
folder. The issue's target: p99 under 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from arq.connections import RedisSettings, create_pool
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bench.foreign_jobs import STARTED_KEY
from runner.devservers import free_port

ROOT = Path(__file__).resolve().parents[1]
QUEUE = "bench-foreign"  # the runner's, and the Celery producer's
ARQ_QUEUE = "bench-foreign-arq"  # the arq producer's: another key (Celery's list and arq's sorted set cannot share one)


async def wait_for_workers(redis: Redis, process: subprocess.Popen[bytes], workers: int) -> None:
    from runner.broker.keys import QueueKeys

    for _ in range(600):
        if process.poll() is not None:
            raise SystemExit("the fleet exited during start-up; run `make worker` to see why")
        try:
            if await redis.zcard(QueueKeys.of(QUEUE).workers) >= workers:
                return
        except (RedisError, OSError):  # the embedded server is still starting
            pass
        await asyncio.sleep(0.1)
    raise SystemExit("the workers did not start within 60 s")


async def send_arq(url: str, count: int, rate: float) -> None:
    pool = await create_pool(RedisSettings.from_dsn(url), default_queue_name=ARQ_QUEUE,
                             job_serializer=lambda v: json.dumps(v).encode(), job_deserializer=json.loads)  # fmt: skip
    try:
        start = time.monotonic()
        for n in range(count):
            await asyncio.sleep(max(start + n / rate - time.monotonic(), 0))
            await pool.enqueue_job("bench.stamp", "arq", time.time())
    finally:
        await pool.aclose()


async def collect(redis: Redis, origin: str, count: int, timeout_s: float) -> list[float]:
    key = STARTED_KEY.format(origin=origin)
    deadline = time.monotonic() + timeout_s
    while await redis.execute_command("LLEN", key) < count and time.monotonic() < deadline:  # type: ignore[no-untyped-call]
        await asyncio.sleep(0.05)
    values: list[bytes] = await redis.execute_command("LRANGE", key, 0, -1)  # type: ignore[no-untyped-call]
    return sorted(float(v) * 1000 for v in values)


def _log() -> Any:
    """The fleet's log: to BENCH_LOG if set (to see where time goes), else nowhere."""
    path = os.environ.get("BENCH_LOG")
    return open(path, "wb") if path else subprocess.DEVNULL


def summary(ms: list[float], count: int) -> dict[str, Any]:
    if not ms:
        return {"jobs": count, "started": 0}
    return {"jobs": count, "started": len(ms), "p50_ms": statistics.median(ms),
            "p99_ms": ms[min(len(ms) - 1, int(len(ms) * 0.99))], "max_ms": ms[-1]}  # fmt: skip


async def run(count: int, rate: float, workers: int, celery_python: Path | None) -> dict[str, dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="bench-foreign-") as data:
        redis_port = free_port()
        url = f"redis://127.0.0.1:{redis_port}/0"
        env = {**{k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")},
               "DATA_DIR": data, "WORKERS": str(workers), "QUEUE_NAME": QUEUE, "ARQ_INTAKE": "true",
               "ARQ_QUEUE_NAME": ARQ_QUEUE,
               "CELERY_INTAKE": "true" if celery_python else "false", "EMBEDDED_REDIS_PORT": str(redis_port),
               "EMBEDDED_POSTGRES_PORT": str(free_port()), "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
               "LOG_FORMAT": "json"}  # fmt: skip
        fleet = subprocess.Popen([sys.executable, "-m", "runner", "run", "--no-api", "--registry",
                                  "bench.foreign_jobs:registry"], cwd=ROOT, env=env, stdout=_log(), stderr=subprocess.STDOUT,
                                 start_new_session=True)  # fmt: skip
        redis = Redis.from_url(url)
        try:
            await wait_for_workers(redis, fleet, workers)
            await asyncio.sleep(1.0)  # the intake process starts beside the workers
            results = {}
            await send_arq(url, count, rate)
            results["arq"] = summary(await collect(redis, "arq", count, 30), count)
            if celery_python is not None:
                sender = ROOT / "bench" / "drivers" / "celery_send.py"
                subprocess.run([str(celery_python), str(sender), url, QUEUE, str(count), str(rate)], check=True)
                results["celery"] = summary(await collect(redis, "celery", count, 30), count)
            return results
        finally:
            await redis.aclose()
            fleet.send_signal(signal.SIGTERM)
            fleet.wait(60)


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=500, help="per producer")
    parser.add_argument("--rate", type=float, default=50.0, help="jobs a second, per producer")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-celery", action="store_true", help="arq only (no Celery venv)")
    args = parser.parse_args(argv)
    celery_python = None
    if not args.no_celery:
        from bench.run import ensure_celery_venv

        celery_python = ensure_celery_venv()
    results = asyncio.run(run(args.jobs, args.rate, args.workers, celery_python))
    print(f"\nforeign producer -> job start, {args.jobs} jobs each at {args.rate:g}/s, WORKERS={args.workers}\n")
    print("| producer | jobs | started | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|")
    for origin, r in results.items():
        print(f"| {origin} | {r['jobs']} | {r['started']} | {r.get('p50_ms', float('nan')):.1f} | "
              f"{r.get('p99_ms', float('nan')):.1f} | {r.get('max_ms', float('nan')):.1f} |")  # fmt: skip
    return results


if __name__ == "__main__":
    main()
