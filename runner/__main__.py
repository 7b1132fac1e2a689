"""Command line: `python -m runner {run,worker,api,migrate}`. One event loop per process, made here."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import signal
import sys
from typing import Any

import structlog

from runner.fleet.logs import configure_logging
from runner.settings import Settings

log = structlog.get_logger("runner")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    command: Any = {"run": _run, "worker": _worker, "api": _api}[args.command]
    code: int = command(settings, args)
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m runner", description="StoryMimi job runner")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="embedded servers (if needed), the API and WORKERS workers, supervised")
    run.add_argument("--app", default="api.main:create_app", help="ASGI app factory, module:function")
    run.add_argument("--registry", default="jobs:registry", help="the job registry, module:attribute")
    run.add_argument("--no-api", action="store_true", help="run the workers only")
    run.add_argument("--no-workers", action="store_true", help="run the API only")
    worker = sub.add_parser("worker", help="one worker process (normally started by `run`)")
    worker.add_argument("--registry", default="jobs:registry", help="the job registry, module:attribute")
    worker.add_argument("--worker-id", default=None, help="given by the supervisor, which frees its leases")
    api = sub.add_parser("api", help="one API process (normally started by `run`)")
    api.add_argument("--app", default="api.main:create_app")
    return parser


def _run(settings: Settings, args: argparse.Namespace) -> int:
    # Every process of this fleet writes its metrics here; it must be set before prometheus-client loads.
    from runner.fleet.metrics_dir import MULTIPROC_ENV, prepare_multiprocess_dir

    os.environ[MULTIPROC_ENV] = str(prepare_multiprocess_dir(settings.data_dir))
    from runner.fleet.launcher import LaunchPlan, launch

    return launch(settings, LaunchPlan(app=None if args.no_api else args.app,
                                       registry=None if args.no_workers else args.registry))  # fmt: skip


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    import uvloop

    from runner.registry import Registry

    registry = _load(args.registry)
    if not isinstance(registry, Registry):
        raise SystemExit(
            f"--registry {args.registry} must name a runner.registry.Registry, got {type(registry).__name__}"
        )
    settings = registry.settings()  # the runner's settings and the jobs' own, read once
    import runner.worker.worker  # noqa: F401 - imported now so the frozen start-up heap includes it
    from runner.fleet.heap import freeze_startup_heap

    freeze_startup_heap()
    code: int = uvloop.run(_worker_main(settings, registry, args.worker_id))
    return code


async def _worker_main(settings: Settings, registry: Any, worker_id: str | None) -> int:
    from runner.fleet.control import ControlPipe
    from runner.fleet.supervisor import RECYCLE_EXIT_CODE
    from runner.worker.worker import ExitReason, Worker

    pipe = ControlPipe.from_env()
    worker = Worker(settings, registry, worker_id=worker_id, on_retire=pipe.retiring)
    loop = asyncio.get_running_loop()
    received: list[int] = []
    running = asyncio.current_task()

    def on_signal(signum: int) -> None:  # record; the worker's loop acts
        received.append(signum)
        if len(received) > 1 and signum == signal.SIGINT:
            worker.force_stop()
        else:
            worker.stop()

    def on_orphaned() -> None:
        """The supervisor is gone (SIGKILLed): stop at once, whatever we are doing; nobody would replace
        or clean up after us. Running jobs are given back to the queue; a start-up still retrying ends."""
        log.warning("supervisor_gone", worker_id=worker.worker_id, started=worker.ready.is_set())
        if worker.ready.is_set():
            worker.force_stop()
        elif running is not None:
            running.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    async with _heartbeat(settings, pipe, "worker", on_orphaned):
        try:
            reason = await worker.run()
        except asyncio.CancelledError:
            return 1
    return {ExitReason.STOPPED: 0, ExitReason.SIDE_TASK_FAILED: 1}.get(reason, RECYCLE_EXIT_CODE)


def _heartbeat(settings: Settings, pipe: Any, process: str, on_orphaned: Any) -> Any:
    from runner.fleet.control import Heartbeat
    from runner.fleet.metrics import LOOP_LAG

    lag = LOOP_LAG.labels(process)
    return Heartbeat(pipe, on_orphaned=on_orphaned, observe_lag=lag.observe, blocked_log_s=settings.loop_blocked_log_s)


def _api(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn
    import uvloop

    from runner.fleet.heap import freeze_startup_heap

    config = uvicorn.Config(args.app, factory=True, host=settings.host, port=settings.port,
                            log_config=None, access_log=False, lifespan="on")  # fmt: skip
    config.load()  # import and build the app now, so the frozen start-up heap includes it
    freeze_startup_heap()
    uvloop.run(_api_main(settings, uvicorn.Server(config)))
    return 0


async def _api_main(settings: Settings, server: Any) -> None:
    from runner.fleet.control import ControlPipe

    def on_orphaned() -> None:
        log.warning("supervisor_gone", process="api")
        server.should_exit = True

    async with _heartbeat(settings, ControlPipe.from_env(), "api", on_orphaned):
        await server.serve()


def _load(path: str) -> Any:
    module_name, _, attribute = path.partition(":")
    if not attribute:
        raise SystemExit(f"expected module:attribute, got {path!r}")
    return getattr(importlib.import_module(module_name), attribute)


if __name__ == "__main__":
    sys.exit(main())
