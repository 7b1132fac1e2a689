"""The operations commands: read and act through runner.ops, print with rich (or JSON with --json)."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
import click
import orjson
from redis.asyncio import Redis

from runner.settings import Settings
from runner.status import JobStatus

__all__ = ["doctor", "jobs", "status", "workers"]

T = TypeVar("T")
as_json = click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")


@dataclasses.dataclass
class Servers:
    redis: Redis
    db: asyncpg.Pool | None
    db_error: str | None


@asynccontextmanager
async def connected(settings: Settings) -> AsyncIterator[Servers]:
    """Redis and Postgres at their URLs (or this checkout's embedded servers); Postgres may be down."""
    from runner.resources import connect_redis

    settings = _with_embedded_urls(settings)
    redis = await connect_redis(settings)
    db: asyncpg.Pool | None = None
    error = None
    try:
        db = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        error = f"down: {type(exc).__name__}: {exc}"
    try:
        yield Servers(redis, db, error)
    finally:
        await redis.aclose()
        if db is not None:
            await db.close()


def _with_embedded_urls(settings: Settings) -> Settings:
    if settings.redis_url and settings.database_url:
        return settings
    from runner.devservers import EmbeddedPostgres, EmbeddedValkey
    from runner.devservers.ownership import read_record

    found = {}
    wanted = [("redis_url", EmbeddedValkey(settings.data_dir, settings.embedded_redis_port)),
              ("database_url", EmbeddedPostgres(settings.data_dir, settings.embedded_postgres_port))]  # fmt: skip
    for field, server in wanted:
        if getattr(settings, field):
            continue
        record = read_record(server)
        if record is None:
            raise click.ClickException(
                f"{field.upper()} is unset and no embedded {server.name} of {settings.data_dir} is running; "
                "start one with `make run`, or set the URL"
            )
        found[field] = record.url
    return settings.model_copy(update=found)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """The command's one event loop (uvloop, as every entry point of the runner)."""
    import uvloop

    result: T = uvloop.run(coro)
    return result


def _db(servers: Servers) -> asyncpg.Pool:
    if servers.db is None:
        raise click.ClickException(f"postgres is {servers.db_error}")
    return servers.db


def _emit(value: Any, as_json: bool, table: Callable[[], None]) -> None:
    if as_json:
        sys.stdout.write(orjson.dumps(value, default=_plain, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        table()


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    Console().print(table)


# --- status --------------------------------------------------------------------------------------------


@click.command()
@as_json
@click.pass_obj
def status(settings: Settings, as_json: bool) -> None:
    """The queue at a glance; exit 1 if a server is down, or due jobs wait with no live worker."""
    from runner.ops.overview import queue_overview

    async def read() -> tuple[Any, str | None]:
        async with connected(settings) as servers:
            if servers.db is None:
                return None, f"postgres is {servers.db_error}"
            try:
                return await queue_overview(servers.redis, servers.db, settings.queue_name), None
            except (OSError, asyncpg.PostgresError) as exc:
                return None, f"{type(exc).__name__}: {exc}"
            except Exception as exc:  # a redis-py error: say what it is, not a traceback
                return None, f"redis: {type(exc).__name__}: {exc}"

    overview, error = _run(read())
    problem = error or (
        f"{overview.due} due jobs and no live worker" if overview.due and not overview.workers else None
    )
    value = {"healthy": problem is None, "problem": problem, "queue": overview}
    _emit(value, as_json, lambda: _print_status(overview, problem))
    raise SystemExit(0 if problem is None else 1)


def _print_status(overview: Any, problem: str | None) -> None:
    if overview is not None:
        rows = [[k.replace("_", " "), v] for k, v in dataclasses.asdict(overview).items()]
        _table(f"queue {overview.queue}", ["", "now"], rows)
    click.echo(f"unhealthy: {problem}" if problem else "healthy")


# --- jobs ----------------------------------------------------------------------------------------------


@click.group()
def jobs() -> None:
    """Find, show and cancel jobs (from the status rows in Postgres)."""


@jobs.command("ls")
@click.option("--status", "statuses", multiple=True, type=click.Choice([s.value for s in JobStatus]))
@click.option("--name", default=None, help="job name, e.g. story_task.generate")
@click.option("--field", default=None, help="an argument's value, e.g. story_id=<uuid>")
@click.option("--since", type=click.DateTime(), default=None, help="enqueued at or after (UTC)")
@click.option("--until", type=click.DateTime(), default=None, help="enqueued before (UTC)")
@click.option("--error", "error_contains", default=None, help="text in the error")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--cursor", default=None, help="the next page's cursor, as a previous page printed it")
@as_json
@click.pass_obj
def jobs_ls(settings: Settings, statuses: tuple[str, ...], name: str | None, field: str | None,
            since: datetime | None, until: datetime | None, error_contains: str | None, limit: int,
            cursor: str | None, as_json: bool) -> None:  # fmt: skip
    """Jobs of the queue, newest first, every filter given combined."""
    from runner.ops.jobs import CursorError, JobFilter, find_jobs

    if field is not None and "=" not in field:
        raise click.BadParameter("expected name=value", param_hint="--field")
    where = JobFilter(
        queue=settings.queue_name, statuses=tuple(JobStatus(s) for s in statuses), name=name,
        field=tuple(field.split("=", 1)) if field else None,  # type: ignore[arg-type]
        since=_utc(since), until=_utc(until), error_contains=error_contains,
    )  # fmt: skip

    async def read() -> Any:
        async with connected(settings) as servers:
            return await find_jobs(_db(servers), where, limit=limit, cursor=cursor)

    try:
        page = _run(read())
    except CursorError as exc:
        raise click.BadParameter(str(exc), param_hint="--cursor") from None

    def table() -> None:
        rows = [[j.job_id, j.name, j.status.value, j.attempts, j.enqueued_at.isoformat(timespec="seconds"),
                 (j.error or "")[:60]] for j in page.jobs]  # fmt: skip
        _table(f"jobs of {settings.queue_name}", ["id", "name", "status", "tries", "enqueued", "error"], rows)
        if page.next_cursor:
            click.echo(f"next page: --cursor {page.next_cursor}")

    _emit({"jobs": page.jobs, "next_cursor": page.next_cursor}, as_json, table)


@jobs.command("show")
@click.argument("job_id")
@as_json
@click.pass_obj
def jobs_show(settings: Settings, job_id: str, as_json: bool) -> None:
    """One job's row: arguments, result, error, tries, times."""
    from runner.ops.jobs import get_job

    async def read() -> Any:
        async with connected(settings) as servers:
            return await get_job(_db(servers), job_id)

    row = _run(read())
    if row is None:
        raise click.ClickException(f"no job {job_id!r}")
    _emit(row, as_json, lambda: _table(f"job {job_id}", ["", ""], [[k, v] for k, v in dataclasses.asdict(row).items()]))


@jobs.command("cancel")
@click.argument("job_id")
@as_json
@click.pass_obj
def jobs_cancel(settings: Settings, job_id: str, as_json: bool) -> None:
    """Ask the workers to stop a pending or running job (it becomes `cancelled`)."""
    from runner.ops.jobs import cancel_job
    from runner.status import TERMINAL

    async def act() -> Any:
        async with connected(settings) as servers:
            return await cancel_job(servers.redis, _db(servers), job_id)

    row = _run(act())
    if row is None:
        raise click.ClickException(f"no job {job_id!r}")
    if row.status in TERMINAL:
        raise click.ClickException(f"job {job_id!r} already ended as {row.status.value}; nothing to cancel")
    _emit({"job_id": job_id, "status": row.status.value, "cancel_requested": True}, as_json,
          lambda: click.echo(f"cancel requested for {job_id} ({row.status.value})"))  # fmt: skip


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

    found = _run(read())
    rows = [[w.worker_id, w.host, w.pid, w.state, f"{w.running}/{w.concurrency}", w.jobs_done, w.rss_mb,
             w.loop_lag_ms, w.heartbeat_age_s] for w in found]  # fmt: skip
    _emit(found, as_json, lambda: _table(f"workers of {settings.queue_name}",
          ["id", "host", "pid", "state", "running", "done", "RSS MB", "lag ms", "seen s ago"], rows))  # fmt: skip


# --- doctor --------------------------------------------------------------------------------------------


@click.command()
@click.option("--registry", default="jobs:registry", show_default=True, help="whose migrations must be applied")
@as_json
@click.pass_obj
def doctor(settings: Settings, registry: str, as_json: bool) -> None:
    """Redis and Postgres reachable, schema current, no stuck rows, clocks agree; exit 1 if not."""
    from runner.cli.processes import load_registry
    from runner.ops.doctor import Check, run_checks

    migrations = list(load_registry(registry).migrations)

    async def read() -> list[Check]:
        async with connected(settings) as servers:
            if servers.db is None:
                redis_ok = await _ping(servers.redis)
                return [Check("redis", redis_ok == "ok", redis_ok), Check("postgres", False, servers.db_error or "")]
            stale_s = settings.sweep_stale_after_s
            return await run_checks(servers.redis, servers.db, queue=settings.queue_name,
                                    migrations=["runner", *migrations], stuck_after_s=stale_s)  # fmt: skip

    checks = _run(read())
    healthy = all(c.ok for c in checks)
    rows = [[c.name, "yes" if c.ok else "NO", c.detail] for c in checks]
    _emit({"healthy": healthy, "checks": checks}, as_json, lambda: _table("doctor", ["check", "ok", "detail"], rows))
    raise SystemExit(0 if healthy else 1)


async def _ping(redis: Redis) -> str:
    try:
        await asyncio.wait_for(redis.ping(), 2)
    except Exception as exc:
        return f"down: {type(exc).__name__}: {exc}"
    return "ok"


def _utc(value: datetime | None) -> datetime | None:
    from datetime import UTC

    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value
