"""The FastAPI app: `create_app()` (uvicorn `--factory`), whose lifespan owns the pools and clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.deps import AppState
from api.media import MediaFiles
from api.routes import health, jobs, stories
from jobs import registry
from jobs.repository import StoryRepository
from jobs.storage import LocalMediaStorage
from runner.client import JobClient
from runner.resources import open_resources
from runner.settings import Settings
from runner.store.migrations import apply_migrations

__all__ = ["create_app"]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    settings.media_path.mkdir(parents=True, exist_ok=True)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_resources(settings) as resources:
            await apply_migrations(resources.db, ["runner", *registry.migrations])
            app.state.storymimi = AppState(
                resources=resources,
                jobs=JobClient(resources, registry.resolved(settings)),
                stories=StoryRepository(resources.db),
                storage=LocalMediaStorage(settings.media_path),
            )
            yield

    app = FastAPI(title="StoryMimi", version="0.1.0", lifespan=lifespan)
    app.include_router(stories.router)
    app.include_router(jobs.router)
    app.include_router(health.router)
    app.mount("/media", MediaFiles(directory=settings.media_path), name="media")
    return app
