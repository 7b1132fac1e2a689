"""A forked process's command line, as `ps`, psutil and /proc/<pid>/cmdline show it (Linux).

A worker forked from the zygote (runner.fleet.zygote) has not run `exec`, so the kernel still shows the
command line it was forked from. `set_title(args)` writes the command the process stands for over that
memory (between the `arg_start` and `arg_end` of /proc/self/stat), as PostgreSQL, nginx and setproctitle do:
its arguments NUL-separated when they fit there, else one space-separated line that also takes the
environment strings' memory (Linux then shows that line; psutil splits it at the spaces). The environment
memory is only taken once no `environ` entry points into it any more: call it after the environment is
replaced (os.environ cleared and refilled). Operators and runner.fleet.predecessors find a worker (and its
`--worker-id`) by this command line.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Sequence

import structlog

__all__ = ["set_title"]

log = structlog.get_logger("runner.fleet.proctitle")


def _areas() -> tuple[int, int, int, int]:
    """(arg_start, arg_end, env_start, env_end) of this process."""
    with open("/proc/self/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    # fields[0] is field 3 of proc(5) (the state): fields 48-51 are arg_start, arg_end, env_start, env_end
    start, arg_end, env_start, env_end = (int(f) for f in fields[45:49])
    return start, arg_end, env_start, env_end


def _environ_points_into(start: int, end: int) -> bool:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    environ = ctypes.POINTER(ctypes.c_void_p).in_dll(libc, "environ")
    i = 0
    while environ and (address := environ[i]):
        if start <= address < end:
            return True
        i += 1
    return False


def set_title(args: Sequence[str]) -> bool:
    """Show `args` as this process's command line; False (logged) if it had to be cut short."""
    start, arg_end, env_start, env_end = _areas()
    separated = b"\0".join(a.encode() for a in args) + b"\0"
    if len(separated) <= arg_end - start:
        ctypes.memmove(start, separated.ljust(arg_end - start, b"\0"), arg_end - start)
        return True
    line = " ".join(args).encode()
    # The environment's memory too, unless it is still in use: then only the arguments' own.
    end = env_end if env_start == arg_end and not _environ_points_into(env_start, env_end) else arg_end
    size = end - start
    fits = len(line) < size
    line = line[: size - 1]
    if end == arg_end:  # one line inside the arguments' memory: keep it NUL-separated so Linux shows it all
        line = line.replace(b" ", b"\0")
    ctypes.memmove(start, line.ljust(size, b"\0"), size)
    if not fits:
        log.warning("process_title_cut", wanted=" ".join(args), room=size)
    return fits
