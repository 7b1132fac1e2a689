"""This runner against bare arq (default and tuned), the strongest asyncio peers (pgqueuer on Postgres, taskiq on
Redis streams, SAQ on Redis) and the old Celery prefork design, on the issue's workloads; prints one markdown
table and writes every run's result to bench/results/latest.json.

    make bench-jobs                 # or: python -m bench.run [--quick] [--runs N] [--systems a,b] [--out FILE]

Starts embedded Valkey and PostgreSQL in a temporary folder (unless REDIS_URL / DATABASE_URL are set;
pgqueuer's tables, prefix bench_, share that Postgres with ours), makes each other system's virtual
environment bench/.venv-<name> from bench/requirements-<name>.txt (once, side by side: bench/venvs.py), then
runs each driver (`python -m bench.drivers.<name>`, see bench/drivers/common.py and, for the asyncio peers,
bench/drivers/peer.py) as a subprocess with a timeout, on a fresh queue, once per cell and run.  Cells are "median (min-max)" over the runs; a driver that
fails or times out shows "error" and the rest of the table still prints.  The embedded Valkey is flushed
between runs (an external REDIS_URL only with --flush), so no run sees another's leftover keys.

A run whose numbers cannot be right is *broken*: the driver failed, a jobs/s, latency or RSS figure is not a
finite positive number, not every job started (W3; starvation for ours), or not every job completed (the
drivers that count them).  Its record says why under "broken", its cell shows "broken", and after the table
the broken runs are listed on stderr and the exit code is 1.  Another system's starvation probes that never
start are that system's result ("none started"), not a broken run.

Results go to bench/results/latest.json (--quick: bench/results/quick.json, so a smoke pass never replaces
the real numbers), or to --out FILE.

    rows        W1 noop, W2 sleep 0.1 s (100 at once; 500 at once for the asyncio systems), W3 latency,
                starvation (a worker busy with 60 s jobs, a second one idle: do new jobs start?)
    columns     storymimi, arq-default, arq-tuned, pgqueuer, taskiq, saq, celery-prefork, then ours / each of
                them (> 1: ours is better: jobs/s ours / theirs, ms and MiB theirs / ours); each peer's settings
                (batch sizes, concurrency, versions) are in its results' notes and under the table
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil
import redis

from bench.venvs import ensure_celery_venv, ensure_venvs
from runner.devservers import EmbeddedPostgres, EmbeddedValkey

__all__ = ["ensure_celery_venv", "main"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "latest.json"
QUICK_RESULTS = ROOT / "bench" / "results" / "quick.json"  # --quick never overwrites the real numbers
OURS = "storymimi"
SYSTEMS = (OURS, "arq-default", "arq-tuned", "pgqueuer", "taskiq", "saq", "celery-prefork")
ASYNCIO_SYSTEMS = SYSTEMS[:-1]
# system -> (its venv, bench/.venv-<name>; its driver module), for the systems that run outside our venv
FOREIGN = {"pgqueuer": ("pgqueuer", "bench.drivers.pgqueuer_bare"), "taskiq": ("taskiq", "bench.drivers.taskiq_bare"),
           "saq": ("saq", "bench.drivers.saq_bare"), "celery-prefork": ("celery", "bench.drivers.celery_prefork")}  # fmt: skip
NEEDS_POSTGRES = (OURS, "pgqueuer")
DASH, TIMES = "\u2013", "\u00d7"  # en dash and multiplication sign, for the table


@dataclass(frozen=True)
class Cell:
    """One workload configuration: each system runs it `runs` times."""

    key: str
    workload: str
    jobs: int
    concurrency: int
    sleep_s: float = 0.1
    rate: float = 50.0
    systems: tuple[str, ...] = SYSTEMS


@dataclass(frozen=True)
class Row:
    """One line of the table: a number taken from one cell's results."""

    label: str
    cell: str
    metric: Callable[[dict[str, Any]], float | None]
    higher_is_better: bool
    unit: str = ""


def matrix(quick: bool) -> list[Cell]:
    if quick:
        return [Cell("noop", "noop", 300, 100), Cell("sleep100", "sleep", 200, 100),
                Cell("sleep500", "sleep", 500, 500, systems=ASYNCIO_SYSTEMS), Cell("latency", "latency", 30, 10),
                Cell("starvation", "starvation", 20, 100)]  # fmt: skip
    return [Cell("noop", "noop", 10_000, 100), Cell("sleep100", "sleep", 2_000, 100),
            Cell("sleep500", "sleep", 5_000, 500, systems=ASYNCIO_SYSTEMS), Cell("latency", "latency", 200, 10),
            Cell("starvation", "starvation", 100, 100)]  # fmt: skip


def rows(cells: dict[str, Cell]) -> list[Row]:
    noop, s100, s500 = cells["noop"], cells["sleep100"], cells["sleep500"]
    lat, starv = cells["latency"], cells["starvation"]

    def jobs_per_s(r: dict[str, Any]) -> float | None:
        return r["jobs_per_s"] or None

    def started(r: dict[str, Any]) -> float | None:
        return float(r["notes"].get("started", 0))

    w2 = [f"W2 sleep {c.sleep_s} s: {c.jobs:,} jobs, {c.concurrency} at once, jobs/s" for c in (s100, s500)]
    w3 = f"W3 latency: {lat.jobs} jobs at {lat.rate:g}/s"
    st = f"starvation: {starv.concurrency} busy, {starv.jobs} probes"
    return [
        Row(f"W1 noop: {noop.jobs:,} jobs, {noop.concurrency} at once, jobs/s", "noop", jobs_per_s, True),
        Row("W1 noop: worker RSS MiB (process tree)", "noop", lambda r: r["worker_rss_mib"], False),
        Row(w2[0], "sleep100", jobs_per_s, True),
        Row(w2[1], "sleep500", jobs_per_s, True),
        Row(f"{w3}, p50 ms", "latency", lambda r: r["p50_ms"], False),
        Row(f"{w3}, p99 ms", "latency", lambda r: r["p99_ms"], False),
        Row(f"{st}, p50 ms", "starvation", lambda r: r["p50_ms"], False),
        Row(f"{st}, p99 ms", "starvation", lambda r: r["p99_ms"], False),
        Row(f"{st}: probes started within the wait", "starvation", started, True, "count"),
    ]


def driver_argv(system: str, pythons: dict[str, Path | None]) -> list[str]:
    if system == OURS:
        return [sys.executable, "-m", "bench.drivers.storymimi"]
    if system.startswith("arq-"):
        return [sys.executable, "-m", "bench.drivers.arq_bare", "--variant", system.removeprefix("arq-")]
    venv, module = FOREIGN[system]
    python = pythons.get(venv)
    if python is None:
        raise RuntimeError(f"the {venv} virtual environment (bench/.venv-{venv}) could not be made")
    return [str(python), "-m", module]


def kill_tree(process: subprocess.Popen[str]) -> None:
    """SIGKILL a driver that overran and every process under it (its workers run in their own sessions)."""
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            continue
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def run_driver(argv: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """The driver's JSON result, or {"error": ...}: a failure never stops the matrix."""
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(process)
        return {"error": f"timed out after {timeout:.0f} s"}
    except BaseException:  # Ctrl-C: never leave a driver and its workers running behind us
        kill_tree(process)
        raise
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                result: dict[str, Any] = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "system" in result:
                return result
    tail = " | ".join((stderr or stdout).strip().splitlines()[-3:])
    return {"error": f"exit {process.returncode}: {tail[-400:]}"}


def common_args(cell: Cell, queue: str, env: dict[str, str]) -> list[str]:
    args = ["--workload", cell.workload, "--jobs", str(cell.jobs), "--concurrency", str(cell.concurrency),
            "--sleep-s", str(cell.sleep_s), "--rate", str(cell.rate), "--redis-url", env["REDIS_URL"],
            "--queue", queue]  # fmt: skip
    return args + (["--database-url", env["DATABASE_URL"]] if env.get("DATABASE_URL") else [])


def positive(value: object) -> bool:
    """A finite number above zero (not None, NaN or infinity)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def problem(cell: Cell, system: str, result: dict[str, Any]) -> str | None:
    """Why this run's numbers cannot be right, or None if they can."""
    if "error" in result:
        return f"the driver failed: {result['error']}"
    notes = result.get("notes") or {}
    if cell.workload in ("noop", "sleep"):
        if not positive(result.get("jobs_per_s")):
            return f"jobs/s is {result.get('jobs_per_s')!r}, not a finite positive number"
        if cell.workload == "noop" and not positive(result.get("worker_rss_mib")):
            return f"worker RSS is {result.get('worker_rss_mib')!r} MiB, not a finite positive number"
        completed = notes.get("completed")
        if completed is not None and completed != cell.jobs:
            return (f"{completed} of {cell.jobs} jobs completed ({notes.get('failed', '?')} failed): "
                    "the jobs/s counts jobs that did not run")  # fmt: skip
        return None
    started = notes.get("started", 0)
    if cell.workload == "starvation" and system != OURS and started == 0:
        return None  # this system's finding: no probe got past the busy worker's jobs
    if started != cell.jobs and (cell.workload == "latency" or system == OURS):
        return f"{started} of {cell.jobs} jobs started within the wait"
    for name in ("p50_ms", "p99_ms"):
        if not positive(result.get(name)):
            return f"{name} is {result.get(name)!r}, not a finite positive number"
    return None


def number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def summarize(results: list[dict[str, Any]], row: Row) -> tuple[float | None, str]:
    """(median, "median (min-max)") of one row for one system's runs."""
    if not results:
        return None, "—"
    values = [v for r in results if not failed(r) and (v := row.metric(r)) is not None]
    errors = sum(failed(r) for r in results)
    if not values:
        if errors == len(results):
            return None, "broken" if any("broken" in r and "error" not in r for r in results) else "error"
        return None, "none started"
    median = statistics.median(values)
    text = f"{median:.0f}" if row.unit == "count" else number(median)
    if len(values) > 1:
        low, high = min(values), max(values)
        text += f" ({low:.0f}{DASH}{high:.0f})" if row.unit == "count" else f" ({number(low)}{DASH}{number(high)})"
    return median, text + (f" [{errors} error]" if errors else "")


def failed(result: dict[str, Any]) -> bool:
    return "error" in result or "broken" in result


def table(cells: list[Cell], records: list[dict[str, Any]], runs: int) -> str:
    by_key = {cell.key: cell for cell in cells}
    others = [s for s in SYSTEMS if s != OURS]
    head = ["workload", *SYSTEMS, *(f"ours / {s.removeprefix('celery-')}" for s in others)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows(by_key):
        medians: dict[str, float | None] = {}
        texts = []
        for system in SYSTEMS:
            mine = [r["result"] for r in records if r["cell"]["key"] == row.cell and r["system"] == system]
            medians[system], text = summarize(mine, row)
            texts.append(text)
        ratios = []
        for system in others:
            ours, theirs = medians[OURS], medians[system]
            if row.unit != "count" and ours and theirs is None and texts[SYSTEMS.index(system)] == "none started":
                ratios.append("∞ (theirs: none started)")
            elif row.unit == "count" or not ours or not theirs:
                ratios.append("—")
            else:
                ratios.append(f"{(ours / theirs if row.higher_is_better else theirs / ours):.2f}{TIMES}")
        lines.append("| " + " | ".join([row.label, *texts, *ratios]) + " |")
    lines.append("")
    lines.append(f"median (min{DASH}max) of {runs} run(s); ratio columns > 1 mean ours is better (jobs/s: ours / "
                 "theirs; ms and MiB: theirs / ours). 'none started': no probe started within the wait.")  # fmt: skip
    celery = [r["result"] for r in records if r["system"] == "celery-prefork" and not failed(r["result"])]
    if celery:
        notes = celery[0]["notes"]
        lines.append(f"celery-prefork: Celery {notes.get('celery')}, kombu {notes.get('kombu')}, redis-py "
                     f"{notes.get('redis_py')}; prefork pool = min(concurrency, 8) processes "
                     f"({notes.get('pool')} here), acks_late, prefetch 1, a new event loop per task; in starvation "
                     "the busy worker holds as many 60 s tasks as it has processes.")  # fmt: skip
    lines.extend(peer_settings(records))
    return "\n".join(lines)


def peer_settings(records: list[dict[str, Any]]) -> list[str]:
    """One line per asyncio peer: its versions and settings, as its W1 driver reported them."""
    lines = []
    for system in ("pgqueuer", "taskiq", "saq"):
        mine = [r["result"] for r in records if r["system"] == system and r["cell"]["key"] == "noop"
                and not failed(r["result"])]  # fmt: skip
        if mine:
            shown = {k: v for k, v in mine[0]["notes"].items() if k not in ("completed", "failed", "started")}
            lines.append(f"{system} (W1; concurrency = the row's 'at once'): "
                         + ", ".join(f"{k} {v}" for k, v in shown.items()))  # fmt: skip
    return lines


def progress(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"error: {result['error']}"
    if "broken" in result:
        return f"BROKEN: {result['broken']}"
    if result["jobs_per_s"]:
        return f"{result['jobs_per_s']:.0f} jobs/s, worker {result['worker_rss_mib']:.0f} MiB"
    p50, p99 = (f"{v:.1f}" if v is not None else "-" for v in (result["p50_ms"], result["p99_ms"]))
    return f"p50 {p50} ms, p99 {p99} ms, {result['notes'].get('started')}/{result['jobs']} started"


def flusher(url: str, enabled: bool) -> Callable[[], None]:
    def flush() -> None:
        if enabled:
            client = redis.Redis.from_url(url)
            try:
                client.flushdb()
            finally:
                client.close()

    return flush


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one run of each cell with small N (a smoke test)")
    parser.add_argument("--runs", type=int, help="runs per cell (default 3, 1 with --quick)")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset of " + ",".join(SYSTEMS))
    parser.add_argument(
        "--timeout", type=float, help="seconds allowed to one driver run (default 180, 60 with --quick)"
    )
    parser.add_argument("--out", type=Path, help="where to write the raw results (default bench/results/latest.json, "
                        "with --quick bench/results/quick.json)")  # fmt: skip
    parser.add_argument("--flush", action="store_true", help="FLUSHDB an external REDIS_URL between runs too")
    options = parser.parse_args()
    runs = options.runs or (1 if options.quick else 3)
    timeout = options.timeout or (60.0 if options.quick else 180.0)
    out: Path = (options.out or (QUICK_RESULTS if options.quick else RESULTS)).absolute()
    chosen = [s for s in options.systems.split(",") if s]
    if unknown := set(chosen) - set(SYSTEMS):
        parser.error(f"unknown systems: {sorted(unknown)}")
    cells = matrix(options.quick)
    records: list[dict[str, Any]] = []
    began = time.monotonic()
    with ExitStack() as stack:
        env = dict(os.environ)
        env["BENCH_START_WAIT_S"] = env.get("BENCH_START_WAIT_S", "3" if options.quick else "15")
        data = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-run-")))
        embedded_redis = not env.get("REDIS_URL")
        if embedded_redis:
            env["REDIS_URL"] = stack.enter_context(EmbeddedValkey(data)).url
        if not env.get("DATABASE_URL") and set(NEEDS_POSTGRES) & set(chosen):
            env["DATABASE_URL"] = stack.enter_context(EmbeddedPostgres(data)).url
        flush = flusher(env["REDIS_URL"], embedded_redis or options.flush)
        pythons = ensure_venvs([FOREIGN[s][0] for s in SYSTEMS if s in FOREIGN and s in chosen])
        plan = [(run, cell, system) for run in range(runs) for cell in cells for system in cell.systems
                if system in chosen]  # fmt: skip
        for n, (run, cell, system) in enumerate(plan, 1):
            queue = f"bench-{system}-{cell.key}-{run}-{uuid.uuid4().hex[:6]}"
            flush()
            started = time.monotonic()
            try:
                argv = driver_argv(system, pythons) + common_args(cell, queue, env)
                result = run_driver(argv, env, timeout)
            except RuntimeError as error:
                result = {"error": str(error)}
            if (why := problem(cell, system, result)) is not None and "error" not in result:
                result["broken"] = why
            wall = time.monotonic() - started
            records.append({"cell": asdict(cell), "system": system, "run": run, "queue": queue,
                            "wall_s": round(wall, 2), "result": result})  # fmt: skip
            print(f"bench: [{n}/{len(plan)}] {system} {cell.key} run {run + 1}: {progress(result)} ({wall:.1f} s)",
                  file=sys.stderr, flush=True)  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"quick": options.quick, "runs": runs, "systems": chosen,
                                   "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                               "python": platform.python_version()},
                                   "total_s": round(time.monotonic() - began, 1), "records": records}, indent=1))  # fmt: skip
    print(table(cells, records, runs))
    shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    print(f"\nraw results: {shown} ({time.monotonic() - began:.0f} s)")
    broken = [(r, why) for r in records if (why := problem(Cell(**r["cell"]), r["system"], r["result"])) is not None]
    if broken:
        print(f"bench: {len(broken)} broken run(s), their numbers are not to be trusted:", file=sys.stderr)
        for r, why in broken:
            print(f"bench:   {r['system']} {r['cell']['key']} run {r['run'] + 1}: {why}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
