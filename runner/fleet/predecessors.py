"""A supervisor that starts on the host where an earlier one died frees that one's job leases at once.

Every worker id names its host (HOST_ID, by default the hostname) and a pid there: the supervisor's for the
workers it starts (`<host>:<supervisor pid>:<slot>.<generation>`), the worker's own for one started alone
(`<host>:<pid>:<hex>`). When a supervisor dies together with its workers (its process tree SIGKILLed, the
OOM killer, a container restarted) nobody frees their leases, and their jobs would wait for LEASE_TTL_S. So
a supervisor, before it starts any worker, looks for the lease sets of this host's worker ids (SCAN over the
queue's `leases:<host>:` keys, a page a round trip, for at most SCAN_BOUND_S) whose processes are gone, and
frees them as the launcher frees a dead child's (release_dead_worker).

A set is left alone (its owner keeps it, or its leases lapse) when its id names another host, when its pid
is alive here and is not this supervisor's (a second `make worker` on the host, or a pid reused since), or
when a process here still runs with that worker id (a worker whose supervisor died, still stopping). A set
naming this supervisor's own pid is a predecessor's (a container restarted gets the same pid): this
supervisor has started no worker yet. Processes that share a host id must share a pid namespace: containers
on the host's network each need a HOST_ID of their own.
"""

from __future__ import annotations

import os
import re
import time

import psutil
import structlog

from runner.broker.connection import RedisClient, scan_page
from runner.broker.keys import QueueKeys
from runner.broker.queue import release_dead_worker

__all__ = ["SCAN_BOUND_S", "host_and_pid", "release_predecessors", "stale_worker_ids"]

log = structlog.get_logger("runner.fleet.predecessors")

SCAN_BOUND_S = 5.0  # a huge keyspace is not scanned to its end: the leases left then lapse on their own
_SCAN_COUNT = 1000
_LOGGED_JOB_IDS = 200  # the freed jobs named in the log line (the count is always whole)
_GLOB = re.compile(r"([*?\[\]\\])")


def host_and_pid(worker_id: str) -> tuple[str, int] | None:
    """The host and pid a worker id names (`<host>:<pid>:<rest>`); None for an id of another shape."""
    host, _, rest = worker_id.partition(":")
    pid, sep, _ = rest.partition(":")
    return (host, int(pid)) if host and sep and pid.isdigit() else None


def _pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # cannot tell: assume it lives, so its leases are never taken from it
        return True


def _running_worker_ids() -> set[str]:
    """The `--worker-id` of every worker process running here (see runner.fleet.launcher)."""
    found: set[str] = set()
    for process in psutil.process_iter(["cmdline", "status"]):
        argv = process.info["cmdline"] or []
        if process.info["status"] != psutil.STATUS_ZOMBIE and "--worker-id" in argv[:-1]:
            found.add(argv[argv.index("--worker-id") + 1])
    return found


async def stale_worker_ids(redis: RedisClient, queue: str, host: str, *, bound_s: float = SCAN_BOUND_S) -> list[str]:
    """Ids of this host's workers that hold a lease set in `queue` and whose processes are gone."""
    prefix = QueueKeys.of(queue).leases_prefix
    pattern = _GLOB.sub(r"\\\1", f"{prefix}{host}:") + "*"
    running, own_pid = _running_worker_ids(), os.getpid()
    deadline = time.monotonic() + bound_s
    stale: list[str] = []
    cursor: int = 0
    while True:
        cursor, page = await scan_page(redis, cursor, match=pattern, count=_SCAN_COUNT, slot_of=prefix)
        for key in page:
            worker_id = (key.decode(errors="replace") if isinstance(key, bytes) else key)[len(prefix) :]
            named = host_and_pid(worker_id)
            if named is None or named[0] != host or worker_id in running:
                continue
            if named[1] == own_pid or not _pid_alive(named[1]):
                stale.append(worker_id)
        if cursor == 0:
            return stale
        if time.monotonic() > deadline:
            log.warning("predecessor_scan_cut_short", bound_s=bound_s, found=len(stale))
            return stale


async def release_predecessors(redis: RedisClient, queue: str, host: str, lease_ttl_s: float) -> dict[str, list[str]]:
    """Free the leases of this host's dead workers (see the module's docstring); job ids freed, by worker id."""
    started = time.monotonic()
    freed: dict[str, list[str]] = {}
    for worker_id in await stale_worker_ids(redis, queue, host):
        if jobs := await release_dead_worker(redis, worker_id, queue, lease_ttl_s):
            freed[worker_id] = jobs
    if freed:
        took_ms = round((time.monotonic() - started) * 1000, 1)
        job_ids = sorted(j for jobs in freed.values() for j in jobs)
        log.warning("predecessor_leases_released", host=host, workers=sorted(freed), jobs=len(job_ids),
                    job_ids=job_ids[:_LOGGED_JOB_IDS], took_ms=took_ms)  # fmt: skip
    return freed
