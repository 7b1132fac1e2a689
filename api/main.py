"""The FastAPI app: `create_app()` (uvicorn `--factory`), whose lifespan owns the pools and clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.deps import AppState
from api.errors import install_error_handlers
from api.media import MediaFiles
from api.routes import health, jobs, stories
from jobs import registry
from jobs.repository import StoryRepository
from jobs.settings import StorySettings, story_settings
from jobs.storage import LocalMediaStorage
from jobs.stories import StoryWorkflow
from runner.client import JobClient
from runner.resources import open_resources
from runner.store.migrations import apply_migrations

__all__ = ["create_app"]


def create_app(settings: StorySettings | None = None) -> FastAPI:
    settings = settings or story_settings(registry.settings())
    settings.media_path.mkdir(parents=True, exist_ok=True)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_resources(settings) as resources:
            await apply_migrations(resources.db, ["runner", *registry.migrations])
            client = JobClient(resources, registry.resolved(settings))
            stories = StoryWorkflow(client, StoryRepository(resources.db), LocalMediaStorage(settings.media_path))
            app.state.storymimi = AppState(settings=settings, resources=resources, client=client, stories=stories)
            yield

    app = FastAPI(title="StoryMimi", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(stories.router)
    app.include_router(jobs.router)
    app.include_router(health.router)
    app.mount("/media", MediaFiles(directory=settings.media_path), name="media")
    return app
