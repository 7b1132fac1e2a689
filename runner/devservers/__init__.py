"""Real PostgreSQL and Valkey servers run from pip-installed binaries, for development and tests only.

``make run`` starts them when ``DATABASE_URL`` / ``REDIS_URL`` are unset, the pytest session fixtures
start them for the integration tests, and the fault tests stop, kill and restart them mid-run. No Docker,
no root for the user, loopback TCP only; everything lives under the data folder the caller gives:

    <data_dir>/postgres/       the PostgreSQL cluster (initdb on first start)
    <data_dir>/postgres.log    its server log
    <data_dir>/valkey/         Valkey's append-only file (``appendonlydir``)
    <data_dir>/valkey.log      its server log
    <data_dir>/valkey.json, postgres.json, *.lock   which running server is this folder's (see ownership)

``owned_server`` finds this folder's running server or starts one, so ``make api`` and ``make worker``
of one checkout share servers and two checkouts never do. Nothing on the production path imports this package.

    with EmbeddedPostgres(tmp / "data") as pg, EmbeddedValkey(tmp / "data") as valkey:
        print(pg.url, valkey.url)
"""

from __future__ import annotations

from runner.devservers.ownership import ServerRecord, owned_server
from runner.devservers.postgres import PG_SYSTEM_USER, EmbeddedPostgres
from runner.devservers.process import LOOPBACK, EmbeddedServer, EmbeddedServerError, free_port
from runner.devservers.valkey import EmbeddedValkey

__all__ = [
    "LOOPBACK",
    "PG_SYSTEM_USER",
    "EmbeddedPostgres",
    "EmbeddedServer",
    "EmbeddedServerError",
    "EmbeddedValkey",
    "ServerRecord",
    "free_port",
    "owned_server",
]
