"""Process-lifetime resources, opened in one place: the asyncpg pool, the Redis pool, the httpx client.

The API's lifespan and the worker's start-up both use `open_resources(settings)`; nothing opens these per
job or at import. Start-up retries unreachable servers with backoff (Celery's
`broker_connection_retry_on_startup`), logging each wait, for up to STARTUP_RETRY_S.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

import asyncpg
import httpx
import structlog
from redis.exceptions import RedisError

from runner.backoff import Backoff, retry_with_backoff
from runner.broker.connection import RedisClient, connect_redis
from runner.errors import ConfigError, StartupError
from runner.settings import Settings

__all__ = ["Resources", "connect_db", "connect_redis", "open_resources"]

T = TypeVar("T")
log = structlog.get_logger("runner.resources")
_CLOSE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Resources:
    """What a process holds open for its lifetime. Borrowed by jobs and requests, closed by its opener."""

    settings: Settings
    db: asyncpg.Pool
    redis: RedisClient
    http: httpx.AsyncClient


@asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[Resources]:
    """Open every process resource, retrying start-up connections; close them all on exit."""
    if not settings.redis_configured or not settings.database_url:
        raise ConfigError(
            "REDIS_URL (or REDIS_SENTINELS, REDIS_CLUSTER_NODES) and DATABASE_URL must be set before opening "
            "resources; `python -m runner run` starts embedded servers and sets them when they are unset"
        )
    async with AsyncExitStack() as stack:
        db = await _retry_startup("postgres", settings, lambda: _create_db_pool(settings))
        stack.push_async_callback(_bounded_close, "postgres", db.close())
        redis = await _retry_startup("redis", settings, lambda: connect_redis(settings))
        stack.push_async_callback(_bounded_close, "redis", redis.aclose())
        from runner.http import new_client

        http = new_client(httpx.Timeout(settings.http_read_timeout_s, connect=settings.http_connect_timeout_s))
        stack.push_async_callback(_bounded_close, "http", http.aclose())
        yield Resources(settings=settings, db=db, redis=redis, http=http)


async def _create_db_pool(settings: Settings) -> asyncpg.Pool:
    return await connect_db(settings, max_size=settings.db_pool_size)


async def connect_db(settings: Settings, *, max_size: int, connect_timeout_s: float = 10) -> asyncpg.Pool:
    """An asyncpg pool at DATABASE_URL. Behind a transaction-mode pooler (DATABASE_POOLER=pgbouncer) a
    client's next statement may go to another server connection, so asyncpg's named prepared statements
    (its statement cache) are off: each query is parsed as the unnamed statement, in the round trip that
    runs it."""
    cache = 0 if settings.database_pooler == "pgbouncer" else 100  # 100: asyncpg's default
    pool = await asyncpg.create_pool(
        settings.database_url, min_size=1, max_size=max_size, timeout=connect_timeout_s, reset=_no_server_reset,
        statement_cache_size=cache,
    )  # fmt: skip
    assert pool is not None
    return pool


async def _no_server_reset(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's reset round trip (`SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`)
    on every release: our code leaves no session state behind (no SET, LISTEN, cursor or temporary table;
    the migrations' advisory lock is a transaction's), and behind a pooler it would run on whichever server
    connection is lent next, not the one this client used. asyncpg still does its local cleanup and rolls back
    a transaction left open."""


STARTUP_BACKOFF = Backoff(first_s=0.1, max_s=5.0)
_UNREACHABLE = (OSError, asyncpg.PostgresError, RedisError, TimeoutError)


async def _retry_startup(name: str, settings: Settings, connect: Callable[[], Awaitable[T]]) -> T:
    def on_retry(exc: BaseException, retry: int, delay: float) -> None:
        log.warning("startup_connect_retry", server=name, error=repr(exc), attempt=retry, retry_in_s=round(delay, 2))

    try:
        return await retry_with_backoff(
            connect, backoff=STARTUP_BACKOFF, budget_s=settings.startup_retry_s,
            retry_if=lambda exc: isinstance(exc, _UNREACHABLE), on_retry=on_retry,
        )  # fmt: skip
    except _UNREACHABLE as exc:
        raise StartupError(
            f"{name} did not answer within STARTUP_RETRY_S={settings.startup_retry_s}s: {exc!r}; "
            f"check that the server is running and the URL is right"
        ) from exc


async def _bounded_close(name: str, closing: Awaitable[None]) -> None:
    try:
        await asyncio.wait_for(closing, _CLOSE_TIMEOUT_S)
    except TimeoutError:
        log.warning("resource_close_timeout", resource=name, timeout_s=_CLOSE_TIMEOUT_S)
