"""The command line, `python -m runner` (also the `storymimi-runner` script).

Processes: `run` (embedded servers if needed, the API and the workers, supervised), `worker`, `api`,
`intake` (with CELERY_INTAKE / ARQ_INTAKE: unchanged Celery and arq producers' jobs run here too).
Operations, over runner.ops: `status`, `jobs ls|show|retry|cancel`, `queue purge`, `workers ls|drain`, `watch`,
`doctor`. Every operations command takes `--json`; `status` and `doctor` exit 1 when something is unhealthy,
for cron jobs and probes. Modules: processes.py, common.py (servers, one loop, output), ops.py, jobs.py.
"""

from __future__ import annotations

import click

from runner.cli.jobs import jobs, queue
from runner.cli.ops import doctor, status, watch, workers
from runner.fleet.logs import configure_logging
from runner.settings import Settings

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def cli(ctx: click.Context) -> None:
    """The StoryMimi job runner."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    ctx.obj = settings


@cli.command()
@click.option("--app", default="api.main:create_app", show_default=True, help="ASGI app factory, module:function")
@click.option("--registry", default="jobs:registry", show_default=True, help="the job registry, module:attribute")
@click.option("--no-api", is_flag=True, help="run the workers only")
@click.option("--no-workers", is_flag=True, help="run the API only")
@click.pass_obj
def run(settings: Settings, app: str, registry: str, no_api: bool, no_workers: bool) -> None:
    """Embedded servers (if needed), the API and WORKERS workers, supervised."""
    from runner.cli.processes import run_fleet

    raise SystemExit(run_fleet(settings, app=None if no_api else app, registry=None if no_workers else registry))


@cli.command()
@click.option("--registry", default="jobs:registry", show_default=True, help="the job registry, module:attribute")
@click.option("--worker-id", default=None, help="given by the supervisor, which frees its leases")
def worker(registry: str, worker_id: str | None) -> None:
    """One worker process (normally started by `run`)."""
    from runner.cli.processes import run_worker

    raise SystemExit(run_worker(registry, worker_id))


@cli.command()
@click.option("--registry", default="jobs:registry", show_default=True, help="the job registry, module:attribute")
def intake(registry: str) -> None:
    """The intake process: jobs from unchanged Celery / arq producers (normally started by `run`)."""
    from runner.cli.processes import run_intake

    raise SystemExit(run_intake(registry))


@cli.command()
@click.option("--app", default="api.main:create_app", show_default=True)
@click.pass_obj
def api(settings: Settings, app: str) -> None:
    """One API process (normally started by `run`)."""
    from runner.cli.processes import run_api

    raise SystemExit(run_api(settings, app))


for command in (status, jobs, queue, workers, watch, doctor):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="python -m runner", standalone_mode=False)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except click.exceptions.Abort:
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return 0
