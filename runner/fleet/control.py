"""The control pipe from each child to its supervisor, and the child's side of it.

One line per message, child to supervisor:

    retiring                   the child stops taking work: start its replacement now
    alive                      the child's event loop turned within the last beat
    blocked <seconds> <task>   the loop has not turned for <seconds>, stuck in the task named <task>

The beat comes from a thread, so a blocked loop (a job calling `time.sleep`, a CPU-bound loop, a
deadlock) is still reported, with the task it is stuck in (a job's task is named `job:<id>`); the
supervisor kills a child blocked past WORKER_HANG_S, or silent that long. The same thread notices when
the supervisor is gone (the parent pid changes or the pipe breaks) and says so at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable
from types import TracebackType

import structlog

__all__ = ["BEAT_S", "CONTROL_FD_ENV", "ControlPipe", "Heartbeat", "parse_line"]

log = structlog.get_logger("runner.fleet.control")

CONTROL_FD_ENV = "RUNNER_CONTROL_FD"  # the fd of the pipe's write end, given to each child
BEAT_S = 0.5  # how often the child reports


class ControlPipe:
    """The child's end: write a message line; False if the supervisor's end is closed."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd
        self._lock = threading.Lock()  # the beat thread and the loop both write

    @classmethod
    def from_env(cls) -> ControlPipe:
        value = os.environ.get(CONTROL_FD_ENV)
        return cls(int(value) if value else None)

    @property
    def connected(self) -> bool:
        return self._fd is not None

    def send(self, message: str) -> bool:
        if self._fd is None:
            return True
        with self._lock:
            try:
                os.write(self._fd, message.encode() + b"\n")
            except OSError:
                return False
        return True

    def retiring(self) -> None:
        """Tell the supervisor to start this child's replacement now (it drains and exits next)."""
        if not self.send("retiring"):
            log.warning("control_pipe_write_failed", message="retiring")


class Heartbeat:
    """While open (`async with`), reports the loop's liveness on the control pipe every BEAT_S and calls
    `on_orphaned` in the loop once the supervisor is gone."""

    def __init__(self, pipe: ControlPipe, *, on_orphaned: Callable[[], None]) -> None:
        self._pipe = pipe
        self._on_orphaned = on_orphaned
        self._parent = os.getppid()
        self._turned = time.monotonic()
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stamp: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None

    async def __aenter__(self) -> Heartbeat:
        self._loop = asyncio.get_running_loop()
        self._stamp = asyncio.create_task(self._stamp_turns(), name="heartbeat")
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self._thread.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._stamp is not None:
            self._stamp.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stamp

    async def _stamp_turns(self) -> None:
        while True:
            self._turned = time.monotonic()
            await asyncio.sleep(BEAT_S / 2)

    def _beat(self) -> None:
        while not self._stop.wait(BEAT_S):
            if os.getppid() != self._parent or not self._pipe.send(self._report()):
                self._orphaned()
                return

    def _report(self) -> str:
        stuck_s = time.monotonic() - self._turned
        if stuck_s < BEAT_S * 2:
            return "alive"
        task = asyncio.current_task(self._loop) if self._loop is not None else None  # read from this thread
        return f"blocked {stuck_s:.1f} {task.get_name() if task is not None else '-'}"

    def _orphaned(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing left to stop
                self._loop.call_soon_threadsafe(self._on_orphaned)


def parse_line(line: bytes) -> tuple[str, float, str]:
    """(kind, blocked seconds, task name) of a control line; kind is "" for a line we do not know."""
    parts = line.decode(errors="replace").strip().split(" ", 2)
    if parts[0] in ("retiring", "alive"):
        return parts[0], 0.0, ""
    if parts[0] == "blocked" and len(parts) == 3:
        try:
            return "blocked", float(parts[1]), parts[2]
        except ValueError:
            pass
    return "", 0.0, ""
