"""The process supervisor behind `make run` / `make worker`: it starts the API and WORKERS worker
processes, restarts a worker that died (with backoff if it keeps dying) or retired itself (recycled),
and on SIGTERM or Ctrl-C stops them all in order. A second Ctrl-C kills them at once.

Children run in their own sessions so a terminal's Ctrl-C reaches only the supervisor, which then
signals each child exactly once (modelled on uvicorn's multiprocess supervisor).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

__all__ = ["RECYCLE_EXIT_CODE", "ChildSpec", "Supervisor", "python_argv"]

log = structlog.get_logger("runner.supervisor")

RECYCLE_EXIT_CODE = 75  # a worker that retired itself (job or memory limit): replace it at once
_MAX_BACKOFF_S = 30.0
_STABLE_AFTER_S = 30.0  # a child that lived this long has its crash backoff reset


@dataclass
class ChildSpec:
    """One supervised process: what to run and whether to keep it running."""

    name: str
    argv: Sequence[str]
    restart: bool = True


@dataclass
class _Child:
    spec: ChildSpec
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    crashes: int = 0
    restarts: int = 0
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)


class Supervisor:
    """Keeps its children running until stopped; `run()` returns the exit code for the process."""

    def __init__(self, children: Sequence[ChildSpec], *, env: dict[str, str], grace_s: float) -> None:
        self._children = [_Child(spec) for spec in children]
        self._env = env
        self._grace_s = grace_s
        self._stopping = asyncio.Event()
        self._signals = 0

    def handle_signal(self, signum: int) -> None:
        """Record the signal; the loop acts. First: graceful stop. Second SIGINT: kill now."""
        self._signals += 1
        log.info("supervisor_signal", signal=signal.Signals(signum).name, count=self._signals)
        if self._signals > 1 and signum == signal.SIGINT:
            self._kill_all()
        self._stopping.set()

    async def run(self) -> int:
        for child in self._children:
            await self._spawn(child)
        await self._stopping.wait()
        await self._stop_all()
        return 0

    async def _spawn(self, child: _Child) -> None:
        child.process = await asyncio.create_subprocess_exec(
            *child.spec.argv, env=self._env, start_new_session=True, stdin=asyncio.subprocess.DEVNULL
        )
        child.started_at = time.monotonic()
        log.info("child_started", child=child.spec.name, pid=child.process.pid, restarts=child.restarts)
        child.watcher = asyncio.create_task(self._watch(child), name=f"watch:{child.spec.name}")

    async def _watch(self, child: _Child) -> None:
        assert child.process is not None
        code = await child.process.wait()
        if self._stopping.is_set():
            return
        lived = time.monotonic() - child.started_at
        if code == RECYCLE_EXIT_CODE:
            log.info("child_recycled", child=child.spec.name, pid=child.process.pid)
            delay = 0.0
        else:
            child.crashes = 0 if lived > _STABLE_AFTER_S else child.crashes + 1
            delay = min(0.5 * 2 ** max(child.crashes - 1, 0), _MAX_BACKOFF_S)
            log.error("child_died", child=child.spec.name, pid=child.process.pid, exit_code=code,
                      restart_in_s=delay if child.spec.restart else None)  # fmt: skip
        if not child.spec.restart:
            self._stopping.set()
            return
        await self._sleep_unless_stopping(delay)
        if not self._stopping.is_set():
            child.restarts += 1
            await self._spawn(child)

    async def _sleep_unless_stopping(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay)

    async def _stop_all(self) -> None:
        alive = [c.process for c in self._children if c.process and c.process.returncode is None]
        log.info("supervisor_stopping", children=len(alive), grace_s=self._grace_s)
        for process in alive:
            _signal(process, signal.SIGTERM)
        waits = [asyncio.create_task(p.wait()) for p in alive]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=self._grace_s + 5)
            if pending:
                log.warning("children_killed_after_grace", count=len(pending))
                self._kill_all()
                await asyncio.wait(pending, timeout=5)
        for child in self._children:
            if child.watcher is not None:
                child.watcher.cancel()

    def _kill_all(self) -> None:
        for child in self._children:
            if child.process is not None and child.process.returncode is None:
                _signal(child.process, signal.SIGKILL)


def _signal(process: asyncio.subprocess.Process, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signum)


def python_argv(*args: str) -> list[str]:
    """argv running `python -m runner ...` with this interpreter."""
    return [sys.executable, "-m", "runner", *args]
