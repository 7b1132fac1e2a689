"""A worker as a real process for a test: `python -m runner worker --registry <module:attribute>`, given the
test's settings through its environment, its JSON log in a file, stopped with SIGTERM as a supervisor would.

It imports the registry by path, so the registry must live at module level in a module the test process can
import (the test's `sys.path` is passed on). Its working directory is its log folder: no `.env` is read.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from enum import Enum
from pathlib import Path

import orjson
from pydantic import SecretStr

from runner.broker.connection import RedisClient
from runner.ops.workers import list_workers
from runner.registry import Registry
from runner.settings import Settings

__all__ = ["WorkerProcess", "find_registry_path", "settings_env"]

_TAIL_CHARS = 3000


def settings_env(settings: Settings, base: dict[str, str]) -> dict[str, str]:
    """`base` with every field of `settings` as its environment variable (a field that is None removed), so a
    process reading its settings from the environment gets the same ones."""
    prefix = str(settings.model_config.get("env_prefix") or "")
    env = dict(base)
    dumped = settings.model_dump(mode="json")
    for name in type(settings).model_fields:
        key, value = f"{prefix}{name}".upper(), getattr(settings, name)
        if value is None:
            env.pop(key, None)
        elif isinstance(value, SecretStr):
            env[key] = value.get_secret_value()
        elif isinstance(value, bool):
            env[key] = "true" if value else "false"
        elif isinstance(value, str | int | float | Path | Enum):
            env[key] = str(value.value if isinstance(value, Enum) else value)
        else:  # lists, dicts, models: JSON, as pydantic-settings reads complex fields
            env[key] = orjson.dumps(dumped[name]).decode()
    return env


def find_registry_path(registry: Registry) -> str | None:
    """`module:attribute` of a module-level name bound to `registry`, looked for in its jobs' modules."""
    for module_name in dict.fromkeys(spec.coroutine.__module__ for spec in registry.specs):
        module = sys.modules.get(module_name)
        for attribute, value in vars(module).items() if module is not None else ():
            if value is registry:
                return f"{module_name}:{attribute}"
    return None


class WorkerProcess:
    """One `python -m runner worker` process serving the test's queue. Start it with `await start()`."""

    def __init__(self, settings: Settings, registry_path: str, log_path: Path) -> None:
        self.settings = settings
        self.registry_path = registry_path
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None
        self.killed = False  # by kill(): its exit code is no failure

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("this worker process was not started: await start() first")
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """None while it runs (or before it started), else its exit code (negative: the signal that ended it)."""
        return self.process.returncode if self.process is not None else None

    async def start(self, redis: RedisClient, within_s: float = 30.0) -> WorkerProcess:
        """Spawn it and wait until it reports itself in the queue's worker list; raise with its log if it
        exits first or does not report within `within_s` seconds."""
        env = settings_env(self.settings, {**os.environ, "PYTHONPATH": _python_path(), "LOG_FORMAT": "json"})
        env.pop("RUNNER_CONTROL_FD", None)  # no supervisor: it watches its parent, this test process
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "runner", "worker", "--registry", self.registry_path,
                cwd=self.log_path.parent, env=env, stdout=log, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while not any(w.pid == self.pid for w in await list_workers(redis, self.settings.queue_name)):
            if self.returncode is not None:
                raise RuntimeError(f"worker process {self.pid} exited with {self.returncode} before it started; "
                                   f"its log ({self.log_path}) ends:\n{self.log_tail()}")  # fmt: skip
            if loop.time() >= deadline:
                await self.stop()
                raise TimeoutError(f"worker process did not report itself within {within_s:g}s; its log "
                                   f"({self.log_path}) ends:\n{self.log_tail()}")  # fmt: skip
            await asyncio.sleep(0.05)
        return self

    async def stop(self, wait_s: float | None = None) -> int | None:
        """SIGTERM (finish running jobs within SHUTDOWN_GRACE_S, give the rest back), then SIGKILL if it is still
        running after `wait_s` (default: the grace and 10 s); its exit code."""
        return await self._end(signal.SIGTERM, self.settings.shutdown_grace_s + 10 if wait_s is None else wait_s)

    async def kill(self) -> int | None:
        """SIGKILL, like a crash: its jobs' leases lapse after LEASE_TTL_S and another worker runs them again."""
        self.killed = True
        return await self._end(signal.SIGKILL, 10)

    async def _end(self, signum: signal.Signals, wait_s: float) -> int | None:
        if self.process is None:
            return None
        if self.process.returncode is None:
            self.process.send_signal(signum)
            try:
                await asyncio.wait_for(self.process.wait(), wait_s)
            except TimeoutError:
                self.process.kill()
                await asyncio.wait_for(self.process.wait(), 10)
        return self.process.returncode

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-_TAIL_CHARS:]
        except OSError as exc:
            return f"(no log: {exc})"


def _python_path() -> str:
    """The test process's own import folders (its rootdir, `pythonpath` ini entries, PYTHONPATH), not the
    interpreter's, which the child finds by itself."""
    own = (Path(p or os.curdir).resolve() for p in sys.path)
    interpreter = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    return os.pathsep.join(dict.fromkeys(str(p) for p in own if not any(p.is_relative_to(i) for i in interpreter)))
