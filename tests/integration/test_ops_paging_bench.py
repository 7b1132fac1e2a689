"""The job-list benchmark runs and its pages hold the right rows: `bench.ops_paging` on a small table gives a
number for every cell, and following find_jobs' cursors over each filter returns every matching row exactly
once, newest first. (Speed is judged by `make bench-ops`, never here.)"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import runner.ops.jobs
from bench.ops_paging import QUEUE, load, reference, story_of
from jobs.ids import MEDIA_JOB, STORY_JOB
from runner.ops.jobs import JobFilter, find_jobs
from runner.status import JobStatus
from tests.conftest import Servers

ROOT = Path(__file__).resolve().parents[2]
ROWS = 2000


def finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value >= 0


@pytest.mark.timeout(120)
def test_bench_gives_a_number_for_every_cell_and_drops_its_database(servers: Servers, tmp_path: Path) -> None:
    """--rows 2000 against the session's Postgres: every page timed and right, both write sides measured,
    the results in --out, and the bench's own database gone afterwards."""
    out = tmp_path / "ops_paging.json"
    env = {**os.environ, "DATABASE_URL": servers.postgres.url}
    argv = ["--rows", str(ROWS), "--reps", "2", "--write-jobs", "60", "--write-rounds", "1", "--out", str(out)]
    done = subprocess.run([sys.executable, "-m", "bench.ops_paging", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=100, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| page | rows | p50 ms | max ms |" in done.stdout
    result = json.loads(out.read_text())
    assert len(result["pages"]) == 10
    for key, page in result["pages"].items():
        assert page["correct"], key
        assert finite(page["p50_ms"]) and finite(page["max_ms"]) and page["p50_ms"] <= page["max_ms"], (key, page)
    assert result["pages"]["first"]["rows"] == 50 and result["pages"]["field"]["rows"] == 6
    for side in ("listed", "bare"):
        numbers = [v for k, v in result["writes"][side].items() if k != "rounds"]
        assert len(numbers) == 4 and all(finite(v) and v > 0 for v in numbers), (side, numbers)
    assert set(result["writes"]["list_indexes"]) >= {"runner_jobs_trouble_keyset_idx", "runner_jobs_story_id_idx"}
    left = subprocess.run([sys.executable, "-c", _LEFT_DATABASES, servers.postgres.url], capture_output=True,
                          text=True, timeout=30, check=True)  # fmt: skip
    assert left.stdout.strip() == "[]", left.stdout


_LEFT_DATABASES = """
import asyncio, sys, asyncpg
async def main():
    db = await asyncpg.connect(sys.argv[1])
    print([r[0] for r in await db.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'bench_ops_%'")])
    await db.close()
asyncio.run(main())
"""


@pytest.fixture(scope="module")
async def loaded(servers: Servers) -> AsyncIterator[asyncpg.Pool]:
    """A database of its own holding the bench's 2,000 rows; dropped afterwards."""
    name = f"paging_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(servers.postgres.url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    pool = await asyncpg.create_pool(servers.postgres.url.rsplit("/", 1)[0] + f"/{name}", min_size=1, max_size=2)
    try:
        await load(pool, ROWS)
        yield pool
    finally:
        await pool.close()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


def filters(now: datetime) -> dict[str, JobFilter]:
    day = now - timedelta(days=15)
    failed, active = (JobStatus.FAILED,), (JobStatus.PENDING, JobStatus.PROCESSING)
    return {
        "all": JobFilter(QUEUE),
        "failed": JobFilter(QUEUE, statuses=failed),
        "active": JobFilter(QUEUE, statuses=active),
        "name": JobFilter(QUEUE, name=STORY_JOB),
        "story": JobFilter(QUEUE, field=("story_id", story_of(0))),
        "odd key": JobFilter(QUEUE, field=("story id'; --", story_of(0))),  # a parameter, never SQL
        "window": JobFilter(QUEUE, since=day, until=day + timedelta(days=3)),
        "common error": JobFilter(QUEUE, error_contains="provider"),
        "error behind the outage": JobFilter(QUEUE, error_contains="time limit"),
        "rare error": JobFilter(QUEUE, error_contains="SERVICE unavailable"),
        "no error": JobFilter(QUEUE, error_contains="50%_off"),
        "error and active": JobFilter(QUEUE, statuses=active, error_contains="provider"),
        "combined": JobFilter(QUEUE, statuses=failed, name=MEDIA_JOB, error_contains="429"),
        "other queue": JobFilter("backfill", statuses=(JobStatus.COMPLETED,), since=day - timedelta(days=14)),
    }


@pytest.mark.parametrize("scan_first", [1000, 7])
async def test_cursors_return_each_matching_row_once_newest_first(
    loaded: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch, scan_first: int
) -> None:
    """Pages of 7 followed to the end give exactly the rows a plain query finds, in its order (newest first),
    for every filter; with a small first scan, error texts also take the fallback path."""
    monkeypatch.setattr(runner.ops.jobs, "_SCAN_FIRST", scan_first)
    now = await loaded.fetchval("SELECT now()")
    for label, where in filters(now).items():
        want = await reference(loaded, where, 0, ROWS)
        seen: list[tuple[datetime, str]] = []
        cursor: str | None = None
        for _ in range(ROWS // 7 + 2):
            page = await find_jobs(loaded, where, limit=7, cursor=cursor)
            assert len(page.jobs) <= 7
            seen += [(j.enqueued_at, j.job_id) for j in page.jobs]
            if (cursor := page.next_cursor) is None:
                break
        assert cursor is None, f"{label}: the cursors did not end"
        assert [job_id for _, job_id in seen] == want, label
        assert seen == sorted(seen, reverse=True), f"{label}: not newest first"
        assert len(set(seen)) == len(seen), f"{label}: a row came twice"
    assert len(await reference(loaded, filters(now)["failed"], 0, ROWS)) > 7  # several pages were followed
