"""Is everything healthy? Each check says ok or what is wrong and what to do; `healthy` is all of them."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from runner.broker.connection import RedisClient
from runner.servers import check_servers
from runner.store.migrations import load_migrations

__all__ = ["Check", "run_checks"]

CLOCK_SKEW_LIMIT_S = 1.0  # leases and due times are ms timestamps from each host's clock


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


async def run_checks(
    redis: RedisClient, db: asyncpg.Pool, *, queues: Sequence[str], migrations: list[str], stuck_after_s: float
) -> list[Check]:
    servers = await check_servers(redis, db, queues=queues)
    checks = [Check(name, state == "ok", state) for name, state in servers.items()]
    if servers["postgres"] == "ok":
        checks.append(await _schema(db, migrations))
        checks.append(await _stuck_rows(db, queues, stuck_after_s))
    if servers["redis"] == "ok":
        checks.append(await _clock_skew(redis))
    return checks


async def _schema(db: asyncpg.Pool, packages: list[str]) -> Check:
    shipped = {(m.namespace, m.version) for p in packages for m in load_migrations(p)}
    try:
        applied = {(r["namespace"], r["version"]) for r in await db.fetch("SELECT * FROM schema_migrations")}
    except asyncpg.UndefinedTableError:
        applied = set()
    missing = sorted(shipped - applied)
    if missing:
        return Check("schema", False, f"migrations not applied: {missing}; start a worker or the API to apply them")
    return Check("schema", True, f"current ({len(shipped)} migrations)")


async def _stuck_rows(db: asyncpg.Pool, queues: Sequence[str], stale_s: float) -> Check:
    count = await db.fetchval(
        "SELECT count(*) FROM runner_jobs WHERE queue = ANY($1::text[]) AND status = ANY($2::text[]) "
        "AND updated_at < now() - make_interval(secs => $3)",
        list(queues), ["pending", "processing", "retrying"], stale_s * 4,
    )  # fmt: skip
    if count:
        return Check("stuck rows", False, f"{count} active rows unmoved for {stale_s * 4:g}s: is a worker running?")
    return Check("stuck rows", True, "none")


async def _clock_skew(redis: RedisClient) -> Check:
    before = time.time()
    seconds, micros = await redis.time()
    after = time.time()
    skew = abs(seconds + micros / 1e6 - (before + after) / 2)
    ok = skew < CLOCK_SKEW_LIMIT_S
    detail = f"{skew * 1000:.1f} ms from Redis's clock" + ("" if ok else ": sync this host's clock (NTP)")
    return Check("clock skew", ok, detail)
