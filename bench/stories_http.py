"""The story workload over real HTTP (issue #15): N stories POSTed at once to a real `python -m runner run`
(API + WORKERS workers) whose providers are the real OpenAI (text, images) and ElevenLabs (speech) HTTP
clients, pointed at a local provider server (bench.provider_server: the tests' fake providers in a process of
their own) that answers each call after LATENCY_MS. Stories a minute and p50/p95 (from the rows, as
bench.stories), CPU seconds per story of every process, and where the time went (bench.story_profile).

    make bench-stories-http     # or: python -m bench.stories_http --stories 50 --workers 2 --latency-ms 50

A story of 5 scenes makes 17 provider calls: 2 text (story, visual profile), then per scene 1 text (its image
prompt) and image and speech together; 4 of them (200 ms at 50 ms a call) are on its critical path.

The fleet is warmed first (a few stories, until every worker has run a job: the API is ready before its
workers are); then the N stories are POSTed at once. CPU is counted over every process of the fleet's tree
(supervisor, API, workers, recycled ones included, Valkey, Postgres and its backends) and the provider server,
from before the POSTs to the last story's end (bench.usage); the bench's own (POSTs, polling) is shown apart
and not in the total. `--provider offline` is the same measurement with the in-process offline provider (no
HTTP), for comparison. `--profile-worker FILE` runs one of the WORKERS outside the supervisor under cProfile
(bench.profiled_worker, switched on for the measured run only) and prints its top functions by own time
(that worker is slower for it). `--set NAME=VALUE` sets any fleet setting.

Results: tables on stdout and bench/results/stories_http.json (or --out). Issue #15's targets: at least
1,300 stories a minute (20 times the old Celery design's 65 over HTTP) with p95 under 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pstats
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import psutil

from bench.story_fleet import (
    ROOT,
    Fleet,
    add_fleet_options,
    fleet_settings,
    latency_summary,
    post_stories,
    story_fleet,
    wait_for_stories,
    warm_up,
)
from bench.story_profile import ServerCounters, fleet_metrics, where_time_goes
from bench.usage import FLEET, cpu_used, machine_busy_s, snapshot_cpu

__all__ = ["main", "run"]

RESULTS = ROOT / "bench" / "results" / "stories_http.json"
TARGET_PER_MIN, TARGET_P95_S = 1300, 2.0


class ProviderServer:
    """bench.provider_server as a subprocess: its URLs once it listens, what it answered once stopped."""

    def __init__(self, latency_ms: float) -> None:
        self.latency_ms = latency_ms
        self.process: asyncio.subprocess.Process | None = None
        self.urls: dict[str, Any] = {}

    async def __aenter__(self) -> ProviderServer:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.provider_server", "--latency-ms", str(self.latency_ms), cwd=ROOT,
            stdout=subprocess.PIPE,
        )  # fmt: skip
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), 60)
            if not line:
                raise SystemExit("bench.provider_server exited before it listened (its stderr is above)")
            self.urls = json.loads(line)
        except BaseException:
            await stopped(self.process)
            raise
        return self

    async def stop(self) -> dict[str, Any]:
        """Stop it; what it answered ({} if it said nothing)."""
        if self.process is None or self.process.returncode is not None:
            return {}
        self.process.send_signal(signal.SIGTERM)
        try:
            out, _ = await asyncio.wait_for(self.process.communicate(), 30)
        except TimeoutError:
            await stopped(self.process)
            return {}
        lines = out.decode().strip().splitlines()
        stats: dict[str, Any] = json.loads(lines[-1]) if lines else {}
        return stats

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def env(self) -> dict[str, str]:
        """The fleet's settings for these providers over HTTP."""
        openai, base = str(self.urls["openai_url"]), str(self.urls["base_url"])
        return {"TEXT_PROVIDER": "openai", "LLM_BASE_URL": openai, "LLM_API_KEY": "sk-bench",
                "IMAGE_PROVIDER": "openai", "IMAGE_BASE_URL": openai, "IMAGE_API_KEY": "sk-bench",
                "SPEECH_PROVIDER": "elevenlabs", "SPEECH_BASE_URL": base, "SPEECH_API_KEY": "xi-bench"}  # fmt: skip


async def stopped(process: asyncio.subprocess.Process, grace_s: float = 30) -> None:
    """Make sure a process we started has ended: SIGTERM, then SIGKILL after `grace_s`."""
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), grace_s)
    except TimeoutError:
        process.kill()
        await process.wait()


async def start_profiled_worker(fleet: Fleet, out: Path) -> asyncio.subprocess.Process:
    """One worker of the fleet's queue, outside the supervisor, under cProfile (bench.profiled_worker)."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.profiled_worker", "--out", str(out), cwd=ROOT, env=fleet.env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


async def stop_profiled_worker(process: asyncio.subprocess.Process, out: Path) -> dict[str, Any]:
    """Switch its profile off (written to `out`) and stop it; its CPU by package and its top functions."""
    process.send_signal(signal.SIGUSR2)
    for _ in range(100):
        if _written(out):
            break
        await asyncio.sleep(0.1)
    await stopped(process, 60)
    return summarise_profile(out)


def _written(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 0


def _package(path: str, name: str) -> str:
    """Who a profiled function belongs to: a site-packages distribution, ours (runner, jobs), the stdlib's
    module, the import system, or a C function by name."""
    if path == "~":
        return "C: " + name.removeprefix("<built-in method ").removeprefix("<method ").split(" ")[0].strip("'>")
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0]
    if path.startswith("<frozen importlib"):
        return "importlib (imports at run time)"
    if path.startswith(str(ROOT)):
        return Path(path).relative_to(ROOT).parts[0]
    return "stdlib " + Path(path).name.removesuffix(".py") if "/lib/python" in path else path


def summarise_profile(out: Path, top: int = 25) -> dict[str, Any]:
    """CPU seconds of the profiled window by package (own time), and the `top` functions by own time."""
    stats = pstats.Stats(str(out))
    rows, by_package = [], Counter[str]()
    for (path, line, name), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        by_package[_package(path, name)] += own
        where = f"{Path(path).name}:{line}({name})" if line else name
        rows.append({"function": where, "calls": calls, "own_s": round(own, 3), "cumulative_s": round(cumulative, 3)})
    total = sum(by_package.values()) or 1.0
    return {
        "cpu_s": round(total, 3),
        "by_package": {k: {"cpu_s": round(v, 3), "share": round(v / total, 3)} for k, v in by_package.most_common(15)},
        "top_functions": sorted(rows, key=lambda r: -r["own_s"])[:top],
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    in_fleet = args.workers - 1 if args.profile_worker else args.workers
    async with AsyncExitStack() as stack:
        env = fleet_settings(args.latency_ms, args.set)
        provider = None
        if args.provider == "http":
            provider = await stack.enter_async_context(ProviderServer(args.latency_ms))
            env = {**provider.env(), **env}
        fleet = await stack.enter_async_context(
            story_fleet(workers=max(in_fleet, 1), concurrency=args.concurrency, env=env, with_workers=in_fleet > 0)
        )
        trees = {FLEET: fleet.process.pid}
        if provider is not None and provider.process is not None:
            trees["provider"] = provider.process.pid
        profiled = None
        if args.profile_worker:
            profiled = await start_profiled_worker(fleet, args.profile_worker)
            stack.push_async_callback(stopped, profiled)  # before the fleet, whatever happens
            trees["profiled worker"] = profiled.pid
        warmed = await warm_up(fleet, args.workers)
        counters = ServerCounters(fleet)
        await counters.start()
        if profiled is not None:
            profiled.send_signal(signal.SIGUSR1)  # its profile covers the measured run only
        bench, before, machine_before = psutil.Process(), snapshot_cpu(trees), machine_busy_s()
        bench_before, started = sum(bench.cpu_times()[:2]), time.monotonic()
        ids = await post_stories(fleet.api, args.stories)
        posted_s = time.monotonic() - started
        ended = await wait_for_stories(fleet.db, ids, timeout_s=args.timeout)
        wall = time.monotonic() - started
        cpu, bench_cpu = cpu_used(before, snapshot_cpu(trees)), sum(bench.cpu_times()[:2]) - bench_before
        others_cpu = machine_busy_s() - machine_before - sum(cpu.values()) - bench_cpu
        result: dict[str, Any] = {
            "provider": args.provider, "latency_ms": args.latency_ms, "workers": args.workers,
            "concurrency": args.concurrency, "settings": env, "warm_up_stories": warmed, "all_ended": ended,
            "post_s": posted_s, **await latency_summary(fleet.db, ids, wall),
            "cpu_s": cpu, "cpu_s_total": sum(cpu.values()), "cpu_s_per_story": sum(cpu.values()) / len(ids),
            "cores_busy": sum(cpu.values()) / wall, "bench_cpu_s": bench_cpu,
            "other_programs_cores_busy": max(others_cpu, 0.0) / wall, "cpus": psutil.cpu_count(),
            **await counters.stop(len(ids)), **await where_time_goes(fleet.db, ids),
            "metrics": await fleet_metrics(fleet.api), "fleet_log_events": fleet.log_events(),
        }  # fmt: skip
        if profiled is not None and args.profile_worker:
            result["profiled_worker"] = await stop_profiled_worker(profiled, args.profile_worker)
        if provider is not None:
            result["provider_server"] = await provider.stop()
    return result


def report(r: dict[str, Any]) -> str:
    lines = [f"\n{r['stories']} stories x 5 scenes at once, WORKERS={r['workers']}, WORKER_CONCURRENCY="
             f"{r['concurrency']}, {r['provider']} provider at {r['latency_ms']:g} ms a call "
             f"({r['warm_up_stories']} warm-up stories first)\n",
             "| stories | failed | wall s | stories/min | p50 s | p95 s | CPU s/story | cores busy |",
             "|---|---|---|---|---|---|---|---|",
             f"| {r['stories']} | {r['failed']} | {r['wall_s']:.2f} | {r['per_min']:.0f} | {r['p50_s']:.2f} | "
             f"{r['p95_s']:.2f} | {r['cpu_s_per_story']:.3f} | {r['cores_busy']:.2f} |",
             "\n| process | CPU s | CPU ms/story | share |", "|---|---|---|---|"]  # fmt: skip
    total = r["cpu_s_total"] or 1.0
    for group, seconds in sorted(r["cpu_s"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {group} | {seconds:.2f} | {seconds / r['stories'] * 1000:.1f} | {seconds / total:.0%} |")
    lines.append(f"| (the bench itself, not in the total) | {r['bench_cpu_s']:.2f} | "
                 f"{r['bench_cpu_s'] / r['stories'] * 1000:.1f} | |")  # fmt: skip
    lines.append(f"\nother programs on this machine ({r['cpus']} CPUs) kept {r['other_programs_cores_busy']:.2f} "
                 "cores busy meanwhile")  # fmt: skip
    lines += ["\n| story phase | p50 s | p95 s |", "|---|---|---|"]
    lines += [f"| {k} | {v['p50']:.3f} | {v['p95']:.3f} |" for k, v in r["story_phases_s"].items()]
    lines += [
        "\n| job | count | extra tries | wait p50 s | wait p95 s | run p50 s | run p95 s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, j in r["jobs"].items():
        lines.append(f"| {name} | {j['count']} | {j['extra_tries']} | {j['wait_s']['p50']:.3f} | "
                     f"{j['wait_s']['p95']:.3f} | {j['run_s']['p50']:.3f} | {j['run_s']['p95']:.3f} |")  # fmt: skip
    lines.append(f"\nper story: {r['redis_commands_per_story']} Redis commands "
                 f"({json.dumps(r['redis_top_commands_per_story'])}), {r['postgres_wal_kib_per_story']} KiB of "
                 "Postgres WAL")  # fmt: skip
    lines.append(f"event-loop lag max (s): {json.dumps(r['metrics']['loop_lag_max_s'])}; fleet warnings: "
                 f"{json.dumps(r['fleet_log_events'])}")  # fmt: skip
    if "provider_server" in r:
        lines.append(f"provider server: {json.dumps(r['provider_server'])}")
    if "profiled_worker" in r:
        profile = r["profiled_worker"]
        lines += [f"\nthe profiled worker's event loop: {profile['cpu_s']:.2f} CPU s in the run, by package",
                  "\n| package | CPU s | share |", "|---|---|---|"]  # fmt: skip
        lines += [f"| {k} | {v['cpu_s']:.3f} | {v['share']:.0%} |" for k, v in profile["by_package"].items()]
        lines += ["\n| function (top by own CPU) | calls | own s | cumulative s |", "|---|---|---|---|"]
        lines += [f"| {f['function']} | {f['calls']} | {f['own_s']:.3f} | {f['cumulative_s']:.3f} |"
                  for f in profile["top_functions"][:15]]  # fmt: skip
    return "\n".join(lines)


SUMMARY = ("per_min", "p50_s", "p95_s", "cpu_s_per_story", "cores_busy", "other_programs_cores_busy")


def summarise_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each headline number's median, min and max over the runs, and which run is the median by stories/min."""
    by_speed = sorted(range(len(runs)), key=lambda i: runs[i]["per_min"])
    summary = {key: {"median": statistics.median(r[key] for r in runs), "min": min(r[key] for r in runs),
                     "max": max(r[key] for r in runs)} for key in SUMMARY}  # fmt: skip
    return {"median_run": by_speed[len(runs) // 2], **summary}


def report_runs(result: dict[str, Any]) -> str:
    runs, summary = result["runs"], result["summary"]
    lines = [f"\n{len(runs)} runs (a fresh fleet each):\n",
             "| run | stories/min | p50 s | p95 s | CPU s/story | cores busy | other programs' cores |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for n, r in enumerate(runs, 1):
        lines.append(f"| {n} | {r['per_min']:.0f} | {r['p50_s']:.2f} | {r['p95_s']:.2f} | {r['cpu_s_per_story']:.3f} "
                     f"| {r['cores_busy']:.2f} | {r['other_programs_cores_busy']:.2f} |")  # fmt: skip
    per_min, p95 = summary["per_min"]["median"], summary["p95_s"]["median"]
    met = per_min >= TARGET_PER_MIN and p95 < TARGET_P95_S
    lines.append(f"\nmedian: {per_min:.0f} stories/min, p50 {summary['p50_s']['median']:.2f} s, p95 {p95:.2f} s, "
                 f"{summary['cpu_s_per_story']['median'] * 1000:.0f} CPU ms a story. Targets (issue #15): >= "
                 f"{TARGET_PER_MIN:,} stories/min and p95 < {TARGET_P95_S:g} s: {'met' if met else 'NOT met'}")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_fleet_options(parser, stories=50, timeout_s=600)
    parser.add_argument("--provider", choices=("http", "offline"), default="http")
    parser.add_argument("--runs", type=int, default=3, help="runs, each on a fresh fleet; medians reported")
    parser.add_argument("--profile-worker", type=Path, default=None, metavar="FILE", help="cProfile one worker")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.profile_worker:
        args.profile_worker = args.profile_worker.resolve()
    runs = []
    for _ in range(args.runs):
        if args.profile_worker:
            args.profile_worker.unlink(missing_ok=True)  # each run's profile replaces the last one's
        runs.append(asyncio.run(run(args)))
    summary = summarise_runs(runs)
    result = {"runs": runs, "summary": summary}
    print(f"\nthe median run (by stories/min) in detail:{report(runs[summary['median_run']])}")
    print(report_runs(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(f"\nraw results: {args.out}")
    incomplete = [r for r in runs if r["failed"] or not r["all_ended"]]
    if incomplete:
        print("; ".join(f"{r['failed']} of {r['stories']} stories did not complete: {r['by_status']}" for r in incomplete),
              file=sys.stderr)  # fmt: skip
        raise SystemExit(1)


if __name__ == "__main__":
    main()
