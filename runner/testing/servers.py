"""The Redis and Postgres a test session runs its jobs on: the ones `REDIS_URL` / `DATABASE_URL` name, else
embedded ones (runner.devservers) started for the session under its temporary folder and stopped after it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RunnerServers", "open_servers"]


@dataclass(frozen=True, slots=True)
class RunnerServers:
    """Where the tests' jobs go; `embedded` names the servers this session started itself."""

    redis_url: str
    database_url: str
    embedded: tuple[str, ...] = ()


@contextmanager
def open_servers(data_dir: Path, environ: Mapping[str, str]) -> Iterator[RunnerServers]:
    """`REDIS_URL` and `DATABASE_URL` from `environ` when set; each one unset is an embedded server (Valkey,
    PostgreSQL 18) started under `data_dir` on a free loopback port, and stopped when the block ends."""
    with ExitStack() as stack:
        embedded: list[str] = []
        redis_url = environ.get("REDIS_URL") or None
        database_url = environ.get("DATABASE_URL") or None
        if redis_url is None or database_url is None:
            from runner.devservers import EmbeddedPostgres, EmbeddedValkey  # only when one is needed

            if redis_url is None:
                redis_url = stack.enter_context(EmbeddedValkey(data_dir)).url
                embedded.append("redis")
            if database_url is None:
                database_url = stack.enter_context(EmbeddedPostgres(data_dir)).url
                embedded.append("postgres")
        yield RunnerServers(redis_url, database_url, tuple(embedded))
