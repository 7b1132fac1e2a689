"""What the whole `make run` fleet costs the machine after the story workload: USS, PSS and RSS of every
process (the supervisor, the API, each worker, and any helper of the supervisor's), and what one more
worker adds.

    python -m bench.fleet_memory                     # WORKERS=2, then WORKERS=3: the fleet and the 3rd worker
    python -m bench.fleet_memory --workers 2 --stories 50 --json
    python -m bench.fleet_memory --mode exec         # the children exec'd, as before the zygote (bench.fleetproc)

Each run starts a real `python -m runner run` (API + WORKERS workers) with embedded servers in a temporary
folder, POSTs the stories at once (bench.stories' workload, offline provider at 50 ms a call), waits for
them to complete, lets the fleet settle and reads /proc/<pid>/smaps_rollup of each process (psutil's
memory_full_info). RSS counts a page shared by several processes in each; PSS splits it between them, so
the PSS sum is what the fleet costs; USS is what is this process's alone (freed when it exits). The
embedded Redis and Postgres are not the fleet and are left out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil

from bench.cow import page_origins
from bench.stories import wait_ready
from runner.devservers import free_port
from runner.fleet.zygote import TITLE as ZYGOTE_TITLE

ROOT = Path(__file__).resolve().parents[1]
MIB = 2**20


@dataclass
class Row:
    role: str
    pid: int
    uss_mib: float
    pss_mib: float
    rss_mib: float
    copied_mib: float | None = None  # heap pages it holds a copy of where the zygote holds its own (bench.cow)


def role_of(process: psutil.Process, supervisor: int) -> str | None:
    """supervisor, api, worker, intake, or the helper's title; None for what is not the fleet (the servers)."""
    if process.pid == supervisor:
        return "supervisor"
    argv = process.cmdline()
    for role in ("worker", "api", "intake"):
        if role in argv:
            return role
    joined = " ".join(argv)
    if "storymimi" in joined or "runner" in joined:
        return joined.strip()
    return None


def fleet_rows(supervisor: int) -> list[Row]:
    root = psutil.Process(supervisor)
    rows = []
    for process in (root, *root.children(recursive=True)):
        try:
            role = role_of(process, supervisor)
            if role is None or process.status() == psutil.STATUS_ZOMBIE:
                continue
            info = process.memory_full_info()
        except psutil.NoSuchProcess:
            continue
        rows.append(Row(role, process.pid, info.uss / MIB, info.pss / MIB, info.rss / MIB))
    zygote = next((r.pid for r in rows if r.role == ZYGOTE_TITLE), None)
    for row in rows:
        if zygote is not None and row.role in ("supervisor", "api", "worker", "intake"):
            with contextlib.suppress(OSError):
                origins = page_origins(zygote, row.pid)
                row.copied_mib = origins.copied_mib if origins is not None else None
    order = {"supervisor": 0, "api": 2, "worker": 3, "intake": 4}
    return sorted(rows, key=lambda r: (order.get(r.role, 1), r.pid))


async def story_workload(port: int, pg_port: int, stories: int) -> float:
    """POST `stories` stories at once and wait for all to end; the seconds it took."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        body = {"title": "", "prompt": "a bench story about a brave teapot", "user_id": "bench"}
        started = time.monotonic()
        posted = await asyncio.gather(*(client.post("/stories/", json=body) for _ in range(stories)))
        ids = [r.json()["story_id"] for r in posted]
    db = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{pg_port}/postgres")
    try:
        query = "SELECT count(*) FROM stories WHERE story_id = ANY($1::uuid[]) AND status IN ('completed', 'failed')"
        while await db.fetchval(query, ids) < len(ids):
            await asyncio.sleep(0.05)
    finally:
        await db.close()
    return time.monotonic() - started


async def measure(workers: int, stories: int, settle_s: float, mode: str) -> tuple[list[Row], float]:
    with tempfile.TemporaryDirectory(prefix="bench-fleet-memory-") as data:
        port, pg_port = free_port(), free_port()
        env = {**{k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")},
               "DATA_DIR": data, "PORT": str(port), "WORKERS": str(workers), "OFFLINE_LATENCY_MS": "50",
               "EMBEDDED_REDIS_PORT": str(free_port()), "EMBEDDED_POSTGRES_PORT": str(pg_port),
               "LOG_LEVEL": "WARNING"}  # fmt: skip
        fleet = subprocess.Popen([sys.executable, "-m", "bench.fleetproc", mode], cwd=ROOT, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                await wait_ready(client, fleet)
            seconds = await story_workload(port, pg_port, stories)
            await asyncio.sleep(settle_s)
            return fleet_rows(fleet.pid), seconds
        finally:
            fleet.send_signal(signal.SIGTERM)
            fleet.wait(60)


def table(rows: list[Row]) -> str:
    lines = [
        "| process | pid | USS MiB | PSS MiB | RSS MiB | of its USS, copied on write MiB |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {r.role} | {r.pid} | {r.uss_mib:.1f} | {r.pss_mib:.1f} | {r.rss_mib:.1f} | "
              f"{'' if r.copied_mib is None else f'{r.copied_mib:.1f}'} |" for r in rows]  # fmt: skip
    total = [sum(getattr(r, f) for r in rows) for f in ("uss_mib", "pss_mib", "rss_mib")]
    lines.append(f"| **fleet** | | {total[0]:.1f} | **{total[1]:.1f}** | {total[2]:.1f} | |")
    return "\n".join(lines)


def pss(rows: list[Row]) -> float:
    return sum(r.pss_mib for r in rows)


async def main(workers: list[int], stories: int, settle_s: float, mode: str, as_json: bool) -> None:
    results: list[dict[str, Any]] = []
    for count in workers:
        rows, seconds = await measure(count, stories, settle_s, mode)
        results.append({"workers": count, "stories_s": seconds, "rows": [asdict(r) for r in rows]})
        if not as_json:
            print(
                f"\nWORKERS={count}, children {mode}ed: {stories} stories in {seconds:.1f} s, then {settle_s:g} s idle\n"
            )
            print(table(rows))
    if len(results) > 1:
        totals = [(r["workers"], sum(row["pss_mib"] for row in r["rows"])) for r in results]
        (w0, p0), (w1, p1) = totals[0], totals[-1]
        extra = (p1 - p0) / (w1 - w0)
        if not as_json:
            print(f"\neach further worker: {extra:+.1f} MiB fleet PSS ({w0} -> {w1} workers)")
        results.append({"per_extra_worker_pss_mib": extra})
    if as_json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 3], help="a fleet of each size, in turn")
    parser.add_argument("--stories", type=int, default=50)
    parser.add_argument("--settle-s", type=float, default=2.0, help="idle time after the stories, before reading")
    parser.add_argument("--mode", choices=["fork", "exec"], default="fork", help="how the children start")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.workers, args.stories, args.settle_s, args.mode, args.json))
