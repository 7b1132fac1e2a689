"""Versioned SQL migrations, applied at start-up under a Postgres advisory lock.

Each package keeps `sql/NNNN_name.sql` files; `apply_migrations` runs the ones not yet recorded in
`schema_migrations`, in one transaction that holds the lock, each migration in a savepoint of its own: one
that fails leaves no trace, the ones before it stay applied. The lock makes it safe for the API and every
worker to call it at once; the record makes it safe to call twice.

The lock is a transaction's (`pg_advisory_xact_lock`): a pooler in transaction mode (PgBouncer) keeps one
server connection for a whole transaction but may run a client's next statement on another one, so a
session's lock (`pg_advisory_lock` ... `pg_advisory_unlock`) would lock nothing there, and be left held.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources as importlib_resources
from typing import Final

import asyncpg
import structlog

__all__ = ["Migration", "apply_migrations", "load_migrations"]

log = structlog.get_logger("runner.store.migrations")
_LOCK_KEY = 0x53_54_4F_52_59  # "STORY": one advisory lock id for every migrating process
# The runner's own migrations live in runner/store/sql but keep the namespace they were recorded under.
_FOLDERS = {"runner": "runner.store"}
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK = "SELECT pg_advisory_xact_lock($1)"  # held until the transaction ends, on its one server connection
# Read committed whatever the server's default: the record, read after the lock's wait, shows what the
# lock's previous holder committed (a repeatable-read snapshot would be taken before that wait).
_ISOLATION: Final = "read_committed"

_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    namespace  text        NOT NULL,
    version    integer     NOT NULL,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, version)
)
"""


@dataclass(frozen=True, order=True)
class Migration:
    namespace: str
    version: int
    name: str
    sql: str


def load_migrations(package: str) -> list[Migration]:
    """The migrations shipped in `<package>/sql/`, in version order."""
    found: list[Migration] = []
    for entry in importlib_resources.files(_FOLDERS.get(package, package)).joinpath("sql").iterdir():
        match = _NAME.match(entry.name)
        if match is None:
            if entry.name.endswith(".sql"):
                raise ValueError(f"migration file {entry.name!r} must be named NNNN_lower_snake.sql")
            continue
        found.append(Migration(package, int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    return sorted(found)


async def apply_migrations(pool: asyncpg.Pool, packages: list[str]) -> list[Migration]:
    """Apply every pending migration of `packages`, in order; return the ones this call applied."""
    migrations = [m for package in packages for m in load_migrations(package)]
    applied: list[Migration] = []
    failed: asyncpg.PostgresError | None = None
    async with pool.acquire() as conn, conn.transaction(isolation=_ISOLATION):
        await conn.execute(_LOCK, _LOCK_KEY)
        await conn.execute(_BOOTSTRAP)
        done = {(r["namespace"], r["version"]) for r in await conn.fetch("SELECT * FROM schema_migrations")}
        for migration in migrations:
            if (migration.namespace, migration.version) in done:
                continue
            try:
                async with conn.transaction():  # a savepoint
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (namespace, version, name) VALUES ($1, $2, $3)",
                        migration.namespace,
                        migration.version,
                        migration.name,
                    )
            except asyncpg.PostgresError as exc:
                failed = exc  # commit the ones before it, then raise
                break
            applied.append(migration)
    for migration in applied:
        log.info("migration_applied", namespace=migration.namespace, version=migration.version)
    if failed is not None:
        raise failed
    return applied
