"""Where a story bench's time went, from the fleet's own records: the job rows and attempts in Postgres, the
fleet's /metrics, `python -m runner status`, and Redis commands and Postgres WAL around the run.

    phases of a story (p50 / p95 over the stories, seconds):
        wait        created -> its story job's first attempt starts (the API's enqueue and the queue)
        story job   that attempt: the story and visual profile written (2 text calls), the scenes' jobs enqueued
        scenes      story job's end -> the last scene's media job ends (queue wait, then 1 text + image || speech)
        join        the last scene's end -> the story completed (the group's join: enqueued, queued, run)

Attempt start times are the workers' clocks; ends are the time the worker's batched status write committed
(which is also when a group's last member's end pushes its join).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import defaultdict
from typing import Any

import asyncpg
import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families

from bench.profile_w1 import command_calls
from bench.story_fleet import ROOT, Fleet, percentile

__all__ = ["ServerCounters", "fleet_metrics", "job_counts", "queue_status", "where_time_goes"]

_JOBS = """
SELECT j.name, j.args ->> 'story_id' AS story_id, j.attempts,
       extract(epoch FROM j.enqueued_at)::float8 AS enqueued,
       extract(epoch FROM min(a.started_at))::float8 AS started,
       extract(epoch FROM max(a.finished_at))::float8 AS finished
FROM runner_jobs j LEFT JOIN runner_job_attempts a USING (job_id)
WHERE j.args ->> 'story_id' = ANY($1::text[])
GROUP BY j.job_id
"""
_STORIES = """
SELECT story_id::text, extract(epoch FROM created_at)::float8 AS created, extract(epoch FROM updated_at)::float8 AS ended
FROM stories WHERE story_id = ANY($1::uuid[]) AND status = 'completed'
"""
_STORY_JOB, _MEDIA_JOB, _JOIN_JOB = "story_task.generate", "media_task.generate", "story_task.complete"


def _p50_p95(values: list[float]) -> dict[str, float]:
    return {"p50": round(percentile(values, 0.5), 4), "p95": round(percentile(values, 0.95), 4), "n": len(values)}


async def where_time_goes(db: asyncpg.Connection, ids: list[str]) -> dict[str, Any]:
    """Per job name: count, tries beyond the first, queue wait and run time; per completed story: its phases.

    A join's row is written with its group, so its wait counts from its group's last member's end (when it
    was pushed), not from its row's `enqueued_at`."""
    jobs = await db.fetch(_JOBS, ids)
    by_story: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for job in jobs:
        by_story[job["story_id"]].append(job)
    last_scene = {story: max((j["finished"] for j in own if j["name"] == _MEDIA_JOB and j["finished"]), default=None)
                  for story, own in by_story.items()}  # fmt: skip
    per_name: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    retried: dict[str, int] = defaultdict(int)
    for job in jobs:
        retried[job["name"]] += max(0, job["attempts"] - 1)
        if job["started"] is None or job["finished"] is None:
            continue
        pushed = last_scene[job["story_id"]] if job["name"] == _JOIN_JOB else job["enqueued"]
        if pushed is not None:
            per_name[job["name"]]["wait_s"].append(max(job["started"] - pushed, 0.0))
        per_name[job["name"]]["run_s"].append(job["finished"] - job["started"])
    phases: dict[str, list[float]] = defaultdict(list)
    for story in await db.fetch(_STORIES, ids):
        first = next((j for j in by_story[story["story_id"]] if j["name"] == _STORY_JOB and j["finished"]), None)
        scenes_end = last_scene.get(story["story_id"])
        if first is None or scenes_end is None:
            continue
        phases["wait"].append(first["started"] - story["created"])
        phases["story job"].append(first["finished"] - first["started"])
        phases["scenes"].append(scenes_end - first["finished"])
        phases["join"].append(story["ended"] - scenes_end)
    return {
        "jobs": {name: {"count": len(v["run_s"]), "extra_tries": retried[name], "wait_s": _p50_p95(v["wait_s"]),
                        "run_s": _p50_p95(v["run_s"])} for name, v in sorted(per_name.items())},
        "story_phases_s": {name: _p50_p95(values) for name, values in phases.items()},
    }  # fmt: skip


async def job_counts(db: asyncpg.Connection) -> dict[str, dict[str, int]]:
    """Every job row of the fleet's database, counted by name and status."""
    rows = await db.fetch("SELECT name, status, count(*) AS n FROM runner_jobs GROUP BY name, status ORDER BY 1, 2")
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for row in rows:
        counts[row["name"]][row["status"]] = int(row["n"])
    return dict(counts)


async def fleet_metrics(api: httpx.AsyncClient) -> dict[str, Any]:
    """From the fleet's /metrics: the longest event-loop lag of each process kind in the last minute or two,
    worker exits by reason, provider retries and job outcomes."""
    text = (await api.get("/metrics")).text
    wanted = {"runner_event_loop_lag_max_seconds": "loop_lag_max_s", "runner_worker_exits": "worker_exits",
              "runner_provider_retries": "provider_retries", "runner_jobs": "job_outcomes"}  # fmt: skip
    found: dict[str, dict[str, float]] = {key: {} for key in wanted.values()}
    for family in text_string_to_metric_families(text):
        key = wanted.get(family.name)
        for sample in family.samples if key else ():
            if sample.name.endswith("_created"):
                continue
            label = ",".join(f"{v}" for v in sample.labels.values()) or "all"
            found[key][label] = found[key].get(label, 0.0) + sample.value  # type: ignore[index]
    return found


async def queue_status(fleet: Fleet) -> dict[str, Any]:
    """`python -m runner status --json` against the fleet's servers: the operators' view of the queue."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runner", "status", "--json", cwd=ROOT, env=fleet.env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    try:
        status: dict[str, Any] = json.loads(out)
    except ValueError:
        return {"error": (err or out).decode(errors="replace")[-500:]}
    return status


class ServerCounters:
    """Redis commands (INFO commandstats: the commands scripts run count too) and Postgres WAL bytes written
    (pg_current_wal_lsn: exact at once, where pg_stat_database's counts reach it up to seconds later) between
    `start()` and `stop()`, per story. The bench's own polling is in them (a read a tick: no WAL)."""

    def __init__(self, fleet: Fleet) -> None:
        self._redis = redis.Redis.from_url(fleet.env["REDIS_URL"])
        self._db = fleet.db
        self._calls: dict[str, int] = {}
        self._lsn = ""

    async def start(self) -> None:
        self._calls = await asyncio.to_thread(command_calls, self._redis)
        self._lsn = str(await self._db.fetchval("SELECT pg_current_wal_lsn()::text"))

    async def stop(self, stories: int) -> dict[str, Any]:
        calls = await asyncio.to_thread(command_calls, self._redis)
        self._redis.close()
        wal = await self._db.fetchval(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::float8", self._lsn
        )
        spent = {k: v - self._calls.get(k, 0) for k, v in calls.items() if v > self._calls.get(k, 0)}
        top = sorted(spent.items(), key=lambda kv: -kv[1])[:8]
        return {
            "redis_commands_per_story": round(sum(spent.values()) / stories, 1),
            "redis_top_commands_per_story": {k: round(v / stories, 1) for k, v in top},
            "postgres_wal_kib_per_story": round(float(wal) / 1024 / stories, 1),
        }
