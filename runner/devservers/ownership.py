"""Which running server belongs to a data folder: found through a record under that folder, never by port.

Two checkouts on one machine must never share a server by accident, while the processes of one
checkout (``make worker``, then ``make api``) must share theirs. So each data folder records the server
it started, and a record is trusted only after checking the process it names:

    <data_dir>/valkey.json     {"server", "pid", "port", "url", "data_dir", "started_at"}
    <data_dir>/postgres.json   the same for PostgreSQL
    <data_dir>/valkey.lock     flock held while one process finds, starts or stops that server
    <data_dir>/postgres.lock   (so two processes of one checkout never start two servers on one folder)

A record is trusted when its pid is alive, is the server's binary, works in this data folder (its cwd:
Valkey's ``--dir``, the PostgreSQL cluster folder), listens on the recorded port, and that port answers.
A record failing any check is stale: logged, removed and replaced by a server started here. That server
takes the configured port if nobody listens there; a port someone else holds (another checkout's server,
any other program) is skipped for a free one and never talked to. Only the process that started a
server stops it, and removes its record.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
import structlog

from runner.devservers.process import EmbeddedServer, EmbeddedServerError, free_port, port_is_free

__all__ = ["ServerRecord", "owned_server", "read_record", "record_path"]

log = structlog.get_logger("runner.devservers")

_POLL_SECONDS = 0.05
_LOCK_SECONDS = 60.0  # longer than a start (30 s) or a stop (15 s) by the process holding the lock


@dataclass(frozen=True)
class ServerRecord:
    """The server a data folder started: written once it answers, removed when its starter stops it."""

    server: str
    pid: int
    port: int
    url: str
    data_dir: str
    started_at: str


def record_path(server: EmbeddedServer) -> Path:
    """Where ``server``'s data folder records its running server."""
    return server.data_dir / f"{server.name}.json"


def read_record(server: EmbeddedServer) -> ServerRecord | None:
    """The record under ``server``'s data folder, or None if there is none or it cannot be parsed."""
    try:
        raw = json.loads(record_path(server).read_text(encoding="utf-8"))
        record = ServerRecord(**raw)
    except (OSError, ValueError, TypeError):  # none, unreadable, not JSON, not a record
        return None
    if not (isinstance(record.pid, int) and isinstance(record.port, int)):
        return None
    return record


@contextlib.contextmanager
def owned_server(server: EmbeddedServer, *, timeout: float = 30.0) -> Iterator[ServerRecord]:
    """This data folder's running server: the recorded one if it checks out, else one started here.

    A server started here runs on ``server.port`` if that is free, else on a free port; it is recorded
    for the other processes of this checkout, and stopped (its record removed) when the block ends.
    A reused server is left running. ``server.port`` is set to the port actually used."""
    with _locked(server):
        record = _trusted_record(server, timeout)
        started = record is None
        if record is None:
            record = _start_and_record(server, timeout)
    try:
        yield record
    finally:
        if started:
            with _locked(server):  # nobody adopts the record of a server being stopped
                _drop_record(server, record.pid)
                server.stop()
            log.info("embedded_server_stopped", server=server.name, pid=record.pid)


def _start_and_record(server: EmbeddedServer, timeout: float) -> ServerRecord:
    if not port_is_free(server.port):
        taken, server.port = server.port, free_port()
        log.warning(
            "embedded_port_taken",
            server=server.name,
            port=taken,
            chosen_port=server.port,
            detail="something else listens there (another checkout's server?); it is not used",
        )
    server.start(timeout)
    try:
        pid = server.pid
        assert pid is not None
        record = ServerRecord(
            server.name, pid, server.port, server.url, str(server.data_dir), time.strftime("%Y-%m-%dT%H:%M:%S%z")
        )
        _write_record(server, record)
    except BaseException:  # a server nobody can find again must not outlive us
        server.stop()
        raise
    log.info("embedded_server_started", server=server.name, url=server.url, pid=pid, data_dir=str(server.data_dir))
    return record


def _trusted_record(server: EmbeddedServer, timeout: float) -> ServerRecord | None:
    """The recorded server if it is this folder's and answers; a stale record is removed."""
    if not record_path(server).exists():
        return None
    record = read_record(server)
    problem = "it cannot be read" if record is None else _not_ours(server, record)
    if record is None or problem is not None:
        _drop_stale(server, problem)
        return None
    server.port = record.port
    _wait_answering(server, record, timeout)
    log.info("embedded_server_reused", server=server.name, url=server.url, pid=record.pid)
    return record


def _drop_stale(server: EmbeddedServer, reason: str | None) -> None:
    path = record_path(server)
    log.info("embedded_server_record_stale", server=server.name, record=str(path), reason=reason)
    path.unlink(missing_ok=True)


def _not_ours(server: EmbeddedServer, record: ServerRecord) -> str | None:
    """Why ``record`` does not name this data folder's running server, or None when it does."""
    pid = record.pid
    if record.server != server.name:
        return f"it names a {record.server} server, not {server.name}"
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return f"pid {pid} is not running"
        if proc.name() != server.process_name:
            return f"pid {pid} is {proc.name()!r}, not {server.process_name}"
        home = Path(proc.cwd())
        ports = {conn.laddr.port for conn in proc.net_connections("tcp") if conn.status == psutil.CONN_LISTEN}
    except psutil.NoSuchProcess:
        return f"pid {pid} is not running"
    except psutil.AccessDenied:
        return f"pid {pid} belongs to another user and cannot be checked"
    if home.resolve() != server.home.resolve():
        return f"pid {pid} serves {home}, not {server.home}"
    if record.port not in ports:
        return f"pid {pid} does not listen on port {record.port}"
    return None


def _wait_answering(server: EmbeddedServer, record: ServerRecord, timeout: float) -> None:
    """Wait for this folder's own server to answer (it may be loading its data); never start a second."""
    deadline = time.monotonic() + timeout
    while not server.answers():
        if time.monotonic() >= deadline:
            raise EmbeddedServerError(
                f"{server.name} pid {record.pid} runs on {server.home} (port {record.port}) but did not "
                f"answer within {timeout:g} s; wait for it, or stop it (kill -TERM {record.pid}) and retry"
            )
        time.sleep(_POLL_SECONDS)


def _write_record(server: EmbeddedServer, record: ServerRecord) -> None:
    path = record_path(server)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(asdict(record), indent=2) + "\n", encoding="utf-8")
    partial.replace(path)  # readers see the whole record or none


def _drop_record(server: EmbeddedServer, pid: int) -> None:
    """Remove the record if it still names ``pid`` (a replacement started by another process stays)."""
    record = read_record(server)
    if record is not None and record.pid == pid:
        record_path(server).unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(server: EmbeddedServer) -> Iterator[None]:
    """Hold ``<data_dir>/<name>.lock`` (released by the kernel if this process dies)."""
    server.data_dir.mkdir(parents=True, exist_ok=True)
    path = server.data_dir / f"{server.name}.lock"
    with path.open("a") as handle:
        deadline = time.monotonic() + _LOCK_SECONDS
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise EmbeddedServerError(
                        f"another process has held {path} for {_LOCK_SECONDS:g} s while starting or stopping "
                        f"{server.name}; stop that process (`fuser {path}` names it) and retry"
                    ) from None
                time.sleep(_POLL_SECONDS)
        yield
