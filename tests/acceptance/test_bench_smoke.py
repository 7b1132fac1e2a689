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
    """`make bench-profile` prints, per job, the Redis commands (scripts included: at least the enqueue's and the
    finish's EVALSHA), Postgres rows and WAL, and CPU of each process tree: finite, the counts and the driver's CPU
    positive (300 jobs may cost a server less than one clock tick of CPU: 0 there is a sample, not an error)."""
    report = json.loads(run("bench.profile_w1", "--jobs", "300", timeout=120))
    assert report["jobs"] == 300 and finite_positive(report["jobs_per_s"]), report
    assert report["redis_commands_per_job_by_name"]["evalsha"] >= 2, report
    assert report["postgres_per_job"]["tup_inserted"] >= 1 and report["postgres_per_job"]["wal_records"] > 0, report
    cpu = report["cpu_ms_per_job"]
    assert set(cpu) == {"driver_and_worker", "redis", "postgres"} and finite_positive(cpu["driver_and_worker"]), cpu
    assert all(math.isfinite(v) and v >= 0 for v in cpu.values()), cpu
