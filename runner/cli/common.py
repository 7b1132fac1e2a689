"""What every operations command shares: the servers (or this checkout's embedded ones), one event loop,
and output as a rich table or JSON (`--json`)."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
import click
import orjson

from runner.broker.connection import RedisClient
from runner.settings import Settings

__all__ = ["Servers", "as_json", "confirmed_count", "connected", "db_of", "emit", "ping", "run", "table", "utc"]

T = TypeVar("T")
as_json = click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")


@dataclasses.dataclass
class Servers:
    redis: RedisClient
    db: asyncpg.Pool | None
    db_error: str | None


@asynccontextmanager
async def connected(settings: Settings) -> AsyncIterator[Servers]:
    """Redis and Postgres at their URLs (or this checkout's embedded servers); Postgres may be down."""
    from runner.resources import connect_db, connect_redis

    settings = _with_embedded_urls(settings)
    redis = await connect_redis(settings)
    db: asyncpg.Pool | None = None
    error = None
    try:
        db = await connect_db(settings, max_size=2, connect_timeout_s=3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        error = f"down: {type(exc).__name__}: {exc}"
    try:
        yield Servers(redis, db, error)
    finally:
        await redis.aclose()
        if db is not None:
            await db.close()


def _with_embedded_urls(settings: Settings) -> Settings:
    if settings.redis_configured and settings.database_url:
        return settings
    from runner.devservers import EmbeddedPostgres, EmbeddedValkey
    from runner.devservers.ownership import read_record

    found = {}
    wanted = [("redis_url", EmbeddedValkey(settings.data_dir, settings.embedded_redis_port)),
              ("database_url", EmbeddedPostgres(settings.data_dir, settings.embedded_postgres_port))]  # fmt: skip
    for field, server in wanted:
        if getattr(settings, field) or (field == "redis_url" and settings.redis_configured):
            continue
        record = read_record(server)
        if record is None:
            raise click.ClickException(
                f"{field.upper()} is unset and no embedded {server.name} of {settings.data_dir} is running; "
                "start one with `make run`, or set the URL"
            )
        found[field] = record.url
    return settings.model_copy(update=found)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """The command's one event loop (uvloop, as every entry point of the runner)."""
    import uvloop

    result: T = uvloop.run(coro)
    return result


def db_of(servers: Servers) -> asyncpg.Pool:
    if servers.db is None:
        raise click.ClickException(f"postgres is {servers.db_error}")
    return servers.db


def emit(value: Any, as_json: bool, show: Callable[[], None]) -> None:
    if as_json:
        sys.stdout.write(orjson.dumps(value, default=_plain, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        show()


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console

    Console().print(rich_table(title, columns, rows))


def rich_table(title: str, columns: list[str], rows: list[list[Any]]) -> Any:
    from rich.table import Table

    shown = Table(title=title)
    for column in columns:
        shown.add_column(column)
    for row in rows:
        shown.add_row(*("" if v is None else str(v) for v in row))
    return shown


async def ping(redis: RedisClient) -> str:
    try:
        await asyncio.wait_for(redis.ping(), 2)
    except Exception as exc:
        return f"down: {type(exc).__name__}: {exc}"
    return "ok"


def utc(value: datetime | None) -> datetime | None:
    from datetime import UTC

    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def confirmed_count(count: int, what: str, *, yes: bool) -> int | None:
    """Ask before acting on `count` items: the count to confirm, or None to stop (nothing to do, or no)."""
    if count == 0:
        click.echo(f"no {what}", err=True)
        return None
    if yes:
        return count
    if not sys.stdin.isatty():
        raise click.ClickException(f"{count} {what}; add --yes to go ahead (nothing was changed)")
    return count if click.confirm(f"{count} {what}: go ahead?", err=True) else None
