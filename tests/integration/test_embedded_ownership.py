"""Embedded servers belong to their data folder: `embedded_servers()` never uses a server another folder
(another checkout) runs, even on its configured port, and a second call for the same folder (`make api`
while `make worker` runs), in this process or another, reuses the first one's server. Real servers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import pytest
import redis
from structlog.testing import capture_logs

from runner.devservers import EmbeddedValkey, free_port
from runner.fleet.launcher import embedded_servers
from runner.settings import Settings

pytestmark = pytest.mark.timeout(60)

_UNUSED_REDIS = "redis://127.0.0.1:1/0"  # a URL that is set, so embedded_servers() starts no server for it
_UNUSED_POSTGRES = "postgresql://postgres@127.0.0.1:1/postgres"

_CHILD = """
import sys
from runner.fleet.launcher import embedded_servers
from runner.settings import Settings
with embedded_servers(Settings(_env_file=None)) as env:
    print("REDIS_URL=" + env["REDIS_URL"], flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def checkout(tmp_path: Path) -> Iterator[Path]:
    """This checkout's data folder; any server recorded there is killed by its PID at teardown."""
    data_dir = tmp_path / "checkout"
    yield data_dir
    for name in ("valkey", "postgres"):
        with suppress(FileNotFoundError, ValueError, KeyError):
            _kill_if_ours(_record(data_dir, name)["pid"], data_dir)


@pytest.fixture
def foreign_valkey(tmp_path: Path) -> Iterator[EmbeddedValkey]:
    """A running Valkey of another checkout, holding a key of its own."""
    with EmbeddedValkey(tmp_path / "other-checkout") as server, _client(server.url) as client:
        client.set("owner", "other-checkout")
        yield server


def test_foreign_valkey_on_the_port_is_skipped_and_ours_is_shared(
    checkout: Path, foreign_valkey: EmbeddedValkey
) -> None:
    """Another folder's Valkey on EMBEDDED_REDIS_PORT is skipped (logged); a second call reuses ours."""
    settings = _settings(checkout, embedded_redis_port=foreign_valkey.port)
    with capture_logs() as logs, embedded_servers(settings) as first:
        url = first["REDIS_URL"]
        assert url != foreign_valkey.url
        assert _valkey_dir(url) == (checkout / "valkey").resolve()
        assert "DATABASE_URL" not in first
        record = _record(checkout, "valkey")
        assert record["url"] == url
        assert record["port"] != foreign_valkey.port
        assert _servers_in(checkout / "valkey") == [record["pid"]]
        taken = [e for e in logs if e["event"] == "embedded_port_taken"]
        assert [(e["port"], e["chosen_port"]) for e in taken] == [(foreign_valkey.port, record["port"])]

        with embedded_servers(settings) as second:
            assert second["REDIS_URL"] == url
            assert _record(checkout, "valkey") == record
            assert _servers_in(checkout / "valkey") == [record["pid"]]
        assert psutil.pid_exists(record["pid"])  # the reuser left it running
        with _client(url) as client:
            assert client.get("owner") is None
    assert not psutil.pid_exists(record["pid"])  # the starter stopped it
    assert not (checkout / "valkey.json").exists()
    with _client(foreign_valkey.url) as client:
        assert client.get("owner") == b"other-checkout"


def test_processes_of_one_checkout_share_one_valkey(checkout: Path) -> None:
    """Two processes started at once (`make worker` and `make api`) end up on one server of this folder."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env |= {"DATA_DIR": str(checkout), "EMBEDDED_REDIS_PORT": str(free_port()), "DATABASE_URL": _UNUSED_POSTGRES,
            "PYTHONPATH": str(Path(__file__).parents[2]), "LOG_FORMAT": "json"}  # fmt: skip
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD],
            env=env,
            cwd=checkout.parent,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    try:
        urls = [_first_url(child) for child in children]
        record = _record(checkout, "valkey")
        assert urls == [record["url"]] * 2
        assert _servers_in(checkout / "valkey") == [record["pid"]]
    finally:
        for child in children:  # closing stdin ends each child's embedded_servers() block
            try:
                child.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
                child.communicate()
    assert [child.returncode for child in children] == [0, 0]
    assert not psutil.pid_exists(record["pid"])


@pytest.mark.parametrize("recorded", ["dead-pid", "not-valkey", "other-checkouts-valkey"])
def test_stale_record_is_replaced_by_our_own_server(
    checkout: Path, foreign_valkey: EmbeddedValkey, recorded: str
) -> None:
    """A record naming a dead pid, a live non-server, or a server of another folder is never used."""
    pid, port = {
        "dead-pid": (_dead_pid(), free_port()),
        "not-valkey": (os.getpid(), free_port()),
        "other-checkouts-valkey": (foreign_valkey.pid, foreign_valkey.port),  # a .data/ copied over
    }[recorded]
    checkout.mkdir()
    stale = {"server": "valkey", "pid": pid, "port": port, "url": f"redis://127.0.0.1:{port}/0",
             "data_dir": str(checkout), "started_at": "2026-01-01T00:00:00+0000"}  # fmt: skip
    (checkout / "valkey.json").write_text(json.dumps(stale))
    with embedded_servers(_settings(checkout, embedded_redis_port=port)) as env:
        assert env["REDIS_URL"] != foreign_valkey.url
        assert _valkey_dir(env["REDIS_URL"]) == (checkout / "valkey").resolve()
        record = _record(checkout, "valkey")
        assert record["url"] == env["REDIS_URL"]
        assert record["pid"] not in (pid, foreign_valkey.pid)
    assert foreign_valkey.answers()


async def test_postgres_skips_a_foreign_listener_and_is_reused_not_refused(checkout: Path) -> None:
    """Postgres: something else on EMBEDDED_POSTGRES_PORT is skipped; a second call reuses our cluster."""
    port = free_port()
    with _listening(port):
        settings = _settings(checkout, redis_url=_UNUSED_REDIS, database_url=None, embedded_postgres_port=port)
        with embedded_servers(settings) as first:
            assert f":{port}/" not in first["DATABASE_URL"]
            record = _record(checkout, "postgres")
            assert first["DATABASE_URL"] == record["url"]
            with embedded_servers(settings) as second:
                assert second == first
                assert _record(checkout, "postgres") == record
            assert Path(await _data_directory(first["DATABASE_URL"])) == (checkout / "postgres").resolve()
        assert not psutil.pid_exists(record["pid"])
        assert not (checkout / "postgres.json").exists()


def _settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"data_dir": data_dir, "redis_url": None, "database_url": _UNUSED_POSTGRES,
                              "embedded_redis_port": free_port(), "embedded_postgres_port": free_port()}  # fmt: skip
    return Settings(_env_file=None, **{**values, **overrides})  # type: ignore[call-arg]


def _record(data_dir: Path, name: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((data_dir / f"{name}.json").read_text())
    return record


@contextmanager
def _client(url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        yield client
    finally:
        client.close()


def _valkey_dir(url: str) -> Path:
    """The folder the Valkey at ``url`` keeps its files in, as it says itself."""
    with _client(url) as client:
        return Path(client.config_get("dir")["dir"]).resolve()


async def _data_directory(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        directory: str = await conn.fetchval("SHOW data_directory")
    finally:
        await conn.close()
    return directory


def _servers_in(home: Path) -> list[int]:
    """The pids of the valkey-server processes working in ``home``."""
    pids = []
    for proc in psutil.process_iter(["name"]):
        with suppress(psutil.Error):
            if proc.info["name"] == "valkey-server" and Path(proc.cwd()).resolve() == home.resolve():
                pids.append(proc.pid)
    return pids


def _first_url(child: subprocess.Popen[str]) -> str:
    assert child.stdout is not None
    for line in child.stdout:
        if line.startswith("REDIS_URL="):
            return line.removeprefix("REDIS_URL=").strip()
    raise AssertionError(f"child {child.pid} exited with {child.wait()} before printing its REDIS_URL")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _kill_if_ours(pid: int, data_dir: Path) -> None:
    """SIGKILL the process group of ``pid`` if it is a server working under ``data_dir`` (a failed test's)."""
    with suppress(psutil.Error, ProcessLookupError, PermissionError):
        if Path(psutil.Process(pid).cwd()).resolve().is_relative_to(data_dir.resolve()):
            os.killpg(pid, signal.SIGKILL)


@contextmanager
def _listening(port: int) -> Iterator[None]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield
