"""The operators' dashboard in headless Chromium, against the real app over HTTP with a real worker:
every page loads with no console error (a Content-Security-Policy violation is one) and no failed asset
request, a failed job shows its traceback, Retry updates the page in place (no reload) until the next
attempt shows, and a form on another site's page cannot make the browser act on the dashboard."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from playwright.async_api import Browser, expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from jobs import registry as story_registry
from runner.client import JobClient
from runner.context import JobContext
from runner.devservers import free_port
from runner.errors import PermanentError
from runner.ops.history import job_detail
from runner.registry import Registry, job
from runner.resources import Resources
from runner.settings import Settings
from runner.status import JobStatus
from tests.browser.conftest import CHROMIUM, OFFLINE_LATENCY_MS, TIMEOUT_MS, PageWatch, Tab
from tests.conftest import MakeSettings, RunWorker, wait_for

if not CHROMIUM.exists():
    pytest.skip(
        f"the browser tier needs Debian's Chromium at {CHROMIUM}: run `apt-get install chromium`",
        allow_module_level=True,
    )

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

USER, PASSWORD = "ops", "correct horse battery staple"
# The README's picture; a run rewrites it only when asked (UPDATE_SCREENSHOTS=1), so `make test` leaves the tree clean.
README_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "ops-dashboard.png"
fixed: set[str] = set()


@job("dashb.flaky")
async def flaky(ctx: JobContext, *, key: str) -> str:
    await asyncio.sleep(0.4)  # long enough for the page to see it run
    if key not in fixed:
        raise PermanentError(f"{key}: the soup went cold on the way to the moon")
    return f"{key}: served hot on attempt {ctx.attempt}"


@job("dashb.sleepy")
async def sleepy(ctx: JobContext, *, seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


REGISTRY = dataclasses.replace(story_registry, specs=(*story_registry.specs, flaky, sleepy))


@pytest.fixture
def settings(make_settings: MakeSettings) -> Settings:
    return make_settings(offline_latency_ms=OFFLINE_LATENCY_MS, ops_username=USER, ops_password=PASSWORD)


@pytest.fixture
def client(resources: Resources, settings: Settings) -> JobClient:
    return JobClient(resources, Registry(specs=(flaky, sleepy)).resolved(settings))


@pytest.fixture
async def ops_tab(browser: Browser, live_app: str) -> AsyncIterator[Tab]:
    """A page of an operator signed in to the dashboard (HTTP Basic sent to its origin), watched."""
    context = await browser.new_context(
        http_credentials={"username": USER, "password": PASSWORD, "origin": live_app, "send": "always"},
        viewport={"width": 1280, "height": 900},
    )
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    watch = PageWatch()
    watch.attach(page)
    yield Tab(page, watch)
    if watch.problems:
        print("page problems:", *watch.problems, sep="\n  ")
    await context.close()


async def until(client: JobClient, job_id: str, status: JobStatus, timeout: float = 15) -> None:
    async def reached() -> bool:
        row = await client.get(job_id)
        return row is not None and row.status is status

    await wait_for(reached, timeout)


async def failed_job(client: JobClient) -> str:
    job_id = f"soup-{uuid.uuid4().hex[:8]}"
    await client.enqueue("dashb.flaky", job_id=job_id, key=job_id)
    await until(client, job_id, JobStatus.FAILED)
    return job_id


@asynccontextmanager
async def other_site(form_action: str) -> AsyncIterator[str]:
    """Another origin (http://localhost:<port>, the dashboard being http://127.0.0.1:<port>) serving a
    page whose form posts to `form_action`; yields the page's URL."""

    async def bait(request: Request) -> HTMLResponse:
        return HTMLResponse(
            '<!doctype html><title>Free soup</title><link rel="icon" href="data:,">'
            f'<form method="post" action="{form_action}"><button type="submit">Claim your soup</button></form>'
        )

    port = free_port()
    config = uvicorn.Config(Starlette(routes=[Route("/", bait)]), host="127.0.0.1", port=port, log_config=None,
                            access_log=False)  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(15):
        while not server.started:  # uvicorn has no started event to wait on
            if task.done():
                task.result()  # raise the start-up error
            await asyncio.sleep(0.02)
    try:
        yield f"http://localhost:{port}/"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


async def test_every_dashboard_page_loads_with_no_console_error_or_failed_request(
    live_app: str, http: httpx.AsyncClient, run_worker: RunWorker, client: JobClient, ops_tab: Tab
):
    """Overview, workers, jobs (filtered), a job, purge, retry-all-matching, stories and a story: each
    loads its stylesheet and scripts under the policy (htmx running), with nothing refused or failed;
    the overview then updates itself in place."""
    page, watch = ops_tab.page, ops_tab.watch
    await run_worker(REGISTRY)
    body = {"title": "Moon Soup", "prompt": "a chef who cooks soup on the moon", "user_id": "u1", "num_scenes": 2}
    story_id = (await http.post("/stories/", json=body)).json()["story_id"]
    failed = await failed_job(client)

    async def story_done() -> bool:
        return (await http.get(f"/stories/{story_id}/status")).json()["status"] == "completed"

    await wait_for(story_done, 20)
    pages = ["/ops/", "/ops/workers", "/ops/jobs", "/ops/jobs?status=failed&status=completed", f"/ops/jobs/{failed}",
             f"/ops/jobs/story_task.generate:{story_id}", "/ops/purge", "/ops/retry-matching?status=failed",
             "/ops/stories", f"/ops/stories/{story_id}"]  # fmt: skip
    for path in pages:
        answer = await page.goto(f"{live_app}{path}")
        assert answer is not None and answer.status == 200, path
        await page.wait_for_load_state("networkidle")  # the favicon too: leaving sooner would abort it
        assert await page.evaluate("typeof htmx") == "object", path  # the vendored script ran under the policy
        header = await page.evaluate("getComputedStyle(document.querySelector('header')).backgroundColor")
        assert header == "rgb(29, 35, 48)", path  # the stylesheet applied
        watch.assert_clean()
    assert ("GET", "/ops/static/htmx.min.js") in watch.requests and (
        "GET",
        "/ops/static/dashboard.js",
    ) in watch.requests

    # Each click loads a page: let it finish (its deferred script too) before the next, as a person would;
    # leaving sooner aborts the script's request, which the watch rightly counts as a failed request.
    await page.get_by_role("navigation").get_by_role("link", name="Stories").click()
    await page.wait_for_load_state("networkidle")
    await page.locator(f'a.story-link[href$="{story_id}"]').click()
    await page.wait_for_load_state("networkidle")
    await expect(page.locator("#story-status")).to_have_text("completed")
    await expect(page.locator("#scenes tbody tr")).to_have_count(2)
    await page.locator("a.field-link").first.click()  # a job's story_id links back to the story
    await expect(page).to_have_url(re.compile(rf"/ops/stories/{story_id}$"))
    await page.wait_for_load_state("networkidle")

    await page.goto(f"{live_app}/ops/")
    await page.wait_for_load_state("networkidle")
    await page.evaluate("window.notReloaded = true")
    await expect(page.locator("#overview .number").nth(3).locator(".value")).to_have_text("0")
    await client.enqueue("dashb.sleepy", job_id=f"nap-{uuid.uuid4().hex[:8]}", seconds=6)
    await expect(page.locator("#overview .number").nth(3).locator(".value")).to_have_text("1", timeout=8000)
    assert await page.evaluate("window.notReloaded") is True  # htmx swapped the numbers in place
    watch.assert_clean()


async def test_a_failed_job_shows_its_traceback_and_retry_updates_the_page_in_place(
    live_app: str, run_worker: RunWorker, client: JobClient, resources: Resources, ops_tab: Tab, tmp_path: Path
):
    """The failed attempt's traceback is on the page; Retry sends the job back to the queue and the page
    shows it at once, then (over SSE, with no reload) the new attempt running and completing."""
    page, watch = ops_tab.page, ops_tab.watch
    await run_worker(REGISTRY)
    job_id = await failed_job(client)
    await page.goto(f"{live_app}/ops/jobs/{job_id}")
    await expect(page.locator("#job-status")).to_have_text("failed")
    traceback = page.locator("#attempts pre.traceback").last
    await expect(traceback).to_be_visible()
    await expect(traceback).to_contain_text("Traceback (most recent call last)")
    await expect(traceback).to_contain_text('raise PermanentError(f"{key}: the soup went cold on the way to the moon")')
    await expect(page.locator("#job-error")).to_contain_text("PermanentError")
    await expect(page.locator("#cancel")).to_have_count(0)
    await page.evaluate("window.notReloaded = true")

    fixed.add(job_id)
    await page.locator("#retry").click()
    await expect(page.locator("#notice")).to_have_text("Sent back to the queue.")
    await expect(page.locator("#job-status")).to_have_text(re.compile("^(pending|processing)$"))
    await expect(page.locator("#job-status")).to_have_text("completed", timeout=15_000)
    attempts = page.locator("#attempts > li")
    await expect(attempts).to_have_count(2)
    await expect(attempts.nth(0).locator(".badge")).to_have_text("failed")
    await expect(attempts.nth(1).locator(".badge")).to_have_text("completed")
    await expect(page.locator("#job-result")).to_contain_text("served hot on attempt 2")
    assert await page.evaluate("window.notReloaded") is True, "the page was reloaded"
    assert watch.count("GET", f"/ops/jobs/{job_id}/events") >= 1  # followed over Server-Sent Events
    detail = await job_detail(resources.db, job_id)
    assert detail is not None and [a.outcome for a in detail.attempts] == ["failed", "completed"]

    await attempts.nth(0).locator("summary").click()  # both attempts open, for the README's picture
    await expect(attempts.nth(0).locator("pre.traceback")).to_be_visible()
    shot = README_SCREENSHOT if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path / "ops-dashboard.png"
    await page.screenshot(path=shot, full_page=True)
    assert shot.stat().st_size > 10_000  # a real picture of the page
    watch.assert_clean()


async def test_a_form_on_another_site_cannot_retry_a_job(
    live_app: str, run_worker: RunWorker, client: JobClient, resources: Resources, ops_tab: Tab
):
    """A page on another origin posts to the dashboard's Retry in the operator's signed-in browser: the
    browser says it is cross-site, the dashboard answers 403, and the job is still failed."""
    page, watch = ops_tab.page, ops_tab.watch
    await run_worker(REGISTRY)
    job_id = await failed_job(client)
    retry_path = f"/ops/jobs/{job_id}/retry"
    watch.expect_answer(403, retry_path)
    watch.expect_answer(404, "/favicon.ico")  # what the browser asks for after showing the 403's JSON
    async with other_site(f"{live_app}{retry_path}") as bait:
        await page.goto(bait)
        async with page.expect_response(lambda r: urlsplit(r.url).path == retry_path) as answered:
            await page.get_by_role("button", name="Claim your soup").click()
        response = await answered.value
        assert response.status == 403
        sent = await response.request.all_headers()
        assert sent["sec-fetch-site"] == "cross-site"
        assert "Refused" in await response.text()
    await asyncio.sleep(0.5)
    detail = await job_detail(resources.db, job_id)
    assert detail is not None and detail.job.status is JobStatus.FAILED and len(detail.attempts) == 1
    watch.assert_clean()

    await page.goto(f"{live_app}/ops/jobs/{job_id}")  # the dashboard's own button still works
    await page.locator("#retry").click()
    await expect(page.locator("#notice")).to_have_text("Sent back to the queue.")
    await expect(page.locator("#job-status")).to_have_text("failed", timeout=15_000)
    await expect(page.locator("#attempts > li")).to_have_count(2)
    watch.assert_clean()
