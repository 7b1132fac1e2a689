"""API load: `POST /stories/` (story row + job row + enqueue) from 64 concurrent clients against one
API process started as `make api` starts it; requests/s and latency p50 / p99.

    make bench-api            # or: python -m bench.api_load --clients 64 --seconds 10

Embedded servers are started in a temporary folder. The load comes from `wrk` (C, one thread) when it is
installed (`apt-get install wrk`): a Python client cannot generate this load on two cores shared with
the API, so without wrk the httpx fallback measures mostly itself, and the table says so.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from bench.stories import wait_ready
from runner.devservers import free_port

ROOT = Path(__file__).resolve().parents[1]
BODY = {"title": "", "prompt": "a bench story about a brave teapot", "user_id": "bench"}


async def client_loop(client: httpx.AsyncClient, until: float, latencies: list[float], errors: list[int]) -> None:
    while time.monotonic() < until:
        started = time.perf_counter()
        response = await client.post("/stories/", json=BODY)
        latencies.append((time.perf_counter() - started) * 1000)
        if response.status_code != 202:
            errors.append(response.status_code)


async def load(base_url: str, clients: int, seconds: float) -> tuple[float, list[float], list[int]]:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:
        for _ in range(50):  # warm-up: connections, prepared statements
            await client.post("/stories/", json=BODY)
        latencies: list[float] = []
        errors: list[int] = []
        started = time.monotonic()
        await asyncio.gather(*(client_loop(client, started + seconds, latencies, errors) for _ in range(clients)))
        return time.monotonic() - started, latencies, errors


async def run(clients: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-api-") as data:
        port = free_port()
        env = {**{k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")},
               "DATA_DIR": data, "PORT": str(port), "EMBEDDED_REDIS_PORT": str(free_port()),
               "EMBEDDED_POSTGRES_PORT": str(free_port()), "LOG_LEVEL": "WARNING"}  # fmt: skip
        fleet = subprocess.Popen([sys.executable, "-m", "runner", "run", "--no-workers"], cwd=ROOT, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base) as probe:
                await wait_ready(probe, fleet)
            if shutil.which("wrk"):
                tool, row = "wrk", await asyncio.to_thread(wrk, base, clients, seconds)
            else:
                tool, row = "httpx (client-bound: install wrk)", await httpx_row(base, clients, seconds)
            api = [p for p in psutil.Process(fleet.pid).children() if "api" in p.cmdline()]
            rss = api[0].memory_info().rss / 2**20 if api else 0.0
        finally:
            fleet.send_signal(signal.SIGTERM)
            fleet.wait(60)
    print(f"\nPOST /stories/ from {clients} concurrent clients for {seconds:g} s, one API process, load by {tool}\n")
    print("| requests | errors | requests/s | p50 ms | p99 ms | API RSS MiB |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {row['requests']:.0f} | {row['errors']:.0f} | {row['per_s']:.0f} | {row['p50']:.1f} | {row['p99']:.1f} | {rss:.0f} |"
    )


async def httpx_row(base: str, clients: int, seconds: float) -> dict[str, float]:
    wall, latencies, errors = await load(base, clients, seconds)
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {"requests": len(ordered), "errors": len(errors), "per_s": len(ordered) / wall,
            "p50": statistics.median(ordered), "p99": p99}  # fmt: skip


_WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"title": "", "prompt": "a bench story about a brave teapot", "user_id": "bench"}'
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %.3f %.3f\\n", summary.requests,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def wrk(base: str, clients: int, seconds: float) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(_WRK_SCRIPT)
        script.flush()
        subprocess.run(["wrk", "-t1", f"-c{clients}", "-d1s", "-s", script.name, f"{base}/stories/"],
                       capture_output=True, check=True)  # warm-up  # fmt: skip
        out = subprocess.run(["wrk", "-t1", f"-c{clients}", f"-d{seconds:g}s", "-s", script.name, f"{base}/stories/"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    requests, errors, p50, p99 = next(line for line in out.splitlines() if line.startswith("RESULT")).split()[1:]
    return {"requests": float(requests), "errors": float(errors), "per_s": float(requests) / seconds,
            "p50": float(p50), "p99": float(p99)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    asyncio.run(run(args.clients, args.seconds))


if __name__ == "__main__":
    main()
