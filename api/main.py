"""The FastAPI app: `create_app()` (uvicorn `--factory`), whose lifespan owns the pools and clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from fastapi.telemetry import TelemetryConfig

from api.deps import AppState
from api.docs import install_docs
from api.errors import install_error_handlers
from api.media import MediaFiles
from api.ops_story import story_pages
from api.routes import health, jobs, public_stories, root, stories, users
from jobs import registry
from jobs.accounts import Accounts
from jobs.conversations import Conversations
from jobs.public_stories import PublicStoryRepository
from jobs.repository import StoryRepository
from jobs.settings import StorySettings, story_settings
from jobs.storage import LocalMediaStorage
from jobs.stories import StoryWorkflow
from jobs.story_lists import StoryLists
from jobs.users import UserRepository
from runner import tracing
from runner.client import JobClient
from runner.dashboard import ops_router
from runner.resources import Resources, open_resources
from runner.store.migrations import apply_migrations

__all__ = ["STATIC_DIR", "create_app"]

STATIC_DIR = Path(__file__).parent / "static"  # the web pages (the old backend's, rebuilt on this API)


def _state(settings: StorySettings, resources: Resources) -> AppState:
    db = resources.db
    client = JobClient(resources, registry.resolved(settings))
    stories = StoryWorkflow(client, StoryRepository(db), LocalMediaStorage(settings.media_path))
    lists, users = StoryLists(db), UserRepository(db)
    return AppState(
        settings=settings, resources=resources, client=client, stories=stories, lists=lists, users=users,
        public=PublicStoryRepository(db), conversations=Conversations(db, stories),
        accounts=Accounts(users, lists, stories),
    )  # fmt: skip


def _resources(request: Request) -> Resources:
    """The open pools, for the operators' dashboard (which knows nothing of AppState)."""
    state: AppState = request.app.state.storymimi
    return state.resources


def create_app(settings: StorySettings | None = None) -> FastAPI:
    settings = settings or story_settings(registry.settings())
    settings.media_path.mkdir(parents=True, exist_ok=True)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_resources(settings) as resources:
            await apply_migrations(resources.db, ["runner", *registry.migrations])
            app.state.storymimi = _state(settings, resources)
            yield

    # FastAPI's own OpenTelemetry server spans, only when tracing is on (runner.tracing); metrics stay Prometheus,
    # and exporters are set up by runner.tracing alone.
    telemetry: TelemetryConfig = {"tracing": tracing.enabled(), "metrics": False, "logs": False,
                                  "auto_configure": False}  # fmt: skip
    app = FastAPI(title="StoryMimi", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  telemetry=telemetry)  # fmt: skip
    install_error_handlers(app)
    install_docs(app)
    app.include_router(root.router)
    app.include_router(public_stories.router)  # before stories: /stories/public is not a story id
    app.include_router(stories.router)
    app.include_router(users.router)
    app.include_router(jobs.router)
    app.include_router(health.router)
    # The operators' dashboard: HTTP Basic (OPS_PASSWORD), same-origin writes, CSP; story pages of ours.
    app.include_router(ops_router(settings, _resources, extensions=[story_pages()]), prefix="/ops")
    app.mount("/media", MediaFiles(directory=settings.media_path), name="media")
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    # The web pages and the app may be served from elsewhere, as with the old backend (no cookies are used).
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["*"], allow_headers=["*"])
    return app
