"""The story workload: N stories POSTed at once to a real `python -m runner run` (API + WORKERS workers,
offline provider at OFFLINE_LATENCY_MS per call); stories per minute, submit-to-completed p50/p95, RSS.

    make bench-stories        # or: python -m bench.stories --stories 50 --workers 2 --latency-ms 50

Embedded servers are started in a temporary folder. Latency per story is read from its own row
(`updated_at` of the completed story minus `created_at`), so polling does not blur it.
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
from pathlib import Path

import asyncpg
import httpx
import psutil

from runner.devservers import free_port
from runner.fleet.zygote import TITLE as ZYGOTE

ROOT = Path(__file__).resolve().parents[1]


async def wait_ready(client: httpx.AsyncClient, process: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        if process.poll() is not None:
            raise SystemExit("the fleet exited during start-up; run `make run` to see why")
        try:
            if (await client.get("/ready")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit("the API was not ready within 60 s")


def fleet_memory_mib(supervisor: int) -> dict[str, float]:
    """RSS of the workers (summed), the API and the supervisor, and the whole fleet's PSS, in MiB.

    Summed RSS counts pages the processes share (the same shared libraries) once per process; PSS
    splits each shared page between its users, so the PSS sum is what the fleet costs the machine."""
    memory = {"workers_rss_mib": 0.0, "api_rss_mib": 0.0, "supervisor_rss_mib": 0.0, "fleet_pss_mib": 0.0}
    root = psutil.Process(supervisor)
    for process in (root, *root.children()):
        try:
            info = process.memory_full_info()
            cmd = process.cmdline()
        except psutil.NoSuchProcess:  # a worker recycled between the listing and the read
            continue
        if process.pid == supervisor:
            role = "supervisor"
        elif "worker" in cmd or "api" in cmd:
            role = "workers" if "worker" in cmd else "api"
        elif cmd[:1] == [ZYGOTE]:  # what the workers and the API are forked from: in the fleet's PSS
            memory["fleet_pss_mib"] += info.pss / 2**20
            continue
        else:
            continue  # the embedded Redis and Postgres servers
        memory[f"{role}_rss_mib"] += info.rss / 2**20
        memory["fleet_pss_mib"] += info.pss / 2**20
    return memory


async def run(stories: int, workers: int, latency_ms: int, concurrency: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-stories-") as data:
        port, pg_port = free_port(), free_port()
        env = {**{k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")},
               "DATA_DIR": data, "PORT": str(port), "WORKERS": str(workers), "OFFLINE_LATENCY_MS": str(latency_ms),
               "WORKER_CONCURRENCY": str(concurrency), "EMBEDDED_REDIS_PORT": str(free_port()),
               "EMBEDDED_POSTGRES_PORT": str(pg_port), "LOG_LEVEL": "WARNING"}  # fmt: skip
        fleet = subprocess.Popen([sys.executable, "-m", "runner", "run"], cwd=ROOT, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                await wait_ready(client, fleet)
                body = {"title": "", "prompt": "a bench story about a brave teapot", "user_id": "bench"}
                started = time.monotonic()
                posted = await asyncio.gather(*(client.post("/stories/", json=body) for _ in range(stories)))
                ids = [r.json()["story_id"] for r in posted]
                db = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{pg_port}/postgres")
                peak = fleet_memory_mib(fleet.pid)
                try:
                    while await db.fetchval(
                        "SELECT count(*) FROM stories WHERE story_id = ANY($1::uuid[]) AND status IN ('completed', 'failed')",
                        ids,
                    ) < len(ids):
                        for key, mib in fleet_memory_mib(fleet.pid).items():
                            peak[key] = max(peak.get(key, 0.0), mib)
                        await asyncio.sleep(0.02)
                    wall = time.monotonic() - started
                    rows = await db.fetch(
                        "SELECT status, extract(epoch FROM updated_at - created_at) AS s FROM stories "
                        "WHERE story_id = ANY($1::uuid[])",
                        ids,
                    )
                finally:
                    await db.close()
        finally:
            fleet.send_signal(signal.SIGTERM)
            fleet.wait(60)
    latencies = sorted(float(r["s"]) for r in rows)
    return {
        "stories": stories, "failed": sum(r["status"] != "completed" for r in rows), "wall_s": wall,
        "per_min": stories / wall * 60, "p50_s": statistics.median(latencies),
        "p95_s": latencies[max(0, int(len(latencies) * 0.95) - 1)],
        **peak,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stories", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=10, help="WORKER_CONCURRENCY")
    args = parser.parse_args()
    r = asyncio.run(run(args.stories, args.workers, args.latency_ms, args.concurrency))
    print(f"\n{args.stories} stories x {5} scenes at once, WORKERS={args.workers}, WORKER_CONCURRENCY={args.concurrency}, "
          f"offline provider at {args.latency_ms} ms a call\n")  # fmt: skip
    print("| stories | failed | wall s | stories/min | p50 s | p95 s | workers RSS MiB (sum) | API RSS | supervisor RSS "
          "| fleet PSS MiB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {r['stories']:.0f} | {r['failed']:.0f} | {r['wall_s']:.2f} | {r['per_min']:.0f} | {r['p50_s']:.2f} | "
          f"{r['p95_s']:.2f} | {r['workers_rss_mib']:.0f} | {r['api_rss_mib']:.0f} | {r['supervisor_rss_mib']:.0f} | "
          f"{r['fleet_pss_mib']:.0f} |")  # fmt: skip
    print("\nMemory is each figure's peak while the stories ran; PSS shares each shared page among its users.")


if __name__ == "__main__":
    main()
