"""The benchmark suite still runs: a quick pass of every system and workload produces numbers that can be
right (finite, positive, every job started or completed, not every request an error), and never touches
the real results in bench/results/latest.json. (Speed is judged by `make bench`, never here.)"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
LATEST = ROOT / "bench" / "results" / "latest.json"
ENV = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}  # own servers


def run(*argv: str, timeout: float) -> str:
    """A benchmark's stdout; past `timeout` it gets Ctrl-C (so it stops its embedded servers) and fails."""
    process = subprocess.Popen([sys.executable, "-m", *argv], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        try:
            stdout, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        raise AssertionError(f"{argv[0]} ran past {timeout:.0f} s; its stderr ends:\n{stderr[-3000:]}") from None
    assert process.returncode == 0, stderr[-3000:]
    return stdout


def fingerprint(path: Path) -> tuple[int, str] | None:
    """(mtime ns, sha256) of a file, or None if there is none."""
    if not path.exists():
        return None
    return path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


def finite_positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def table_row(output: str, header: str) -> list[str]:
    """The cells of the first row under the markdown table whose header line starts with `header`."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    return [cell.strip() for cell in lines[start + 2].strip().strip("|").split("|")]


def broken_cells(records: list[dict[str, Any]]) -> list[str]:
    """Every run whose numbers cannot be right, said in a line each (bench.run marks them too)."""
    broken = []
    for record in records:
        result, workload, system = record["result"], record["cell"]["workload"], record["system"]
        where = f"{system} {record['cell']['key']}"
        notes = result.get("notes", {})
        if "error" in result or "broken" in result:
            broken.append(f"{where}: {result.get('error') or result.get('broken')}")
        elif workload in ("noop", "sleep"):
            if not finite_positive(result["jobs_per_s"]):
                broken.append(f"{where}: jobs/s {result['jobs_per_s']!r}")
            if "completed" in notes and notes["completed"] != record["cell"]["jobs"]:
                broken.append(f"{where}: {notes['completed']} of {record['cell']['jobs']} completed")
        elif workload == "starvation" and system != "storymimi" and notes.get("started") == 0:
            continue  # arq's result: its poll never reaches the probes behind the busy worker's jobs
        else:
            if notes.get("started") != record["cell"]["jobs"] and (workload == "latency" or system == "storymimi"):
                broken.append(f"{where}: {notes.get('started')} of {record['cell']['jobs']} started")
            for name in ("p50_ms", "p99_ms"):
                if not finite_positive(result[name]):
                    broken.append(f"{where}: {name} {result[name]!r}")
    return broken


@pytest.mark.timeout(300)
def test_quick_job_benchmarks_give_numbers_for_every_system(tmp_path: Path) -> None:
    """W1-W3 and starvation run against this runner, arq, pgqueuer, taskiq, SAQ and Celery: every cell has a
    finite positive number (our jobs and pgqueuer's all completed or started), the results go to --out, and
    latest.json is untouched."""
    before = fingerprint(LATEST)
    out = tmp_path / "quick.json"
    table = run("bench.run", "--quick", "--out", str(out), timeout=260)
    assert fingerprint(LATEST) == before, "the smoke pass overwrote the real results in bench/results/latest.json"
    results = json.loads(out.read_text())
    assert "| workload |" in table
    assert f"raw results: {out}" in table
    records = results["records"]
    assert {r["system"] for r in records} == {"storymimi", "arq-default", "arq-tuned", "pgqueuer", "taskiq", "saq",
                                              "celery-prefork"}  # fmt: skip
    assert not broken_cells(records), broken_cells(records)
    ours = [r["result"] for r in records if r["system"] == "storymimi"]
    assert {r["workload"] for r in ours} == {"noop", "sleep", "latency", "starvation"}
    assert all(r["notes"]["completed"] == r["jobs"] for r in ours if r["workload"] in ("noop", "sleep")), ours
    data_rows = [line for line in table.splitlines() if line.startswith("| W") or line.startswith("| starvation")]
    assert data_rows and not [line for line in data_rows if "| broken |" in line or "| error |" in line], data_rows


@pytest.mark.timeout(200)
def test_story_memory_and_api_benchmarks_give_numbers() -> None:
    """The story workload, the worker-memory run and the API load each print a row of finite positive
    numbers: no story failed, and not every API request was an error."""
    stories = run("bench.stories", "--stories", "3", timeout=120)
    row = table_row(stories, "| stories | failed |")
    assert row[:2] == ["3", "0"], row
    assert all(finite_positive(float(v)) for v in row[2:6]), row  # wall s, stories/min, p50 s, p95 s
    rss = run("bench.rss", "--jobs", "30", timeout=150)
    assert "| no recycling |" in rss and "| recycle every 200 jobs |" in rss
    rss_rows = [line for line in rss.splitlines() if line.startswith(("| no recycling |", "| recycle every"))]
    for line in rss_rows:
        numbers = [float(v) for v in re.findall(r"\|\s*([0-9.]+)\s*(?=\|)", line)]
        assert len(numbers) >= 5 and all(finite_positive(v) for v in numbers[:5]), line
    api = run("bench.api_load", "--clients", "8", "--seconds", "1", timeout=120)
    requests, errors, per_s, p50, p99 = (float(v) for v in table_row(api, "| requests | errors |")[:5])
    assert requests > 0 and errors < requests, f"{errors:.0f} of {requests:.0f} requests failed"
    assert all(finite_positive(v) for v in (per_s, p50, p99)), (per_s, p50, p99)


@pytest.mark.timeout(150)
def test_the_w1_profile_gives_costs_per_job() -> None:
    """`make bench-profile` prints, per job, the Redis commands (scripts included: the enqueue's EVALSHA, and more
    for the claims and the batched finishes), Postgres rows and WAL, and CPU of each process tree: finite, the
    counts and the driver's CPU positive (300 jobs may cost a server less than one clock tick of CPU: 0 there is
    a sample, not an error)."""
    report = json.loads(run("bench.profile_w1", "--jobs", "300", timeout=120))
    assert report["jobs"] == 300 and finite_positive(report["jobs_per_s"]), report
    assert report["redis_commands_per_job_by_name"]["evalsha"] > 1, report
    assert report["postgres_per_job"]["tup_inserted"] >= 1 and report["postgres_per_job"]["wal_records"] > 0, report
    cpu = report["cpu_ms_per_job"]
    assert set(cpu) == {"driver_and_worker", "redis", "postgres"} and finite_positive(cpu["driver_and_worker"]), cpu
    assert all(math.isfinite(v) and v >= 0 for v in cpu.values()), cpu


@pytest.mark.timeout(120)
def test_the_story_workload_over_http_completes_through_the_provider_server(tmp_path: Path) -> None:
    """`make bench-stories-http`, 3 stories and one run: every story completes with its providers over HTTP (the
    provider server answered exactly 7 chat, 5 image and 5 speech calls a story, warm-up included), stories/min,
    p50/p95 and CPU seconds a story are finite positive, and the real results are untouched."""
    real = ROOT / "bench" / "results" / "stories_http.json"
    before, out = fingerprint(real), tmp_path / "http.json"
    table = run("bench.stories_http", "--stories", "3", "--runs", "1", "--out", str(out), timeout=100)
    assert fingerprint(real) == before, "the smoke pass overwrote bench/results/stories_http.json"
    (r,) = json.loads(out.read_text())["runs"]
    assert r["by_status"] == {"completed": 3} and r["failed"] == 0 and r["all_ended"], r["by_status"]
    stories = 3 + r["warm_up_stories"]
    assert r["provider_server"]["requests"] == {"chat": 7 * stories, "images": 5 * stories, "tts": 5 * stories}, r
    assert r["jobs"]["media_task.generate"]["count"] == 15, r["jobs"]
    assert all(finite_positive(r[k]) for k in ("per_min", "p50_s", "p95_s", "cpu_s_per_story")), r
    assert finite_positive(r["cpu_s"]["workers"]) and all(v >= 0 for v in r["cpu_s"].values()), r["cpu_s"]
    assert table_row(table, "| stories | failed |")[:2] == ["3", "0"] and f"raw results: {out}" in table


MEMORY = ("rss_mib", "uss_mib", "pss_mib")


@pytest.mark.timeout(120)
def test_many_stories_at_once_all_complete_and_every_process_memory_is_read(tmp_path: Path) -> None:
    """`make bench-stories-1000` with 20 stories: every story and every job row completed, none left active or
    queued, stories/min and p50/p95 finite positive, and each fleet process's idle and peak memory read."""
    real = ROOT / "bench" / "results" / "stories_1000.json"
    before, out = fingerprint(real), tmp_path / "many.json"
    table = run("bench.stories_many", "--stories", "20", "--out", str(out), timeout=100)
    assert fingerprint(real) == before, "the smoke pass overwrote bench/results/stories_1000.json"
    r = json.loads(out.read_text())
    assert r["by_status"] == {"completed": 20} and r["jobs_left_active"] == 0, r["by_status"]
    stories = 20 + r["warm_up_stories"]
    assert r["job_rows"] == {"media_task.generate": {"completed": 5 * stories},
                             "story_task.complete": {"completed": stories},
                             "story_task.generate": {"completed": stories}}, r["job_rows"]  # fmt: skip
    queue = r["queue"]["queue"]
    assert queue["pending"] == queue["running"] == queue["retrying"] == queue["due"] == 0, queue
    assert all(finite_positive(r[k]) for k in ("per_min", "p50_s", "p95_s", "cpu_s_per_story")), r
    assert {"supervisor", "api", "worker-1", "worker-2"} <= set(r["memory_idle_mib"]), r["memory_idle_mib"]
    for role, idle in r["memory_idle_mib"].items():
        peak = r["memory_peak_mib"][role]
        assert all(finite_positive(idle[m]) and finite_positive(peak[m]) for m in MEMORY), (role, idle, peak)
    assert "stuck: none" in table


def test_fleet_memory_reads_every_process_of_a_forked_fleet() -> None:
    """`make bench-memory` with one worker and 3 stories: the supervisor, the zygote, the API and the worker
    each read (USS, PSS, RSS)."""
    out = run("bench.fleet_memory", "--workers", "1", "--stories", "3", "--settle-s", "0.5", "--json", timeout=120)
    [fleet] = json.loads(out[out.index("[") :])
    roles = {p["role"] for p in fleet["rows"]}
    assert {"supervisor", "storymimi-zygote", "api", "worker"} <= roles, roles
    assert all(finite_positive(p[m]) for p in fleet["rows"] for m in ("uss_mib", "pss_mib", "rss_mib")), fleet
    # Each forked process's pages copied on write from the zygote's (root reads the frames: CI runs as root).
    copied = [p["copied_mib"] for p in fleet["rows"] if p["role"] in ("supervisor", "api", "worker")]
    assert all(c is None or 0 < c < 200 for c in copied) and (os.geteuid() != 0 or None not in copied), fleet


def test_worker_start_up_is_timed_from_spawn_to_first_job() -> None:
    """`make bench-startup` with 30 jobs, forked children: replacements spawned and timed to their first job."""
    table = run("bench.startup", "--modes", "fork", "--jobs", "30", timeout=120)
    warm = re.search(r"\| fork \| warm \(replacements\) \| (\d+) \| (\d+) \| (\d+) \|", table)
    assert warm is not None, table
    assert int(warm[1]) >= 1 and int(warm[3]) > 0, table
