"""Where W1's time goes: one W1 run of this runner (no-op jobs, one worker process) with what each job costs in
Redis commands, Postgres commits, rows and WAL records, and CPU in every process (the enqueuing driver and its
worker, Redis, Postgres), so the bound is named before anything is optimised (issue #15: "profile first").

    make bench-profile            # or: python -m bench.profile_w1 [--jobs N] [--concurrency N]

Embedded Valkey and PostgreSQL are started in a temporary folder. Redis commands are INFO commandstats deltas
(the commands scripts run count too); Postgres figures are pg_stat_database and pg_stat_wal deltas. CPU is
sampled from /proc every 20 ms for each process of each tree, the last sample of a process that exits kept,
so short-lived Postgres backends are counted. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import redis

from runner.devservers import EmbeddedPostgres, EmbeddedValkey

ROOT = Path(__file__).resolve().parents[1]


class CpuSampler:
    """CPU seconds used since the first sample by each named process tree, exited processes included."""

    def __init__(self, roots: dict[str, int]) -> None:
        self._roots = roots
        self._first: dict[int, float] = {}
        self._last: dict[int, tuple[str, float]] = {}

    def sample(self) -> None:
        for name, pid in self._roots.items():
            try:
                root = psutil.Process(pid)
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for process in tree:
                try:
                    times = process.cpu_times()
                except psutil.NoSuchProcess:
                    continue
                used = times.user + times.system
                self._first.setdefault(process.pid, used)
                self._last[process.pid] = (name, used)

    def used(self) -> dict[str, float]:
        totals = dict.fromkeys(self._roots, 0.0)
        for pid, (name, used) in self._last.items():
            totals[name] += used - self._first[pid]
        return totals


def command_calls(client: redis.Redis) -> dict[str, int]:
    stats: dict[str, dict[str, Any]] = client.info("commandstats")  # type: ignore[assignment]  # sync client
    return {name.removeprefix("cmdstat_"): int(counts["calls"]) for name, counts in stats.items()}


async def postgres_counters(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            "SELECT xact_commit, tup_inserted, tup_updated, tup_deleted FROM pg_stat_database "
            "WHERE datname = current_database()"
        )
        wal = await conn.fetchval("SELECT wal_records FROM pg_stat_wal")
        assert row is not None, "pg_stat_database has no row for this database"
        return {**{k: int(v) for k, v in row.items()}, "wal_records": int(wal)}
    finally:
        await conn.close()


def driver(jobs: int, concurrency: int, queue: str, redis_url: str, database_url: str) -> subprocess.Popen[str]:
    argv = ["--workload", "noop", "--jobs", str(jobs), "--concurrency", str(concurrency), "--queue", queue,
            "--redis-url", redis_url, "--database-url", database_url]  # fmt: skip
    return subprocess.Popen([sys.executable, "-m", "bench.drivers.storymimi", *argv], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def profile(jobs: int, concurrency: int, data_dir: Path) -> dict[str, Any]:
    with EmbeddedValkey(data_dir) as valkey, EmbeddedPostgres(data_dir) as postgres:
        assert valkey.pid is not None, "the embedded Valkey did not start"
        assert postgres.pid is not None, "the embedded PostgreSQL did not start"
        client = redis.Redis.from_url(valkey.url)
        warm = driver(min(jobs, 1000), concurrency, "profile-warm-up", valkey.url, postgres.url)  # migrations, caches
        _, err = warm.communicate(timeout=300)
        if warm.returncode != 0:
            raise SystemExit(f"the warm-up run failed: {err[-2000:]}")
        calls_before, rows_before = command_calls(client), asyncio.run(postgres_counters(postgres.url))
        run = driver(jobs, concurrency, "profile", valkey.url, postgres.url)
        sampler = CpuSampler({"driver_and_worker": run.pid, "redis": valkey.pid, "postgres": postgres.pid})
        while run.poll() is None:
            sampler.sample()
            time.sleep(0.02)
        out, err = run.communicate()
        if run.returncode != 0:
            raise SystemExit(f"the W1 run failed: {err[-2000:]}")
        sampler.sample()
        calls_after, rows_after = command_calls(client), asyncio.run(postgres_counters(postgres.url))
        client.close()
    calls = {k: v - calls_before.get(k, 0) for k, v in calls_after.items() if v - calls_before.get(k, 0) > 0}
    per_job = {k: round(v / jobs, 3) for k, v in sorted(calls.items(), key=lambda kv: -kv[1])}
    measured = json.loads(out.strip().splitlines()[-1])
    return {
        "jobs": jobs,
        "concurrency": concurrency,
        "jobs_per_s": round(float(measured["jobs_per_s"]), 1),
        "redis_commands_per_job": round(sum(calls.values()) / jobs, 2),
        "redis_commands_per_job_by_name": per_job,
        "postgres_per_job": {k: round((rows_after[k] - rows_before[k]) / jobs, 3) for k in rows_after},
        "cpu_ms_per_job": {k: round(v / jobs * 1000, 4) for k, v in sampler.used().items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as folder:
        print(json.dumps(profile(args.jobs, args.concurrency, Path(folder)), indent=2))


if __name__ == "__main__":
    main()
