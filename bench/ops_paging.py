"""The operators' job list (`runner.ops.jobs.find_jobs`) on a big `runner_jobs` table: ms per keyset page
for each filter, and what the list's indexes cost the job runner's hot path.

    make bench-ops            # or: python -m bench.ops_paging --rows 1000000 [--reps 9] [--write-jobs 10000]

Creates a database of its own (bench_ops_<hex>) on an embedded PostgreSQL started in a temporary folder, or
on the server of DATABASE_URL when it is set, and drops it at the end, so dev data is never touched. It
applies the runner's and the jobs' migrations, then loads N rows with one INSERT ... SELECT FROM
generate_series: stories of one `story_task.generate` and five `media_task.generate` jobs (args story_id,
and sequence for the scenes), 96% on one queue and the rest on four others, enqueued over 30 days,
93% completed, 4% failed (ten kinds of error text, and a rare one), 1% cancelled, 2% pending, processing
or retrying; then an outage: 60% of the newest 0.5% of the jobs failed with one same error. Then VACUUM
ANALYZE, as autovacuum would.

Each page is read warm (2 untimed reads, then --reps timed ones) through `find_jobs` on a pool, as the
CLI and the API read it: p50 and max ms. Page 200 follows the cursors of pages 1-199 and times only the
last one. Every page is checked against a plain reference query (same rows, newest first); a mismatch
exits 1.

The hot path's writes are timed on the loaded table and on a copy of it without the job-list indexes (the
migrations in LIST_INDEX_MIGRATIONS), in alternate rounds, so that both see the same noise: single-row
pending inserts (`JobStore.insert_pending`, 4 at once) and batched upserts (`JobStore.move_many`, 50
transitions a statement: to processing, then to completed or failed). Rows/s, and WAL bytes a row (what
the indexes add to every write, steadier than rows/s on a busy machine).

Results: a markdown table, and bench/results/ops_paging.json (or --out).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from jobs.ids import MEDIA_JOB, STORY_JOB, media_job_id, story_job_id
from runner.devservers import EmbeddedPostgres
from runner.ops.jobs import JobFilter, find_jobs
from runner.status import JobStatus
from runner.store.jobs import JobStore, PendingJob, Transition
from runner.store.migrations import Migration, apply_migrations, load_migrations

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "ops_paging.json"
QUEUE = "storymimi"
PAGE = 50
RARE_WORD = "certificate"  # in ~1 failed row of 2,000
# The migrations that add the job list's indexes: the hot path's writes are timed with them (schema LISTED)
# and without them (schema BARE, the same table with those indexes dropped).
LIST_INDEX_MIGRATIONS = (("runner", "job_list_indexes"), ("jobs", "job_list_story_index"))
LISTED, BARE = "listed", "bare"

_LOAD = """
INSERT INTO runner_jobs (job_id, name, queue, args, status, attempts, max_tries, worker, error, result,
                         enqueued_at, started_at, finished_at, updated_at)
SELECT CASE WHEN slot = 0 THEN 'story_task.generate:' || story ELSE 'media_task.generate:' || story || ':' || slot END,
       CASE WHEN slot = 0 THEN 'story_task.generate' ELSE 'media_task.generate' END,
       CASE WHEN k % 100 < 96 THEN 'storymimi' ELSE (ARRAY['storymimi-priority', 'backfill', 'ops', 'imports'])[k % 100 - 95] END,
       CASE WHEN slot = 0 THEN jsonb_build_object('story_id', story)
            ELSE jsonb_build_object('story_id', story, 'sequence', slot) END,
       status, CASE status WHEN 'pending' THEN 0 WHEN 'failed' THEN 3 WHEN 'retrying' THEN 2 ELSE 1 END, 3,
       CASE WHEN status <> 'pending' THEN 'bench-host:' || (1000 + k % 8) END,
       CASE status
           WHEN 'cancelled' THEN 'cancelled'
           WHEN 'retrying' THEN (ARRAY['ProviderTimeout: text provider did not answer within 30s',
                                       'ProviderRateLimited: 429 Too Many Requests, retry after 20s'])[1 + (k % 2)]
           WHEN 'failed' THEN CASE WHEN k >= $3 THEN 'ProviderUnavailable: the images provider is down (connection refused)'
               WHEN r_error < 0.0005
               THEN 'ProviderError: SSL certificate verify failed for images.example.com (scene ' || slot || ')'
               ELSE (ARRAY[
                   'ProviderTimeout: text provider did not answer within 30s',
                   'ProviderRateLimited: 429 Too Many Requests, retry after 20s',
                   'ProviderError: 503 Service Unavailable from the images provider',
                   'StoryFormatError: the story JSON has no scenes',
                   'SoftTimeLimitExceeded: stopped at the soft time limit of 3300s',
                   'JobTimeoutError: stopped at the time limit of 3600s',
                   'scene ' || slot || ': ProviderTimeout: speech provider did not answer within 30s',
                   'ConnectionError: lost the connection to the images provider after 3 tries',
                   'PermanentError: bad arguments for media_task.generate: sequence must be >= 1',
                   'WorkerLost: the job killed its worker 3 times'])[1 + floor(r_error * 10)::int]
               END
       END,
       CASE WHEN status = 'completed' THEN CASE WHEN slot = 0 THEN '{"scenes": 5}'::jsonb
           ELSE jsonb_build_object('image', 'stories/' || story || '/scene-' || slot || '.png',
                                   'audio', 'stories/' || story || '/scene-' || slot || '.wav') END END,
       enqueued, started, finished, COALESCE(finished, started, enqueued)
FROM (
    SELECT k, slot, story, status, r_error, enqueued, started,
           CASE WHEN status IN ('completed', 'failed', 'cancelled')
                THEN started + make_interval(secs => 2 + r_time * CASE WHEN slot = 0 THEN 38 ELSE 18 END) END AS finished
    FROM (
        SELECT k, slot, story, r_error, r_time, enqueued,
               CASE WHEN k >= $3 AND r_status < 0.6 THEN 'failed'
                    WHEN r_status < 0.93 THEN 'completed' WHEN r_status < 0.97 THEN 'failed'
                    WHEN r_status < 0.98 THEN 'cancelled' WHEN r_status < 0.99 THEN 'pending'
                    WHEN r_status < 0.996 THEN 'processing' ELSE 'retrying' END AS status,
               enqueued + make_interval(secs => 0.05 + r_time * 2) AS started
        FROM (
            SELECT i / 6 AS k, i % 6 AS slot, md5('bench-story-' || (i / 6))::uuid AS story,
                   random() AS r_status, random() AS r_error, random() AS r_time,
                   now() - interval '30 days' + (i / 6) * ($2::float8 / ($1 / 6 + 1)) * interval '1 second'
                       + make_interval(secs => (i % 6) * (5 + random() * 25)) AS enqueued
            FROM generate_series(0, $1 - 1) AS i
        ) AS drawn
    ) AS timed
) AS gen
"""


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    where: JobFilter
    page: int = 1  # >1: follow the cursors of the pages before it, time only this one


def story_of(k: int) -> str:
    """The story_id the load gave story number `k` (md5('bench-story-k')::uuid)."""
    return str(uuid.UUID(hashlib.md5(f"bench-story-{k}".encode()).hexdigest()))


def cases(rows: int, now: datetime) -> list[Case]:
    day = now - timedelta(days=15)
    one = (rows // 6) // 2 // 100 * 100  # a story in the middle of the main queue (k % 100 == 0)
    return [
        Case("first", "first page, no filter", JobFilter(QUEUE)),
        Case("page200", "page 200 by cursors, no filter", JobFilter(QUEUE), page=200),
        Case("failed", "status=failed", JobFilter(QUEUE, statuses=(JobStatus.FAILED,))),
        Case("active", "status=pending,processing",
             JobFilter(QUEUE, statuses=(JobStatus.PENDING, JobStatus.PROCESSING))),
        Case("name", f"name={STORY_JOB}", JobFilter(QUEUE, name=STORY_JOB)),
        Case("field", "field story_id=<one story>", JobFilter(QUEUE, field=("story_id", story_of(one)))),
        Case("error", f"error contains '{RARE_WORD}' (rare)", JobFilter(QUEUE, error_contains=RARE_WORD)),
        Case("burst", "error contains 'time limit' (1 in 5, none since the outage)",
             JobFilter(QUEUE, error_contains="time limit")),
        Case("window", "since/until: one day", JobFilter(QUEUE, since=day, until=day + timedelta(days=1))),
        Case("combined", f"failed + name={MEDIA_JOB} + error '429'",
             JobFilter(QUEUE, statuses=(JobStatus.FAILED,), name=MEDIA_JOB, error_contains="429")),
    ]  # fmt: skip


async def reference(db: asyncpg.Pool, where: JobFilter, offset: int, limit: int) -> list[str]:
    """The job ids a page must hold, by a plain query written independently of find_jobs."""
    clauses, params = ["queue = $1"], [where.queue]

    def add(sql: str, *values: Any) -> None:
        params.extend(values)
        clauses.append(sql.format(*(f"${len(params) - len(values) + i + 1}" for i in range(len(values)))))

    if where.statuses:
        add("status = ANY({0}::text[])", [s.value for s in where.statuses])
    if where.name is not None:
        add("name = {0}", where.name)
    if where.field is not None:
        add("args ->> {0} = {1}", *where.field)
    if where.since is not None:
        add("enqueued_at >= {0}", where.since)
    if where.until is not None:
        add("enqueued_at < {0}", where.until)
    if where.error_contains is not None:
        add("position(lower({0}) IN lower(error)) > 0", where.error_contains)
    sql = (f"SELECT job_id FROM runner_jobs WHERE {' AND '.join(clauses)} "
           f"ORDER BY enqueued_at DESC, job_id DESC OFFSET {offset} LIMIT {limit}")  # fmt: skip
    return [r["job_id"] for r in await db.fetch(sql, *params)]


async def time_case(db: asyncpg.Pool, case: Case, reps: int) -> dict[str, Any]:
    """Warm timings of one page; a list with fewer pages than `case.page` (a small --rows) times its last."""
    cursor, number = None, 1
    while number < case.page:
        following = (await find_jobs(db, case.where, limit=PAGE, cursor=cursor)).next_cursor
        if following is None:
            break
        cursor, number = following, number + 1
    timings, got = [], []
    for rep in range(reps + 2):
        started = time.perf_counter()
        page = await find_jobs(db, case.where, limit=PAGE, cursor=cursor)
        if rep >= 2:
            timings.append((time.perf_counter() - started) * 1000)
        got = [j.job_id for j in page.jobs]
    want = await reference(db, case.where, PAGE * (number - 1), PAGE)
    return {"label": case.label, "page": number, "rows": len(got), "p50_ms": statistics.median(timings),
            "max_ms": max(timings), "correct": got == want}  # fmt: skip


async def load(db: asyncpg.Pool, rows: int) -> dict[str, float]:
    """Migrate and fill `runner_jobs` with `rows` rows; seconds the insert and VACUUM ANALYZE took."""
    await apply_migrations(db, ["runner", "jobs"])
    async with db.acquire() as conn:
        await conn.execute("SELECT setseed(0.42)")
        started = time.perf_counter()
        outage = rows // 6 - rows // 6 // 200  # the newest 0.5% of the stories: 60% of their jobs failed alike
        await conn.execute(_LOAD, rows, 30 * 86400 - 3600, outage)  # the newest story an hour ago
        inserted = time.perf_counter() - started
        await conn.execute("VACUUM (ANALYZE) runner_jobs")
        analyzed = time.perf_counter() - started - inserted
    return {"bulk_insert_s": inserted, "bulk_rows_per_s": rows / inserted, "vacuum_analyze_s": analyzed}


async def load_bare(db: asyncpg.Pool, source: str) -> None:
    """The same schema without the job-list indexes, and a copy of `source`'s rows."""
    await apply_migrations(db, ["runner", "jobs"])
    for name in [n for m in list_index_migrations() for n in index_names(m)]:
        await db.execute(f'DROP INDEX IF EXISTS "{name}"')
    await db.execute(f"INSERT INTO runner_jobs SELECT * FROM {source}.runner_jobs")
    await db.execute("VACUUM (ANALYZE) runner_jobs")


def list_index_migrations() -> list[Migration]:
    wanted = set(LIST_INDEX_MIGRATIONS)
    return [m for p in ("runner", "jobs") for m in load_migrations(p) if (m.namespace, m.name) in wanted]


def index_names(migration: Migration) -> list[str]:
    return re.findall(r"CREATE\s+INDEX\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", migration.sql, re.IGNORECASE)


async def hot_path_writes(db: asyncpg.Pool, jobs: int, concurrency: int = 4, batch: int = 50) -> dict[str, float]:
    """Seconds and WAL bytes of `jobs` single-row pending inserts, and of their batched upserts (to
    processing, then to completed, or failed for 1 job in 25): stories of a story job and five scene jobs,
    with their real ids (random, as the story ids are)."""
    store, stories = JobStore(db), [str(uuid.uuid4()) for _ in range(jobs // 6 + 1)]
    pending = [PendingJob(media_job_id(stories[n // 6], n % 6), MEDIA_JOB, QUEUE,
                          {"story_id": stories[n // 6], "sequence": n % 6}, 3) if n % 6 else
               PendingJob(story_job_id(stories[n // 6]), STORY_JOB, QUEUE, {"story_id": stories[n // 6]}, 3)
               for n in range(jobs)]  # fmt: skip

    async def spread(items: list[Any], each: Callable[[Any], Any]) -> tuple[float, int]:
        """Seconds and WAL bytes to apply `each` to every item, `concurrency` at once."""

        async def lane(lane_items: list[Any]) -> None:
            for item in lane_items:
                await each(item)

        wal, started = await db.fetchval("SELECT pg_current_wal_insert_lsn()"), time.perf_counter()
        await asyncio.gather(*(lane(items[i::concurrency]) for i in range(concurrency)))
        seconds = time.perf_counter() - started
        return seconds, int(await db.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1)", wal))

    def moves(status: Callable[[int], JobStatus]) -> list[list[Transition]]:
        moved = [Transition(p.job_id, status(n), p.name, QUEUE, attempt=1, max_tries=3, worker="bench-host:1",
                            error="ProviderTimeout: text provider did not answer within 30s"
                            if status(n) is JobStatus.FAILED else None) for n, p in enumerate(pending)]  # fmt: skip
        return [moved[i : i + batch] for i in range(0, len(moved), batch)]

    insert_s, insert_wal = await spread(pending, store.insert_pending)
    started_s, started_wal = await spread(moves(lambda n: JobStatus.PROCESSING), store.move_many)
    ended_s, ended_wal = await spread(
        moves(lambda n: JobStatus.FAILED if n % 25 == 0 else JobStatus.COMPLETED), store.move_many
    )
    return {"jobs": jobs, "insert_s": insert_s, "insert_wal": insert_wal, "upserts": 2 * jobs,
            "upsert_s": started_s + ended_s, "upsert_wal": started_wal + ended_wal}  # fmt: skip


async def price_of_indexes(pools: dict[str, asyncpg.Pool], jobs: int, rounds: int) -> dict[str, Any]:
    """Hot-path writes on the table with the job-list indexes and on its twin without them, in alternate
    rounds, so that both see the same noise from the machine; medians of the rounds. A CHECKPOINT and an
    untimed round on each side come first: after a checkpoint, the first write to each page logs the whole
    page, which would land in whichever rounds came first. Autovacuum is off on both tables meanwhile."""
    runs: dict[str, list[dict[str, float]]] = {side: [] for side in pools}
    for db in pools.values():
        await db.execute("ALTER TABLE runner_jobs SET (autovacuum_enabled = false)")
    try:
        await next(iter(pools.values())).execute("CHECKPOINT")
        for db in pools.values():
            await hot_path_writes(db, jobs)
        for _ in range(rounds):
            for side, db in pools.items():
                runs[side].append(await hot_path_writes(db, jobs))
    finally:
        for db in pools.values():
            await db.execute("ALTER TABLE runner_jobs RESET (autovacuum_enabled)")
    medians: dict[str, Any] = {"list_indexes": [n for m in list_index_migrations() for n in index_names(m)]}
    for side, mine in runs.items():
        rates = [{"insert_rows_per_s": r["jobs"] / r["insert_s"], "insert_wal_bytes_per_row": r["insert_wal"] / r["jobs"],
                  "upsert_rows_per_s": r["upserts"] / r["upsert_s"],
                  "upsert_wal_bytes_per_row": r["upsert_wal"] / r["upserts"]} for r in mine]  # fmt: skip
        medians[side] = {key: statistics.median(r[key] for r in rates) for key in rates[0]} | {"rounds": rates}
    return medians


@asynccontextmanager
async def bench_database(admin_url: str | None) -> AsyncIterator[str]:
    """The URL of a new database (on `admin_url`'s server, or an embedded one), dropped afterwards."""
    async with AsyncExitStack() as stack:
        if admin_url is None:
            data = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-ops-"))
            admin_url = stack.enter_context(EmbeddedPostgres(data)).url
        name = f"bench_ops_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
            try:
                yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
            finally:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def run(admin_url: str | None, rows: int, reps: int, write_jobs: int, rounds: int) -> dict[str, Any]:
    async with bench_database(admin_url) as url:
        setup = await asyncpg.connect(url)
        await setup.execute(f"CREATE SCHEMA {LISTED}; CREATE SCHEMA {BARE}")
        await setup.close()
        pools = {side: await asyncpg.create_pool(url, min_size=1, max_size=4, server_settings={"search_path": side})
                 for side in (LISTED, BARE)}  # fmt: skip
        try:
            db = pools[LISTED]
            loaded = await load(db, rows)
            now = await db.fetchval("SELECT now()")
            pages = {case.key: await time_case(db, case, reps) for case in cases(rows, now)}
            await load_bare(pools[BARE], LISTED)
            writes = await price_of_indexes(pools, write_jobs, rounds)
            server = await db.fetchval("SHOW server_version")
        finally:
            await asyncio.gather(*(pool.close() for pool in pools.values()))
    return {"rows": rows, "reps": reps, "page_size": PAGE, "postgres": server, **loaded, "pages": pages,
            "writes": {"jobs_a_round": write_jobs, "rounds": rounds, **writes}}  # fmt: skip


def report(result: dict[str, Any]) -> str:
    w = result["writes"]
    lines = [f"\nfind_jobs on {result['rows']:,} runner_jobs rows (PostgreSQL {result['postgres']}), "
             f"{result['page_size']} rows a page, warm, {result['reps']} reads a page\n",
             "| page | rows | p50 ms | max ms |", "|---|---|---|---|"]  # fmt: skip
    for page in result["pages"].values():
        wrong = "" if page["correct"] else " **WRONG ROWS**"
        lines.append(f"| {page['label']}{wrong} | {page['rows']} | {page['p50_ms']:.1f} | {page['max_ms']:.1f} |")
    lines += [f"\nbulk load: {result['bulk_insert_s']:.1f} s ({result['bulk_rows_per_s']:,.0f} rows/s), "
              f"VACUUM ANALYZE {result['vacuum_analyze_s']:.1f} s\n",
              f"hot-path writes on that table and on a copy without the list indexes (median of {w['rounds']} "
              f"alternate rounds of {w['jobs_a_round']:,} jobs each):\n",
              "| write | rows/s with the list indexes | without | with / without | WAL bytes a row with | without |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for key, label in (("insert", "pending insert, one row a statement, 4 at once"),
                       ("upsert", "move_many upsert, 50 rows a statement, 4 at once")):  # fmt: skip
        (fast, bare), (wal, bare_wal) = ((w[LISTED][f"{key}_{unit}"], w[BARE][f"{key}_{unit}"])
                                         for unit in ("rows_per_s", "wal_bytes_per_row"))  # fmt: skip
        lines.append(f"| {label} | {fast:,.0f} | {bare:,.0f} | {(fast / bare - 1) * 100:+.0f}% | "
                     f"{wal:,.0f} | {bare_wal:,.0f} |")  # fmt: skip
    lines.append(f"\nlist indexes: {', '.join(w['list_indexes']) or 'none'}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=9, help="timed reads a page (after 2 untimed)")
    parser.add_argument("--write-jobs", type=int, default=10_000, help="jobs a hot-path write round")
    parser.add_argument("--write-rounds", type=int, default=5, help="rounds with and without the list indexes")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = asyncio.run(run(os.environ.get("DATABASE_URL") or None, args.rows, args.reps, args.write_jobs,
                             args.write_rounds))  # fmt: skip
    print(report(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(f"\nraw results: {args.out}")
    wrong = [p["label"] for p in result["pages"].values() if not p["correct"]]
    if wrong:
        print(f"pages with wrong rows: {wrong}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
