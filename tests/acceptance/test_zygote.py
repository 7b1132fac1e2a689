"""Children forked from the zygote (runner.fleet.zygote), with real processes and signals: they are the
supervisor's own children under their usual command lines, share the zygote's pages, run jobs, and their
exits (SIGKILL, recycling, a stop) are seen and handled as an exec'd child's were; a zygote that dies
leaves the fleet exec'ing its children."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import psutil
import pytest

from runner.client import JobClient
from runner.fleet.supervisor import RECYCLE_EXIT_CODE
from runner.fleet.zygote import TITLE
from runner.resources import Resources
from runner.settings import Settings
from runner.status import JobStatus
from tests.acceptance import probe_jobs
from tests.acceptance.conftest import MakeFleet
from tests.acceptance.fleet import Fleet
from tests.conftest import wait_for

pytestmark = pytest.mark.slow

PROBES = "tests.acceptance.probe_jobs:registry"


def zygote_of(fleet: Fleet) -> psutil.Process:
    assert fleet.process is not None
    found = [p for p in psutil.Process(fleet.process.pid).children() if p.cmdline()[:1] == [TITLE]]
    assert len(found) == 1, [p.cmdline() for p in psutil.Process(fleet.process.pid).children()]
    return found[0]


async def run_noops(resources: Resources, settings: Settings, count: int) -> None:
    client = JobClient(resources, probe_jobs.registry.resolved(settings))
    ids = [(await client.enqueue("probe.noop")).job_id for _ in range(count)]

    async def done() -> bool:
        rows = [await client.get(job_id) for job_id in ids]
        return all(row is not None and row.status is JobStatus.COMPLETED for row in rows)

    await wait_for(done, timeout=20, every=0.05)


async def test_workers_are_forked_children_of_the_supervisor_under_their_own_command_line(
    resources: Resources, settings: Settings, fleet: MakeFleet
) -> None:
    """Each worker is forked, adopted by the supervisor (its parent), shown as `python -m runner worker
    ... --worker-id <id>`, shares most of its memory, and runs jobs."""
    running = await fleet(registry=PROBES).start()
    assert running.process is not None
    started = running.events("child_started")
    assert len(started) == 2 and all(e["forked"] for e in started), started
    for event in started:
        worker = psutil.Process(event["pid"])
        assert worker.ppid() == running.process.pid
        argv = [a for a in worker.cmdline() if a]
        assert argv == [sys.executable, "-m", "runner", "worker", "--registry", PROBES, "--worker-id",
                        event["instance"]]  # fmt: skip
    assert sorted(running.worker_pids()) == sorted(e["pid"] for e in started)
    zygote_of(running)
    await run_noops(resources, settings, 20)
    for pid in running.worker_pids():
        memory = psutil.Process(pid).memory_full_info()
        assert memory.uss < 0.6 * memory.rss, f"a forked worker should share most of its pages: {memory}"


async def test_a_sigkilled_forked_worker_is_seen_dead_and_replaced_by_a_forked_one(
    resources: Resources, settings: Settings, fleet: MakeFleet
) -> None:
    """SIGKILL of a forked worker: the supervisor reaps it (exit code -9), frees its slot and forks a
    replacement that runs jobs."""
    running = await fleet(registry=PROBES).start()
    victim = running.steady_worker_pid()
    os.kill(victim, signal.SIGKILL)

    async def replaced() -> bool:
        return len(running.events("worker_started")) >= 3

    await wait_for(replaced, timeout=20, every=0.05)
    died = running.events("child_died")
    assert [(e["pid"], e["exit_code"]) for e in died] == [(victim, -signal.SIGKILL)], died
    assert running.events("child_started")[-1]["forked"] is True
    assert victim not in running.worker_pids() and len(running.worker_pids()) == 2
    assert not psutil.pid_exists(victim), "the killed worker was left a zombie"
    await run_noops(resources, settings, 10)


async def test_a_forked_worker_that_retires_exits_with_the_recycle_code_and_is_replaced(
    resources: Resources, settings: Settings, fleet: MakeFleet
) -> None:
    """MAX_JOBS_PER_WORKER: a forked worker retires, its exit code (75) reaches the supervisor, which had
    already forked its replacement; nothing counts as a crash."""
    running = await fleet(registry=PROBES, workers=1, max_jobs_per_worker=5).start()
    await run_noops(resources, settings, 12)

    async def recycled() -> bool:
        return any(e.get("exit_code") == RECYCLE_EXIT_CODE for e in running.events("child_exited"))

    await wait_for(recycled, timeout=20, every=0.05)
    assert not running.events("child_died"), running.events("child_died")
    assert all(e["forked"] for e in running.events("child_started"))


async def test_a_stopped_fleet_leaves_no_process_and_a_dead_zygote_leaves_exec_d_children(
    resources: Resources, settings: Settings, fleet: MakeFleet
) -> None:
    """SIGKILL the zygote: the next worker is exec'd and runs jobs. SIGTERM then stops the whole tree:
    the supervisor exits 0 and no process of it is left."""
    running = await fleet(registry=PROBES).start()
    assert running.process is not None
    os.kill(zygote_of(running).pid, signal.SIGKILL)

    async def zygote_reaped() -> bool:  # until then it is a zombie child, which psutil will not list
        return bool(running.events("zygote_lost"))

    await wait_for(zygote_reaped, timeout=10, every=0.02)
    os.kill(running.steady_worker_pid(), signal.SIGKILL)

    async def replaced() -> bool:
        return len(running.events("worker_started")) >= 3

    await wait_for(replaced, timeout=30, every=0.05)
    assert running.events("child_started")[-1]["forked"] is False
    await run_noops(resources, settings, 5)
    tree = psutil.Process(running.process.pid).children(recursive=True)
    running.sigterm()
    assert await running.wait(40) == 0
    left = [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, [p.cmdline() for p in left]


def test_a_process_title_shows_the_command_it_stands_for(tmp_path: Path) -> None:
    """set_title: a short title in the arguments' own memory, a long one across the environment's, both
    read back whole by psutil."""
    import subprocess

    script = tmp_path / "title.py"
    script.write_text(
        "import os, sys, time, psutil\n"
        "from runner.fleet.proctitle import set_title\n"
        "set_title(['short'])\n"
        "print(psutil.Process().cmdline(), flush=True)\n"
        "env = dict(os.environ); os.environ.clear(); os.environ.update(env)\n"
        "long = [sys.executable, '-m', 'runner', 'worker', '--worker-id', 'h:1:' + 'w' * 200]\n"
        "set_title(long)\n"
        "print(psutil.Process().cmdline() == long, os.environ['PATH'] == env['PATH'], flush=True)\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30, check=True)
    short, long = out.stdout.splitlines()
    assert short.startswith("['short'")
    assert long == "True True"


async def test_fork_children_false_execs_every_child_afresh(
    resources: Resources, settings: Settings, fleet: MakeFleet
) -> None:
    """FORK_CHILDREN=false, for job modules that are not safe to fork: no zygote, every child exec'd."""
    running = await fleet(registry=PROBES, fork_children="false").start()
    assert running.process is not None
    tree = psutil.Process(running.process.pid).children(recursive=True)
    assert not [p for p in tree if p.cmdline()[:1] == [TITLE]], "a zygote was started"
    assert [e["forked"] for e in running.events("child_started")] == [False, False]
    await run_noops(resources, settings, 5)
