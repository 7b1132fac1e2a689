"""Real embedded PostgreSQL and Valkey servers: start, query, stop, kill and restart with the same data."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import psutil
import pytest
import redis

from runner.devservers import EmbeddedPostgres, EmbeddedServerError, EmbeddedValkey, free_port


@contextmanager
def _valkey_client(server: EmbeddedValkey) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(server.url, socket_timeout=5)
    try:
        yield client
    finally:
        client.close()


async def _fetch_rows(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT note FROM notes ORDER BY id")
    finally:
        await conn.close()
    return [row["note"] for row in rows]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


async def test_postgres_answers_stops_and_keeps_data_across_restart(tmp_path: Path) -> None:
    """Postgres answers asyncpg, stop() ends its process, and rows survive a restart on the same port."""
    pg = EmbeddedPostgres(tmp_path / "data")
    try:
        pg.start()
        conn = await asyncpg.connect(pg.url)
        try:
            assert await conn.fetchval("SELECT current_setting('server_version_num')::int") >= 180000
            await conn.execute("CREATE TABLE notes (id serial PRIMARY KEY, note text NOT NULL)")
            await conn.execute("INSERT INTO notes (note) VALUES ('kept')")
        finally:
            await conn.close()
        pid, port = pg.pid, pg.port
        assert pid is not None
        pg.stop()
        assert not pg.is_running()
        assert pg.pid is None
        assert not psutil.pid_exists(pid)
        pg.stop()  # idempotent
        pg.start()
        assert pg.port == port
        assert pg.pid != pid
        assert await _fetch_rows(pg.url) == ["kept"]
    finally:
        pg.stop()


async def test_postgres_recovers_committed_rows_after_kill(tmp_path: Path) -> None:
    """After kill() (SIGKILL of the whole server) a restart recovers every committed row."""
    pg = EmbeddedPostgres(tmp_path / "data")
    try:
        pg.start()
        conn = await asyncpg.connect(pg.url)
        try:
            await conn.execute("CREATE TABLE notes (id serial PRIMARY KEY, note text NOT NULL)")
            await conn.execute("INSERT INTO notes (note) VALUES ('committed')")
        finally:
            await conn.close()
        pg.kill()
        assert not pg.is_running()
        pg.start()
        assert await _fetch_rows(pg.url) == ["committed"]
    finally:
        pg.stop()


@pytest.mark.parametrize("owner", ["dead", "alive-not-postgres"])
def test_postgres_ignores_stale_postmaster_pid(tmp_path: Path, owner: str) -> None:
    """A postmaster.pid naming a dead or a non-postgres process does not stop the server from starting."""
    pg = EmbeddedPostgres(tmp_path / "data")
    try:
        pg.start()
        pg.stop()
        pidfile = pg.pgdata / "postmaster.pid"
        assert not pidfile.exists()
        pid = _dead_pid() if owner == "dead" else os.getpid()
        pidfile.write_text(f"{pid}\n{pg.pgdata}\n1700000000\n{pg.port}\n\n127.0.0.1\n  1234  5678\nready   \n")
        pg.start(timeout=20)
        assert pg.is_running()
        assert pidfile.read_text().split("\n", 1)[0].strip() == str(pg.pid)
    finally:
        pg.stop()


def test_postgres_refuses_a_data_dir_another_postgres_runs_on(tmp_path: Path) -> None:
    """A second server on a live cluster folder fails clearly and leaves the first one alone."""
    first = EmbeddedPostgres(tmp_path / "data")
    second = EmbeddedPostgres(tmp_path / "data")
    try:
        first.start()
        with pytest.raises(EmbeddedServerError, match="still runs"):
            second.start()
        assert first.is_running()
        assert not second.is_running()
    finally:
        first.stop()


def test_postgres_timeouts_kill_and_the_next_start_recovers(tmp_path: Path) -> None:
    """A start or stop that runs out of time kills the server; the next start still works."""
    pg = EmbeddedPostgres(tmp_path / "data")
    try:
        with pytest.raises(EmbeddedServerError, match="did not accept connections"):
            pg.start(timeout=0)
        assert not pg.is_running()
        pg.start()
        pg.stop(timeout=0)
        assert not pg.is_running()
        pg.restart()
        pid = pg.pid
        pg.restart(hard=True)
        assert pg.is_running()
        assert pg.pid != pid
    finally:
        pg.stop()


def test_postgres_start_failure_reports_log_tail(tmp_path: Path) -> None:
    """A server that cannot start raises EmbeddedServerError quoting its log."""
    pg = EmbeddedPostgres(tmp_path / "data", settings={"shared_buffers": "not-a-size"})
    with pytest.raises(EmbeddedServerError, match="shared_buffers"):
        pg.start(timeout=20)
    assert not pg.is_running()


def test_valkey_keeps_keys_across_stop_and_kill(tmp_path: Path) -> None:
    """Valkey's append-only file keeps keys across a graceful stop and across kill()."""
    valkey = EmbeddedValkey(tmp_path / "data")
    try:
        valkey.start()
        port = valkey.port
        with _valkey_client(valkey) as client:
            assert client.set("before-stop", "1")
        valkey.stop()
        assert not valkey.is_running()
        valkey.start()
        assert valkey.port == port
        with _valkey_client(valkey) as client:
            assert client.get("before-stop") == b"1"
            assert client.set("before-kill", "2")
        time.sleep(1.6)  # appendfsync everysec
        valkey.kill()
        assert not valkey.is_running()
        valkey.start()
        with _valkey_client(valkey) as client:
            assert client.mget("before-stop", "before-kill") == [b"1", b"2"]
    finally:
        valkey.stop()


def test_start_refuses_a_port_someone_else_listens_on(tmp_path: Path) -> None:
    """start() fails clearly instead of talking to another server on its port."""
    port = free_port()
    with _listening(port):
        valkey = EmbeddedValkey(tmp_path / "data", port=port)
        with pytest.raises(EmbeddedServerError, match="already listens"):
            valkey.start()
        assert not valkey.is_running()


@contextmanager
def _listening(port: int) -> Iterator[None]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield
