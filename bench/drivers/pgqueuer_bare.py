# mypy: ignore-errors
# (runs in bench/.venv-pgqueuer, made by `python -m bench.run` from bench/requirements-pgqueuer.txt)
"""Driver for pgqueuer, a Postgres queue (FOR UPDATE SKIP LOCKED plus LISTEN/NOTIFY), tuned for throughput
as its docs say: one worker process run as `pgq run` runs it (bench.drivers.pgqueuer_jobs), batch size 20, at most
CONCURRENCY jobs in flight (max_concurrent_tasks; pgqueuer wants it at least twice the batch, so the idle
worker of latency / starvation, with 10, takes batches of 5).  Its tables (prefix `bench_`, durable: the
default) live on the benchmark's Postgres beside this runner's, installed once and emptied before each run.

Jobs are enqueued with pgqueuer's batch `Queries.enqueue` (1,000 a call) before the worker starts.  taken:
a row of the queue table is 'picked' or the log has a row; running: rows 'picked'; drained: the queue table
is empty (pgqueuer deletes a job's row when it ends, in its status-log buffer's flush).  After a
throughput run the log's 'successful' rows are notes["completed"].  See bench.drivers.peer for the rest.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import asyncpg
import pgqueuer
from pgqueuer import Queries
from pgqueuer.db import AsyncpgDriver
from pgqueuer.domain.settings import db_settings

from bench.drivers import peer
from bench.drivers.common import parse_args

SYSTEM = "pgqueuer"
PREFIX = "bench_"  # pgqueuer's own tables on the shared server: bench_pgqueuer, bench_pgqueuer_log, ...
BATCH_SIZE = 20
CHUNK = 1_000


def batch_size(concurrency: int) -> int:
    return max(1, min(BATCH_SIZE, concurrency // 2))


class PgQueuerPeer:
    system = SYSTEM

    def __init__(self, args: Any, connection: asyncpg.Connection) -> None:
        self.args, self.db = args, connection
        self.queries = Queries(AsyncpgDriver(connection))
        settings = db_settings()
        self.table, self.log = settings.queue_table, settings.queue_table_log

    async def prepare(self) -> None:
        if not await self.queries.schema_is_installed():
            await self.queries.install()
        await self.db.execute(f"TRUNCATE {self.table}, {self.log}")

    async def enqueue(self, name: str, count: int, **kwargs: Any) -> None:
        payload = json.dumps(kwargs).encode()
        for start in range(0, count, CHUNK):
            n = min(CHUNK, count - start)
            await self.queries.enqueue([name] * n, [payload] * n, [0] * n)

    async def enqueue_one(self, name: str, **kwargs: Any) -> None:
        await self.queries.enqueue(name, json.dumps(kwargs).encode())

    async def taken(self, total: int) -> bool:
        return bool(await self.db.fetchval(f"SELECT EXISTS (SELECT 1 FROM {self.table} WHERE status = 'picked') "
                                           f"OR EXISTS (SELECT 1 FROM {self.log})"))  # fmt: skip

    async def running(self) -> int:
        return int(await self.db.fetchval(f"SELECT count(*) FROM {self.table} WHERE status = 'picked'"))

    async def drained(self) -> bool:
        return not await self.db.fetchval(f"SELECT EXISTS (SELECT 1 FROM {self.table})")

    def worker(self, concurrency: int, role: str) -> tuple[list[str], dict[str, str]]:
        argv = [sys.executable, "-m", "bench.drivers.pgqueuer_jobs", str(batch_size(concurrency)), str(concurrency)]
        return argv, {"BENCH_PGQ_DSN": self.args.database_url, "REDIS_URL": self.args.redis_url,
                      "PGQUEUER_PREFIX": PREFIX}  # fmt: skip

    def notes(self, concurrency: int) -> dict[str, float | str]:
        import uvloop

        return {"pgqueuer": pgqueuer.__version__, "asyncpg": asyncpg.__version__, "uvloop": uvloop.__version__,
                "batch_size": batch_size(concurrency), "max_concurrent_tasks": concurrency,
                "durability": "durable (logged tables)", "tables": f"{self.table}, {self.log}",
                "worker": "1 process, pgqueuer.run (as pgq run; uvloop)", "dequeue_timeout_s": 30}  # fmt: skip

    async def outcomes(self) -> dict[str, float | str]:
        rows = await self.db.fetch(f"SELECT status::text AS status, count(*) AS n FROM {self.log} "
                                   "WHERE status <> 'queued' AND status <> 'picked' GROUP BY 1")  # fmt: skip
        counts = {r["status"]: int(r["n"]) for r in rows}
        failed = sum(n for status, n in counts.items() if status != "successful")
        return {"completed": counts.get("successful", 0), "failed": failed}


async def main() -> None:
    args = parse_args(SYSTEM)
    if not args.database_url:
        sys.exit("benchmark: pgqueuer needs --database-url (or DATABASE_URL)")
    os.environ["PGQUEUER_PREFIX"] = PREFIX
    db_settings.cache_clear()
    connection = await asyncpg.connect(args.database_url)
    try:
        system = PgQueuerPeer(args, connection)
        await system.prepare()
        await peer.run(system, args)
    finally:
        await connection.close()


if __name__ == "__main__":
    asyncio.run(main())
