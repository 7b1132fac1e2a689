"""The Redis client every process holds: one Redis (REDIS_URL), the master Sentinel names (REDIS_SENTINELS), or
a Redis Cluster (REDIS_CLUSTER_NODES). The runner's code is written against `RedisClient`, which is either
client: the commands it sends are the same, and every key of one queue shares the hash tag `{<queue>}`
(keys.py), so each script, pipeline entry and blocking read touches one slot of one node.

In a cluster, redis-py's cluster client routes each command by its first key's slot and follows the servers'
redirections: MOVED (the slot now lives elsewhere: the slot map is reloaded), ASK (the slot is being moved and
this key already went: asked once at the target) and TRYAGAIN (a multi-key command or script whose keys are
split by an ongoing move: sent again shortly). A failover (a master dies, its replica is promoted) reads as a
lost connection, then MOVED, both ridden out like any lost connection (see sentinel.py).
"""

from __future__ import annotations

from typing import Any, TypeAlias

from arq.connections import RedisSettings, create_pool
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.exceptions import ClusterError, ConnectionError, RedisClusterException, SlotNotCoveredError, TryAgainError

from runner import envelope
from runner.broker.sentinel import CONNECT_TIMEOUT_S, READ_MARGIN_S, connect_master
from runner.errors import ConfigError
from runner.settings import Settings, server_addresses

__all__ = ["RedisClient", "connect_redis", "scan_page", "single_node"]

RedisClient: TypeAlias = Redis | RedisCluster


async def connect_redis(settings: Settings) -> RedisClient:
    """The process's Redis client, checked with a PING (for a cluster: its slot map loaded from a node that
    answers). Jobs are JSON, never arq's pickle default."""
    if settings.redis_cluster_nodes:
        return await _connect_cluster(settings)
    if settings.redis_sentinels:
        return await connect_master(settings)
    assert settings.redis_url is not None
    redis_settings = RedisSettings.from_dsn(settings.redis_url)
    redis_settings.conn_retries = 0  # our own start-up retry logs and bounds the wait
    pool: RedisClient = await create_pool(
        redis_settings,
        job_serializer=envelope.serialize,
        job_deserializer=envelope.deserialize,
        default_queue_name=settings.queue_name,
    )
    return pool


class _Cluster(RedisCluster):
    """redis-py's cluster client, whose failures while the cluster's shape changes (a master dies, a slot
    moves) all read as lost connections, which every caller already rides out (see sentinel.py).

    Besides ConnectionError, redis-py lets these out then: CLUSTERDOWN and MASTERDOWN (no master serves the
    slot yet), TRYAGAIN past its retries or `TTL exhausted` (a slot half moved for longer than its ~0.4 s of
    retries), a slot no node covers, and, from a connection that another task's reconnect closed under it,
    RuntimeError (`the handler is closed`) or AttributeError (`'NoneType' object has no attribute ...`)."""

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except Exception as exc:
            if _shape_change(exc):
                raise _lost(exc) from exc
            raise

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            raise RedisClusterException("shard_hint is deprecated in cluster mode")
        if transaction:
            raise RedisClusterException("transaction is deprecated in cluster mode")
        return _Pipeline(self)  # type: ignore[abstract]  # as redis-py makes its own ClusterPipeline


class _Pipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        try:
            replies: list[Any] = await super().execute(raise_on_error, allow_redirections)
        except Exception as exc:
            if _shape_change(exc):
                raise _lost(exc) from exc
            raise
        # raise_on_error=False hands back each command's error: a shape change there is a lost connection too.
        return [_lost(r) if isinstance(r, Exception) and _shape_change(r) else r for r in replies]


# redis-py's own messages for a connection that another task's reconnect closed under this one.
_CLOSED_UNDER_US = ("handler is closed", "'NoneType' object has no attribute")


def _shape_change(exc: BaseException) -> bool:
    """Whether `exc` is the cluster client failing because the cluster changes shape, not a bug of ours."""
    if isinstance(exc, ClusterError | TryAgainError | SlotNotCoveredError):
        return True
    return isinstance(exc, RuntimeError | AttributeError) and any(m in str(exc) for m in _CLOSED_UNDER_US)


def _lost(exc: BaseException) -> ConnectionError:
    return ConnectionError(f"the Redis Cluster is changing (a failover or a slot move): {exc!r}; tried again")


async def _connect_cluster(settings: Settings) -> RedisCluster:
    """A cluster client over REDIS_CLUSTER_NODES. REDIS_URL, if set, gives the user, password and TLS (a
    cluster has database 0 only). A read's bound outlasts the longest blocking read (the claim loop's)."""
    assert settings.redis_cluster_nodes
    url = RedisSettings.from_dsn(settings.redis_url) if settings.redis_url else RedisSettings()
    if url.database:
        raise ValueError(
            f"REDIS_URL names database {url.database}, but a Redis Cluster has only database 0: drop the /db part"
        )
    client: RedisCluster = _Cluster(
        startup_nodes=[ClusterNode(host, port) for host, port in server_addresses(settings.redis_cluster_nodes)],
        username=url.username, password=url.password, ssl=url.ssl,
        socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=settings.poll_interval_s + READ_MARGIN_S,
        socket_keepalive=True,
        # A failover's lost connections and MOVED replies are retried a few times, the slot map reloaded.
        connection_error_retry_attempts=3, cluster_error_retry_attempts=3, reinitialize_steps=1,
    )  # fmt: skip
    try:
        await client.initialize()
        await client.ping(target_nodes=RedisCluster.PRIMARIES)
    except BaseException:
        await client.aclose()
        raise
    return client


def single_node(redis: RedisClient, user: str) -> Redis:
    """`redis` as one server's client, for `user`, which works with keys other systems name (not under one
    hash tag) or with pub/sub: the intakes. Settings refuse them with REDIS_CLUSTER_NODES before this."""
    if not isinstance(redis, Redis):
        raise ConfigError(f"{user} needs a single Redis or Sentinel, not Redis Cluster: unset REDIS_CLUSTER_NODES")
    return redis


async def scan_page(redis: RedisClient, cursor: int, *, match: str, count: int, slot_of: str) -> tuple[int, list[Any]]:
    """One SCAN page of the keys matching `match`, all in the slot of the key `slot_of` (its hash tag as written,
    unescaped): in a cluster the page is read on the node that serves that slot (a cursor means nothing on
    another node)."""
    if isinstance(redis, RedisCluster):
        node = redis.get_node_from_key(slot_of)
        cursors, keys = await redis.execute_command("SCAN", cursor, "MATCH", match, "COUNT", count, target_nodes=node)
        (next_cursor,) = cursors.values()  # redis-py's cluster SCAN says each node's cursor: {node name: cursor}
        return int(next_cursor), list(keys)
    page: tuple[int, list[Any]] = await redis.scan(cursor, match=match, count=count)
    return page
