"""The process base of the embedded dev/test servers: one server process we own, started on loopback,
stopped gracefully, killed like a crash, and restarted on the same port with the same data.

Each server runs in its own session (Ctrl-C in a terminal does not reach it; the launcher stops the
servers in order), and only processes we started are ever signalled.
"""

from __future__ import annotations

import abc
import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

import psutil

__all__ = [
    "INSTALL_HINT",
    "LOOPBACK",
    "EmbeddedServer",
    "EmbeddedServerError",
    "free_port",
    "log_tail",
    "port_is_free",
]

LOOPBACK = "127.0.0.1"

_LOG_TAIL_LINES = 20
_POLL_SECONDS = 0.05
_GROUP_EXIT_SECONDS = 5.0
INSTALL_HINT = "install the dev environment with `make venv` (pip install -e '.[dev]')"


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be prepared, started or stopped; the message says what to do."""


def free_port() -> int:
    """A TCP port that is free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """Whether nobody listens on LOOPBACK:port (TIME_WAIT leftovers of our own restarts do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    """The last lines of a log file, or a note that there is none."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"(no log at {path})"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else f"(log {path} is empty)"


def _group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is still in process group ``pgid``."""
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


class EmbeddedServer(abc.ABC):
    """One server process we own: start, graceful stop, hard kill and restart on the same port."""

    name: ClassVar[str]
    process_name: ClassVar[str]  # the server process's name (psutil's, the binary's file name)
    stop_signal: ClassVar[signal.Signals]

    def __init__(self, data_dir: Path | str, port: int | None = None) -> None:
        self.data_dir: Path = Path(data_dir).absolute()
        self.port: int = port if port is not None else free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """The client URL of the server."""

    @property
    @abc.abstractmethod
    def home(self) -> Path:
        """The folder the server process works in (its cwd), which tells whose server a process is."""

    @property
    def log_path(self) -> Path:
        """The server's log file (stdout and stderr go there too)."""
        return self.data_dir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        """The server's PID while it runs, else None."""
        return self._proc.pid if self.is_running() and self._proc is not None else None

    def is_running(self) -> bool:
        """Whether the process we started is still alive (it may not accept connections yet)."""
        return self._proc is not None and self._proc.poll() is None

    def answers(self) -> bool:
        """Whether a server of this kind answers on ``port`` now (whoever runs it)."""
        return self._ready()

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until it accepts connections; does nothing if it already runs."""
        if self.is_running():
            return
        self._proc = None
        if not port_is_free(self.port):
            raise self._error(f"cannot start: another process already listens on {LOOPBACK}:{self.port}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare()
        self._proc = self._spawn(self._command())
        try:
            self._wait_ready(timeout)
        except BaseException:  # timeout, early exit, Ctrl-C: never leave a half-started server behind
            self.kill()
            raise

    def restart(self, timeout: float = 30.0, *, hard: bool = False) -> None:
        """Stop (or with ``hard``, kill) and start again on the same port with the same data."""
        if hard:
            self.kill()
        else:
            self.stop()
        self.start(timeout)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop gracefully, SIGKILL the process group after ``timeout`` seconds; idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(self.stop_signal)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_group(proc)
        self._proc = None

    def kill(self) -> None:
        """SIGKILL the server and its children now, like a crash; the data stays for the next start."""
        proc = self._proc
        if proc is None:
            return
        self._kill_group(proc)
        self._proc = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(data_dir={str(self.data_dir)!r}, port={self.port}, pid={self.pid})"

    @abc.abstractmethod
    def _prepare(self) -> None:
        """Find the binary and make the data folder ready; raise EmbeddedServerError if impossible."""

    @abc.abstractmethod
    def _command(self) -> list[str]:
        """The server's command line."""

    @abc.abstractmethod
    def _ready(self) -> bool:
        """Whether the server answers on its port."""

    def _run_as(self) -> tuple[int, int] | None:
        """The (uid, gid) to run the server as, or None for this process's own user."""
        return None

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    def _spawn(self, command: list[str]) -> subprocess.Popen[bytes]:
        owner = self._run_as()
        with self.log_path.open("ab") as log:
            log.write(f"---- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {command}\n".encode())
            log.flush()
            return subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                env=self._env(),
                start_new_session=True,
                user=owner[0] if owner else None,
                group=owner[1] if owner else None,
                extra_groups=[] if owner else None,
            )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            proc = self._proc
            assert proc is not None
            code = proc.poll()
            if code is not None:
                self._proc = None
                raise self._error(f"exited with code {code} during start-up")
            if self._ready():
                return
            if time.monotonic() >= deadline:
                raise self._error(f"did not accept connections within {timeout:g} s, so it was killed")
            time.sleep(_POLL_SECONDS)

    def _kill_group(self, proc: subprocess.Popen[bytes]) -> None:
        # The server leads its own process group (start_new_session), and the group id cannot be
        # reused before we reap the leader below, so this only reaches processes we started.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + _GROUP_EXIT_SECONDS
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(_POLL_SECONDS)

    def _error(self, what: str) -> EmbeddedServerError:
        return EmbeddedServerError(
            f"{self.name} on {LOOPBACK}:{self.port} {what}.\n"
            f"Data folder: {self.data_dir}\n"
            f"Last lines of {self.log_path}:\n{log_tail(self.log_path)}"
        )
