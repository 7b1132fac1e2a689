"""`status`, `workers ls|drain`, `watch` and `doctor`: the queue and the fleet through runner.ops."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
import time
from typing import Any

import asyncpg
import click
import orjson

from runner.cli.common import as_json, connected, emit, ping, rich_table, run, table
from runner.settings import Settings

__all__ = ["doctor", "status", "watch", "workers"]


# --- status --------------------------------------------------------------------------------------------


@click.command()
@as_json
@click.pass_obj
def status(settings: Settings, as_json: bool) -> None:
    """The queues at a glance (each of QUEUES, else QUEUE_NAME); exit 1 if a server is down, or due jobs wait
    with no live worker."""
    from runner.ops.overview import queue_overview

    async def read() -> tuple[list[Any], str | None]:
        async with connected(settings) as servers:
            if servers.db is None:
                return [], f"postgres is {servers.db_error}"
            try:
                return [await queue_overview(servers.redis, servers.db, q) for q in settings.queue_names], None
            except (OSError, asyncpg.PostgresError) as exc:
                return [], f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # a redis-py error: say what it is, not a traceback
                return [], f"redis: {type(exc).__name__}: {exc}"

    overviews, error = run(read())
    stalled = [f"{o.queue}: {o.due} due jobs and no live worker" for o in overviews if o.due and not o.workers]
    problem = error or ("; ".join(stalled) if stalled else None)
    value = {"healthy": problem is None, "problem": problem, "queue": overviews[0] if overviews else None,
             "queues": overviews}  # fmt: skip
    emit(value, as_json, lambda: _print_status(overviews, problem))
    raise SystemExit(0 if problem is None else 1)


def _print_status(overviews: list[Any], problem: str | None) -> None:
    for overview in overviews:
        rows = [[k.replace("_", " "), v] for k, v in dataclasses.asdict(overview).items()]
        table(f"queue {overview.queue}", ["", "now"], rows)
    click.echo(f"unhealthy: {problem}" if problem else "healthy")


# --- workers -------------------------------------------------------------------------------------------


@click.group()
def workers() -> None:
    """The live workers (each reports itself every few seconds)."""


@workers.command("ls")
@as_json
@click.pass_obj
def workers_ls(settings: Settings, as_json: bool) -> None:
    """Each live worker: host, pid, state, jobs running and done, memory, event-loop lag."""
    from runner.ops.workers import list_workers

    async def read() -> Any:
        async with connected(settings) as servers:
            return await list_workers(servers.redis, settings.queue_name)

    found = run(read())
    emit(found, as_json, lambda: table(f"workers of {settings.queue_name}", WORKER_COLUMNS, _worker_rows(found)))


WORKER_COLUMNS = ["id", "host", "pid", "state", "running", "done", "RSS MB", "lag ms", "seen s ago", "queues"]


def _worker_rows(found: list[Any]) -> list[list[Any]]:
    return [[w.worker_id, w.host, w.pid, w.state, f"{w.running}/{w.concurrency}", w.jobs_done, w.rss_mb,
             w.loop_lag_ms, w.heartbeat_age_s, ",".join(w.queues)] for w in found]  # fmt: skip


@workers.command("drain")
@click.argument("worker_id")
@as_json
@click.pass_obj
def workers_drain(settings: Settings, worker_id: str, as_json: bool) -> None:
    """Ask a worker to stop taking jobs, finish the ones it runs and exit; its supervisor starts a fresh one."""
    from runner.ops.actions import drain_worker

    async def act() -> bool:
        async with connected(settings) as servers:
            return await drain_worker(servers.redis, settings.queue_name, worker_id)

    if not run(act()):
        raise click.ClickException(f"no live worker {worker_id!r}; `workers ls` lists them")
    emit({"worker_id": worker_id, "drain_requested": True}, as_json,
         lambda: click.echo(f"drain requested for {worker_id}"))  # fmt: skip


# --- doctor --------------------------------------------------------------------------------------------


@click.command()
@click.option("--registry", default="jobs:registry", show_default=True, help="whose migrations must be applied")
@as_json
@click.pass_obj
def doctor(settings: Settings, registry: str, as_json: bool) -> None:
    """Redis and Postgres reachable, schema current, no stuck rows, clocks agree, this checkout's embedded
    servers (when the URLs are unset) running; exit 1 if not."""
    from runner.cli.processes import load_registry
    from runner.ops.doctor import Check, run_checks

    migrations = list(load_registry(registry).migrations)
    embedded = embedded_servers_check(settings)

    async def read() -> list[Check]:
        if not embedded.ok:  # nothing to connect to
            return []
        async with connected(settings) as servers:
            if servers.db is None:
                redis_ok = await ping(servers.redis)
                return [Check("redis", redis_ok == "ok", redis_ok), Check("postgres", False, servers.db_error or "")]
            stale_s = settings.sweep_stale_after_s
            return await run_checks(servers.redis, servers.db, queues=settings.queue_names,
                                    migrations=["runner", *migrations], stuck_after_s=stale_s)  # fmt: skip

    checks = [*run(read()), embedded]
    healthy = all(c.ok for c in checks)
    rows = [[c.name, "yes" if c.ok else "NO", c.detail] for c in checks]
    emit({"healthy": healthy, "checks": checks}, as_json, lambda: table("doctor", ["check", "ok", "detail"], rows))
    raise SystemExit(0 if healthy else 1)


def embedded_servers_check(settings: Settings) -> Any:
    """For each unset URL, this checkout's embedded server: recorded and its process alive."""
    from runner.ops.doctor import Check

    if settings.redis_configured and settings.database_url:
        return Check("embedded servers", True, "not used: REDIS_URL and DATABASE_URL are set")
    import psutil

    from runner.devservers import EmbeddedPostgres, EmbeddedServer, EmbeddedValkey
    from runner.devservers.ownership import read_record

    found, problems = [], []
    wanted: list[EmbeddedServer] = []
    if not settings.redis_configured:
        wanted.append(EmbeddedValkey(settings.data_dir, settings.embedded_redis_port))
    if not settings.database_url:
        wanted.append(EmbeddedPostgres(settings.data_dir, settings.embedded_postgres_port))
    for server in wanted:
        record = read_record(server)
        if record is None:
            problems.append(f"no {server.name} of {settings.data_dir} is running: start one with `make run`")
        elif not psutil.pid_exists(record.pid):
            problems.append(f"{server.name} recorded as pid {record.pid} on :{record.port}, which is gone: `make run`")
        else:
            found.append(f"{server.name} pid {record.pid} on :{record.port}")
    return Check("embedded servers", not problems, "; ".join(problems or found))


# --- watch ---------------------------------------------------------------------------------------------


@click.command()
@click.option("--interval", type=click.FloatRange(0.1, 3600), default=1.0, show_default=True, help="seconds")
@click.option("--count", type=click.IntRange(0), default=0, help="stop after this many updates (0: until Ctrl-C)")
@as_json
@click.pass_obj
def watch(settings: Settings, interval: float, count: int, as_json: bool) -> None:
    """A live view of the queue and its workers (with --json: one JSON line per update)."""
    from rich.console import Group
    from rich.live import Live

    from runner.ops.overview import queue_overview
    from runner.ops.workers import list_workers

    async def loop(show: Any) -> None:
        async with connected(settings) as servers:
            if servers.db is None:
                raise click.ClickException(f"postgres is {servers.db_error}")
            done = 0
            while count == 0 or done < count:
                started = time.monotonic()
                overview = await queue_overview(servers.redis, servers.db, settings.queue_name)
                found = await list_workers(servers.redis, settings.queue_name)
                show(overview, found)
                done += 1
                if count == 0 or done < count:
                    await asyncio.sleep(max(interval - (time.monotonic() - started), 0))

    if as_json:

        def line(overview: Any, found: list[Any]) -> None:
            value = {"at": time.time(), "queue": dataclasses.asdict(overview),
                     "workers": [dataclasses.asdict(w) for w in found]}  # fmt: skip
            sys.stdout.write(orjson.dumps(value).decode() + "\n")
            sys.stdout.flush()

        run(loop(line))
        return

    with Live(auto_refresh=False) as live:

        def render(overview: Any, found: list[Any]) -> None:
            numbers = [[k.replace("_", " "), v] for k, v in dataclasses.asdict(overview).items()]
            live.update(Group(rich_table(f"queue {overview.queue}", ["", "now"], numbers),
                              rich_table("workers", WORKER_COLUMNS, _worker_rows(found))), refresh=True)  # fmt: skip

        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends the view, not with a traceback
            run(loop(render))
