"""Migrations apply once, even when several processes start at the same moment, and again is a no-op."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from runner.store.migrations import apply_migrations, load_migrations
from tests.conftest import Servers


@pytest.fixture
async def fresh_database(servers: Servers) -> AsyncIterator[str]:
    """An empty database of its own on the session's Postgres; dropped afterwards."""
    name = f"migrations_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(servers.postgres.url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield servers.postgres.url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def test_concurrent_start_ups_apply_each_migration_once(fresh_database: str):
    """Four pools (four starting processes) migrate at once: every migration is applied exactly once."""
    pools = [await asyncpg.create_pool(fresh_database, min_size=1, max_size=2) for _ in range(4)]
    try:
        await assert_each_migration_applied_once(pools)
    finally:
        await asyncio.gather(*(pool.close() for pool in pools))


async def assert_each_migration_applied_once(pools: list[asyncpg.Pool]) -> None:
    """Four pools of one fresh database migrate at once: one applies every migration, the others none, and
    a second run is a no-op (also used through PgBouncer: tests/integration/test_pgbouncer.py)."""
    applied = await asyncio.gather(*(apply_migrations(pool, ["runner", "jobs"]) for pool in pools))
    expected = len(load_migrations("runner")) + len(load_migrations("jobs"))
    assert sorted(len(a) for a in applied) == [0] * (len(pools) - 1) + [expected]
    assert await apply_migrations(pools[-1], ["runner", "jobs"]) == []
    rows = await pools[0].fetch("SELECT namespace, version FROM schema_migrations ORDER BY 1, 2")
    want = sorted((m.namespace, m.version) for p in ("runner", "jobs") for m in load_migrations(p))
    assert [(r["namespace"], r["version"]) for r in rows] == want
    assert await pools[0].fetchval("SELECT count(*) FROM runner_jobs") == 0
