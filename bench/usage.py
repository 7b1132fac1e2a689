"""What the story benches' processes cost: CPU seconds of whole process trees between two snapshots, and the
memory of each fleet process.

CPU: a snapshot holds, for every process of each tree, its own user + system time and the times of its children
that exited and were reaped (`children_user` + `children_system`). The difference of the two sums is exact for
processes that start, exit or both between the snapshots: a recycled worker's whole life reaches its
supervisor's reaped times, a finished Postgres backend's the postmaster's, so nothing is lost between samples.

Roles in a `python -m runner run` tree: supervisor, zygote (the supervisor's fork server, when it has one),
api, worker-N (every generation of that slot), intake, redis (the embedded Valkey), postgres (the postmaster
and its backends), other. A role is read from the command line (a forked child shows the `python -m runner
...` command it stands for: runner.fleet.proctitle).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import psutil

__all__ = ["FLEET", "CpuSnapshot", "Memory", "cpu_used", "fleet_memory", "machine_busy_s", "role_of", "snapshot_cpu"]

FLEET = "fleet"  # the tree name whose processes are split by role
MIB = 2**20


@dataclass(frozen=True)
class _Times:
    group: str  # where the process's own CPU counts
    reaped_group: str  # where the CPU of its exited, reaped children counts
    own: float
    reaped: float


CpuSnapshot = dict[tuple[int, float], _Times]  # (pid, create time) -> its times


def _tree(root_pid: int) -> Iterator[psutil.Process]:
    try:
        root = psutil.Process(root_pid)
        yield root
        yield from root.children(recursive=True)
    except psutil.NoSuchProcess:
        return


def role_of(process: psutil.Process, fleet_pid: int) -> str:
    """supervisor, zygote, api, worker-N, intake, redis, postgres, or other, for a process of the fleet's tree."""
    name = process.name()
    if name.startswith(("valkey", "redis")):
        return "redis"
    if name.startswith("postgres"):
        return "postgres"
    if process.pid == fleet_pid:
        return "supervisor"
    argv = process.cmdline()
    if argv and argv[0].endswith("zygote"):
        return "zygote"
    command = argv[argv.index("runner") + 1] if "runner" in argv[:-1] else ""
    if command == "worker" and "--worker-id" in argv[:-1]:
        instance = argv[argv.index("--worker-id") + 1].rsplit(":", 1)[-1]  # host:pid:worker-1.3
        return instance.rsplit(".", 1)[0]
    return command if command in ("api", "worker", "intake") else "other"


def _groups(process: psutil.Process, tree: str, root_pid: int) -> tuple[str, str]:
    """(where its own CPU counts, where its reaped children's counts)."""
    if tree != FLEET:
        return tree, tree
    role = role_of(process, root_pid)
    group = "workers" if role.startswith("worker") else role
    return group, "workers" if role == "supervisor" else group  # the supervisor reaps recycled workers


def snapshot_cpu(trees: Mapping[str, int]) -> CpuSnapshot:
    """CPU times of every process of each tree ({name: root pid}); the tree named FLEET is split by role."""
    snapshot: CpuSnapshot = {}
    for tree, root_pid in trees.items():
        for process in _tree(root_pid):
            with contextlib.suppress(psutil.Error):  # exited since the listing: its parent's reaped times have it
                times = process.cpu_times()
                group, reaped_group = _groups(process, tree, root_pid)
                snapshot[process.pid, process.create_time()] = _Times(
                    group, reaped_group, times.user + times.system, times.children_user + times.children_system
                )
    return snapshot


def cpu_used(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """CPU seconds each group used between the snapshots, exited processes included."""
    used: dict[str, float] = defaultdict(float)
    for snapshot, sign in ((after, 1.0), (before, -1.0)):
        for times in snapshot.values():
            used[times.group] += sign * times.own
            used[times.reaped_group] += sign * times.reaped
    return {group: max(seconds, 0.0) for group, seconds in sorted(used.items())}


def machine_busy_s() -> float:
    """CPU seconds every process of the machine has used since boot (all CPUs, idle and I/O wait left out): the
    delta over a run, less ours, is what other programs took meanwhile (the noise of a shared machine)."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


@dataclass(frozen=True)
class Memory:
    """One process's memory, in MiB, with its role and pid."""

    role: str
    pid: int
    rss_mib: float
    uss_mib: float
    pss_mib: float

    def mib(self) -> dict[str, float]:
        return {"rss_mib": self.rss_mib, "uss_mib": self.uss_mib, "pss_mib": self.pss_mib}


def fleet_memory(fleet_pid: int) -> list[Memory]:
    """RSS, USS and PSS of each process of the fleet but its servers (supervisor, zygote, api, worker-N, ...;
    a worker slot may show two at once: one retiring, its successor starting).

    RSS counts shared pages (the interpreter, shared libraries, pages a forked child shares with its parent)
    in every process that maps them; USS is what the process alone holds (freed if it exits); PSS splits each
    shared page among its users, so the fleet's PSS sum is what it costs the machine."""
    memory = []
    for process in _tree(fleet_pid):
        try:
            role = role_of(process, fleet_pid)
            if role in ("redis", "postgres"):
                continue
            info = process.memory_full_info()
        except psutil.Error:  # a worker recycled between the listing and the read
            continue
        memory.append(Memory(role, process.pid, info.rss / MIB, info.uss / MIB, info.pss / MIB))
    return memory
