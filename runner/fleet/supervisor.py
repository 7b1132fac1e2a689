"""The process supervisor behind `make run` / `make worker`.

It keeps one process in each slot (the API, WORKERS workers): a worker that died is restarted, with
backoff if it keeps dying, and its exit is reported at once (the launcher frees its job leases so its jobs
run again in about a second). A worker that retires itself (job or memory limit) says so on its control
pipe first; the supervisor starts its replacement before it leaves, so capacity never drops to zero.
SIGTERM or Ctrl-C stops every child gracefully; a second Ctrl-C kills them.

Children run in their own sessions so a terminal's Ctrl-C reaches only the supervisor, which then signals
each child exactly once (modelled on uvicorn's multiprocess supervisor). Given a zygote, `python -m runner`
children are forked from it (pre-imported, pages shared: runner.fleet.zygote) and adopted, so they are
this process's children all the same; any other command, or a zygote that failed, is exec'd.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from runner.backoff import Backoff
from runner.fleet.control import BEAT_S, CONTROL_FD_ENV, parse_line
from runner.fleet.forked import ChildProcess
from runner.fleet.metrics import RESTART_REASONS, WORKER_RESTARTS

if TYPE_CHECKING:
    from runner.fleet.zygote import Zygote

__all__ = ["CONTROL_FD_ENV", "RECYCLE_EXIT_CODE", "ChildExit", "ChildSpec", "Supervisor", "python_argv"]

log = structlog.get_logger("runner.fleet.supervisor")

RECYCLE_EXIT_CODE = 75  # a worker that retired itself (job or memory limit)
RESTART_BACKOFF = Backoff(first_s=0.5, max_s=30.0)  # a child that keeps dying
_STABLE_AFTER_S = 30.0  # a child that lived this long has its crash backoff reset

ChildExit = Callable[[str, int, int], Awaitable[None]]  # (instance id, pid, exit code)


@dataclass
class ChildSpec:
    """One supervised slot: `argv(instance_id)` is the command for each process started in it."""

    name: str
    argv: Callable[[str], Sequence[str]]
    restart: bool = True
    # Kill a child whose event loop is blocked (or that is silent) this long; None: exits only.
    hang_after_s: float | None = None


@dataclass
class _Slot:
    spec: ChildSpec
    current: ChildProcess | None = None
    started_at: float = 0.0
    crashes: int = 0
    generation: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set, repr=False)
    # Held while a process is being started in this slot (a zygote's fork is a round trip): an older
    # process's exit is handled after it, so a replacement is always seen starting before its elder leaves.
    spawning: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)


class Supervisor:
    """Keeps its slots filled until stopped; `run()` returns the exit code for the process."""

    def __init__(
        self,
        children: Sequence[ChildSpec],
        *,
        env: dict[str, str],
        grace_s: float,
        on_exit: ChildExit | None = None,
        host: str | None = None,
        zygote: Zygote | None = None,
    ) -> None:
        self._slots = [_Slot(spec) for spec in children]
        self._host = host or socket.gethostname()  # the first part of each child's instance id
        self._env = env
        self._grace_s = grace_s
        self._on_exit = on_exit
        self._zygote = zygote  # forks `python -m runner ...` children from pre-imported memory
        self._stopping = asyncio.Event()
        self._signals = 0
        self._processes: set[ChildProcess] = set()
        self.recycled = 0
        self.restarted = 0
        self.hung = 0
        self._heard: dict[int, float] = {}  # pid -> when its control pipe last spoke
        self._killed_hung: set[int] = set()  # pids killed as hung: their death counts as hung, not crashed
        for slot in self._slots:  # every series starts at 0, so Prometheus's increase() sees the first death
            for reason in RESTART_REASONS:
                WORKER_RESTARTS.labels(slot.spec.name, reason)

    def handle_signal(self, signum: int) -> None:
        """Record the signal; the loop acts. First: graceful stop. Second SIGINT: kill now."""
        self._signals += 1
        log.info("supervisor_signal", signal=signal.Signals(signum).name, count=self._signals)
        if self._signals > 1 and signum == signal.SIGINT:
            self._kill_all()
        self._stopping.set()

    @property
    def alive(self) -> int:
        return sum(1 for p in self._processes if p.returncode is None)

    async def run(self) -> int:
        for slot in self._slots:
            await self._spawn(slot)
        hangs = asyncio.create_task(self._watch_hangs(), name="hang-watch")
        await self._stopping.wait()
        hangs.cancel()
        await self._stop_all()
        return 0

    async def _spawn(self, slot: _Slot) -> None:
        async with slot.spawning:
            await self._start(slot)

    async def _start(self, slot: _Slot) -> None:
        slot.generation += 1
        instance = f"{self._host}:{os.getpid()}:{slot.spec.name}.{slot.generation}"
        read_fd, write_fd = os.pipe()
        argv, env = slot.spec.argv(instance), {**self._env, CONTROL_FD_ENV: str(write_fd)}
        try:
            process: ChildProcess | None = None
            if self._zygote is not None and self._zygote.can_fork(argv):
                process = await self._zygote.spawn(argv, env, write_fd)
            if process is None:
                process = await asyncio.create_subprocess_exec(
                    *argv, env=env, pass_fds=(write_fd,), start_new_session=True, stdin=asyncio.subprocess.DEVNULL
                )
        finally:
            os.close(write_fd)
        slot.current, slot.started_at = process, time.monotonic()
        self._processes.add(process)
        log.info("child_started", child=slot.spec.name, pid=process.pid, instance=instance,
                 forked=not isinstance(process, asyncio.subprocess.Process))  # fmt: skip
        for coro in (self._watch(slot, process, instance), self._listen(slot, process, read_fd)):
            task = asyncio.create_task(coro)
            slot.tasks.add(task)
            task.add_done_callback(slot.tasks.discard)

    async def _listen(self, slot: _Slot, process: ChildProcess, read_fd: int) -> None:
        """Read the child's control pipe: `retiring` means start its replacement now."""
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0)
        )
        try:
            while line := await reader.readline():
                kind, blocked_s, task = parse_line(line)
                self._heard[process.pid] = time.monotonic()
                if kind == "retiring" and slot.current is process and not self._stopping.is_set():
                    log.info("child_retiring", child=slot.spec.name, pid=process.pid)
                    self.recycled += 1
                    await self._spawn(slot)
                elif kind == "blocked" and slot.spec.hang_after_s is not None and blocked_s > slot.spec.hang_after_s:
                    self._kill_hung(slot, process, f"its event loop has been blocked for {blocked_s:.1f}s", task)
        finally:
            transport.close()

    async def _watch_hangs(self) -> None:
        """Kill children that stopped reporting: a process frozen so hard its beat thread cannot speak."""
        while True:
            await asyncio.sleep(BEAT_S)
            now = time.monotonic()
            for slot in self._slots:
                process, limit = slot.current, slot.spec.hang_after_s
                if process is None or process.returncode is not None or limit is None:
                    continue
                heard = self._heard.get(process.pid)
                if heard is not None and now - heard > limit:
                    self._kill_hung(slot, process, f"it has been silent for {now - heard:.1f}s", "-")

    def _kill_hung(self, slot: _Slot, process: ChildProcess, why: str, task: str) -> None:
        """SIGKILL a hung child; its exit then frees its leases at once, like any crash."""
        if process.returncode is not None or self._stopping.is_set():
            return
        self.hung += 1
        self._killed_hung.add(process.pid)
        self._heard.pop(process.pid, None)
        job_id = task.removeprefix("job:") if task.startswith("job:") else None
        log.error("child_hung", child=slot.spec.name, pid=process.pid, reason=why, task=task, job_id=job_id,
                  hang_after_s=slot.spec.hang_after_s)  # fmt: skip
        _signal(process, signal.SIGKILL)

    async def _watch(self, slot: _Slot, process: ChildProcess, instance: str) -> None:
        code = await process.wait()
        async with slot.spawning:  # a replacement being started is started first
            pass
        self._processes.discard(process)
        self._heard.pop(process.pid, None)
        hung = process.pid in self._killed_hung
        self._killed_hung.discard(process.pid)
        if self._on_exit is not None:
            await self._report_exit(instance, process.pid, code)
        if self._stopping.is_set() or slot.current is not process:
            log.info("child_exited", child=slot.spec.name, pid=process.pid, exit_code=code)
            return
        await self._replace(slot, process, code, hung)

    async def _replace(self, slot: _Slot, process: ChildProcess, code: int, hung: bool) -> None:
        lived = time.monotonic() - slot.started_at
        if code == RECYCLE_EXIT_CODE:  # retired without warning us first: replace at once
            delay = 0.0
        else:
            WORKER_RESTARTS.labels(slot.spec.name, "hung" if hung else "crashed").inc()  # at death, not after backoff
            slot.crashes = 0 if lived > _STABLE_AFTER_S else slot.crashes + 1
            delay = RESTART_BACKOFF.delay(slot.crashes - 1) if slot.crashes > 1 else 0.0  # the first: at once
            log.error("child_died", child=slot.spec.name, pid=process.pid, exit_code=code,
                      restart_in_s=delay if slot.spec.restart else None)  # fmt: skip
        if not slot.spec.restart:
            self._stopping.set()
            return
        try:
            await asyncio.wait_for(self._stopping.wait(), delay)
        except TimeoutError:
            self.restarted += 1
            await self._spawn(slot)

    async def _report_exit(self, instance: str, pid: int, code: int) -> None:
        assert self._on_exit is not None
        try:
            await asyncio.wait_for(self._on_exit(instance, pid, code), 10)
        except Exception as exc:  # the leases will expire on their own; say why they were not freed now
            log.warning("child_exit_hook_failed", instance=instance, error=repr(exc))

    async def _stop_all(self) -> None:
        alive = [p for p in self._processes if p.returncode is None]
        log.info("supervisor_stopping", children=len(alive), grace_s=self._grace_s)
        for process in alive:
            _signal(process, signal.SIGTERM)
        if alive:
            _, pending = await asyncio.wait([asyncio.create_task(p.wait()) for p in alive], timeout=self._grace_s + 5)
            if pending:
                log.warning("children_killed_after_grace", count=len(pending))
                self._kill_all()
                await asyncio.wait(pending, timeout=5)
        tasks = [t for slot in self._slots for t in slot.tasks]
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 15)

    def _kill_all(self) -> None:
        for process in self._processes:
            if process.returncode is None:
                _signal(process, signal.SIGKILL)


def _signal(process: ChildProcess, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signum)


def python_argv(*args: str) -> list[str]:
    """argv running `python -m runner ...` with this interpreter."""
    return [sys.executable, "-m", "runner", *args]
