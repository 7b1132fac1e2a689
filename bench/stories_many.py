"""1,000 stories at once (issue #15): that many stories POSTed at once to a real `python -m runner run` (API +
WORKERS workers, offline provider at LATENCY_MS a call): about 7,000 jobs (a story job, 5 scene media jobs and a
join per story). Do all complete and none stick, how fast, and does any fleet process's memory grow with the
backlog?

    make bench-stories-1000     # or: python -m bench.stories_many --stories 1000 --workers 2 --latency-ms 50

- Completion: the stories and every job row counted by status at the end (after the last story's end, the
  rows still active are waited for, up to 60 s), and the queue as `python -m runner status` reads it
  (nothing pending, running, retrying or due).
- Speed: stories a minute, p50/p95 from the rows (as bench.stories), CPU seconds per story of every process.
- Memory: each fleet process (supervisor, zygote, api, worker-N) is read every 0.5 s during the run (RSS, USS,
  PSS: bench.usage), its peak against its idle size, read after a warm-up (a few stories, until every worker has
  run a job) and 2 s of rest; the target is every process's peak within 10% of its idle size. A worker slot
  counts every process it had: workers recycle after MAX_JOBS_PER_WORKER jobs (200 by default; `--set
  MAX_JOBS_PER_WORKER=0` for none), and while one retires its successor may already run: the slot's largest
  process counts, the fleet's sum counts both.

Results: tables on stdout and bench/results/stories_1000.json (or --out). Exit 1 if a story did not complete
or a job was left active.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from bench.story_fleet import (
    ROOT,
    add_fleet_options,
    fleet_settings,
    latency_summary,
    post_stories,
    story_fleet,
    wait_for_stories,
    warm_up,
)
from bench.story_profile import fleet_metrics, job_counts, queue_status
from bench.usage import FLEET, Memory, cpu_used, fleet_memory, machine_busy_s, snapshot_cpu

__all__ = ["MemoryPeaks", "main", "run"]

RESULTS = ROOT / "bench" / "results" / "stories_1000.json"
METRICS = ("rss_mib", "uss_mib", "pss_mib")
TARGET_GROWTH = 0.10
ACTIVE = ("pending", "processing", "retrying")


class MemoryPeaks:
    """The peak RSS, USS and PSS of each fleet role's largest process, and of the fleet's sum, over samples at most
    every `every_s`."""

    def __init__(self, fleet_pid: int, every_s: float = 0.5) -> None:
        self._fleet_pid, self._every_s, self._last, self._start = fleet_pid, every_s, 0.0, time.monotonic()
        self.peaks: dict[str, dict[str, float]] = {}
        self.pids: dict[str, set[int]] = {}
        self.timeline: dict[str, list[tuple[float, float, float, float]]] = {}  # role -> (s, RSS, USS, PSS)
        self.samples = 0

    def maybe_sample(self) -> None:
        if time.monotonic() - self._last >= self._every_s:
            self.sample()

    def sample(self) -> None:
        self._last, self.samples = time.monotonic(), self.samples + 1
        found = fleet_memory(self._fleet_pid)
        for process in found:
            self.pids.setdefault(process.role, set()).add(process.pid)
        for role, info in _by_role(found).items():
            peak = self.peaks.setdefault(role, dict.fromkeys(METRICS, 0.0))
            for metric in METRICS:
                peak[metric] = max(peak[metric], info[metric])
            rss, uss, pss = (round(info[m], 2) for m in METRICS)
            self.timeline.setdefault(role, []).append((round(self._last - self._start, 2), rss, uss, pss))

    def quarters(self, metric: str = "uss_mib") -> dict[str, list[float]]:
        """Each role's `metric` at the start and at each quarter of the run: growth that goes on, or levels off."""
        column = 1 + METRICS.index(metric)
        return {role: [points[min(len(points) - 1, len(points) * q // 4)][column] for q in range(5)]
                for role, points in self.timeline.items()}  # fmt: skip


def _by_role(found: list[Memory]) -> dict[str, dict[str, float]]:
    """Each role's largest process (a worker slot may have two at once: one retiring, its successor), and the
    sum over every process: what the fleet holds at that moment."""
    roles: dict[str, dict[str, float]] = {}
    for process in found:
        largest = roles.setdefault(process.role, dict.fromkeys(METRICS, 0.0))
        for metric, value in process.mib().items():
            largest[metric] = max(largest[metric], value)
    total = {metric: sum(p.mib()[metric] for p in found) for metric in METRICS}
    return {**roles, "fleet (sum)": total}


async def idle_memory(fleet_pid: int, samples: int = 3) -> dict[str, dict[str, float]]:
    """Each role's mean RSS, USS and PSS over `samples` reads 0.5 s apart, and the fleet's sum's."""
    reads = []
    for _ in range(samples):
        reads.append(_by_role(fleet_memory(fleet_pid)))
        await asyncio.sleep(0.5)
    roles = set.intersection(*(set(r) for r in reads))
    return {
        role: {m: sum(r[role][m] for r in reads) / len(reads) for m in METRICS}
        for role in sorted(roles, key=lambda role: (role == "fleet (sum)", role))
    }


async def wait_for_jobs(db: asyncpg.Connection, timeout_s: float) -> int:
    """Wait until no job row is active; how many still are when `timeout_s` ends (0: none)."""
    deadline = time.monotonic() + timeout_s
    while True:
        active = int(await db.fetchval("SELECT count(*) FROM runner_jobs WHERE status = ANY($1::text[])", ACTIVE))
        if active == 0 or time.monotonic() > deadline:
            return active
        await asyncio.sleep(0.2)


def growth(idle: dict[str, dict[str, float]], peaks: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Each role's peak over its idle size, minus 1 (0.05: 5% above idle), per metric."""
    return {role: {m: peaks[role][m] / idle[role][m] - 1 for m in METRICS if idle[role][m] > 0}
            for role in idle if role in peaks}  # fmt: skip


async def run(args: argparse.Namespace) -> dict[str, Any]:
    env = fleet_settings(args.latency_ms, args.set)
    async with story_fleet(workers=args.workers, concurrency=args.concurrency, env=env) as fleet:
        warmed = await warm_up(fleet, args.workers)
        await asyncio.sleep(2)
        idle = await idle_memory(fleet.process.pid)
        peaks, trees = MemoryPeaks(fleet.process.pid), {FLEET: fleet.process.pid}
        peaks.sample()
        before, machine_before, started = snapshot_cpu(trees), machine_busy_s(), time.monotonic()
        ids = await post_stories(fleet.api, args.stories)
        posted_s = time.monotonic() - started
        ended = await wait_for_stories(fleet.db, ids, timeout_s=args.timeout, tick_s=0.1, on_tick=peaks.maybe_sample)
        wall = time.monotonic() - started
        cpu, machine = cpu_used(before, snapshot_cpu(trees)), machine_busy_s() - machine_before
        peaks.sample()
        left_active = await wait_for_jobs(fleet.db, 60)
        await asyncio.sleep(2)
        result: dict[str, Any] = {
            "latency_ms": args.latency_ms, "workers": args.workers, "concurrency": args.concurrency,
            "settings": env, "warm_up_stories": warmed, "all_ended": ended, "post_s": posted_s,
            **await latency_summary(fleet.db, ids, wall), "jobs_left_active": left_active,
            "extra_tries": int(await fleet.db.fetchval("SELECT coalesce(sum(attempts - 1), 0) FROM runner_jobs")),
            "job_rows": await job_counts(fleet.db), "queue": await queue_status(fleet),
            "cpu_s": cpu, "cpu_s_per_story": sum(cpu.values()) / len(ids), "cores_busy": sum(cpu.values()) / wall,
            "other_programs_cores_busy": max(machine - sum(cpu.values()), 0.0) / wall, "cpus": psutil.cpu_count(),
            "memory_idle_mib": idle, "memory_peak_mib": peaks.peaks, "memory_samples": peaks.samples,
            "memory_after_mib": _by_role(fleet_memory(fleet.process.pid)), "memory_growth": growth(idle, peaks.peaks),
            "uss_mib_by_quarter": peaks.quarters(), "memory_timeline": peaks.timeline,
            "processes_per_role": {role: len(pids) for role, pids in peaks.pids.items()},
            "metrics": await fleet_metrics(fleet.api), "fleet_log_events": fleet.log_events(),
        }  # fmt: skip
    processes = [grew for role, grew in result["memory_growth"].items() if role != "fleet (sum)"]
    worst = max((g for grew in processes for g in grew.values()), default=0.0)
    result["memory_within_target"] = worst <= TARGET_GROWTH
    return result


def _stuck(r: dict[str, Any]) -> list[str]:
    """What did not end: stories not completed, job rows left active, the queue not empty."""
    stuck = [f"{r['failed']} stories not completed ({r['by_status']})"] if r["failed"] else []
    if r["jobs_left_active"]:
        stuck.append(f"{r['jobs_left_active']} job rows still active")
    queue = r["queue"].get("queue") or {}
    busy = {k: queue.get(k) for k in ("pending", "running", "retrying", "due") if queue.get(k)}
    if busy or "error" in r["queue"]:
        stuck.append(f"the queue is not empty: {busy or r['queue']}")
    return stuck


def report(r: dict[str, Any]) -> str:
    lines = [f"\n{r['stories']} stories x 5 scenes at once, WORKERS={r['workers']}, WORKER_CONCURRENCY="
             f"{r['concurrency']}, offline provider at {r['latency_ms']:g} ms a call "
             f"({r['warm_up_stories']} warm-up stories first; POSTs took {r['post_s']:.1f} s)\n",
             "| stories | failed | wall s | stories/min | p50 s | p95 s | CPU s/story | cores busy | other programs' cores |",
             "|---|---|---|---|---|---|---|---|---|",
             f"| {r['stories']} | {r['failed']} | {r['wall_s']:.1f} | {r['per_min']:.0f} | {r['p50_s']:.1f} | "
             f"{r['p95_s']:.1f} | {r['cpu_s_per_story']:.3f} | {r['cores_busy']:.2f} | "
             f"{r['other_programs_cores_busy']:.2f} |",
             "\n| job | " + " | ".join(("completed", "failed", "cancelled", *ACTIVE)) + " |", "|---" * 7 + "|"]  # fmt: skip
    for name, counts in r["job_rows"].items():
        cells = [str(counts.get(s, 0)) for s in ("completed", "failed", "cancelled", *ACTIVE)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    stuck = _stuck(r)
    lines.append(f"\nstuck: {'; '.join(stuck) if stuck else 'none'}; tries beyond the first: {r['extra_tries']} "
                 f"(queue: {json.dumps(r['queue'].get('queue'))})")  # fmt: skip
    lines += ["\n| process | processes | idle RSS | peak RSS | idle USS | peak USS | idle PSS | peak PSS | "
              "peak over idle (RSS / USS / PSS) | USS growth MiB |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for role, idle in r["memory_idle_mib"].items():
        peak, grew = r["memory_peak_mib"].get(role), r["memory_growth"].get(role)
        if peak is None or grew is None:
            continue
        lines.append(f"| {role} | {r['processes_per_role'].get(role, '')} | "
                     + " | ".join(f"{idle[m]:.1f} | {peak[m]:.1f}" for m in METRICS)
                     + " | " + " / ".join(f"{grew[m]:+.1%}" for m in METRICS)
                     + f" | {peak['uss_mib'] - idle['uss_mib']:+.1f} |")  # fmt: skip
    quarters = "; ".join(f"{role} {' -> '.join(f'{v:.1f}' for v in values)}"
                         for role, values in r["uss_mib_by_quarter"].items())  # fmt: skip
    lines.append(f"\nUSS at the start and each quarter of the run: {quarters}")
    lines.append(f"\nMiB; {r['memory_samples']} samples. Every process within {TARGET_GROWTH:.0%} of idle: "
                 f"{'yes' if r['memory_within_target'] else 'NO'}. Worker exits: "
                 f"{json.dumps(r['metrics']['worker_exits'])}; fleet warnings: {json.dumps(r['fleet_log_events'])}")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_fleet_options(parser, stories=1000, timeout_s=900)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(report(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(f"\nraw results: {args.out}")
    stuck = _stuck(result)
    if stuck:
        print("; ".join(stuck), file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
