"""`jobs ls|show|retry|cancel` and `queue purge`: find and act on jobs through runner.ops."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import click

from runner.cli.common import as_json, confirmed_count, connected, db_of, emit, run, table, utc
from runner.settings import Settings
from runner.status import TERMINAL, JobStatus

__all__ = ["jobs", "queue"]

F = TypeVar("F", bound=Callable[..., Any])


def filter_options(command: F) -> F:
    """The job filters `jobs ls` and `jobs retry --all-matching` share."""
    for option in reversed([
        click.option("--status", "statuses", multiple=True, type=click.Choice([s.value for s in JobStatus])),
        click.option("--name", default=None, help="job name, e.g. story_task.generate"),
        click.option("--field", default=None, help="an argument's value, e.g. story_id=<uuid>"),
        click.option("--since", type=click.DateTime(), default=None, help="enqueued at or after (UTC)"),
        click.option("--until", type=click.DateTime(), default=None, help="enqueued before (UTC)"),
        click.option("--error", "error_contains", default=None, help="text in the error"),
    ]):  # fmt: skip
        command = option(command)
    return command


def job_filter(settings: Settings, statuses: tuple[str, ...], name: str | None, field: str | None,
               since: datetime | None, until: datetime | None, error_contains: str | None) -> Any:  # fmt: skip
    from runner.ops.jobs import JobFilter

    if field is not None and "=" not in field:
        raise click.BadParameter("expected name=value", param_hint="--field")
    return JobFilter(
        queue=settings.queue_name, statuses=tuple(JobStatus(s) for s in statuses), name=name,
        field=tuple(field.split("=", 1)) if field else None,  # type: ignore[arg-type]
        since=utc(since), until=utc(until), error_contains=error_contains,
    )  # fmt: skip


@click.group()
def jobs() -> None:
    """Find, show, retry and cancel jobs (from the status rows in Postgres)."""


@jobs.command("ls")
@filter_options
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--cursor", default=None, help="the next page's cursor, as a previous page printed it")
@as_json
@click.pass_obj
def jobs_ls(settings: Settings, statuses: tuple[str, ...], name: str | None, field: str | None,
            since: datetime | None, until: datetime | None, error_contains: str | None, limit: int,
            cursor: str | None, as_json: bool) -> None:  # fmt: skip
    """Jobs of the queue, newest first, every filter given combined."""
    from runner.ops.jobs import CursorError, find_jobs

    where = job_filter(settings, statuses, name, field, since, until, error_contains)

    async def read() -> Any:
        async with connected(settings) as servers:
            return await find_jobs(db_of(servers), where, limit=limit, cursor=cursor)

    try:
        page = run(read())
    except CursorError as exc:
        raise click.BadParameter(str(exc), param_hint="--cursor") from None

    def show() -> None:
        rows = [[j.job_id, j.name, j.status.value, j.attempts, j.enqueued_at.isoformat(timespec="seconds"),
                 (j.error or "")[:60]] for j in page.jobs]  # fmt: skip
        table(f"jobs of {settings.queue_name}", ["id", "name", "status", "tries", "enqueued", "error"], rows)
        if page.next_cursor:
            click.echo(f"next page: --cursor {page.next_cursor}")

    emit({"jobs": page.jobs, "next_cursor": page.next_cursor}, as_json, show)


@jobs.command("show")
@click.argument("job_id")
@as_json
@click.pass_obj
def jobs_show(settings: Settings, job_id: str, as_json: bool) -> None:
    """One job: arguments, result, error, every attempt (worker, times, outcome, traceback), its children."""
    from runner.ops.history import job_detail

    async def read() -> Any:
        async with connected(settings) as servers:
            return await job_detail(db_of(servers), job_id)

    detail = run(read())
    if detail is None:
        raise click.ClickException(f"no job {job_id!r}")
    attempts = [{**dataclasses.asdict(a), "duration_s": a.duration_s} for a in detail.attempts]
    value = {**dataclasses.asdict(detail.job), "attempts": attempts, "children": detail.children,
             "children_total": detail.children_total}  # fmt: skip

    def show() -> None:
        table(f"job {job_id}", ["", ""], [[k, v] for k, v in dataclasses.asdict(detail.job).items()])
        rows = [[a.attempt, a.worker, a.started_at.isoformat(timespec="milliseconds"), a.duration_s, a.outcome,
                 (a.error or "")[:60]] for a in detail.attempts]  # fmt: skip
        table("attempts", ["#", "worker", "started", "took s", "outcome", "error"], rows)
        last = next((a for a in reversed(detail.attempts) if a.traceback), None)
        if last is not None:
            click.echo(f"traceback of attempt {last.attempt}:\n{last.traceback}")
        if detail.children:
            kids = [[c.job_id, c.name, c.status.value] for c in detail.children]
            table(f"children ({detail.children_total})", ["id", "name", "status"], kids)

    emit(value, as_json, show)


@jobs.command("retry")
@click.argument("job_ids", nargs=-1)
@click.option("--all-matching", is_flag=True, help="every failed or cancelled job the filters match")
@filter_options
@click.option("--yes", is_flag=True, help="do not ask: retry all that match")
@as_json
@click.pass_obj
def jobs_retry(settings: Settings, job_ids: tuple[str, ...], all_matching: bool, statuses: tuple[str, ...],
               name: str | None, field: str | None, since: datetime | None, until: datetime | None,
               error_contains: str | None, yes: bool, as_json: bool) -> None:  # fmt: skip
    """Send failed or cancelled jobs back to the queue: the ids given, or --all-matching the filters
    (the count is shown first and must be confirmed). A retried job gets its full tries again."""
    from runner.ops.actions import ConfirmationError, retry_jobs, retry_matching

    if bool(job_ids) == all_matching:
        raise click.UsageError("give job ids, or --all-matching with filters (not both)")
    if all_matching:
        where = job_filter(settings, statuses, name, field, since, until, error_contains)

        async def count() -> int:
            async with connected(settings) as servers:
                return (await retry_matching(servers.redis, db_of(servers), where, confirm=None))[0]

        confirm = confirmed_count(run(count()), "failed or cancelled jobs match", yes=yes)
        if confirm is None:
            emit({"matched": 0, "retried": 0}, as_json, lambda: None)
            return

        async def retry_all() -> tuple[int, int]:
            async with connected(settings) as servers:
                return await retry_matching(servers.redis, db_of(servers), where, confirm=confirm)

        try:
            matched, retried = run(retry_all())
        except ConfirmationError as exc:
            raise click.ClickException(str(exc)) from None
        emit({"matched": matched, "retried": retried}, as_json, lambda: click.echo(f"retried {retried} jobs"))
        return

    async def retry_given() -> list[str]:
        async with connected(settings) as servers:
            return await retry_jobs(servers.redis, db_of(servers), list(job_ids))

    retried_ids = run(retry_given())
    skipped = [j for j in job_ids if j not in retried_ids]
    emit({"retried": retried_ids, "skipped": skipped}, as_json,
         lambda: click.echo(f"retried: {' '.join(retried_ids) or 'none'}"
                            + (f"; not failed or cancelled (or unknown), left alone: {' '.join(skipped)}"
                               if skipped else "")))  # fmt: skip
    if skipped and not retried_ids:
        raise SystemExit(1)


@jobs.command("cancel")
@click.argument("job_id")
@as_json
@click.pass_obj
def jobs_cancel(settings: Settings, job_id: str, as_json: bool) -> None:
    """Ask the workers to stop a pending or running job (it becomes `cancelled`)."""
    from runner.ops.jobs import cancel_job

    async def act() -> Any:
        async with connected(settings) as servers:
            return await cancel_job(servers.redis, db_of(servers), job_id)

    row = run(act())
    if row is None:
        raise click.ClickException(f"no job {job_id!r}")
    if row.status in TERMINAL:
        raise click.ClickException(f"job {job_id!r} already ended as {row.status.value}; nothing to cancel")
    emit({"job_id": job_id, "status": row.status.value, "cancel_requested": True}, as_json,
         lambda: click.echo(f"cancel requested for {job_id} ({row.status.value})"))  # fmt: skip


@click.group()
def queue() -> None:
    """Act on the whole queue."""


@queue.command("purge")
@click.option("--yes", is_flag=True, help="do not ask")
@as_json
@click.pass_obj
def queue_purge(settings: Settings, yes: bool, as_json: bool) -> None:
    """Cancel every queued job that no worker runs yet (the workers cancel each: its row ends `cancelled`
    and its failure hook runs; running jobs are left alone). The count is shown first and confirmed."""
    from runner.ops.actions import ConfirmationError, purge_queue

    async def count() -> int:
        async with connected(settings) as servers:
            return await purge_queue(servers.redis, settings.queue_name, confirm=None)

    confirm = confirmed_count(run(count()), f"queued jobs in {settings.queue_name}", yes=yes)
    if confirm is None:
        emit({"purged": 0}, as_json, lambda: None)
        return

    async def purge() -> int:
        async with connected(settings) as servers:
            return await purge_queue(servers.redis, settings.queue_name, confirm=confirm)

    try:
        purged = run(purge())
    except ConfirmationError as exc:
        raise click.ClickException(str(exc)) from None
    emit({"purged": purged}, as_json, lambda: click.echo(f"{purged} jobs will be cancelled by the workers"))
