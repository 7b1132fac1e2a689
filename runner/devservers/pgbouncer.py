"""Debian's PgBouncer in front of a Postgres, for tests (and trying the runner behind a pooler by hand).

    with PgBouncer(tmp / "bouncer", upstream=pg.url, pool_size=2) as bouncer:
        DATABASE_URL = bouncer.url                         # pg.url's user and database, through PgBouncer
        other = bouncer.url_for(f"{pg.url[:-8]}/other")   # any database of the upstream server

Every database of the upstream server is reachable under its own name (a `*` fallback entry), with trust
auth for the upstream URL's user; `pool_mode` defaults to `transaction`, so a server connection is lent to a
client for one transaction at a time and `pool_size` of them are shared by all clients of a database.

PgBouncer refuses to run as root: when this process is root it is started with `-u storymimi-pg` (the
embedded Postgres's user), after it has read its files as root.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from runner.devservers.postgres import PG_SYSTEM_USER, _ensure_system_user
from runner.devservers.process import LOOPBACK, EmbeddedServer, EmbeddedServerError

__all__ = ["PGBOUNCER", "PgBouncer"]

PGBOUNCER = Path("/usr/sbin/pgbouncer")
"""Debian's binary (`apt-get install pgbouncer`)."""

_SSL_REQUEST = struct.pack("!ii", 8, 80877103)


class PgBouncer(EmbeddedServer):
    """One PgBouncer process on loopback, pooling every database of the `upstream` Postgres."""

    name = "pgbouncer"
    process_name = "pgbouncer"
    stop_signal = signal.SIGTERM  # immediate shutdown (SIGINT would wait for every client to leave)

    def __init__(
        self,
        data_dir: Path | str,
        *,
        upstream: str,
        port: int | None = None,
        pool_mode: Literal["session", "transaction", "statement"] = "transaction",
        pool_size: int = 2,
        binary: Path = PGBOUNCER,
    ) -> None:
        super().__init__(data_dir, port)
        self.upstream = urlsplit(upstream)
        self.pool_mode = pool_mode
        self.pool_size = pool_size
        self.binary = binary

    @property
    def url(self) -> str:
        """The upstream URL (its user and database) through this PgBouncer."""
        return self.url_for(urlunsplit(self.upstream))

    def url_for(self, upstream_url: str) -> str:
        """Another URL of the upstream server (another database, say) through this PgBouncer."""
        parts = urlsplit(upstream_url)
        user = f"{parts.username}@" if parts.username else ""
        return urlunsplit(parts._replace(netloc=f"{user}{LOOPBACK}:{self.port}"))

    @property
    def home(self) -> Path:
        return self.data_dir

    @property
    def ini_path(self) -> Path:
        return self.data_dir / "pgbouncer.ini"

    def _prepare(self) -> None:
        if not os.access(self.binary, os.X_OK):
            raise EmbeddedServerError(
                f"{self.binary} is missing: install Debian's pgbouncer (apt-get install pgbouncer)"
            )
        user = self.upstream.username or "postgres"
        userlist = self.data_dir / "userlist.txt"
        userlist.write_text(f'"{user}" ""\n', encoding="utf-8")  # trust: the user must be listed, no password
        self.ini_path.write_text(self._ini(user, userlist), encoding="utf-8")

    def _ini(self, user: str, userlist: Path) -> str:
        settings = {
            "listen_addr": LOOPBACK,
            "listen_port": self.port,
            "unix_socket_dir": "",
            "auth_type": "trust",
            "auth_file": userlist,
            "admin_users": user,  # SHOW POOLS / SERVERS on its `pgbouncer` database, to look inside
            "pool_mode": self.pool_mode,
            "default_pool_size": self.pool_size,
            "reserve_pool_size": 0,
            "max_client_conn": 2000,
            "server_reset_query": "",  # the default (DISCARD ALL) is for session mode only anyway
            "log_connections": 0,
            "log_disconnections": 0,
        }
        host, port = self.upstream.hostname or LOOPBACK, self.upstream.port or 5432
        lines = ["[databases]", f"* = host={host} port={port}", "", "[pgbouncer]"]
        return "\n".join([*lines, *(f"{key} = {value}" for key, value in settings.items())]) + "\n"

    def _command(self) -> list[str]:
        command = [str(self.binary)]
        if os.geteuid() == 0:
            _ensure_system_user(PG_SYSTEM_USER)
            command += ["-u", PG_SYSTEM_USER]
        return [*command, str(self.ini_path)]

    def _ready(self) -> bool:
        """Whether it answers an SSLRequest (with `N`: no TLS), as any Postgres protocol server must."""
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=1.0) as sock:
                sock.sendall(_SSL_REQUEST)
                return sock.recv(1) == b"N"
        except OSError:
            return False
