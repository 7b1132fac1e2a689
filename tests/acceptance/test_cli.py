"""The operations commands, run as a user runs them (`python -m runner ...` in a real process) against
the real servers and a live worker: JSON out, and exit codes cron jobs and probes can use."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from runner.devservers import free_port
from runner.resources import Resources
from runner.settings import Settings
from runner.status import JobStatus
from tests.conftest import RunWorker, wait_for
from tests.integration.test_worker import REGISTRY, client_for, until_status

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


async def runner_cli(settings: Settings, *args: str, **env: str) -> tuple[int, Any, str]:
    """Run `python -m runner <args> --json`; its exit code, its JSON and its stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runner", *args, "--json", cwd=ROOT,
        env={**os.environ, "REDIS_URL": str(settings.redis_url), "DATABASE_URL": str(settings.database_url),
             "QUEUE_NAME": settings.queue_name, "LOG_FORMAT": "json", "DATA_DIR": str(settings.data_dir), **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, orjson.loads(out) if out.strip() else None, err.decode(errors="replace")


async def test_status_jobs_and_workers_describe_a_live_queue(
    resources: Resources, settings: Settings, run_worker: RunWorker
):
    worker = await run_worker(REGISTRY)
    client = client_for(resources, settings)
    q = settings.queue_name
    for n in range(3):
        await client.enqueue("probe.record", job_id=f"{q}:ok-{n}", tag=f"t{n}")
    await client.enqueue("probe.flaky", job_id=f"{q}:broken", key=f"{q}-k", fail_times=5, permanent=True)
    await until_status(client, f"{q}:broken", JobStatus.FAILED)
    for n in range(3):
        await until_status(client, f"{q}:ok-{n}", JobStatus.COMPLETED)
    await asyncio.sleep(0.1)

    code, status, _ = await runner_cli(settings, "status")
    assert code == 0 and status["healthy"] is True
    assert status["queue"]["workers"] == 1 and status["queue"]["failed_last_hour"] == 1
    assert status["queue"]["completed_last_minute"] == 3

    # With QUEUES, every queue is shown; one with a due job and no worker makes the status unhealthy.
    await client.enqueue("probe.record", job_id=f"{q}:stalled", queue=f"{q}-other", tag="x")
    code, both, _ = await runner_cli(settings, "status", QUEUES=f"{q}:2,{q}-other:1")
    assert code == 1 and [o["queue"] for o in both["queues"]] == [q, f"{q}-other"]
    assert both["problem"] == f"{q}-other: 1 due jobs and no live worker"
    assert both["queues"][0]["workers"] == 1 and both["queues"][1]["due"] == 1

    code, failed, _ = await runner_cli(settings, "jobs", "ls", "--status", "failed")
    assert code == 0 and [j["job_id"] for j in failed["jobs"]] == [f"{q}:broken"]
    assert "not fixable" in failed["jobs"][0]["error"]
    _, by_error, _ = await runner_cli(settings, "jobs", "ls", "--error", "NOT FIX")
    assert [j["job_id"] for j in by_error["jobs"]] == [f"{q}:broken"]
    _, by_field, _ = await runner_cli(settings, "jobs", "ls", "--field", "tag=t1")
    assert [j["job_id"] for j in by_field["jobs"]] == [f"{q}:ok-1"]
    _, first, _ = await runner_cli(settings, "jobs", "ls", "--name", "probe.record", "--limit", "2")
    _, rest, _ = await runner_cli(settings, "jobs", "ls", "--name", "probe.record", "--limit", "2",
                                  "--cursor", first["next_cursor"])  # fmt: skip
    pages = [j["job_id"] for j in first["jobs"] + rest["jobs"]]
    assert sorted(pages) == [f"{q}:ok-{n}" for n in range(3)] and rest["next_cursor"] is None

    code, shown, _ = await runner_cli(settings, "jobs", "show", f"{q}:ok-0")
    assert code == 0 and shown["status"] == "completed" and shown["args"] == {"tag": "t0"}
    code, _, err = await runner_cli(settings, "jobs", "show", f"{q}:nope")
    assert code == 1 and "no job" in err

    code, listed, _ = await runner_cli(settings, "workers", "ls")
    assert code == 0 and [w["worker_id"] for w in listed] == [worker.worker_id]
    assert listed[0]["pid"] == os.getpid() and listed[0]["state"] == "running"
    assert listed[0]["jobs_done"] == 4 and listed[0]["heartbeat_age_s"] < 5
    assert listed[0]["queues"] == [q]  # every queue it serves (QUEUES), this one among them

    code, checked, _ = await runner_cli(settings, "doctor")
    assert code == 0 and checked["healthy"] is True
    assert {c["name"] for c in checked["checks"]} == {"redis", "postgres", "schema", "stuck rows", "clock skew",
                                                      "embedded servers"}  # fmt: skip
    embedded = next(c for c in checked["checks"] if c["name"] == "embedded servers")
    assert embedded["ok"] and "not used" in embedded["detail"]  # this test sets both URLs


async def test_status_fails_when_due_jobs_have_no_worker(resources: Resources, settings: Settings):
    await client_for(resources, settings).enqueue("probe.record", job_id=f"{settings.queue_name}:lonely", tag="x")
    code, status, _ = await runner_cli(settings, "status")
    assert code == 1 and status["healthy"] is False and "no live worker" in status["problem"]


async def test_doctor_and_status_fail_naming_a_server_that_is_down(settings: Settings):
    down = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    code, checked, _ = await runner_cli(settings, "doctor", DATABASE_URL=down)
    assert code == 1 and checked["healthy"] is False
    postgres = next(c for c in checked["checks"] if c["name"] == "postgres")
    assert postgres["ok"] is False and "down" in postgres["detail"]
    code, status, _ = await runner_cli(settings, "status", DATABASE_URL=down)
    assert code == 1 and "postgres" in status["problem"]


async def runner_cli_lines(settings: Settings, *args: str) -> tuple[int, list[Any], str]:
    """Run `python -m runner <args> --json` for a command that prints one JSON line per update."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runner", *args, "--json", cwd=ROOT,
        env={**os.environ, "REDIS_URL": str(settings.redis_url), "DATABASE_URL": str(settings.database_url),
             "QUEUE_NAME": settings.queue_name, "LOG_FORMAT": "json", "DATA_DIR": str(settings.data_dir)},
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, [orjson.loads(line) for line in out.splitlines()], err.decode(errors="replace")


async def test_show_retry_purge_drain_and_watch_act_on_a_live_queue(
    resources: Resources, settings: Settings, run_worker: RunWorker
):
    """What an on-call person does from a shell: read a failure's attempts and traceback, retry it, retry
    all that match (asked first), purge the queue (asked first), drain a worker, watch the queue."""
    worker = await run_worker(REGISTRY)
    client = client_for(resources, settings)
    q = settings.queue_name
    for n in range(2):
        await client.enqueue("probe.flaky", job_id=f"{q}:bad-{n}", key=f"{q}-bad-{n}", fail_times=9, permanent=True)
    for n in range(2):
        await until_status(client, f"{q}:bad-{n}", JobStatus.FAILED)

    code, shown, _ = await runner_cli(settings, "jobs", "show", f"{q}:bad-0")
    assert code == 0 and shown["status"] == "failed" and shown["children_total"] == 0
    [attempt] = shown["attempts"]
    assert attempt["outcome"] == "failed" and attempt["worker"] == worker.worker_id
    assert "PermanentError: not fixable" in attempt["traceback"] and attempt["duration_s"] >= 0

    code, retried, _ = await runner_cli(settings, "jobs", "retry", f"{q}:bad-0", f"{q}:nope")
    assert code == 0 and retried == {"retried": [f"{q}:bad-0"], "skipped": [f"{q}:nope"]}

    async def ran_twice(job_id: str) -> bool:
        _, again, _ = await runner_cli(settings, "jobs", "show", job_id)
        return again["status"] == "failed" and [a["attempt"] for a in again["attempts"]] == [1, 2]

    await wait_for(lambda: ran_twice(f"{q}:bad-0"), timeout=20, every=0.5)

    code, _, err = await runner_cli(settings, "jobs", "retry", "--all-matching", "--error", "not fixable")
    assert code == 1 and "2 failed or cancelled jobs match; add --yes" in err
    code, everything, _ = await runner_cli(settings, "jobs", "retry", "--all-matching", "--error", "not fixable",
                                           "--yes")  # fmt: skip
    assert code == 0 and everything == {"matched": 2, "retried": 2}
    await wait_for(lambda: ran_twice(f"{q}:bad-1"), timeout=20, every=0.5)

    code, lines, _ = await runner_cli_lines(settings, "watch", "--count", "2", "--interval", "0.2")
    assert code == 0 and len(lines) == 2
    assert lines[1]["queue"]["queue"] == q and [w["worker_id"] for w in lines[1]["workers"]] == [worker.worker_id]

    worker.stop()  # no worker: queued jobs wait, and a purge marks them for the next worker
    for n in range(3):
        await client.enqueue("probe.record", job_id=f"{q}:queued-{n}", tag="late")
    code, purged, _ = await runner_cli(settings, "queue", "purge", "--yes")
    assert code == 0 and purged == {"purged": 3}
    await run_worker(REGISTRY)
    for n in range(3):
        await until_status(client, f"{q}:queued-{n}", JobStatus.CANCELLED)


async def test_drain_stops_the_named_worker(resources: Resources, settings: Settings, run_worker: RunWorker):
    worker = await run_worker(REGISTRY)
    await wait_for(lambda: _listed(settings, worker.worker_id), timeout=20, every=0.5)
    code, _, err = await runner_cli(settings, "workers", "drain", "nobody")
    assert code == 1 and "no live worker 'nobody'" in err
    code, asked, _ = await runner_cli(settings, "workers", "drain", worker.worker_id)
    assert code == 0 and asked == {"worker_id": worker.worker_id, "drain_requested": True}
    await wait_for(lambda: _none_listed(settings), timeout=10, every=0.5)  # it left: its report is gone
    assert worker.exit_reason.value == "drained"


async def _listed(settings: Settings, worker_id: str) -> bool:
    _, listed, _ = await runner_cli(settings, "workers", "ls")
    return [w["worker_id"] for w in listed] == [worker_id]


async def _none_listed(settings: Settings) -> bool:
    _, listed, _ = await runner_cli(settings, "workers", "ls")
    return listed == []


async def test_doctor_names_a_missing_embedded_server(settings: Settings, tmp_path: Path):
    """With the URLs unset and no embedded server recorded under DATA_DIR, doctor says so (exit 1)."""
    env = {"REDIS_URL": "", "DATABASE_URL": "", "DATA_DIR": str(tmp_path / "nothing-here")}
    code, checked, _ = await runner_cli(settings, "doctor", **env)
    assert code == 1 and checked["healthy"] is False
    [embedded] = [c for c in checked["checks"] if c["name"] == "embedded servers"]
    assert not embedded["ok"] and "is running: start one with `make run`" in embedded["detail"]
