"""The process commands: the supervised fleet (`run`), one worker, one API process. One event loop per
process, made here (uvloop.run); signal handlers only record, the loop acts."""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
from typing import Any

import structlog

from runner.settings import Settings

__all__ = ["run_api", "run_fleet", "run_intake", "run_worker"]

log = structlog.get_logger("runner")


def run_fleet(settings: Settings, *, app: str | None, registry: str | None) -> int:
    # Every process of this fleet writes its metrics here; it must be set before prometheus-client loads.
    from runner.fleet.metrics_dir import MULTIPROC_ENV, prepare_multiprocess_dir

    os.environ[MULTIPROC_ENV] = str(prepare_multiprocess_dir(settings.data_dir))
    from runner.cli import main
    from runner.fleet.launcher import LaunchPlan, launch

    # Children are forked from a zygote that runs `main` for them, as `python -m runner <command>` would
    # (FORK_CHILDREN=false: exec'd afresh).
    return launch(settings, LaunchPlan(app=app, registry=registry), entry=main if settings.fork_children else None)


def run_worker(registry_path: str, worker_id: str | None) -> int:
    import uvloop

    registry = load_registry(registry_path)
    settings = registry.settings()  # the runner's settings and the jobs' own, read once
    import runner.worker.worker  # noqa: F401 - imported now so the frozen start-up heap includes it
    from runner.tracing import setup_tracing

    setup_tracing(settings, f"{settings.queue_name}-worker")  # off unless an OTLP endpoint is set
    from runner.fleet.heap import freeze_startup_heap

    freeze_startup_heap()
    code: int = uvloop.run(_worker_main(settings, registry, worker_id))
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


def run_intake(registry_path: str) -> int:
    """The intake process (CELERY_INTAKE, ARQ_INTAKE): other systems' producers' messages become jobs."""
    import uvloop

    registry = load_registry(registry_path)
    settings = registry.settings()
    if not (settings.celery_intake or settings.arq_intake):
        raise SystemExit("no intake is on: set CELERY_INTAKE=true and/or ARQ_INTAKE=true")
    code: int = uvloop.run(_intake_main(settings, registry))
    return code


async def _intake_main(settings: Settings, registry: Any) -> int:
    from runner.fleet.control import ControlPipe
    from runner.intake.process import Intakes

    intakes = Intakes(settings, registry)
    loop = asyncio.get_running_loop()
    running = asyncio.current_task()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, intakes.stop)

    def on_orphaned() -> None:
        log.warning("supervisor_gone", process="intake")
        if running is not None:  # a message cut short is handled again by the next intake's re-drive
            running.cancel()

    async with _heartbeat(settings, ControlPipe.from_env(), "intake", on_orphaned):
        try:
            await intakes.run()
        except asyncio.CancelledError:
            return 1
    return 0


def _heartbeat(settings: Settings, pipe: Any, process: str, on_orphaned: Any) -> Any:
    from runner.fleet.control import Heartbeat
    from runner.fleet.metrics import LagObserver

    lag = LagObserver(process)  # the lag histogram, and the longest lag of the last minute or two
    return Heartbeat(pipe, on_orphaned=on_orphaned, observe_lag=lag, blocked_log_s=settings.loop_blocked_log_s)


def run_api(settings: Settings, app: str) -> int:
    import uvicorn
    import uvloop

    from runner.fleet.heap import freeze_startup_heap
    from runner.tracing import setup_tracing

    setup_tracing(settings, f"{settings.queue_name}-api")  # before the app is made: it asks whether tracing is on
    config = uvicorn.Config(app, factory=True, host=settings.host, port=settings.port,
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


def load_registry(path: str) -> Any:
    """The Registry at `module:attribute`; exit saying what was found instead."""
    from runner.registry import Registry

    registry = _load(path)
    if not isinstance(registry, Registry):
        raise SystemExit(f"--registry {path} must name a runner.Registry, got {type(registry).__name__}")
    return registry


def _load(path: str) -> Any:
    module_name, _, attribute = path.partition(":")
    if not attribute:
        raise SystemExit(f"expected module:attribute, got {path!r}")
    return getattr(importlib.import_module(module_name), attribute)
