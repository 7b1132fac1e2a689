"""The intake process: the intakes that are on (CELERY_INTAKE, ARQ_INTAKE), each riding out outages, until
stopped. The supervisor runs it as one more child when any intake is on (`python -m runner intake`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
import structlog
from redis.exceptions import RedisError

from runner.backoff import Backoff
from runner.cancelling import CLEAN_UP_S, cancel_and_wait
from runner.registry import Registry
from runner.resources import open_resources
from runner.settings import Settings
from runner.store.migrations import apply_migrations

__all__ = ["Intakes"]

log = structlog.get_logger("runner.intake")

INTAKE_BACKOFF = Backoff(first_s=0.1, max_s=5.0)  # after a pass that failed (a server down)


class Intakes:
    """Runs the intakes the settings turn on. Create it inside the process's event loop."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self.ready = asyncio.Event()
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Stop taking messages (safe from a signal handler); one cut short is handled again next start."""
        self._stopping.set()

    async def run(self) -> None:
        from runner.intake.arq_intake import ArqIntake
        from runner.intake.celery_intake import CeleryIntake

        async with open_resources(self.settings) as resources:
            await apply_migrations(resources.db, ["runner", *self.registry.migrations])
            specs = self.registry.resolved(self.settings)
            runs: dict[str, Callable[[], Awaitable[None]]] = {}
            if self.settings.celery_intake:
                runs["celery"] = CeleryIntake(resources, specs).run_forever
            if self.settings.arq_intake:
                runs["arq"] = ArqIntake(resources, specs).run_forever
            tasks = [asyncio.create_task(_keep_running(name, run), name=f"intake:{name}") for name, run in runs.items()]
            log.info("intake_started", intakes=sorted(runs), queue=self.settings.queue_name)
            self.ready.set()
            stopping = asyncio.create_task(self._stopping.wait())
            try:
                await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
            finally:
                await cancel_and_wait([stopping, *tasks], every_s=CLEAN_UP_S)  # an intake closes its pub/sub
        log.info("intake_stopped")


_SERVER_ERRORS = (RedisError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


async def _keep_running(name: str, run: Callable[[], Awaitable[None]]) -> None:
    """Run an intake for good: after a server error, again (a Celery intake re-drives what it held)."""
    failures = 0
    while True:
        try:
            await run()
            return
        except Exception as exc:  # an intake must outlive any error, known or not
            # Beyond server errors: redis-py's pub/sub can fail with its own RuntimeError or AttributeError when a
            # failover closes the connection under it; ending here would stop the whole intake process.
            failures += 1
            known = isinstance(exc, _SERVER_ERRORS)
            log.warning("intake_failed", intake=name, error=repr(exc), consecutive=failures, unexpected=not known)
            await asyncio.sleep(INTAKE_BACKOFF.delay(failures))
