"""Shared fixtures: real Valkey and Postgres for the whole session, isolated queues per test."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import orjson
import pytest

from jobs.settings import StorySettings
from runner.devservers import EmbeddedPostgres, EmbeddedValkey
from runner.fleet.logs import configure_logging
from runner.registry import Registry
from runner.resources import Resources, open_resources
from runner.settings import Settings
from runner.store.migrations import apply_migrations
from runner.worker.worker import Worker
from tests.redis_cluster import RedisClusterGroup

if TYPE_CHECKING:
    from runner.intake.process import Intakes

# A project of its own (its pytest.ini, none of these fixtures): tests/integration/test_example_app.py runs it as
# its own pytest, so this collection skips it.
collect_ignore = ["example_app"]


@dataclass(frozen=True)
class Servers:
    redis: EmbeddedValkey
    postgres: EmbeddedPostgres
    data_dir: Path


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """One real Valkey and one real Postgres for the session, on free loopback ports."""
    configure_logging("INFO", "console")
    data_dir = tmp_path_factory.mktemp("servers")
    with EmbeddedValkey(data_dir) as redis, EmbeddedPostgres(data_dir) as postgres:
        yield Servers(redis, postgres, data_dir)


@dataclass(frozen=True)
class ClusterServers:
    redis: RedisClusterGroup
    database_url: str  # a database of its own: a test's second run reuses its fixed job ids


@pytest.fixture(scope="session")
def cluster_servers(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterServers]:
    """A real Redis Cluster (three masters, each with a replica) for the session, started on first use, and a
    Postgres database of its own on the session's server."""

    async def create_database() -> None:
        conn = await asyncpg.connect(servers.postgres.url)
        try:
            await conn.execute("DROP DATABASE IF EXISTS on_cluster")
            await conn.execute("CREATE DATABASE on_cluster")
        finally:
            await conn.close()

    asyncio.run(create_database())
    group = RedisClusterGroup(tmp_path_factory.mktemp("cluster"))
    try:
        group.start()
        yield ClusterServers(group, servers.postgres.url.rsplit("/", 1)[0] + "/on_cluster")
    finally:
        group.stop()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked `also_on_cluster` runs on the single Valkey and again on the Redis Cluster."""
    if "redis_topology" in metafunc.fixturenames and metafunc.definition.get_closest_marker("also_on_cluster"):
        metafunc.parametrize("redis_topology", ["single", "cluster"], indirect=True)


@pytest.fixture
def redis_topology(request: pytest.FixtureRequest) -> str:
    """ "single" (the session's Valkey), or "cluster" for the second run of an `also_on_cluster` test."""
    return str(getattr(request, "param", "single"))


MakeSettings = Callable[..., Settings]


@pytest.fixture
def make_settings(
    servers: Servers, tmp_path: Path, redis_topology: str, request: pytest.FixtureRequest
) -> MakeSettings:
    """Settings pointing at the session servers (or the session's Redis Cluster), with a queue of this test's own."""
    where: dict[str, Any] = {"redis_url": servers.redis.url, "database_url": servers.postgres.url}
    if redis_topology == "cluster":
        cluster: ClusterServers = request.getfixturevalue("cluster_servers")
        where = {"redis_url": None, "redis_cluster_nodes": cluster.redis.nodes_setting,
                 "database_url": cluster.database_url}  # fmt: skip

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            **where,
            "data_dir": tmp_path,
            "queue_name": (queue := f"test:{uuid.uuid4().hex[:10]}"),
            "slot_prefix": f"runner:slots:{queue}",  # provider slots of one test never starve another
            "offline_latency_ms": 1,
            "startup_retry_s": 5,
            # In-process workers drain within the fixtures' 30 s teardown; jobs still running then go back.
            "shutdown_grace_s": 5,
            "log_format": "console",
        }
        values.update(overrides)
        return StorySettings(_env_file=None, **values)  # type: ignore[call-arg]

    return make


@pytest.fixture
def settings(make_settings: MakeSettings) -> Settings:
    return make_settings()


@pytest.fixture
async def resources(settings: Settings) -> AsyncIterator[Resources]:
    """Opened process resources with every migration applied."""
    async with open_resources(settings) as opened:
        await apply_migrations(opened.db, ["runner", "jobs"])
        yield opened


RunWorker = Callable[..., Awaitable[Worker]]


@pytest.fixture
async def run_worker(settings: Settings) -> AsyncIterator[RunWorker]:
    """Start in-process workers on the test's loop; each is stopped and awaited at teardown."""
    started: list[tuple[Worker, asyncio.Task[Any]]] = []

    async def start(registry: Registry, worker_settings: Settings | None = None) -> Worker:
        worker = Worker(worker_settings or settings, registry)
        task = asyncio.create_task(worker.run())
        started.append((worker, task))
        ready = asyncio.create_task(worker.ready.wait())
        await asyncio.wait([ready, task], timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # raise the worker's start-up error
        assert worker.ready.is_set(), "worker did not start within 30 s"
        return worker

    yield start
    for worker, _ in started:
        worker.stop()
    await asyncio.wait_for(asyncio.gather(*(t for _, t in started)), 30)


RunIntake = Callable[..., Awaitable["Intakes"]]


@pytest.fixture
async def run_intake(settings: Settings) -> AsyncIterator[RunIntake]:
    """Start in-process intakes (runner.intake) on the test's loop; each is stopped and awaited at teardown."""
    from runner.intake.process import Intakes

    started: list[tuple[Intakes, asyncio.Task[None]]] = []

    async def start(registry: Registry, intake_settings: Settings | None = None) -> Intakes:
        intakes = Intakes(intake_settings or settings, registry)
        task = asyncio.create_task(intakes.run())
        started.append((intakes, task))
        await asyncio.wait_for(intakes.ready.wait(), 30)
        return intakes

    yield start
    for intakes, _ in started:
        intakes.stop()
    await asyncio.wait_for(asyncio.gather(*(t for _, t in started)), 30)


@asynccontextmanager
async def api_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client speaking to the real app in-process, with its lifespan run."""
    from api.main import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(settings) as client:
        yield client


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float = 15, every: float = 0.02) -> None:
    """Poll `check` until it holds; fail the test with the timeout if it never does."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(every)


# --- other systems' real clients (tests/foreign) ----------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
CELERY_CLIENT = ROOT / "tests" / "foreign" / "celery_client.py"
Celery = Callable[..., Awaitable[Any]]


@pytest.fixture(scope="session")
def celery_python() -> Path:
    """bench/.venv-celery's python, with Celery 5.7 (made once, as `make bench` does)."""
    from bench.run import ensure_celery_venv

    try:
        return ensure_celery_venv()
    except Exception as exc:  # no package index reachable: the real client cannot be had
        pytest.skip(f"the Celery client's venv (bench/requirements-celery.txt) could not be made: {exc}")


@pytest.fixture
def celery(celery_python: Path, settings: Settings) -> Celery:
    """Run a command of tests/foreign/celery_client.py against this test's Redis and queue; its JSON."""

    async def run(*args: str) -> Any:
        process = await asyncio.create_subprocess_exec(
            str(celery_python), str(CELERY_CLIENT), str(settings.redis_url), settings.queue_name, *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode(errors="replace")[-3000:]
        return orjson.loads(out)

    return run
