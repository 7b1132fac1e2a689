"""The supervisor's side of a child forked by its zygote (runner.fleet.zygote): a handle that looks like
asyncio's `Process` (pid, returncode, wait()), so the supervisor watches, signals and replaces it as it
does a child it exec'd.

The supervisor is a child subreaper (prctl PR_SET_CHILD_SUBREAPER): the zygote forks each child through a
middle process that leaves at once, so the child is adopted by the supervisor, not the zygote. It is then
the supervisor's own child: `psutil.Process(supervisor).children()` lists it, it reads the supervisor's pid
as its parent (and notices when that one dies), and the supervisor alone reaps it. Its exit is waited for
on a pidfd in the event loop, then reaped with waitpid(pid) for that pid only, as libuv does its own
children, so neither steals the other's exit status.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
from typing import Protocol

__all__ = ["ChildProcess", "ForkedProcess", "become_subreaper", "can_adopt"]

_PR_SET_CHILD_SUBREAPER = 36


class ChildProcess(Protocol):
    """What the supervisor needs of a child process: asyncio's `Process`, or a `ForkedProcess`."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...


def can_adopt() -> bool:
    """This platform can adopt forked children and wait for them on a pidfd (Linux 5.3 and later)."""
    return hasattr(os, "pidfd_open") and ctypes.util.find_library("c") is not None


def become_subreaper() -> bool:
    """Make this process the one that adopts its orphaned descendants; False if the kernel refused."""
    if not can_adopt():
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


class ForkedProcess:
    """A child of this process that it did not exec (adopted from the zygote). Create it in the event loop,
    as soon as the child's pid is known: until it is reaped here the pid cannot be reused."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._returncode: int | None = None
        self._loop = asyncio.get_running_loop()
        self._exited = self._loop.create_future()
        self._pidfd: int | None = os.pidfd_open(pid)
        self._loop.add_reader(self._pidfd, self._reap)

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def returncode(self) -> int | None:
        """The exit code, or minus the signal that killed it (as asyncio's); None while it runs."""
        return self._returncode

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def _reap(self) -> None:
        try:
            pid, status = os.waitpid(self._pid, os.WNOHANG)
        except ChildProcessError:  # not our child after all (it was never adopted): its code is lost
            pid, status = self._pid, 255 << 8
        if pid == 0:  # the pidfd woke before the exit was reapable: wait for the next wake
            return
        assert self._pidfd is not None
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = None
        self._returncode = os.waitstatus_to_exitcode(status)
        self._exited.set_result(self._returncode)
