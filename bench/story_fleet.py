"""A real `python -m runner run` fleet for the story benches (bench.stories, bench.stories_http,
bench.stories_many): the API and WORKERS workers with embedded Valkey and PostgreSQL in a temporary folder;
POST stories at once, wait for their rows to end, and read each story's latency from its own row
(`updated_at` of the ended story minus `created_at`), so polling does not blur it.

The fleet logs (LOG_LEVEL, default WARNING, as JSON lines) go to a file in that folder; `log_events` counts
them by event, and a fleet that does not come up is reported with the file's tail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from runner.devservers import free_port

__all__ = [
    "BODY",
    "Fleet",
    "fleet_settings",
    "latency_summary",
    "percentile",
    "post_stories",
    "story_fleet",
    "wait_for_stories",
    "warm_up",
]

ROOT = Path(__file__).resolve().parents[1]
BODY = {"title": "", "prompt": "a bench story about a brave teapot", "user_id": "bench"}
ENDED = ("completed", "failed")


@dataclass(frozen=True)
class Fleet:
    """A running fleet: its supervisor process, an API client, a Postgres connection, its environment (with
    REDIS_URL and DATABASE_URL of its servers, for more processes of the same fleet) and its log file."""

    process: subprocess.Popen[bytes]
    api: httpx.AsyncClient
    db: asyncpg.Connection
    env: dict[str, str]
    log: Path

    def log_tail(self, lines: int = 30) -> str:
        return tail(self.log, lines)

    def log_events(self) -> dict[str, int]:
        """How many log lines the fleet wrote so far, by event (its level's and above only)."""
        events: Counter[str] = Counter()
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                events[str(json.loads(line).get("event", "?"))] += 1
            except (ValueError, AttributeError):
                events["(not json)"] += 1
        return dict(events.most_common())


def tail(path: Path, lines: int = 30) -> str:
    """The last `lines` lines of a text file."""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank q-quantile (0 < q <= 1) of `values` (any order); nan for none."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else math.nan


def add_fleet_options(parser: argparse.ArgumentParser, *, stories: int, timeout_s: float) -> None:
    """The options every story bench takes: how many stories, the fleet's size and settings, how long to wait."""
    parser.add_argument("--stories", type=int, default=stories)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--latency-ms", type=float, default=50, help="each provider call's latency")
    parser.add_argument("--concurrency", type=int, default=10, help="WORKER_CONCURRENCY")
    parser.add_argument("--timeout", type=float, default=timeout_s, help="seconds to wait for the stories to end")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a fleet setting")


def fleet_settings(latency_ms: float, assignments: Sequence[str]) -> dict[str, str]:
    """The fleet settings of a story bench: OFFLINE_LATENCY_MS, then each `--set NAME=VALUE`."""
    env = {"OFFLINE_LATENCY_MS": f"{latency_ms:g}"}
    for item in assignments:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"--set takes NAME=VALUE, got {item!r}")
        env[name.upper()] = value
    return env


@asynccontextmanager
async def story_fleet(
    *, workers: int, concurrency: int, env: Mapping[str, str] | None = None, with_workers: bool = True
) -> AsyncIterator[Fleet]:
    """A fleet of the API and `workers` workers (none: `with_workers=False`); `env` adds or overrides settings."""
    with tempfile.TemporaryDirectory(prefix="bench-stories-") as folder:
        data, port = Path(folder), free_port()
        fleet_env = {**{k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")},
                     "DATA_DIR": str(data), "PORT": str(port), "WORKERS": str(workers),
                     "WORKER_CONCURRENCY": str(concurrency), "EMBEDDED_REDIS_PORT": str(free_port()),
                     "EMBEDDED_POSTGRES_PORT": str(free_port()), "LOG_LEVEL": "WARNING", "LOG_FORMAT": "json",
                     **(env or {})}  # fmt: skip
        log = data / "fleet.log"
        argv = [sys.executable, "-m", "runner", "run", *(() if with_workers else ("--no-workers",))]
        with log.open("wb") as out:
            process = subprocess.Popen(argv, cwd=ROOT, env=fleet_env, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)  # fmt: skip
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as api:
                await _wait_ready(api, process, log)
                servers = {var: json.loads((data / f"{name}.json").read_text())["url"]
                           for var, name in (("REDIS_URL", "valkey"), ("DATABASE_URL", "postgres"))}  # fmt: skip
                db = await asyncpg.connect(servers["DATABASE_URL"])
                try:
                    yield Fleet(process, api, db, {**fleet_env, **servers}, log)
                finally:
                    await db.close()
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)  # its own session: the supervisor, its children, servers
                process.wait(10)


async def _wait_ready(api: httpx.AsyncClient, process: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(1200):
        if process.poll() is not None:
            raise SystemExit(
                f"the fleet exited during start-up (code {process.returncode}); its log ends:\n{tail(log)}"
            )
        try:
            if (await api.get("/ready")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit(f"the API was not ready within 120 s; the fleet's log ends:\n{tail(log)}")


async def post_stories(api: httpx.AsyncClient, count: int) -> list[str]:
    """POST `count` stories at once; their ids (every one answered 202, else SystemExit saying what came)."""
    posted = await asyncio.gather(*(api.post("/stories/", json=BODY) for _ in range(count)))
    refused = [r for r in posted if r.status_code != 202]
    if refused:
        raise SystemExit(f"{len(refused)} of {count} POST /stories/ were refused, e.g. "
                         f"{refused[0].status_code} {refused[0].text[:300]}")  # fmt: skip
    return [str(r.json()["story_id"]) for r in posted]


async def wait_for_stories(
    db: asyncpg.Connection,
    ids: list[str],
    *,
    timeout_s: float,
    tick_s: float = 0.05,
    on_tick: Callable[[], None] | None = None,
) -> bool:
    """Wait until every story has ended (completed or failed); False if `timeout_s` passed first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ended = await db.fetchval(
            "SELECT count(*) FROM stories WHERE story_id = ANY($1::uuid[]) AND status = ANY($2::text[])", ids, ENDED
        )
        if ended >= len(ids):
            return True
        if on_tick is not None:
            on_tick()
        await asyncio.sleep(tick_s)
    return False


async def warm_up(fleet: Fleet, workers: int, *, rounds: int = 30) -> int:
    """POST a few stories at a time until `workers` workers have each run a job (the API is ready before its
    workers are), so the measured run starts on a warm fleet; how many stories it took."""
    posted = 0
    for _ in range(rounds):
        ids = await post_stories(fleet.api, 2 * workers)
        posted += len(ids)
        if not await wait_for_stories(fleet.db, ids, timeout_s=60):
            raise SystemExit(f"warm-up stories did not end within 60 s; the fleet's log ends:\n{fleet.log_tail()}")
        if await fleet.db.fetchval("SELECT count(DISTINCT worker) FROM runner_job_attempts") >= workers:
            return posted
    raise SystemExit(f"only some of the {workers} workers ran jobs after {posted} warm-up stories; the fleet's log "
                     f"ends:\n{fleet.log_tail()}")  # fmt: skip


async def latency_summary(db: asyncpg.Connection, ids: list[str], wall_s: float) -> dict[str, Any]:
    """Stories by status, stories a minute over `wall_s`, and p50/p95/max of the ended stories' latencies."""
    rows = await db.fetch(
        "SELECT status, extract(epoch FROM updated_at - created_at)::float8 AS s FROM stories "
        "WHERE story_id = ANY($1::uuid[])",
        ids,
    )
    latencies = [float(r["s"]) for r in rows if r["status"] in ENDED]
    by_status = Counter(str(r["status"]) for r in rows)
    return {
        "stories": len(ids), "by_status": dict(by_status), "failed": len(ids) - by_status["completed"],
        "wall_s": wall_s, "per_min": len(ids) / wall_s * 60, "p50_s": percentile(latencies, 0.5),
        "p95_s": percentile(latencies, 0.95), "max_s": max(latencies, default=math.nan),
    }  # fmt: skip
