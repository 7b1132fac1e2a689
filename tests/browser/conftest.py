"""Browser tier: the real app over real HTTP (uvicorn on a free loopback port), an in-process worker, and
Debian's headless Chromium driven by Playwright's async API (no downloaded browser build)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from playwright.async_api import Browser, ConsoleMessage, Page, Request, Response, async_playwright

from jobs import registry
from runner.devservers import free_port
from runner.settings import Settings
from runner.worker.worker import Worker
from tests.conftest import MakeSettings, RunWorker

CHROMIUM = Path("/usr/bin/chromium")  # Debian's `chromium` package (`apt-get install chromium`)
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",  # we run as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]  # fmt: skip
TIMEOUT_MS = 10_000  # any one Playwright action or wait
OFFLINE_LATENCY_MS = 250  # slow enough that a story page sees `pending` or `processing` before `completed`


@pytest.fixture
def settings(make_settings: MakeSettings) -> Settings:
    """The session's servers, a queue of the test's own, offline providers a little slower than elsewhere."""
    return make_settings(offline_latency_ms=OFFLINE_LATENCY_MS)


@asynccontextmanager
async def serve_app(settings: Settings) -> AsyncIterator[str]:
    """The real app (`api.main.create_app`, lifespan and all) served by uvicorn; yields its base URL."""
    from api.main import create_app

    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(30):
        while not server.started:  # uvicorn has no started event to wait on
            if task.done():
                task.result()  # raise the start-up error
                raise AssertionError("uvicorn stopped before it started serving")
            await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


@pytest.fixture
async def live_app(settings: Settings) -> AsyncIterator[str]:
    """The app on a free loopback port over the session's Redis and Postgres; yields its base URL."""
    async with serve_app(settings) as base_url:
        yield base_url


@pytest.fixture
async def worker(run_worker: RunWorker) -> Worker:
    """An in-process worker with the StoryMimi jobs, on the test's queue: stories really complete."""
    return await run_worker(registry)


@pytest.fixture
async def http(live_app: str) -> AsyncIterator[httpx.AsyncClient]:
    """A plain HTTP client of the live app, to set up and check what the pages did."""
    async with httpx.AsyncClient(base_url=live_app, timeout=10) as client:
        yield client


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium for the session; Playwright gives it a fresh temporary profile (user data dir)."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS, timeout=30_000
        )
        yield launched
        await launched.close()


@dataclass
class PageWatch:
    """Everything that went wrong on a page: console errors, uncaught exceptions, failed requests and
    answers >= 400, except the answers a test provokes on purpose (`expect_answer`)."""

    problems: list[str] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path) of every request made
    expected: set[tuple[int, str]] = field(default_factory=set)  # (status, path)

    def attach(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"uncaught exception on {page.url}: {error}"))
        page.on("request", lambda request: self.requests.append((request.method, urlsplit(request.url).path)))
        page.on("requestfailed", self._request_failed)
        page.on("response", self._response)

    def expect_answer(self, status: int, path: str) -> None:
        """The test makes `path` answer `status` on purpose: neither the answer nor the console's
        "Failed to load resource" line for it is a problem."""
        self.expected.add((status, path))

    def count(self, method: str, path: str) -> int:
        return self.requests.count((method, path))

    def assert_clean(self) -> None:
        assert not self.problems, "the pages had problems:\n" + "\n".join(self.problems)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        path = urlsplit(message.location.get("url", "")).path
        provoked = any(
            message.text.startswith(f"Failed to load resource: the server responded with a status of {status} ")
            and path == expected_path
            for status, expected_path in self.expected
        )
        if not provoked:
            self.problems.append(f"console error at {message.location}: {message.text}")

    def _request_failed(self, request: Request) -> None:
        self.problems.append(f"request failed: {request.method} {request.url}: {request.failure}")

    def _response(self, response: Response) -> None:
        if response.status >= 400 and (response.status, urlsplit(response.url).path) not in self.expected:
            self.problems.append(f"{response.status} for {response.request.method} {response.url}")


@dataclass(frozen=True)
class Tab:
    page: Page
    watch: PageWatch


@pytest.fixture
async def tab(browser: Browser) -> AsyncIterator[Tab]:
    """A page in a context of its own (its own localStorage), watched from its first request."""
    context = await browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    watch = PageWatch()
    watch.attach(page)
    yield Tab(page, watch)
    if watch.problems:  # shown with a failed test's captured output, whatever assertion failed first
        print("page problems:", *watch.problems, sep="\n  ")
    await context.close()
