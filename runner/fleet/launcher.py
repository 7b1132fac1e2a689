"""`python -m runner run`: embedded servers if needed, then the API and the worker processes under one
supervisor, all stopped cleanly by Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import structlog
from prometheus_client import start_http_server

from runner.broker.connection import RedisClient, connect_redis
from runner.broker.queue import release_dead_worker
from runner.fleet.metrics import MULTIPROC_ENV, WORKER_EXITS, fleet_registry, mark_process_dead
from runner.fleet.predecessors import SCAN_BOUND_S, release_predecessors
from runner.fleet.supervisor import RECYCLE_EXIT_CODE, ChildSpec, Supervisor, python_argv
from runner.fleet.zygote import Entry, Zygote
from runner.settings import Settings
from runner.worker.outage import ride_out

__all__ = ["LaunchPlan", "embedded_servers", "launch"]

log = structlog.get_logger("runner.fleet.launcher")
_RELEASE_BUDGET_S = 8.0  # a dead worker's lease release retries this long (the supervisor waits 10 s for it)


@dataclass(frozen=True)
class LaunchPlan:
    app: str | None  # "module:factory" of the ASGI app, or None for no API
    registry: str | None  # "module:attribute" of the job registry, or None for no workers


@contextmanager
def embedded_servers(settings: Settings) -> Iterator[dict[str, str]]:
    """Give each unset URL this checkout's embedded server; yield the env to give children.

    The server recorded under DATA_DIR (started by another `make api` / `make worker` of this checkout)
    is reused and left running. Otherwise one is started here, on its EMBEDDED_*_PORT if that is free
    or on a free port, recorded for the others, and stopped at exit. A server this DATA_DIR did not
    start (another checkout's, another program's) is never used: see runner.devservers.ownership."""
    env: dict[str, str] = {}
    if settings.redis_configured and settings.database_url:  # production: the dev servers are not even imported
        yield env
        return
    from runner.devservers import EmbeddedPostgres, EmbeddedServer, EmbeddedValkey, owned_server

    with ExitStack() as stack:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        wanted: list[tuple[str, str | None, EmbeddedServer]] = [
            ("REDIS_URL", settings.redis_url or settings.redis_sentinels,
             EmbeddedValkey(settings.data_dir, settings.embedded_redis_port)),
            ("DATABASE_URL", settings.database_url,
             EmbeddedPostgres(settings.data_dir, settings.embedded_postgres_port)),
        ]  # fmt: skip
        for var, configured, server in wanted:
            if not configured:
                env[var] = stack.enter_context(owned_server(server)).url
        yield env


# What the forked children import before they run: imported once, in the zygote, their pages shared.
_WORKER_MODULES = ("runner.worker.worker", "runner.tracing", "runner.fleet.heap", "runner.tls", "runner.http")
_API_MODULES = (
    "uvicorn", "uvicorn.protocols.http.auto", "uvicorn.protocols.http.httptools_impl",
    "uvicorn.protocols.websockets.auto", "uvicorn.lifespan.on", "runner.tracing", "runner.fleet.heap", "runner.tls",
)  # fmt: skip


def launch(settings: Settings, plan: LaunchPlan, *, entry: Entry | None = None) -> int:
    """Run the plan in the foreground until a signal stops it; return the process exit code. With `entry`
    (what `python -m runner` runs), the children are forked from a zygote (runner.fleet.zygote) started
    here first, before any server, thread or event loop."""
    zygote = Zygote.start(entry, preload_modules(settings, plan)) if entry is not None else None
    try:
        return _launch(settings, plan, zygote)
    finally:
        if zygote is not None:
            zygote.close()


def preload_modules(settings: Settings, plan: LaunchPlan) -> list[str]:
    """The modules the plan's children import, for the zygote."""
    modules: list[str] = ["uvloop"]
    if plan.registry:
        modules += [plan.registry.partition(":")[0], *_WORKER_MODULES]
        if settings.celery_intake or settings.arq_intake:
            modules.append("runner.intake.process")
    if plan.app:
        modules += [plan.app.partition(":")[0], *_API_MODULES]
    return list(dict.fromkeys(modules))


def _launch(settings: Settings, plan: LaunchPlan, zygote: Zygote | None) -> int:
    import uvloop

    with embedded_servers(settings) as server_env:
        env = {**os.environ, **server_env, MULTIPROC_ENV: str(os.environ[MULTIPROC_ENV])}
        if settings.metrics_port:
            start_http_server(settings.metrics_port, addr=settings.host, registry=fleet_registry())
            log.info("metrics_url", url=f"http://{settings.host}:{settings.metrics_port}/metrics")
        if plan.app:
            base = f"http://{settings.host}:{settings.port}"
            log.info("api_url", url=base, docs=f"{base}/docs")
        redis_url = server_env.get("REDIS_URL") or settings.redis_url
        code: int = uvloop.run(
            _supervise(_children(settings, plan), env, settings.model_copy(update={"redis_url": redis_url}),
                       free_predecessors=plan.registry is not None, zygote=zygote)
        )  # fmt: skip
        return code


def _children(settings: Settings, plan: LaunchPlan) -> list[ChildSpec]:
    children: list[ChildSpec] = []
    if plan.app:
        app = plan.app
        children.append(ChildSpec("api", lambda _: python_argv("api", "--app", app)))
    if plan.registry:
        registry = plan.registry
        for i in range(1, settings.workers + 1):
            children.append(
                ChildSpec(
                    f"worker-{i}",
                    lambda instance: python_argv("worker", "--registry", registry, "--worker-id", instance),
                    hang_after_s=settings.hang_after_s,
                )
            )
        if settings.celery_intake or settings.arq_intake:
            intake_argv = python_argv("intake", "--registry", registry)
            children.append(ChildSpec("intake", lambda _: intake_argv, hang_after_s=settings.hang_after_s))
    return children


async def _supervise(
    children: list[ChildSpec], env: dict[str, str], settings: Settings, *, free_predecessors: bool,
    zygote: Zygote | None = None,
) -> int:  # fmt: skip
    async with _LeaseReleaser(settings) as releaser:
        if free_predecessors:  # before any worker of ours exists: see runner.fleet.predecessors
            await releaser.release_predecessors()
        if zygote is not None:
            zygote.watch()
        supervisor = Supervisor(children, env=env, grace_s=settings.shutdown_grace_s, on_exit=releaser.release,
                                host=settings.host_id, zygote=zygote)  # fmt: skip
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, supervisor.handle_signal, signum)
        return await supervisor.run()


class _LeaseReleaser:
    """Frees the job leases of a worker process the moment it exits, so its jobs run again at once."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._redis: RedisClient | None = None

    async def __aenter__(self) -> _LeaseReleaser:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    async def release_predecessors(self) -> None:
        """Free the leases an earlier supervisor's workers on this host left when they died with it."""
        try:
            async with asyncio.timeout(SCAN_BOUND_S + 5):
                if self._redis is None:
                    self._redis = await connect_redis(self._settings)
                s = self._settings
                for queue, _ in s.worker_queues:
                    await release_predecessors(self._redis, queue, s.host_id, s.lease_ttl_s)
        except Exception as exc:  # Redis down or refusing: those leases lapse on their own, as before
            log.warning("predecessor_leases_not_released", error=repr(exc), lease_ttl_s=self._settings.lease_ttl_s)

    async def release(self, instance: str, pid: int, exit_code: int) -> None:
        mark_process_dead(pid)
        if exit_code not in (0, RECYCLE_EXIT_CODE):  # a worker killed before it could count its own exit
            WORKER_EXITS.labels("crashed").inc()
        if self._redis is None:
            self._redis = await connect_redis(self._settings)
        for queue, _ in self._settings.worker_queues:
            # Ridden out a while: just after a failover the client may still hold the dead master's address.
            released = await ride_out(functools.partial(release_dead_worker, self._redis, instance, queue,
                                                        self._settings.lease_ttl_s),
                                      what="release_dead_worker_leases", budget_s=_RELEASE_BUDGET_S)  # fmt: skip
            if released:
                log.warning("dead_worker_leases_released", worker_id=instance, exit_code=exit_code, jobs=released,
                            queue=queue)  # fmt: skip
