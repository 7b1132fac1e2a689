"""Hosts simulated by Linux network namespaces, for tests/acceptance/test_hosts.py.

    root namespace (the test process)  10.213.N.100 on veth <tag>rt ─┐
    <tag>-srv  ("server host": Valkey, Postgres)  br0 10.213.N.1  ◄──┤ a bridge of its own
    <tag>-h1 ... <tag>-hK  ("worker hosts")  10.213.N.11, .12, ...  ─┘ a veth each

Every address is in one private /24 (10.213.N.0/24, N picked so that nothing on this machine routes it
already) and lives only on interfaces made here; nothing is routed anywhere else. `close()` kills every
process left in the namespaces, then deletes the root veth and the namespaces (with their veths), even
after a failed test. Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and iproute2's `ip`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from runner.devservers import EmbeddedPostgres, EmbeddedValkey

__all__ = ["NamespaceError", "NetnsPostgres", "NetnsValkey", "Network"]


class NamespaceError(RuntimeError):
    """Network namespaces cannot be made here (no `ip`, or no CAP_NET_ADMIN): the message says why."""


def _ip(*args: str, ns: str | None = None) -> str:
    command = ["ip", "netns", "exec", ns, "ip", *args] if ns else ["ip", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    if done.returncode != 0:
        raise NamespaceError(f"`{' '.join(command)}` failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _free_subnet() -> ipaddress.IPv4Network:
    """A 10.213.N.0/24 that no route or address of the root namespace touches."""
    taken = _ip("-4", "route", "show", "table", "all") + _ip("-4", "addr", "show")
    for n in random.sample(range(1, 255), 254):
        if f"10.213.{n}." not in taken:
            return ipaddress.IPv4Network(f"10.213.{n}.0/24")
    raise NamespaceError("every 10.213.N.0/24 is in use on this machine")


class Network:
    """A server host and `hosts` worker hosts on one bridge, reachable from the test process."""

    def __init__(self, hosts: int) -> None:
        if shutil.which("ip") is None:
            raise NamespaceError("iproute2's `ip` is not installed (apt-get install iproute2)")
        if missing := [tool for tool in ("unshare", "setpriv") if shutil.which(tool) is None]:
            raise NamespaceError(f"util-linux's {' and '.join(missing)} not found (apt-get install util-linux)")
        self.tag = f"smh{uuid.uuid4().hex[:5]}"  # interface names stay under 15 characters
        self.subnet = _free_subnet()
        base = self.subnet.network_address
        self.server_ns, self.server_addr = f"{self.tag}-srv", str(base + 1)
        self.root_addr = str(base + 100)
        self.hosts = {f"host-{i}": (f"{self.tag}-h{i}", str(base + 10 + i)) for i in range(1, hosts + 1)}
        self._made: list[str] = []  # namespaces, to delete
        self._root_veth: str | None = None
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        prefix = self.subnet.prefixlen
        self._add_ns(self.server_ns)
        _ip("link", "add", "br0", "type", "bridge", ns=self.server_ns)
        _ip("addr", "add", f"{self.server_addr}/{prefix}", "dev", "br0", ns=self.server_ns)
        _ip("link", "set", "br0", "up", ns=self.server_ns)
        self._root_veth = f"{self.tag}rt"
        self._wire(None, self._root_veth, self.root_addr)
        for n, (ns, addr) in enumerate(self.hosts.values(), 1):
            self._add_ns(ns)
            self._wire(ns, f"{self.tag}h{n}", addr)

    def _add_ns(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self._made.append(ns)
        _ip("link", "set", "lo", "up", ns=ns)

    def _wire(self, ns: str | None, name: str, addr: str) -> None:
        """A veth pair: `name` in `ns` (None: the root namespace) with `addr`, its peer on the bridge."""
        peer = f"{name}b"
        _ip("link", "add", name, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", self.server_ns)
        _ip("link", "set", peer, "master", "br0", "up", ns=self.server_ns)
        if ns is not None:
            _ip("link", "set", name, "netns", ns)
        _ip("addr", "add", f"{addr}/{self.subnet.prefixlen}", "dev", name, ns=ns)
        _ip("link", "set", name, "up", ns=ns)

    def exec_argv(self, ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns]

    def host_argv(self, host: str) -> list[str]:
        """Run a command on `host`: in its namespace, with its own hostname (a UTS namespace of its own)."""
        ns, _ = self.hosts[host]
        return [*self.exec_argv(ns), "unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', host]

    def pids(self, ns: str) -> list[int]:
        """Every process in namespace `ns`."""
        return [int(p) for p in _ip("netns", "pids", ns).split()]

    def kill_host(self, host: str) -> list[int]:
        """SIGKILL every process of `host` at once, as if it lost power; the pids killed."""
        pids = self.pids(self.hosts[host][0])
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids

    def wait_reachable(self, addr: str, port: int, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection((addr, port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def close(self) -> None:
        """Kill what still runs inside, delete the root veth and the namespaces; idempotent."""
        for ns in self._made:
            with contextlib.suppress(NamespaceError):
                for pid in self.pids(ns):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        if self._root_veth is not None:
            subprocess.run(["ip", "link", "del", self._root_veth], capture_output=True, timeout=10, check=False)
            self._root_veth = None
        for ns in reversed(self._made):
            for _ in range(50):  # a killed process may hold the namespace a moment longer
                if subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10).returncode == 0:
                    break
                time.sleep(0.1)
        self._made.clear()

    def leftovers(self) -> list[str]:
        """Namespaces or links of this network that still exist (none after `close()`)."""
        names = _ip("netns", "list") + _ip("link", "show")
        return sorted({word.rstrip(":").split("@")[0] for word in names.split() if word.startswith(self.tag)})


def _swap(argv: Sequence[str], old: str, new: str) -> list[str]:
    return [new if a == old else a for a in argv]


class NetnsValkey(EmbeddedValkey):
    """The embedded Valkey, run inside `ns` and bound to `addr` there (not loopback)."""

    def __init__(self, data_dir: Path, network: Network) -> None:
        super().__init__(data_dir)
        self._network = network

    @property
    def url(self) -> str:
        return f"redis://{self._network.server_addr}:{self.port}/0"

    def _command(self) -> list[str]:
        argv = _swap(super()._command(), "127.0.0.1", self._network.server_addr)
        argv[argv.index("--protected-mode") + 1] = "no"  # it would refuse every client off loopback
        return [*self._network.exec_argv(self._network.server_ns), *argv]

    def _ready(self) -> bool:
        try:
            with socket.create_connection((self._network.server_addr, self.port), timeout=1.0) as sock:
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False


class NetnsPostgres(EmbeddedPostgres):
    """The embedded Postgres, run inside `ns` and bound to `addr` there, trusting clients of the subnet."""

    def __init__(self, data_dir: Path, network: Network) -> None:
        super().__init__(data_dir)
        self._network = network

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self._network.server_addr}:{self.port}/postgres"

    def _prepare(self) -> None:
        super()._prepare()
        hba = self.pgdata / "pg_hba.conf"
        line = f"host all all {self._network.subnet} trust\n"
        if line not in hba.read_text():
            with hba.open("a") as file:
                file.write(line)

    def _run_as(self) -> tuple[int, int] | None:
        return None  # `ip netns exec` needs root; setpriv drops to the postgres user inside (see _command)

    def _command(self) -> list[str]:
        argv = _swap(super()._command(), "127.0.0.1", self._network.server_addr)
        owner = super()._run_as()
        if owner is not None:
            argv = ["setpriv", f"--reuid={owner[0]}", f"--regid={owner[1]}", "--clear-groups", "--", *argv]
        return [*self._network.exec_argv(self._network.server_ns), *argv]

    def _ready(self) -> bool:
        command = [self._bin("pg_isready"), "-q", "-t", "2", "-h", self._network.server_addr, "-p", str(self.port)]
        try:
            done = subprocess.run([*command, "-U", "postgres"], env=self._env(), capture_output=True, timeout=5)
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0
