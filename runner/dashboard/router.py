"""`ops_router(...)`: the dashboard as one FastAPI router for the host app to mount under any prefix
(`app.include_router(ops_router(settings, resources_of), prefix="/ops")`).

Every route sits behind the same three guards, in this order: a write from another origin is refused
(403), then the host's authentication runs (HTTP Basic from settings unless the host gives its own),
then a read-only dashboard refuses every write (403)."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, Depends

from runner.dashboard import assets, events, job, jobs, json_api, overview, purge, workers
from runner.dashboard.dashboard import Dashboard, ResourcesOf
from runner.dashboard.extension import Extension
from runner.dashboard.security import Authenticate, http_basic, read_only_guard, same_origin_guard
from runner.settings import Settings

__all__ = ["ops_router"]

# events before job: `/jobs/{id}/events` would otherwise be read as the page of a job named `{id}/events`.
_PARTS = (assets, overview, workers, jobs, purge, events, job, json_api)


def ops_router(
    settings: Settings,
    resources_of: ResourcesOf,
    *,
    auth: Authenticate | None = None,
    extensions: Sequence[Extension] = (),
    name: str = "ops",
) -> APIRouter:
    """The dashboard's router. `resources_of(request)` gives the process's open Resources (its pools);
    `auth` refuses whom it will by raising (default: `http_basic(settings)`); `extensions` add pages;
    `name` prefixes every route name (two dashboards in one app need two names)."""
    dash = Dashboard(resources_of, name=name, read_only=settings.ops_read_only, extensions=extensions)
    guards = [
        Depends(same_origin_guard),
        Depends(auth or http_basic(settings)),
        Depends(read_only_guard(dash.read_only)),
    ]
    router = APIRouter(dependencies=guards, include_in_schema=False)
    for part in _PARTS:
        router.include_router(part.routes(dash))
    for extension in extensions:
        if extension.routes is not None:
            router.include_router(extension.routes(dash))
    return router
