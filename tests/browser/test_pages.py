"""The web pages in headless Chromium, against the real app over HTTP with a real worker: the old pages'
flows work on this API, and no page logs a console error, throws, or has a request fail or answered >= 400."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.async_api import Page, expect

from jobs import registry
from jobs.providers.offline import OFFLINE_MARKER
from runner.devservers import EmbeddedValkey
from runner.worker.worker import Worker
from tests.browser.conftest import CHROMIUM, OFFLINE_LATENCY_MS, TIMEOUT_MS, Tab, serve_app
from tests.conftest import MakeSettings, RunWorker, wait_for

if not CHROMIUM.exists():
    pytest.skip(
        f"the browser tier needs Debian's Chromium at {CHROMIUM}: run `apt-get install chromium`",
        allow_module_level=True,
    )

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]

POLL_MS = 2000  # js/main.js's POLL_MS: story-status.html asks again this often
TERMINAL = ("completed", "failed")
FUID = "xHyXCebE7pdl8xPJ7g5n1jmS5WP2"  # a Firebase uid, as the old clients send


async def pause_clock(page: Page) -> None:
    """The page's timers fire only when the test advances its clock (once installed, Playwright's clock
    otherwise runs on in real time); polling and redirects then happen exactly when the test says."""
    now = time.time()
    await page.clock.install(time=now)
    await page.clock.pause_at(now + 1)


def query_id(page: Page) -> str:
    return parse_qs(urlsplit(page.url).query)["id"][0]


async def follow_status(page: Page, *, timeout_s: float = 20) -> list[str]:
    """Let story-status.html poll (its clock advanced a poll interval at a time) until the story ends;
    the statuses it showed, in order."""
    badge = page.locator("#status")
    await expect(badge).not_to_have_text("")
    shown: list[str] = []
    async with asyncio.timeout(timeout_s):
        while True:
            status = await badge.inner_text()
            if not shown or shown[-1] != status:
                shown.append(status)
            if status in TERMINAL:
                return shown
            await page.clock.run_for(POLL_MS)
            await asyncio.sleep(OFFLINE_LATENCY_MS / 1000)


async def make_user(http: httpx.AsyncClient) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:10]
    response = await http.post("/users/", json={"email": f"kim-{tag}@example.com", "username": f"Kim {tag}"})
    assert response.status_code == 201, response.text
    user: dict[str, Any] = response.json()
    return user


async def make_story(http: httpx.AsyncClient, user_id: str, title: str, num_scenes: int = 1) -> str:
    body = {"title": title, "prompt": "a turtle who learns to fly", "style": "fantasy", "num_scenes": num_scenes,
            "user_id": user_id}  # fmt: skip
    response = await http.post("/stories/", json=body)
    assert response.status_code == 202, response.text
    story_id: str = response.json()["story_id"]
    return story_id


async def until_status(http: httpx.AsyncClient, story_id: str, wanted: str) -> None:
    async def reached() -> bool:
        return (await http.get(f"/stories/{story_id}/status")).json()["status"] == wanted

    await wait_for(reached, 20)


async def test_a_story_made_with_the_form_is_followed_to_completed_and_read_with_its_media(
    live_app: str, worker: Worker, tab: Tab
):
    """From / through the form (the old body, field for field) to the status page, which polls every
    2 s, shows each status lowercase with the scene count, stops at completed and links the story,
    whose page shows title, date and every scene with its loaded image, text and playable narration."""
    page, watch = tab.page, tab.watch
    await pause_clock(page)
    await page.goto(f"{live_app}/")
    assert urlsplit(page.url).path == "/static/index.html"
    await expect(page).to_have_title("StoryMimi")
    watch.assert_clean()

    await page.locator("main").get_by_role("link", name="Create a story").click()
    await page.wait_for_url("**/static/create-story.html")
    await expect(page.locator("#num_scenes")).to_have_value("3")
    await page.fill("#user_id", FUID)
    await page.fill("#title", "Moon Soup")
    await page.fill("#prompt", "a chef who cooks soup on the moon")
    await page.select_option("#style", "sci-fi")
    await page.fill("#num_scenes", "2")
    async with page.expect_request(lambda r: r.method == "POST" and urlsplit(r.url).path == "/stories/") as posted:
        await page.get_by_role("button", name="Create story").click()
    assert (await posted.value).post_data_json == {
        "title": "Moon Soup", "prompt": "a chef who cooks soup on the moon", "style": "sci-fi", "num_scenes": 2,
        "user_id": FUID}  # fmt: skip
    await page.wait_for_url("**/static/story-status.html?id=*")
    story_id = query_id(page)
    watch.assert_clean()

    status_path = f"/stories/{story_id}/status"
    await expect(page.locator("#status")).not_to_have_text("")
    polls = watch.count("GET", status_path)
    await page.clock.run_for(POLL_MS - 200)
    await asyncio.sleep(0.1)
    assert watch.count("GET", status_path) == polls, "polled again sooner than every 2 s"
    shown = await follow_status(page)
    assert shown[-1] == "completed" and set(shown) <= {"pending", "processing", "completed"}, shown
    assert len(shown) > 1, f"the page never showed the story before it completed: {shown}"
    await expect(page.locator("#status")).to_have_class("badge badge-completed")
    await expect(page.locator("#scenes")).to_have_text("2 / 2")
    polls = watch.count("GET", status_path)
    await page.clock.run_for(30 * POLL_MS)
    await asyncio.sleep(0.2)
    assert watch.count("GET", status_path) == polls, "kept polling a completed story"
    watch.assert_clean()

    await page.get_by_role("link", name="Read the story").click()
    await page.wait_for_url(f"**/static/story.html?id={story_id}")
    await expect(page.locator("#story-title")).to_have_text("Moon Soup")
    await expect(page.locator("#story-date")).not_to_have_text("")
    await expect(page.locator("#story-user")).to_have_attribute("href", f"/static/user-stories.html?id={FUID}")
    scenes = page.locator(".scene")
    await expect(scenes).to_have_count(2)
    for n in range(2):
        scene = scenes.nth(n)
        await expect(scene.locator(".scene-text")).to_contain_text(OFFLINE_MARKER)
        image, audio = scene.locator("img"), scene.locator("audio")
        await expect(image).to_have_attribute("src", re.compile(rf"^{re.escape(live_app)}/media/"))
        await expect(image).to_have_attribute("alt", f"Scene {n + 1}")
        await image.evaluate("img => img.decode()")  # rejects if the image did not load and decode
        assert await image.evaluate("img => img.naturalWidth") > 0
        await expect(audio).to_have_attribute("src", re.compile(rf"^{re.escape(live_app)}/media/"))
        await page.wait_for_function(
            "audio => audio.readyState >= 1 && audio.duration > 0", arg=await audio.element_handle()
        )
    watch.assert_clean()


async def test_a_user_made_with_the_form_is_remembered_for_the_story_form(
    live_app: str, http: httpx.AsyncClient, tab: Tab
):
    """create-user.html posts the old body ({email, username}), keeps the new user_id in
    localStorage.currentUserId and goes to the story form, which it fills in."""
    page, watch = tab.page, tab.watch
    await page.goto(f"{live_app}/static/index.html")
    await page.locator("main").get_by_role("link", name="Create a user").click()
    await page.wait_for_url("**/static/create-user.html")
    email = f"ada-{uuid.uuid4().hex[:10]}@example.com"
    await page.fill("#username", "Ada")
    await page.fill("#email", email)
    async with page.expect_request(lambda r: r.method == "POST" and urlsplit(r.url).path == "/users/") as posted:
        await page.get_by_role("button", name="Create user").click()
    assert (await posted.value).post_data_json == {"email": email, "username": "Ada"}
    await page.wait_for_url("**/static/create-story.html")
    user_id = await page.evaluate("localStorage.getItem('currentUserId')")
    assert user_id
    await expect(page.locator("#user_id")).to_have_value(user_id)
    user = (await http.get(f"/users/{user_id}")).json()
    assert (user["email"], user["display_name"]) == (email, "Ada")
    watch.assert_clean()


async def test_the_user_stories_page_lists_each_story_with_a_link_for_its_status(
    live_app: str, http: httpx.AsyncClient, run_worker: RunWorker, tab: Tab
):
    """user-stories.html shows the user and their stories newest first, each with its lowercase status:
    a completed one links to its story, a failed one to its status page, which shows it failed."""
    page, watch = tab.page, tab.watch
    user = await make_user(http)
    failed = await make_story(http, user["user_id"], "The Lost Kite")
    assert (await http.put(f"/stories/{failed}/status", json={"status": "failed"})).status_code == 200  # no worker yet
    await run_worker(registry)
    done = await make_story(http, user["user_id"], "The Found Kite")
    await until_status(http, done, "completed")

    await page.goto(f"{live_app}/static/user-stories.html?id={user['user_id']}")
    await expect(page.locator("#user-name")).to_have_text(user["display_name"])
    await expect(page.locator("#user-email")).to_have_text(user["email"])
    items = page.locator("#stories li")
    await expect(items).to_have_count(2)
    await expect(items.locator(".story-title")).to_have_text(["The Found Kite", "The Lost Kite"])
    await expect(items.locator(".badge")).to_have_text(["completed", "failed"])
    await expect(items.nth(0).get_by_role("link")).to_have_text("View")
    await expect(items.nth(0).get_by_role("link")).to_have_attribute("href", f"/static/story.html?id={done}")
    await expect(items.nth(1).get_by_role("link")).to_have_text("Check status")
    await expect(page.locator("#no-stories")).to_be_hidden()
    watch.assert_clean()

    await items.nth(1).get_by_role("link").click()
    await page.wait_for_url(f"**/static/story-status.html?id={failed}")
    await expect(page.locator("#status")).to_have_text("failed")
    await expect(page.locator("#view-story")).to_be_hidden()
    await page.go_back()
    await items.nth(0).get_by_role("link").click()
    await page.wait_for_url(f"**/static/story.html?id={done}")
    await expect(page.locator("#story-title")).to_have_text("The Found Kite")
    await expect(page.locator(".scene")).to_have_count(1)
    watch.assert_clean()


async def test_delete_user_asks_first_then_deletes_the_account_and_its_stories(
    live_app: str, http: httpx.AsyncClient, tab: Tab
):
    """delete-user.html sends nothing until the box is ticked and the dialog accepted; then
    DELETE /users/delete-account deletes the user and their story, and the page says so and goes home."""
    page, watch = tab.page, tab.watch
    user = await make_user(http)
    story_id = await make_story(http, user["user_id"], "Gone Soon")
    await pause_clock(page)
    await page.goto(f"{live_app}/static/create-story.html")
    await page.evaluate("id => localStorage.setItem('currentUserId', id)", user["user_id"])
    await page.get_by_role("navigation").get_by_role("link", name="Delete a user").click()
    await page.wait_for_url("**/static/delete-user.html")
    await expect(page.locator("#user_id")).to_have_value(user["user_id"])  # the remembered user
    await page.fill("#email", user["email"].upper())
    delete = ("DELETE", "/users/delete-account")
    await page.get_by_role("button", name="Delete account").click()  # the box is not ticked: the form is invalid
    await page.check("#confirm")
    page.once("dialog", lambda dialog: dialog.dismiss())
    await page.get_by_role("button", name="Delete account").click()
    await asyncio.sleep(0.2)
    assert watch.count(*delete) == 0, "deleted without confirmation"
    assert (await http.get(f"/users/{user['user_id']}")).status_code == 200

    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Delete account").click()
    await expect(page.locator("#message")).to_have_text("Account deleted, with 1 story. Going home…")
    assert watch.count(*delete) == 1
    assert await page.evaluate("localStorage.getItem('currentUserId')") is None
    assert (await http.get(f"/users/{user['user_id']}")).status_code == 404
    assert (await http.get(f"/stories/{story_id}")).status_code == 404
    await page.clock.run_for(3000)
    await page.wait_for_url("**/static/index.html")
    watch.assert_clean()


async def test_api_errors_are_shown_in_the_page_without_throwing(live_app: str, tab: Tab):
    """A 422 on the story form shows each field's rule and gives the button back (the old page threw a
    ReferenceError there); an unknown story's status page shows the 404's detail and stops polling."""
    page, watch = tab.page, tab.watch
    await pause_clock(page)
    watch.expect_answer(422, "/stories/")
    await page.goto(f"{live_app}/static/create-story.html")
    await page.fill("#user_id", "not a valid id!")
    await page.fill("#title", "Nope")
    await page.fill("#prompt", "anything")
    button = page.get_by_role("button", name="Create story")
    await button.click()
    await expect(page.locator("#message")).to_contain_text("user_id: String should match pattern")
    await expect(button).to_be_enabled()
    assert urlsplit(page.url).path == "/static/create-story.html"
    watch.assert_clean()

    missing = str(uuid.uuid4())
    watch.expect_answer(404, f"/stories/{missing}/status")
    await page.goto(f"{live_app}/static/story-status.html?id={missing}")
    await expect(page.locator("#message")).to_have_text(f"Story with ID {missing} not found")
    await expect(page.locator("#status-note")).to_have_text("Stopped checking.")
    await page.clock.run_for(5 * POLL_MS)
    await asyncio.sleep(0.1)
    assert watch.count("GET", f"/stories/{missing}/status") == 1
    watch.assert_clean()


async def test_a_server_that_is_down_is_named_in_the_page_and_a_retry_then_works(
    make_settings: MakeSettings, tmp_path: Any, tab: Tab
):
    """With the app's Redis stopped, the story form shows the 503's detail and the server it names; once
    Redis is back, the same form submits and moves on to the status page."""
    page, watch = tab.page, tab.watch
    await pause_clock(page)  # one status poll only: none is left in flight when the app stops
    with EmbeddedValkey(tmp_path / "own-valkey") as own_redis:
        settings = make_settings(redis_url=own_redis.url, offline_latency_ms=OFFLINE_LATENCY_MS)
        async with serve_app(settings) as base_url:
            await page.goto(f"{base_url}/static/create-story.html")
            await page.fill("#user_id", FUID)
            await page.fill("#title", "Later")
            await page.fill("#prompt", "a story told once Redis is back")
            watch.expect_answer(503, "/stories/")
            await asyncio.to_thread(own_redis.stop)
            await page.get_by_role("button", name="Create story").click()
            message = page.locator("#message")
            await expect(message).to_contain_text("Redis (the job queue) is unavailable")
            await expect(message).to_contain_text("(server down: redis)")
            watch.assert_clean()
            watch.expected.clear()

            await asyncio.to_thread(own_redis.start)
            await page.get_by_role("button", name="Create story").click()
            await page.wait_for_url("**/static/story-status.html?id=*")
            await expect(page.locator("#status")).to_have_text("pending")  # no worker on this Redis
            watch.assert_clean()


async def test_the_api_docs_page_works_without_the_internet(live_app: str, tab: Tab):
    """/docs (linked from every page) loads Swagger UI from this server, not a CDN, and shows the routes."""
    page, watch = tab.page, tab.watch
    await page.goto(f"{live_app}/docs")
    await expect(page.get_by_text("/stories/conversation-to-story").first).to_be_visible(timeout=TIMEOUT_MS)
    assert ("GET", "/docs-assets/swagger-ui-bundle.js") in watch.requests
    watch.assert_clean()  # a CDN request would have failed here: no internet
