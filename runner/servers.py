"""Which server an error says is unavailable: the API's 503s and `/ready` name it, the logs too.

redis-py wraps every socket failure in its own `RedisError`s; asyncpg raises its connection errors, or
the operating system's (`ConnectionRefusedError`), and a pool acquire that never gets a connection
times out with the builtin `TimeoutError`. So a builtin connection or timeout error here is Postgres's.
"""

from __future__ import annotations

from typing import Literal

import asyncpg
from redis.exceptions import RedisError

__all__ = ["POSTGRES_DOWN", "Server", "unavailable_server"]

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
