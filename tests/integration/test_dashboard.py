"""The operators' dashboard over HTTP, against the real app and real servers: every page behind the
password, every link built from the mount point, filters and keyset pages, each action doing what the
service layer does (and each refused when it comes from another site, or when the dashboard is
read-only), a fresh CSP nonce per page, and a job's changes streamed over SSE."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
from fastapi import Request

from api.deps import AppState
from api.ops_story import story_pages
from jobs import registry as story_registry
from runner.client import JobClient
from runner.context import JobContext
from runner.dashboard import ops_router
from runner.errors import PermanentError
from runner.ops.history import job_detail
from runner.ops.workers import list_workers
from runner.registry import Registry, job
from runner.resources import Resources
from runner.settings import Settings
from runner.status import JobStatus
from runner.worker.worker import ExitReason
from tests.conftest import MakeSettings, RunWorker, wait_for

USER, PASSWORD = "ops", "correct horse battery staple"
fixed: set[str] = set()


@job("dash.flaky")
async def flaky(ctx: JobContext, *, key: str, why: str = "the moon is made of cheese") -> str:
    if key not in fixed:
        raise PermanentError(f"{key}: {why}")
    return f"{key} fixed on attempt {ctx.attempt}"


@job("dash.sleepy")
async def sleepy(ctx: JobContext, *, seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


@job("dash.parent")
async def parent(ctx: JobContext, *, children: int) -> int:
    for i in range(children):
        await ctx.jobs.enqueue("dash.sleepy", job_id=f"{ctx.job_id}/child {i}", seconds=0)
    return children


# The story jobs too, so a story made through the API really completes on the same queue.
REGISTRY = dataclasses.replace(story_registry, specs=(*story_registry.specs, flaky, sleepy, parent))
TEST_ONLY = Registry(specs=(flaky, sleepy, parent))


@pytest.fixture
def settings(make_settings: MakeSettings) -> Settings:
    return make_settings(ops_username=USER, ops_password=PASSWORD)


@pytest.fixture
def tag() -> str:
    """Job ids are unique across the whole status table (every test's queue shares it): ours end with this."""
    return uuid.uuid4().hex[:8]


@pytest.fixture
def client(resources: Resources, settings: Settings) -> JobClient:
    return JobClient(resources, TEST_ONLY.resolved(settings))


def _resources(request: Request) -> Resources:
    state: AppState = request.app.state.storymimi
    return state.resources


@asynccontextmanager
async def dashboard(
    settings: Settings, *, auth: bool = True, prefix: str | None = None, root_path: str = ""
) -> AsyncIterator[httpx.AsyncClient]:
    """The real app (lifespan run) in-process; `prefix` mounts a second dashboard there as a host app would;
    `root_path` serves the app as a proxy would under that path."""
    from api.main import create_app

    app = create_app(settings)  # type: ignore[arg-type]  # make_settings gives StorySettings
    if prefix is not None:
        app.include_router(ops_router(settings, _resources, extensions=[story_pages()], name="second"), prefix=prefix)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, root_path=root_path)
        credentials = (USER, PASSWORD) if auth else None
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", auth=credentials) as http:
            yield http


@pytest.fixture
async def ops(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with dashboard(settings) as http:
        yield http


async def until(client: JobClient, job_id: str, *statuses: JobStatus, timeout: float = 15) -> None:
    async def reached() -> bool:
        row = await client.get(job_id)
        return row is not None and row.status in statuses

    await wait_for(reached, timeout)


async def failed_job(client: JobClient, job_id: str, why: str = "the moon is made of cheese") -> None:
    await client.enqueue("dash.flaky", job_id=job_id, key=job_id, why=why)
    await until(client, job_id, JobStatus.FAILED)


async def pending_job(client: JobClient, job_id: str) -> None:
    """A pending job (nobody runs it): enough for pages that show one."""
    await client.enqueue("dash.sleepy", job_id=job_id, seconds=0)


class Links(HTMLParser):
    """Every URL a page names: links, assets, htmx requests, form actions (with their method), live streams."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str]] = []  # (kind, url)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v for k, v in attrs if v is not None and not v.startswith("data:")}  # the inline icon
        for attr in ("href", "src", "hx-get", "data-refresh"):
            if attr in values:
                self.found.append(("get", values[attr]))
        if "data-events" in values:
            self.found.append(("events", values["data-events"]))
        if tag == "form" and "action" in values:
            self.found.append((values.get("method", "get").lower(), values["action"]))
        if "hx-post" in values:
            self.found.append(("post", values["hx-post"]))


def links(html: str) -> list[tuple[str, str]]:
    parser = Links()
    parser.feed(html)
    return parser.found


def job_ids(html: str) -> list[str]:
    """The jobs a list shows, in order (their page links)."""
    return [
        urlsplit(href).path.rsplit("/jobs/", 1)[1] for href in re.findall(r'class="mono job-link" href="([^"]+)"', html)
    ]


def events(stream: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for block in stream.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "event" in lines:
            found.append((lines["event"], orjson.loads(lines["data"])))
    return found


async def test_every_page_answers_with_the_password_and_401_without(
    ops: httpx.AsyncClient, client: JobClient, run_worker: RunWorker, tag: str
):
    """Each page, fragment, JSON twin and asset is a 200 with the password; a 401 that asks for Basic
    credentials without it or with a wrong one."""
    await run_worker(REGISTRY)
    broken = f"broken-{tag}"
    await failed_job(client, broken)
    story = await ops.post("/stories/", json={"title": "Moon Soup", "prompt": "soup on the moon", "user_id": "u1"})
    story_id = story.json()["story_id"]
    pages = ["/ops/", "/ops/workers", "/ops/jobs", "/ops/jobs?status=failed", f"/ops/jobs/{broken}", "/ops/purge",
             "/ops/retry-matching?status=failed", "/ops/stories", f"/ops/stories/{story_id}", "/ops/api/overview",
             "/ops/api/workers", "/ops/api/jobs", f"/ops/api/jobs/{broken}", "/ops/static/htmx.min.js",
             "/ops/static/dashboard.js", "/ops/static/dashboard.css"]  # fmt: skip
    for path in pages:
        answer = await ops.get(path)
        assert answer.status_code == 200, (path, answer.text[:300])
        for auth in (None, (USER, "wrong"), ("root", PASSWORD)):
            refused = await ops.get(path, auth=auth)
            assert refused.status_code == 401, (path, auth)
            assert refused.headers["www-authenticate"].startswith('Basic realm="StoryMimi operations"')
    assert (await ops.get("/ops", follow_redirects=True)).status_code == 200  # the mount point, redirected
    assert (await ops.get("/ops/jobs/no-such-job")).status_code == 404
    assert (await ops.get("/ops/stories/not-a-uuid")).status_code == 404
    assert (await ops.get("/ops/static/../main.py")).status_code == 404


@pytest.mark.parametrize("allow", [False, True])
async def test_without_a_password_it_is_closed_unless_no_auth_is_allowed(make_settings: MakeSettings, allow: bool):
    """No OPS_PASSWORD: a 401 that says what to set; OPS_ALLOW_NO_AUTH=true opens it (for local use)."""
    settings = make_settings(ops_allow_no_auth=allow)
    async with dashboard(settings, auth=False) as http:
        answer = await http.get("/ops/")
    if allow:
        assert answer.status_code == 200
    else:
        assert answer.status_code == 401
        assert "set OPS_PASSWORD" in answer.text and "OPS_ALLOW_NO_AUTH=true" in answer.text


async def test_every_link_resolves_under_another_prefix(
    settings: Settings, client: JobClient, run_worker: RunWorker, tag: str
):
    """A second dashboard mounted at /admin/queue: crawling every page from its root, every link, asset,
    htmx request, form action and stream stays under /admin/queue and answers (a form's action is posted
    as another site would, so the guard refuses it once the route matched); the extension's story pages
    are crawled too."""
    await run_worker(REGISTRY)
    async with dashboard(settings, prefix="/admin/queue") as http:
        story = await http.post("/stories/", json={"title": "Crawl", "prompt": "a crawl", "user_id": "u1",
                                                   "num_scenes": 2})  # fmt: skip
        story_id = story.json()["story_id"]
        odd = f"odd id/with ?#% chars {tag}"
        await failed_job(client, odd)
        await client.enqueue("dash.parent", job_id=f"parent-{tag}", children=2)
        for job_id in (f"parent-{tag}", f"parent-{tag}/child 0", f"parent-{tag}/child 1"):
            await until(client, job_id, JobStatus.COMPLETED, timeout=20)

        async def story_done() -> bool:
            return (await http.get(f"/stories/{story_id}")).json()["status"] == "completed"

        await wait_for(story_done, 20)
        seen: set[str] = set()
        queue = ["/admin/queue/"]
        visited_kinds: set[str] = set()
        while queue:
            url = queue.pop()
            answer = await http.get(url)
            assert answer.status_code == 200, (url, answer.status_code, answer.text[:300])
            if "text/html" not in answer.headers["content-type"]:
                continue
            for kind, link in links(answer.text):
                parts = urlsplit(link)
                assert parts.netloc in ("", "testserver"), link
                if parts.path.startswith("/media/"):  # the story's media (other tests' stories keep theirs elsewhere)
                    assert story_id not in link or (await http.get(link)).status_code == 200, link
                    continue
                assert parts.path.startswith("/admin/queue/"), (url, link)
                visited_kinds.add(kind)
                if kind == "post":  # a route answers: refused by the guard (a 404 if nothing matched), nothing done
                    assert (await http.post(link, headers={"Sec-Fetch-Site": "cross-site"})).status_code == 403, link
                elif kind == "events":  # this test's jobs have ended: their streams answer at once
                    assert (await http.get(link)).headers["content-type"].startswith("text/event-stream")
                elif "/stories/" in parts.path and story_id not in parts.path:
                    continue  # other tests' stories (the table is shared): their jobs may never end
                elif link not in seen and len(seen) < 300 and "cursor=" not in link:
                    seen.add(link)
                    queue.append(link)
        paths = {urlsplit(u).path for u in seen}
        assert {"/admin/queue/", "/admin/queue/workers", "/admin/queue/jobs", "/admin/queue/purge",
                "/admin/queue/stories", f"/admin/queue/stories/{story_id}",
                f"/admin/queue/jobs/odd%20id%2Fwith%20%3F%23%25%20chars%20{tag}"} <= paths  # fmt: skip
        assert {"get", "post"} <= visited_kinds
        assert not any(p.startswith("/ops") for p in paths)


async def test_behind_a_proxy_every_link_keeps_the_root_path(settings: Settings, client: JobClient, tag: str):
    """Served under a root path (a proxy's `/tools`), the pages link to /tools/admin/queue/..., which answer."""
    await pending_job(client, f"queued-{tag}")
    async with dashboard(settings, prefix="/admin/queue", root_path="/tools") as http:
        for page in ("/tools/admin/queue/", "/tools/admin/queue/jobs", f"/tools/admin/queue/jobs/queued-{tag}"):
            answer = await http.get(page)
            assert answer.status_code == 200, (page, answer.text[:200])
            found = links(answer.text)
            assert found and all(urlsplit(link).path.startswith("/tools/admin/queue/") for _, link in found), found
            for link in [link for kind, link in found if kind == "get"]:
                assert (await http.get(link)).status_code == 200, link


async def test_filters_combine_and_pages_follow_their_cursor(
    ops: httpx.AsyncClient, client: JobClient, run_worker: RunWorker, tag: str
):
    """status (several), name, an argument, error text and times narrow the list; a page of `limit`
    links to the next until the last, newest first, each job once."""
    await run_worker(TEST_ONLY)
    for i in range(7):
        await failed_job(client, f"quota-{i}-{tag}", why=f"quota exceeded {i}")
    await failed_job(client, f"disk-{tag}", why="disk full")
    await client.enqueue("dash.sleepy", job_id=f"nap-{tag}", seconds=0)
    await until(client, f"nap-{tag}", JobStatus.COMPLETED)

    pages, url = [], "/ops/jobs?status=failed&error=quota&limit=3"
    while url:
        answer = await ops.get(url)
        assert answer.status_code == 200
        pages.append(job_ids(answer.text))
        found = re.search(r'id="next-page" href="([^"]+)"', answer.text)
        url = found.group(1).replace("&amp;", "&") if found else ""
    assert pages == [
        [f"quota-{i}-{tag}" for i in (6, 5, 4)],
        [f"quota-{i}-{tag}" for i in (3, 2, 1)],
        [f"quota-0-{tag}"],
    ]

    async def shown(query: str) -> set[str]:
        answer = await ops.get(f"/ops/jobs?{query}")
        assert answer.status_code == 200, answer.text
        return set(job_ids(answer.text))

    assert await shown("status=failed&status=completed&error=full") == {f"disk-{tag}"}
    assert await shown("status=completed") == {f"nap-{tag}"}
    assert await shown("name=dash.sleepy") == {f"nap-{tag}"}
    assert await shown(f"field=key%3Dquota-3-{tag}") == {f"quota-3-{tag}"}
    assert await shown("until=2000-01-01T00:00") == set()
    assert len(await shown("since=2000-01-01T00:00&status=failed")) == 8
    for bad, message in (("status=lost", "status must be one of"), ("field=nothing", "field must be an argument"),
                         ("since=yesterday", "since must be a time"), ("cursor=xyz", "was not given out"),
                         ("limit=0", "limit must be")):  # fmt: skip
        answer = await ops.get(f"/ops/jobs?{bad}")
        assert answer.status_code == 400 and message in answer.text, (bad, answer.text[:200])
    api = (await ops.get("/ops/api/jobs?status=failed&error=quota&limit=5")).json()
    assert [j["job_id"] for j in api["jobs"]] == [f"quota-{i}-{tag}" for i in (6, 5, 4, 3, 2)] and api["next_cursor"]


async def test_retry_and_cancel_act_like_the_service_layer(
    ops: httpx.AsyncClient, client: JobClient, resources: Resources, run_worker: RunWorker, tag: str
):
    """Retry sends a failed job back (its next attempt numbered on, its traceback kept); Cancel stops a
    running one; htmx gets the page's fragment with what happened, a plain form a redirect to the page."""
    await run_worker(TEST_ONLY)
    failing, long = f"r1-{tag}", f"long-{tag}"
    await failed_job(client, failing)
    page = await ops.get(f"/ops/jobs/{failing}")
    assert "Traceback (most recent call last)" in page.text and f"PermanentError: {failing}: the moon" in page.text
    assert 'id="retry"' in page.text and 'id="cancel"' not in page.text

    fixed.add(failing)
    answer = await ops.post(f"/ops/jobs/{failing}/retry", headers={"HX-Request": "true"})
    assert answer.status_code == 200 and "Sent back to the queue." in answer.text
    assert answer.text.lstrip().startswith('<section id="job-live"')  # the fragment, not a whole page
    await until(client, failing, JobStatus.COMPLETED)
    detail = await job_detail(resources.db, failing)
    assert detail is not None and [(a.attempt, a.outcome) for a in detail.attempts] == [(1, "failed"), (2, "completed")]
    again = await ops.post(f"/ops/jobs/{failing}/retry", headers={"HX-Request": "true"})
    assert "Not retried" in again.text

    await client.enqueue("dash.sleepy", job_id=long, seconds=30)
    await until(client, long, JobStatus.PROCESSING)
    assert 'id="cancel"' in (await ops.get(f"/ops/jobs/{long}")).text
    answer = await ops.post(f"/ops/jobs/{long}/cancel")
    assert answer.status_code == 303 and answer.headers["location"] == f"/ops/jobs/{long}"
    await until(client, long, JobStatus.CANCELLED)
    answer = await ops.post(f"/ops/jobs/{long}/cancel", headers={"HX-Request": "true"})
    assert "Not cancelled: it had already ended (cancelled)" in answer.text

    api = (await ops.get(f"/ops/api/jobs/{failing}")).json()
    assert api["job"]["status"] == "completed" and [a["outcome"] for a in api["attempts"]] == ["failed", "completed"]
    assert "Traceback" in api["attempts"][0]["traceback"] and api["attempts"][0]["duration_s"] >= 0
    assert (await ops.post(f"/ops/api/jobs/{long}/retry")).json() == {"job_id": long, "retried": True}
    await until(client, long, JobStatus.PROCESSING)
    assert (await ops.post(f"/ops/api/jobs/{long}/cancel")).json()["cancel_requested"] is True
    await until(client, long, JobStatus.CANCELLED)
    assert (await ops.post(f"/ops/api/jobs/none-{tag}/cancel")).status_code == 404


async def test_retry_all_matching_shows_the_count_and_needs_it_confirmed(
    ops: httpx.AsyncClient, client: JobClient, resources: Resources, run_worker: RunWorker, tag: str
):
    """The jobs page's button leads to the count of matching failed jobs; the confirm posts that count
    back: a different one is a 409 showing the count now, the right one retries exactly those."""
    await run_worker(TEST_ONLY)
    for i in range(3):
        await failed_job(client, f"bad{i}-{tag}", why=f"quota exceeded {i}")
    await failed_job(client, f"other-{tag}", why="disk full")

    jobs_page = await ops.get("/ops/jobs?error=quota")
    button = re.search(r'id="retry-matching" href="([^"]+)"', jobs_page.text)
    assert button is not None
    count_page = await ops.get(button.group(1).replace("&amp;", "&"))
    assert '<strong id="count">3</strong>' in count_page.text
    action = re.search(r'<form method="post" action="([^"]+)"', count_page.text)
    assert action is not None and action.group(1) == "/ops/retry-matching?error=quota"
    assert '<input type="hidden" name="confirm" value="3">' in count_page.text

    wrong = await ops.post(action.group(1), data={"confirm": "2"})
    assert wrong.status_code == 409 and "3 jobs match now, not the 2 confirmed" in wrong.text
    assert '<input type="hidden" name="confirm" value="3">' in wrong.text  # confirm again, with the count now
    assert (await ops.post(action.group(1), data={"confirm": "many"})).status_code == 400
    done = await ops.post(action.group(1), data={"confirm": "3"})
    assert done.status_code == 200 and "Sent 3 of 3 jobs back to the queue." in done.text

    async def all_ran_again() -> bool:
        details = [await job_detail(resources.db, f"bad{i}-{tag}") for i in range(3)]
        return all(d is not None and d.job.status is JobStatus.FAILED and len(d.attempts) == 2 for d in details)

    await wait_for(all_ran_again)
    other = await job_detail(resources.db, f"other-{tag}")
    assert other is not None and len(other.attempts) == 1


async def test_purge_shows_the_count_and_needs_it_confirmed(
    ops: httpx.AsyncClient, client: JobClient, settings: Settings, run_worker: RunWorker, tag: str
):
    """With the one slot busy, four jobs wait: the purge page counts them, a wrong count is a 409, the
    right one cancels them through the workers and spares the running job."""
    await run_worker(TEST_ONLY, settings.model_copy(update={"worker_concurrency": 1}))
    running = f"running-{tag}"
    await client.enqueue("dash.sleepy", job_id=running, seconds=2)
    await until(client, running, JobStatus.PROCESSING)
    for i in range(4):
        await client.enqueue("dash.sleepy", job_id=f"queued{i}-{tag}", seconds=0)

    page = await ops.get("/ops/purge")
    assert '<strong id="count">4</strong>' in page.text and 'name="confirm" value="4"' in page.text
    wrong = await ops.post("/ops/purge", data={"confirm": "3"})
    assert wrong.status_code == 409 and '<strong id="count">4</strong>' in wrong.text
    done = await ops.post("/ops/purge", data={"confirm": "4"})
    assert done.status_code == 200 and "Purged 4 queued jobs" in done.text
    for i in range(4):
        await until(client, f"queued{i}-{tag}", JobStatus.CANCELLED)
    await until(client, running, JobStatus.COMPLETED)
    assert 'id="count-none"' in (await ops.get("/ops/purge")).text


async def test_drain_retires_the_worker_named(
    ops: httpx.AsyncClient, settings: Settings, resources: Resources, run_worker: RunWorker
):
    """The workers page lists both with their lag; Drain retires the one named (the other runs on), and
    says so; a worker already gone is named as such."""
    first = await run_worker(TEST_ONLY)
    second = await run_worker(TEST_ONLY)

    async def both_listed() -> bool:
        return len(await list_workers(resources.redis, settings.queue_name)) == 2

    await wait_for(both_listed)
    page = await ops.get("/ops/workers")
    assert page.text.count(">Drain</button>") == 2 and page.text.count('<span class="lag') == 2
    answer = await ops.post(f"/ops/workers/{first.worker_id}/drain")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/ops/workers?drained=")
    assert first.worker_id in (await ops.get(answer.headers["location"])).text

    async def first_gone() -> bool:
        return {w.worker_id for w in await list_workers(resources.redis, settings.queue_name)} == {second.worker_id}

    await wait_for(first_gone)
    assert first.exit_reason is ExitReason.DRAINED
    gone = await ops.post("/ops/workers/no-such-worker/drain")
    assert gone.headers["location"] == "/ops/workers?gone=no-such-worker"


@pytest.mark.parametrize(
    "headers",
    [{"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}, {"Sec-Fetch-Site": "none"},
     {"Origin": "http://evil.example"}, {"Origin": "null"},
     {"Sec-Fetch-Site": "cross-site", "Origin": "http://testserver"}],
)  # fmt: skip
async def test_a_write_from_another_site_is_refused_and_changes_nothing(
    ops: httpx.AsyncClient,
    client: JobClient,
    resources: Resources,
    settings: Settings,
    run_worker: RunWorker,
    headers: dict[str, str],
    tag: str,
):
    """Retry, cancel, purge, drain and the JSON retry, sent as another site's page would make a browser
    send them: 403 each, and nothing moved: the job is still failed with its one attempt, the worker
    runs on, the queued job is still queued. The same request from the dashboard's own page works."""
    worker = await run_worker(TEST_ONLY, settings.model_copy(update={"worker_concurrency": 1}))
    victim, queued = f"victim-{tag}", f"queued-{tag}"
    await failed_job(client, victim)
    await client.enqueue("dash.sleepy", job_id=f"busy-{tag}", seconds=1)
    await until(client, f"busy-{tag}", JobStatus.PROCESSING)
    await client.enqueue("dash.sleepy", job_id=queued, seconds=0)
    writes = [f"/ops/jobs/{victim}/retry", f"/ops/jobs/{queued}/cancel", f"/ops/api/jobs/{victim}/retry",
              f"/ops/workers/{worker.worker_id}/drain", "/ops/retry-matching?status=failed", "/ops/purge"]  # fmt: skip
    for path in writes:
        answer = await ops.post(path, headers=headers, data={"confirm": "1"})
        assert answer.status_code == 403 and "Refused" in answer.text, (path, answer.text)
    detail = await job_detail(resources.db, victim)
    assert detail is not None and detail.job.status is JobStatus.FAILED and len(detail.attempts) == 1
    await until(client, queued, JobStatus.COMPLETED)  # neither cancelled nor purged: it ran
    assert len(await list_workers(resources.redis, settings.queue_name)) == 1  # not drained
    same_origin = await ops.post(f"/ops/jobs/{victim}/retry", headers={"Sec-Fetch-Site": "same-origin"})
    assert same_origin.status_code == 303
    own_origin = await ops.post(f"/ops/api/jobs/{victim}/retry", headers={"Origin": "http://testserver"})
    assert own_origin.status_code == 200


async def test_read_only_hides_the_actions_and_refuses_them(
    make_settings: MakeSettings, client: JobClient, run_worker: RunWorker, resources: Resources, tag: str
):
    """OPS_READ_ONLY: no page has a button or form that posts, and every write is a 403 naming the switch."""
    settings = make_settings(ops_password=PASSWORD, ops_username=USER, ops_read_only=True)
    worker = await run_worker(TEST_ONLY)
    failing = f"ro-{tag}"
    await failed_job(client, failing)
    async with dashboard(settings) as http:
        for path in ("/ops/", "/ops/workers", "/ops/jobs?status=failed", f"/ops/jobs/{failing}", "/ops/purge",
                     "/ops/retry-matching?status=failed"):  # fmt: skip
            page = await http.get(path)
            assert page.status_code == 200 and "read-only" in page.text
            assert not [action for kind, action in links(page.text) if kind == "post"], path
            assert 'id="retry-matching"' not in page.text and "Purge the queue…</a>" not in page.text
        writes = [f"/ops/jobs/{failing}/retry", f"/ops/api/jobs/{failing}/retry", "/ops/purge",
                  f"/ops/workers/{worker.worker_id}/drain"]  # fmt: skip
        for path in writes:
            refused = await http.post(path, data={"confirm": "0"}, headers={"Sec-Fetch-Site": "same-origin"})
            assert refused.status_code == 403 and "OPS_READ_ONLY" in refused.text
    detail = await job_detail(resources.db, failing)
    assert detail is not None and detail.job.status is JobStatus.FAILED and len(detail.attempts) == 1


async def test_every_page_has_a_policy_with_a_fresh_nonce_for_its_scripts(ops: httpx.AsyncClient):
    """Both script tags carry the nonce of their response's policy, which is new each time; the policy
    allows no inline script or eval and no framing, and no page has an inline event handler."""
    nonces = []
    for path in ("/ops/", "/ops/", "/ops/workers", "/ops/jobs", "/ops/purge", "/ops/stories"):
        page = await ops.get(path)
        policy = page.headers["content-security-policy"]
        nonce = re.search(r"script-src 'nonce-([A-Za-z0-9_-]{20,})'", policy)
        assert nonce is not None, policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy and "frame-ancestors 'none'" in policy
        scripts = re.findall(r"<script\b[^>]*>", page.text)
        assert len(scripts) == 2 and all(f'nonce="{nonce.group(1)}"' in s for s in scripts), scripts
        assert page.headers["x-frame-options"] == "DENY" and page.headers["referrer-policy"] == "same-origin"
        assert not re.search(r"<[^>]+\son[a-z]+=", page.text)  # no inline event handlers
        assert not re.search(r"<[^>]+\sstyle=", page.text)  # no inline styles either
        nonces.append(nonce.group(1))
    assert len(set(nonces)) == len(nonces)


async def test_the_event_stream_follows_a_job_until_it_ends(
    ops: httpx.AsyncClient, client: JobClient, run_worker: RunWorker, tag: str
):
    """From pending (no worker yet) through processing to completed, then `end`; a job that has ended
    gets its state and `end` at once, a job that does not exist only `end`."""
    watched = f"watched-{tag}"
    await client.enqueue("dash.sleepy", job_id=watched, seconds=0.5)
    stream = asyncio.create_task(ops.get(f"/ops/jobs/{watched}/events", timeout=30))
    await asyncio.sleep(0.8)
    await run_worker(TEST_ONLY)
    answer = await stream
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert answer.text.startswith("retry: ")
    seen = events(answer.text)
    statuses = [data["status"] for name, data in seen if name == "job"]
    assert statuses[0] == "pending" and statuses[-1] == "completed" and "processing" in statuses, statuses
    assert seen[-1] == ("end", {"job_id": watched, "status": "completed"})
    versions = [data["version"] for name, data in seen if name == "job"]
    assert len(set(versions)) == len(versions)
    again = events((await ops.get(f"/ops/jobs/{watched}/events")).text)
    assert [name for name, _ in again] == ["job", "end"]
    missing = events((await ops.get(f"/ops/jobs/missing-{tag}/events")).text)
    assert missing == [("end", {"job_id": f"missing-{tag}", "status": None})]
