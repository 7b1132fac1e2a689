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
import sys
import threading
import time
import traceback
from collections.abc import Callable
from types import TracebackType

import structlog

__all__ = ["BEAT_S", "CONTROL_FD_ENV", "ControlPipe", "Heartbeat", "parse_line"]

log = structlog.get_logger("runner.fleet.control")

CONTROL_FD_ENV = "RUNNER_CONTROL_FD"  # the fd of the pipe's write end, given to each child
BEAT_S = 0.5  # how often the child reports
LAG_TICK_S = 0.25  # how often the loop's own timer measures its lag


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
    `on_orphaned` in the loop once the supervisor is gone. It also measures the loop's lag (how late its
    own timer fires: `observe_lag`), and when the loop has been blocked for `blocked_log_s` it logs, once
    per block, the stack the loop is stuck in and the job running there: a job calling blocking code is
    told where."""

    def __init__(
        self,
        pipe: ControlPipe,
        *,
        on_orphaned: Callable[[], None],
        observe_lag: Callable[[float], None] | None = None,
        blocked_log_s: float = 1.0,
    ) -> None:
        self._pipe = pipe
        self._on_orphaned = on_orphaned
        self._observe_lag = observe_lag
        self._blocked_log_s = blocked_log_s
        self._told = False  # the current block was logged
        self._loop_thread = 0
        self._parent = os.getppid()
        self._turned = time.monotonic()
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stamp: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None

    async def __aenter__(self) -> Heartbeat:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
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
        period = LAG_TICK_S
        while True:
            asked = time.monotonic()
            self._turned = asked
            await asyncio.sleep(period)
            if self._observe_lag is not None:
                self._observe_lag(max(time.monotonic() - asked - period, 0.0))

    def _beat(self) -> None:
        tick = min(BEAT_S, self._blocked_log_s / 2)
        last_report = 0.0
        while not self._stop.wait(tick):
            stuck_s = time.monotonic() - self._turned
            self._tell_where(stuck_s)
            if time.monotonic() - last_report < BEAT_S:
                continue
            last_report = time.monotonic()
            if os.getppid() != self._parent or not self._pipe.send(self._report(stuck_s)):
                self._orphaned()
                return

    def _report(self, stuck_s: float) -> str:
        if stuck_s < BEAT_S * 2:
            return "alive"
        return f"blocked {stuck_s:.1f} {self._task_name()}"

    def _task_name(self) -> str:
        task = asyncio.current_task(self._loop) if self._loop is not None else None  # read from this thread
        return task.get_name() if task is not None else "-"

    def _tell_where(self, stuck_s: float) -> None:
        """Log the blocked loop's stack once per block (from this thread: the loop cannot)."""
        if stuck_s < self._blocked_log_s:
            self._told = False
            return
        if self._told:
            return
        self._told = True
        frame = sys._current_frames().get(self._loop_thread)
        stack = [f"{f.filename}:{f.lineno} in {f.name}" for f in traceback.extract_stack(frame)[-12:]] if frame else []
        task = self._task_name()
        log.warning("event_loop_blocked", blocked_s=round(stuck_s, 2), task=task,
                    job_id=task.removeprefix("job:") if task.startswith("job:") else None, stack=stack)  # fmt: skip

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
