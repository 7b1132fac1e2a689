"""Postgres behind Debian's PgBouncer in transaction mode (DATABASE_POOLER=pgbouncer): migrations from several
processes at once, stories end to end, retries, the sweeper's repair, the operators' job list and status
writes from many jobs at once, all through a PgBouncer that shares two server connections among every client.
And the two traps, shown on the wire: asyncpg's statement cache and a session's advisory lock."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from jobs import registry
from runner.broker.queue import RedisQueue
from runner.client import JobClient
from runner.devservers.pgbouncer import PGBOUNCER, PgBouncer
from runner.ops.jobs import JobFilter, find_jobs
from runner.resources import Resources, connect_db, open_resources
from runner.settings import Settings
from runner.status import JobStatus
from runner.store.jobs import JobStore, Transition
from runner.store.migrations import apply_migrations
from runner.worker.execution import JobExecutor
from runner.worker.sweeper import Sweeper
from tests.acceptance.test_cli import runner_cli
from tests.conftest import MakeSettings, RunWorker, Servers, api_client, wait_for
from tests.integration.test_migrations import assert_each_migration_applied_once
from tests.integration.test_story_flow import post_story, until_story
from tests.integration.test_worker import REGISTRY

POOL_SIZE = 2  # server connections per database: every client of these tests shares them
_WHO = "SELECT pg_backend_pid()"  # which server connection a statement ran on


@pytest.fixture(scope="module")
def pgbouncer(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgBouncer]:
    """A real PgBouncer (transaction mode, POOL_SIZE server connections) in front of the session's Postgres."""
    if not PGBOUNCER.exists():
        pytest.skip(f"Debian's pgbouncer is not installed at {PGBOUNCER}: `apt-get install pgbouncer` (.ci/run does)")
    with PgBouncer(tmp_path_factory.mktemp("pgbouncer"), upstream=servers.postgres.url, pool_size=POOL_SIZE) as pgb:
        yield pgb  # stopped (SIGTERM to its pid) on leaving


@pytest.fixture
def bounced(make_settings: MakeSettings, pgbouncer: PgBouncer) -> Settings:
    """Settings of a test's own queue, with DATABASE_URL through PgBouncer."""
    return make_settings(database_url=pgbouncer.url, database_pooler="pgbouncer")


@pytest.fixture
async def bounced_resources(bounced: Settings) -> AsyncIterator[Resources]:
    async with open_resources(bounced) as opened:
        await apply_migrations(opened.db, ["runner", "jobs"])
        yield opened


@pytest.fixture
async def fresh_database(servers: Servers, pgbouncer: PgBouncer) -> AsyncIterator[str]:
    """An empty database of its own (so a PgBouncer pool of its own), its URL through PgBouncer; dropped after."""
    name = f"pgbouncer_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(servers.postgres.url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield pgbouncer.url_for(servers.postgres.url.rsplit("/", 1)[0] + f"/{name}")
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def holding_its_server_connection(holder: asyncpg.Connection, pid: int) -> None:
    """Begin a transaction on `holder` that holds server connection `pid` (PgBouncer lends the last one
    released first), so other clients' statements run on another one until it ends."""
    await holder.execute("BEGIN")
    assert await holder.fetchval(_WHO) == pid, "PgBouncer lent another server connection than the last released"


async def test_statement_cache_breaks_behind_transaction_pooling(fresh_database: str, make_settings: MakeSettings):
    """The trap is real: asyncpg's cached statement, prepared on one server connection, is missing on the next
    one PgBouncer lends; with DATABASE_POOLER=pgbouncer the same statement runs there."""
    cached = await asyncpg.connect(fresh_database)  # asyncpg's default: a cache of named prepared statements
    holder = await asyncpg.connect(fresh_database, statement_cache_size=0)
    pool = await connect_db(make_settings(database_url=fresh_database, database_pooler="pgbouncer"), max_size=1)
    try:
        first = await cached.fetchval(_WHO)  # prepared (and run) on this server connection
        await holding_its_server_connection(holder, first)
        with pytest.raises(asyncpg.InvalidSQLStatementNameError, match=r"prepared statement .* does not exist"):
            await cached.fetchval(_WHO)
        await holder.execute("COMMIT")

        first = await pool.fetchval(_WHO)
        await holding_its_server_connection(holder, first)
        assert await pool.fetchval(_WHO) not in (first, None)  # the same statement, on another server connection
    finally:
        await asyncio.gather(cached.close(), holder.close(), pool.close())


async def test_session_advisory_lock_is_left_on_a_server_connection(
    fresh_database: str, servers: Servers, make_settings: MakeSettings
):
    """Why the migrations no longer use pg_advisory_lock: through PgBouncer the unlock runs on another server
    connection (and unlocks nothing), so the lock stays held by a server session nobody controls."""
    pool = await connect_db(make_settings(database_url=fresh_database, database_pooler="pgbouncer"), max_size=1)
    holder = await asyncpg.connect(fresh_database, statement_cache_size=0)
    direct = await asyncpg.connect(servers.postgres.url)
    try:
        locker = await pool.fetchval("SELECT pg_backend_pid() FROM (SELECT pg_advisory_lock(4242)) AS locked")
        await holding_its_server_connection(holder, locker)
        assert await pool.fetchval("SELECT pg_advisory_unlock(4242)") is False  # "you don't own a lock ..."
        held = await direct.fetch("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND granted")
        assert [r["pid"] for r in held] == [locker]
        await holder.execute("SELECT pg_advisory_unlock_all()")  # the holder runs on that server session
        await holder.execute("COMMIT")
    finally:
        await asyncio.gather(pool.close(), holder.close(), direct.close())


@pytest.mark.parametrize("round_", range(3))
async def test_concurrent_migrations_through_pgbouncer_apply_each_once(
    fresh_database: str, make_settings: MakeSettings, round_: int
):
    """Four processes migrate a fresh database at once through PgBouncer (two server connections for them
    all): every migration is applied exactly once, and again is a no-op."""
    settings = make_settings(database_url=fresh_database, database_pooler="pgbouncer")
    pools = [await connect_db(settings, max_size=2) for _ in range(4)]
    try:
        await assert_each_migration_applied_once(pools)
    finally:
        await asyncio.gather(*(pool.close() for pool in pools))


async def test_a_failing_migration_keeps_the_ones_before_it(
    fresh_database: str, make_settings: MakeSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """All pending migrations run in one locked transaction, each in a savepoint: one that fails is raised and
    leaves no trace, the ones before it are committed and recorded, the ones after it wait for a fix."""
    package = f"migrations_probe_{uuid.uuid4().hex[:8]}"
    (tmp_path / package / "sql").mkdir(parents=True)
    (tmp_path / package / "__init__.py").touch()
    migrations = {
        "0001_first": "CREATE TABLE first_t (n int)",
        "0002_broken": "CREATE TABLE broken_t (n int); SELECT no_such_column FROM first_t",
        "0003_after": "CREATE TABLE after_t (n int)",
    }
    for name, sql in migrations.items():
        (tmp_path / package / "sql" / f"{name}.sql").write_text(sql)
    monkeypatch.syspath_prepend(str(tmp_path))
    pool = await connect_db(make_settings(database_url=fresh_database, database_pooler="pgbouncer"), max_size=2)
    try:
        with pytest.raises(asyncpg.UndefinedColumnError):
            await apply_migrations(pool, [package])
        assert [r["version"] for r in await pool.fetch("SELECT version FROM schema_migrations")] == [1]
        tables = await pool.fetch("SELECT tablename FROM pg_tables WHERE tablename LIKE '%\\_t' ORDER BY 1")
        assert [r["tablename"] for r in tables] == ["first_t"]
    finally:
        await pool.close()


async def test_stories_complete_through_pgbouncer(bounced: Settings, run_worker: RunWorker):
    """POST /stories/ -> worker -> completed, the API and the worker both on PgBouncer: scenes, media, job rows."""
    await run_worker(registry, bounced)
    async with api_client(bounced) as api:
        created = await asyncio.gather(*(post_story(api, title=f"Kite {n}") for n in range(4)))
        stories = await asyncio.gather(*(until_story(api, c["story_id"], "completed", "failed", timeout=60)
                                         for c in created))  # fmt: skip
        for story in stories:
            assert story["status"] == "completed", story
            assert [s["sequence"] for s in story["scenes"]] == [1, 2, 3, 4, 5]
            await media_is_served(api, story["scenes"][0]["image_url"])
        status = (await api.get(f"/stories/{created[0]['story_id']}/status")).json()
        job = (await api.get(f"/jobs/{status['job_id']}")).json()
        assert (job["status"], job["attempts"], job["name"]) == ("completed", 1, "story_task.generate")


async def media_is_served(api: httpx.AsyncClient, url: str) -> None:
    response = await api.get(url)
    assert (response.status_code, response.content[:4]) == (200, b"\x89PNG")


async def test_retries_and_the_sweepers_repair_through_pgbouncer(
    bounced_resources: Resources, bounced: Settings, run_worker: RunWorker
):
    """A job failing twice is retried to completion (three attempts recorded); a row whose job never reached
    Redis is re-enqueued by the sweeper and runs."""
    client = JobClient(bounced_resources, REGISTRY.resolved(bounced))
    flaky = f"flaky-{bounced.queue_name}"
    await client.enqueue("probe.flaky", job_id=flaky, key=flaky, fail_times=2)
    await client.record("probe.record", job_id=f"lost-{bounced.queue_name}", kwargs={"tag": "swept"})
    queue = RedisQueue(bounced_resources.redis, queue=bounced.queue_name, worker_id="sweeper", lease_ttl_s=30)
    resolved = REGISTRY.resolved(bounced)
    async with JobExecutor(bounced_resources, None, resolved, queue, JobStore(bounced_resources.db)) as executor:
        await bounced_resources.db.execute(
            "UPDATE runner_jobs SET updated_at = now() - interval '1 hour' WHERE job_id = $1",
            f"lost-{bounced.queue_name}",
        )
        report = await Sweeper(bounced_resources, executor, worker_id="sweeper").sweep_once()
    assert report.requeued == [f"lost-{bounced.queue_name}"]
    await run_worker(REGISTRY, bounced)
    await until_completed(client, [flaky, f"lost-{bounced.queue_name}"])
    row = await client.get(flaky)
    assert row is not None and (row.attempts, row.result, row.error) == (3, 3, None)
    outcomes = await bounced_resources.db.fetch(
        "SELECT outcome FROM runner_job_attempts WHERE job_id = $1 ORDER BY attempt", flaky
    )
    assert [r["outcome"] for r in outcomes] == ["retrying", "retrying", "completed"]


async def until_completed(client: JobClient, job_ids: list[str], timeout: float = 30) -> None:
    async def done() -> bool:
        rows = [await client.get(j) for j in job_ids]
        return all(r is not None and r.status is JobStatus.COMPLETED for r in rows)

    await wait_for(done, timeout)


async def test_many_jobs_and_the_job_list_through_pgbouncer(
    bounced_resources: Resources, make_settings: MakeSettings, pgbouncer: PgBouncer, run_worker: RunWorker
):
    """300 jobs on two workers of 50 slots: their batched status writes, from many clients, interleave on two
    server connections, and every row and attempt ends right; the operators' list pages them with each filter."""
    settings = bounced_resources.settings
    worker_settings = make_settings(database_url=pgbouncer.url, database_pooler="pgbouncer",
                                    queue_name=settings.queue_name, worker_concurrency=50)  # fmt: skip
    client = JobClient(bounced_resources, REGISTRY.resolved(settings))
    ids = [f"many-{n:03}-{settings.queue_name}" for n in range(300)]
    failing = ids[::30]  # ten jobs fail at once, with an error to search for
    await asyncio.gather(*(
        client.enqueue("probe.flaky", job_id=j, key=j, fail_times=1, permanent=True) if j in failing
        else client.enqueue("probe.record", job_id=j, tag=f"t{n % 7}", sleep_s=0.01)
        for n, j in enumerate(ids)
    ))  # fmt: skip
    await asyncio.gather(run_worker(REGISTRY, worker_settings), run_worker(REGISTRY, worker_settings))

    async def all_ended() -> bool:
        count = await bounced_resources.db.fetchval(
            "SELECT count(*) FROM runner_jobs WHERE queue = $1 AND status IN ('completed', 'failed')",
            settings.queue_name,
        )
        return bool(count == len(ids))

    await wait_for(all_ended, 60)
    rows = {r.job_id: r for r in [await client.get(j) for j in ids] if r is not None}
    assert {j for j, r in rows.items() if r.status is JobStatus.FAILED} == set(failing)
    assert all(r.attempts == 1 for r in rows.values())
    attempts = await bounced_resources.db.fetch(
        "SELECT job_id, outcome FROM runner_job_attempts WHERE job_id = ANY($1::text[])", ids
    )
    assert sorted((r["job_id"], r["outcome"]) for r in attempts) == sorted(
        (j, "failed" if j in failing else "completed") for j in ids
    )
    await job_list_pages_each_filter(bounced_resources, settings.queue_name, ids, failing)
    code, listed, err = await runner_cli(settings, "jobs", "ls", "--status", "failed", DATABASE_POOLER="pgbouncer")
    assert code == 0, err
    assert {j["job_id"] for j in listed["jobs"]} == set(failing)


async def job_list_pages_each_filter(resources: Resources, queue: str, ids: list[str], failing: list[str]) -> None:
    """find_jobs through PgBouncer: every filter, and cursors over a whole list, as a plain query says."""
    failed = JobFilter(queue, statuses=(JobStatus.FAILED,))
    assert {j.job_id for j in (await find_jobs(resources.db, failed, limit=50)).jobs} == set(failing)
    by_error = JobFilter(queue, error_contains="not fixable")
    assert {j.job_id for j in (await find_jobs(resources.db, by_error, limit=50)).jobs} == set(failing)
    by_field = JobFilter(queue, name="probe.flaky", field=("key", failing[3]))
    assert [j.job_id for j in (await find_jobs(resources.db, by_field)).jobs] == [failing[3]]
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = await find_jobs(resources.db, JobFilter(queue, name="probe.record"), limit=37, cursor=cursor)
        seen += [j.job_id for j in page.jobs]
        if (cursor := page.next_cursor) is None:
            break
    assert sorted(seen) == sorted(set(ids) - set(failing)) and len(seen) == len(set(seen))


async def test_status_batches_from_many_clients_interleave_safely(bounced: Settings, bounced_resources: Resources):
    """Four processes' pools write batches of transitions at once through two server connections: every job
    ends in its last status, each guarded upsert applied once (no batch lost, none applied to another's rows)."""
    pools = [await connect_db(bounced, max_size=10) for _ in range(4)]
    try:
        backends = await asyncio.gather(*(pools[n % 4].fetchval(f"{_WHO} FROM pg_sleep(0.05)") for n in range(40)))
        assert len(set(backends)) <= POOL_SIZE  # 40 clients at once, on two server connections
        stores = [JobStore(pool) for pool in pools]
        jobs = [f"batch-{n:03}-{bounced.queue_name}" for n in range(400)]

        def moves(job_ids: list[str], status: JobStatus, **fields: object) -> list[Transition]:
            return [Transition(j, status, name="probe.record", queue=bounced.queue_name, attempt=1, max_tries=3,
                               **fields) for j in job_ids]  # fmt: skip

        batches = [jobs[n : n + 20] for n in range(0, len(jobs), 20)]
        started = await asyncio.gather(*(stores[n % 4].move_many(moves(b, JobStatus.PROCESSING, worker=f"w{n % 4}"))
                                         for n, b in enumerate(batches)))  # fmt: skip
        ended = await asyncio.gather(*(stores[(n + 1) % 4].move_many(moves(b, JobStatus.COMPLETED, result={"n": n}))
                                       for n, b in enumerate(batches)))  # fmt: skip
        late = await asyncio.gather(
            *(stores[n % 4].move_many(moves(b, JobStatus.PROCESSING)) for n, b in enumerate(batches))
        )
        assert (sum(started), sum(ended), sum(late)) == (400, 400, 0)
        rows = await pools[0].fetch(
            "SELECT job_id, status, worker, result FROM runner_jobs WHERE job_id = ANY($1::text[]) ORDER BY job_id",
            jobs,
        )
        assert [(r["status"], r["worker"]) for r in rows] == [("completed", f"w{n // 20 % 4}") for n in range(400)]
        assert [r["result"] for r in rows] == [f'{{"n": {n // 20}}}' for n in range(400)]
    finally:
        await asyncio.gather(*(pool.close() for pool in pools))
