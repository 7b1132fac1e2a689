"""The zygote: a copy of the supervisor, forked before its event loop starts, that has imported what the
children run (the job registry, the worker, the ASGI app, uvicorn) and forks each worker and the API on
the supervisor's request (the prefork model of gunicorn --preload and Celery, as a fork server).

Why: every child would otherwise import the same modules into memory of its own (a Python worker is about
45 MiB, nearly all of it imported code and objects), and spend a third of a second doing it before its
first job. A forked child shares those pages with the zygote, copy-on-write, and is ready as soon as its
connections are open. The start-up heap is frozen (gc.freeze) before forking, so the collector does not
write to every shared object.

    supervisor --request (argv, env, control pipe fd)--> zygote --fork--> middle --fork--> child
               <----------------- pid ------------------         (exits)

The middle process leaves at once, so the child is adopted by the supervisor (a child subreaper: see
runner.fleet.forked), which waits for it and reaps it like any other child. The child waits for that
adoption, starts its own session, closes the zygote's socket, takes stdin from /dev/null, the request's
environment (with the control pipe), and the command line the request names (runner.fleet.proctitle), then
runs `entry(argv[3:])`, the same function `python -m runner ...` runs, and exits with its code. The zygote
leaves when the supervisor closes its socket or dies.

Other inherited file descriptors are left open (an exec'd child had only its control pipe): C libraries own
some and close them again after a fork (libuv's signal pipe: it aborts the process if one is gone), and
Python objects reopen theirs (prometheus-client's files).

Anything that is not `python -m runner ...`, a zygote that does not answer, or a platform without
pidfds and subreapers, gets the exec'd child it had before.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import gc
import importlib
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

import orjson
import structlog

from runner.fleet.control import CONTROL_FD_ENV
from runner.fleet.forked import ForkedProcess, become_subreaper
from runner.fleet.proctitle import set_title

__all__ = ["TITLE", "Entry", "Zygote"]

log = structlog.get_logger("runner.fleet.zygote")

TITLE = "storymimi-zygote"  # its command line: never "runner", which names the fleet's real children
SPAWN_TIMEOUT_S = 10.0  # a zygote silent this long is given up: children are exec'd from then on
_ADOPTION_BOUND_S = 5.0
_MAX_REQUEST = 1 << 20

Entry = Callable[[list[str]], int]  # runner.cli.main: argv after `python -m runner`, to an exit code


class Zygote:
    """The supervisor's handle on its zygote. `start()` before any thread or event loop exists."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self._sock = sock
        self._lock: asyncio.Lock | None = None
        self._alive = True
        self._process: ForkedProcess | None = None  # its exit, watched from the event loop

    @classmethod
    def start(cls, entry: Entry, preload: Sequence[str]) -> Zygote | None:
        """Fork the zygote, which imports `preload` (modules) then serves; None where forking children
        cannot work (no pidfds or subreapers) or threads already run here (a fork would copy their locks)."""
        if threading.active_count() > 1 or not become_subreaper():
            log.info("zygote_not_started", threads=threading.active_count())
            return None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # Frozen on both sides: the supervisor's own full collections would otherwise write to every object
        # it shares with the zygote (and so with every child), copying nearly all of its pages.
        gc.collect()
        gc.freeze()
        _flush()
        pid = os.fork()
        if pid == 0:
            ours.close()
            _zygote_main(theirs, entry, preload)
        theirs.close()
        ours.setblocking(False)
        return cls(pid, ours)

    def watch(self) -> None:
        """From the event loop: notice (and reap) the zygote's death at once; children are exec'd after."""
        self._process = ForkedProcess(self.pid)

        def exited(done: asyncio.Task[int]) -> None:
            if self._alive:
                self._give_up(f"it exited with code {done.result()}")

        asyncio.get_running_loop().create_task(self._process.wait()).add_done_callback(exited)

    def can_fork(self, argv: Sequence[str]) -> bool:
        """Whether `argv` is a `python -m runner ...` of this interpreter, which the zygote can start."""
        return self._alive and list(argv[:3]) == [sys.executable, "-m", "runner"]

    async def spawn(self, argv: Sequence[str], env: Mapping[str, str], control_fd: int) -> ForkedProcess | None:
        """Fork a child that runs `argv` with `env`, its control pipe's write end being `control_fd`
        (passed over the socket; the caller still closes its own). None (logged) if the zygote failed:
        then exec the child instead."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        request = orjson.dumps({"argv": list(argv), "env": dict(env), "parent": os.getpid()})
        async with self._lock:
            if not self._alive:
                return None
            try:
                async with asyncio.timeout(SPAWN_TIMEOUT_S):
                    socket.send_fds(self._sock, [request], [control_fd])
                    reply = await asyncio.get_running_loop().sock_recv(self._sock, 4096)
            except (OSError, TimeoutError) as exc:
                self._give_up(repr(exc))
                return None
            if not reply:
                self._give_up("its socket closed")
                return None
            answer: dict[str, Any] = orjson.loads(reply)
            if "pid" not in answer:
                log.error("zygote_fork_failed", argv=" ".join(argv), error=answer.get("error"))
                return None
            pid = int(answer["pid"])
            try:
                return ForkedProcess(pid)
            except OSError as exc:  # cannot watch it (no pidfd): a child nobody would see die is not kept
                log.error("forked_child_not_watchable", pid=pid, error=repr(exc))
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)  # noqa: ASYNC222 - a SIGKILLed child is reaped at once
                return None

    def _give_up(self, why: str) -> None:
        """The zygote is gone or stuck: kill it, exec children from now on."""
        self._alive = False
        log.error("zygote_lost", pid=self.pid, reason=why)
        self.close(grace_s=0)

    def close(self, grace_s: float = 5.0) -> None:
        """Tell the zygote to leave (its socket closes) and reap it; SIGKILL after `grace_s`. Children it
        forked are the supervisor's own and are not touched."""
        self._alive = False
        self._sock.close()
        if self._process is not None and self._process.returncode is not None:
            return  # reaped already: its pid may be another process's by now
        deadline = time.monotonic() + grace_s
        while True:
            try:
                pid, _ = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return
            if pid:
                return
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                return
            time.sleep(0.01)


def _zygote_main(sock: socket.socket, entry: Entry, preload: Sequence[str]) -> NoReturn:
    code = 1
    try:
        os.setsid()  # a terminal's Ctrl-C reaches only the supervisor
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        set_title([TITLE])
        started = time.monotonic()
        for name in preload:
            try:
                importlib.import_module(name)
            except Exception as exc:  # the child imports it again and fails there, visibly, with backoff
                log.warning("zygote_preload_failed", module=name, error=repr(exc))
        _warm_up()
        gc.collect()
        gc.freeze()
        log.info("zygote_ready", pid=os.getpid(), modules=len(sys.modules),
                 took_ms=round((time.monotonic() - started) * 1000, 1))  # fmt: skip
        _serve(sock, entry)
        code = 0
    except BaseException:  # whatever it is, this copy of the supervisor must never go back up its stack
        traceback.print_exc()
    finally:
        _flush()
        os._exit(code)


def _warm_up() -> None:
    """Do once here what every child does first and keeps: OpenSSL's one-time set-up, made by the first
    TLS context (each child's HTTP client makes one). Then it is in shared pages, not in each child's."""
    try:
        import httpx

        httpx.create_ssl_context()
    except Exception as exc:  # only memory is at stake
        log.warning("zygote_warm_up_failed", error=repr(exc))


def _serve(sock: socket.socket, entry: Entry) -> None:
    while True:
        data, fds, _, _ = socket.recv_fds(sock, _MAX_REQUEST, 1)
        if not data:
            return  # the supervisor closed its end or died
        reply: dict[str, int | str]
        try:
            reply = {"pid": _fork(orjson.loads(data), fds[0] if fds else None, sock, entry)}
        except Exception as exc:
            reply = {"error": repr(exc)}
        finally:
            for fd in fds:
                os.close(fd)
        sock.send(orjson.dumps(reply))


def _fork(request: dict[str, Any], control_fd: int | None, sock: socket.socket, entry: Entry) -> int:
    """Fork the child through a middle process that says the child's pid and leaves at once, so the
    supervisor adopts the child; that pid."""
    read_end, write_end = os.pipe()
    middle = os.fork()
    if middle == 0:
        try:
            os.close(read_end)
            child = os.fork()
            if child == 0:
                os.close(write_end)
                _child_main(request, control_fd, sock, entry)
            os.write(write_end, str(child).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        said = os.read(read_end, 32)
    finally:
        os.close(read_end)
        os.waitpid(middle, 0)  # once it is gone, the child is the supervisor's
    if not said:
        raise RuntimeError("the middle process could not fork the child")
    return int(said)


def _child_main(request: dict[str, Any], control_fd: int | None, sock: socket.socket, entry: Entry) -> NoReturn:
    """In the forked child: become the process the request names, run it, exit with its code."""
    code = 1
    try:
        _await_adoption(int(request["parent"]))
        os.setsid()
        sock.close()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        env = dict(request["env"])
        if control_fd is not None:
            env[CONTROL_FD_ENV] = str(control_fd)
        os.environ.clear()  # before the title: no environment string is left in the memory it may take
        os.environ.update(env)
        argv: list[str] = request["argv"]
        set_title(argv)
        sys.argv = [sys.argv[0], *argv[3:]]
        atexit._clear()  # the supervisor's exit hooks are not this process's
        code = entry(argv[3:])
        _exit_like_python()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:  # a forked child never returns into the zygote's stack
        traceback.print_exc()
    finally:
        _flush()
        os._exit(code)


def _await_adoption(parent: int) -> None:
    """Wait for the middle process to leave, so our parent is the supervisor (the heartbeat notes it)."""
    deadline = time.monotonic() + _ADOPTION_BOUND_S
    while os.getppid() != parent:
        if os.getppid() == 1 or time.monotonic() > deadline:
            raise SystemExit(f"not adopted by the supervisor (pid {parent}); parent is {os.getppid()}")
        time.sleep(0.0002)


def _exit_like_python() -> None:
    """What the interpreter does at exit before it goes: join non-daemon threads, run the exit hooks."""
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()
    atexit._run_exitfuncs()


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
