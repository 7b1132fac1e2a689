"""Which server an error says is unavailable: the API's 503s and `/ready` name it, the logs too.

redis-py wraps every socket failure in its own `RedisError`s; asyncpg raises its connection errors, or
the operating system's (`ConnectionRefusedError`), and a pool acquire that never gets a connection
times out with the builtin `TimeoutError`. So a builtin connection or timeout error here is Postgres's.

A Redis that answers with an error (WRONGTYPE, OOM, READONLY, ...) is not down but refusing: `check_servers`
says "refused: <kind> <what, which key, what to do>" for it (see runner.broker.server_errors).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any, Literal

import asyncpg
from redis.exceptions import RedisError

from runner.broker.connection import RedisClient
from runner.broker.keys import QueueKeys
from runner.broker.server_errors import RedisRefusedError, Refusal, RefusalKind, classify, wrong_keys

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


async def check_servers(
    redis: RedisClient, db: asyncpg.Pool, *, queues: Sequence[str] = (), timeout_s: float = 2.0
) -> dict[Server, str]:
    """Each server's state: "ok", "down: <error>", or for Redis "refused: <kind> <what to do>" (bounded by
    `timeout_s` each). Without `queues`, Redis gets a PING; with them, a pipeline a queue that also finds
    what a PING cannot: a foreign value in one of the queue's shared keys (TYPE of each) and a server that
    refuses writes (OOM, READONLY, MISCONF: a SET of a probe key that expires at once)."""
    probes: dict[Server, Awaitable[Any]] = {
        "redis": _probe_queues(redis, queues) if queues else redis.ping(),
        "postgres": db.fetchval("SELECT 1"),
    }
    checks: dict[Server, str] = {}
    for name, probe in probes.items():
        try:
            await asyncio.wait_for(probe, timeout_s)
            checks[name] = "ok"
        except Exception as exc:
            refusal = classify(exc)
            checks[name] = f"refused: {refusal.describe()}" if refusal else f"down: {type(exc).__name__}: {exc}"
    return checks


_PROBE_TTL_MS = 1000


async def _probe_queues(redis: RedisClient, queues: Sequence[str]) -> None:
    for queue in queues:
        await _probe_redis(redis, QueueKeys.of(queue))


async def _probe_redis(redis: RedisClient, keys: QueueKeys) -> None:
    """Raise what Redis refuses: a shared key of the wrong type first, else the probe write's error."""
    async with redis.pipeline(transaction=False) as pipe:
        for key in keys.shared:
            pipe.type(key)
        pipe.set(keys.probe, b"1", px=_PROBE_TTL_MS)
        replies = await pipe.execute(raise_on_error=False)
    *types, _ = replies
    named = {key: t.decode() if isinstance(t, bytes) else t for key, t in zip(keys.shared, types, strict=True)}
    if wrong := wrong_keys({key: t for key, t in named.items() if isinstance(t, str)}):
        found = "; ".join(f"TYPE {w.key} is {w.holds}" for w in wrong)
        raise RedisRefusedError(Refusal(RefusalKind.WRONGTYPE, found, wrong))
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
