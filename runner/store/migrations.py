"""Versioned SQL migrations, applied at start-up under a Postgres advisory lock.

Each package keeps `sql/NNNN_name.sql` files; `apply_migrations` runs the ones not yet recorded in
`schema_migrations`, each in its own transaction. The advisory lock makes it safe for the API and every
worker to call it at once; the record makes it safe to call twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources as importlib_resources

import asyncpg
import structlog

__all__ = ["Migration", "apply_migrations", "load_migrations"]

log = structlog.get_logger("runner.store.migrations")
_LOCK_KEY = 0x53_54_4F_52_59  # "STORY": one advisory lock id for every migrating process
# The runner's own migrations live in runner/store/sql but keep the namespace they were recorded under.
_FOLDERS = {"runner": "runner.store"}
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

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
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        try:
            await conn.execute(_BOOTSTRAP)
            done = {(r["namespace"], r["version"]) for r in await conn.fetch("SELECT * FROM schema_migrations")}
            for migration in migrations:
                if (migration.namespace, migration.version) in done:
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (namespace, version, name) VALUES ($1, $2, $3)",
                        migration.namespace,
                        migration.version,
                        migration.name,
                    )
                log.info("migration_applied", namespace=migration.namespace, version=migration.version)
                applied.append(migration)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied
