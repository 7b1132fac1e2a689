"""`python -m runner run`: embedded servers if needed, then the API and the worker processes under one
supervisor, all stopped cleanly by Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import structlog

from runner.embedded import EmbeddedPostgres, EmbeddedServer, EmbeddedValkey
from runner.settings import Settings
from runner.supervisor import ChildSpec, Supervisor, python_argv

__all__ = ["LaunchPlan", "embedded_servers", "launch"]

log = structlog.get_logger("runner.launcher")


@dataclass(frozen=True)
class LaunchPlan:
    app: str | None  # "module:factory" of the ASGI app, or None for no API
    jobs: str | None  # "module:registry" of the jobs, or None for no workers


@contextmanager
def embedded_servers(settings: Settings) -> Iterator[dict[str, str]]:
    """Start embedded Redis / Postgres for the URLs that are unset; yield the env to give children.

    A server already answering on its embedded port (started by another `make api` / `make worker`
    on this checkout) is used as it is and left running."""
    env: dict[str, str] = {}
    with ExitStack() as stack:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        wanted: list[tuple[str, str | None, EmbeddedServer]] = [
            ("REDIS_URL", settings.redis_url, EmbeddedValkey(settings.data_dir, settings.embedded_redis_port)),
            ("DATABASE_URL", settings.database_url,
             EmbeddedPostgres(settings.data_dir, settings.embedded_postgres_port)),
        ]  # fmt: skip
        for var, configured, server in wanted:
            if configured:
                continue
            if _answers(server.port):
                log.info("embedded_server_reused", server=server.name, url=server.url)
            else:
                server.start()
                stack.callback(_stop, server)
                log.info("embedded_server_started", server=server.name, url=server.url, pid=server.pid)
            env[var] = server.url
        yield env


def launch(settings: Settings, plan: LaunchPlan) -> int:
    """Run the plan in the foreground until a signal stops it; return the process exit code."""
    import uvloop

    with embedded_servers(settings) as server_env:
        env = {**os.environ, **server_env}
        children = []
        if plan.app:
            children.append(ChildSpec("api", python_argv("api", "--app", plan.app)))
        if plan.jobs:
            children += [ChildSpec(f"worker-{i}", python_argv("worker", "--jobs", plan.jobs))
                         for i in range(1, settings.workers + 1)]  # fmt: skip
        supervisor = Supervisor(children, env=env, grace_s=settings.shutdown_grace_s)
        if plan.app:
            log.info(
                "api_url",
                url=f"http://{settings.host}:{settings.port}",
                docs=f"http://{settings.host}:{settings.port}/docs",
            )
        return uvloop.run(_supervise(supervisor))


async def _supervise(supervisor: Supervisor) -> int:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, supervisor.handle_signal, signum)
    return await supervisor.run()


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _stop(server: EmbeddedServer) -> None:
    server.stop()
    log.info("embedded_server_stopped", server=server.name)
