"""Redis through Sentinel (REDIS_SENTINELS, REDIS_SENTINEL_MASTER): every new connection asks the sentinels
where the master is, so each process (API, workers, supervisor, intake) follows a failover without restarting.

What a failover looks like to a client, and how each part becomes a lost connection, which every caller
already rides out (the claim loop backs off and claims again, the runner's own writes retry for
OUTAGE_RETRY_S, a job's Redis call fails its attempt, retried like any lost connection):

    the master dies             its connections reset; on a host gone silent, a reply times out
                                (POLL_INTERVAL_S + READ_MARGIN_S, so a blocking read never trips it)
    until a replica is promoted the sentinels still name the dead master: connecting is refused
    the old master, demoted     READONLY to a write: disconnected and raised as a ConnectionError (redis-py)
    a read blocked on it        UNBLOCKED (Redis 6.2+; Valkey closes the connection): the same, here
    a server named but not      ROLE, asked on every new connection, says so: a ConnectionError, here
    (or no longer) the master

A connection that failed is reconnected on its next use, asking the sentinels again with SENTINEL
GET-MASTER-ADDR-BY-NAME, which names a promoted replica at once (redis-py's SENTINEL MASTERS names the old
master until the failover has reconfigured every replica, up to the sentinels' failover-timeout). Once they
name another master, redis-py's SentinelConnectionPool drops the idle connections to the old one, and the
switch is logged once per process and pool (`redis_master_changed`).
"""

from __future__ import annotations

from typing import Any

import structlog
from arq.connections import ArqRedis, RedisSettings
from redis.asyncio.connection import SSLConnection
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.exceptions import ConnectionError, ResponseError, TimeoutError
from redis.utils import str_if_bytes

from runner import envelope
from runner.settings import Settings, server_addresses

__all__ = ["CONNECT_TIMEOUT_S", "READ_MARGIN_S", "SENTINEL_TIMEOUT_S", "FailoverConnection", "SentinelRedis",
           "connect_master"]  # fmt: skip

log = structlog.get_logger("runner.broker.sentinel")

SENTINEL_TIMEOUT_S = 1.0  # to connect to one sentinel, and for its answer; then the next one is asked
CONNECT_TIMEOUT_S = 1.0  # to connect to the master (arq's conn_timeout)
READ_MARGIN_S = 10.0  # a reply's bound past the longest blocking read (the claim loop's, POLL_INTERVAL_S)


class FailoverConnection(SentinelManagedConnection):
    """A connection to the master the sentinels name, checked with ROLE when made (as Sentinel's client
    guidelines ask: a sentinel may name a server not yet promoted, or since demoted). READONLY (the server
    was demoted) is already a lost connection in redis-py; so is UNBLOCKED here: a blocking read that the
    demotion interrupted."""

    async def connect_to(self, address: tuple[str, int]) -> None:
        await super().connect_to(address)  # type: ignore[no-untyped-call]
        await self.send_command("ROLE")
        try:
            role = str_if_bytes((await self.read_response())[0])
        except ResponseError:  # an ACL user without ROLE: a write to a replica still answers READONLY
            return
        if role != "master":
            await self.disconnect()
            raise ConnectionError(
                f"{_addr(address)}, named master by the sentinels, is a {role}: a failover is under way; "
                "the sentinels are asked again on the next try"
            )

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)
        except ResponseError as exc:
            if not str(exc).startswith("UNBLOCKED"):
                raise
            await self.disconnect()  # its next use asks the sentinels for the master again
            raise ConnectionError(f"a failover interrupted a blocking read ({exc}); reconnecting") from exc


class _FailoverSSLConnection(FailoverConnection, SSLConnection):
    pass


class _MasterPool(SentinelConnectionPool):
    """redis-py's pool of master connections, saying when the sentinels name another master."""

    async def get_master_address(self) -> Any:
        before = self.master_address
        address = await super().get_master_address()  # type: ignore[no-untyped-call]
        if before is not None and address != before:
            log.warning("redis_master_changed", service=self.service_name, old=_addr(before), new=_addr(address))
        return address


class _Sentinels(Sentinel):
    """Asks for the master with SENTINEL GET-MASTER-ADDR-BY-NAME, as Sentinel's client guidelines say.
    redis-py reads SENTINEL MASTERS, which keeps naming the old master until the failover has reconfigured
    every replica (up to the sentinels' failover-timeout), while this names the promoted one at once."""

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        errors = []
        for i, sentinel in enumerate(self.sentinels):
            try:
                reply = await sentinel.execute_command(  # type: ignore[no-untyped-call]
                    "SENTINEL GET-MASTER-ADDR-BY-NAME", service_name
                )
            except (ConnectionError, TimeoutError, ResponseError) as exc:  # down, or refusing (NOAUTH, ...)
                errors.append(f"{_sentinel_addr(sentinel)}: {exc!r}")
                continue
            if reply:  # this one answers: ask it first next time (redis-py's order, the guidelines' too)
                self.sentinels[0], self.sentinels[i] = sentinel, self.sentinels[0]
                return str_if_bytes(reply[0]), int(reply[1])
            errors.append(f"{_sentinel_addr(sentinel)}: does not know {service_name!r}")
        raise MasterNotFoundError(f"no sentinel names a master {service_name!r} (REDIS_SENTINEL_MASTER): "
                                  f"{'; '.join(errors)}")  # fmt: skip


class SentinelRedis(ArqRedis):
    """An ArqRedis of the master the sentinels name; closing it also closes its connections to them."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        pool = self.connection_pool
        if isinstance(pool, SentinelConnectionPool):
            for sentinel in pool.sentinel_manager.sentinels:
                await sentinel.aclose()


async def connect_master(settings: Settings) -> SentinelRedis:
    """An arq pool (JSON jobs) of REDIS_SENTINEL_MASTER as REDIS_SENTINELS name it, checked with a PING.

    REDIS_URL, if set, gives the database, user, password and TLS (rediss://); its host is not used."""
    assert settings.redis_sentinels, "connect_master needs REDIS_SENTINELS"
    url = RedisSettings.from_dsn(settings.redis_url) if settings.redis_url else RedisSettings()
    sentinels = _Sentinels(  # type: ignore[no-untyped-call]
        server_addresses(settings.redis_sentinels),
        sentinel_kwargs={"socket_timeout": SENTINEL_TIMEOUT_S, "socket_connect_timeout": SENTINEL_TIMEOUT_S},
        db=url.database, username=url.username, password=url.password, encoding="utf8",
        socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=settings.poll_interval_s + READ_MARGIN_S,
        socket_keepalive=True, connection_class=_FailoverSSLConnection if url.ssl else FailoverConnection,
    )  # fmt: skip
    client: SentinelRedis = sentinels.master_for(
        settings.redis_sentinel_master, redis_class=SentinelRedis, connection_pool_class=_MasterPool
    )
    client.job_serializer = envelope.serialize
    client.job_deserializer = envelope.deserialize
    client.default_queue_name = settings.queue_name
    try:
        await client.ping()
    except BaseException:
        await client.aclose()
        raise
    return client


def _addr(address: tuple[str, int]) -> str:
    return f"{address[0]}:{address[1]}"


def _sentinel_addr(sentinel: Any) -> str:
    kwargs = sentinel.connection_pool.connection_kwargs
    return f"{kwargs.get('host')}:{kwargs.get('port')}"
