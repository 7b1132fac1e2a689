"""Which server an error says is unavailable: the API's 503s and `/ready` name it, the logs too.

redis-py wraps every socket failure in its own `RedisError`s; asyncpg raises its connection errors, or
the operating system's (`ConnectionRefusedError`), and a pool acquire that never gets a connection
times out with the builtin `TimeoutError`. So a builtin connection or timeout error here is Postgres's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, Literal

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

__all__ = ["POSTGRES_DOWN", "Server", "check_servers", "unavailable_server"]

Server = Literal["redis", "postgres"]

POSTGRES_DOWN: tuple[type[Exception], ...] = (
    asyncpg.exceptions.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.exceptions.OperatorInterventionError,  # class 57: shutting down, cannot connect now
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.InterfaceError,  # includes ConnectionDoesNotExistError
    ConnectionError,
    TimeoutError,
)


def unavailable_server(exc: BaseException) -> Server | None:
    """The server `exc` says is down or refusing work, or None if it is not such an error."""
    if isinstance(exc, RedisError):
        return "redis"
    if isinstance(exc, POSTGRES_DOWN):
        return "postgres"
    return None


async def check_servers(redis: Redis, db: asyncpg.Pool, *, timeout_s: float = 2.0) -> dict[Server, str]:
    """Each server's state: "ok", or "down: <error>" (a round trip each, bounded by `timeout_s`)."""
    probes: dict[Server, Awaitable[Any]] = {"redis": redis.ping(), "postgres": db.fetchval("SELECT 1")}
    checks: dict[Server, str] = {}
    for name, probe in probes.items():
        try:
            await asyncio.wait_for(probe, timeout_s)
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"down: {type(exc).__name__}: {exc}"
    return checks
