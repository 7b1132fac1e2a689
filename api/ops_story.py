"""The dashboard's story pages (domain, so here and not in runner/): the newest stories, and one story
with its row, its scenes and every job that worked on it. A job's `story_id` argument links here.

Added through the dashboard's extension point (runner.dashboard.Extension): rendered in its layout,
under its mount point and behind its guards. The story comes from jobs/ (the workflow's reads), its jobs
from runner.ops.jobs.find_jobs by their `story_id` argument."""

from __future__ import annotations

import uuid
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.deps import State
from runner.dashboard import Dashboard, Extension, FieldLink, NavLink
from runner.ops.jobs import JobFilter, find_jobs
from runner.store.keyset import Cursor, CursorError

__all__ = ["JOBS_SHOWN", "story_pages"]

TEMPLATES = Path(__file__).parent / "ops_templates"
STORIES_SHOWN = 25
JOBS_SHOWN = 100


def story_pages() -> Extension:
    return Extension(
        routes=_routes, templates=TEMPLATES, nav=(NavLink("Stories", "stories"),),
        field_links=(FieldLink("story_id", "story", "story_id"),),
    )  # fmt: skip


def _routes(dash: Dashboard) -> APIRouter:
    router = APIRouter()

    @router.get("/stories", name=dash.route("stories"), response_class=HTMLResponse)
    async def stories(request: Request, state: State) -> Response:
        wanted = (request.query_params.get("id") or "").strip()
        if wanted:
            return RedirectResponse(dash.url(request, "story", story_id=wanted), status_code=303)
        try:
            after = _cursor(request.query_params.get("cursor"))
        except CursorError as exc:
            return dash.render(request, "ops_stories.html", status_code=400, problem=str(exc), page=None)
        page = await state.lists.recent(limit=STORIES_SHOWN, after=after)
        return dash.render(request, "ops_stories.html", problem=None, page=page)

    @router.get("/stories/{story_id}", name=dash.route("story"), response_class=HTMLResponse)
    async def story(request: Request, state: State, story_id: str) -> HTMLResponse:
        try:
            key = uuid.UUID(story_id)
        except ValueError:
            return dash.render(request, "ops_story_missing.html", status_code=404, story_id=story_id)
        found = await state.stories.get(key)
        if found is None:
            return dash.render(request, "ops_story_missing.html", status_code=404, story_id=story_id)
        scenes = await state.stories.scenes(key)
        res = dash.resources(request)
        where = JobFilter(queue=res.settings.queue_name, field=("story_id", str(key)))
        jobs = await find_jobs(res.db, where, limit=JOBS_SHOWN)
        return dash.render(
            request, "ops_story.html", story=found, scenes=scenes, jobs=jobs.jobs,
            more_jobs=jobs.next_cursor is not None, jobs_query={"field": [f"story_id={key}"]},
            media=lambda k: state.media_url(request, k),
        )  # fmt: skip

    return router


def _cursor(text: str | None) -> Cursor | None:
    if not text:
        return None
    cursor = Cursor.decode(text)
    try:
        uuid.UUID(cursor.id)
    except ValueError:
        raise CursorError(f"cursor {text[:40]!r} was not given out by this list; use a page's next cursor") from None
    return cursor
