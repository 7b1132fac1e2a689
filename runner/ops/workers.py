"""The live workers of a queue, as each reports itself (see runner.worker.presence)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson

from runner.broker.connection import RedisClient
from runner.broker.keys import QueueKeys

__all__ = ["WorkerInfo", "list_workers"]


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    worker_id: str
    host: str
    pid: int
    state: str  # running, draining, retiring
    started_at: float
    heartbeat_age_s: float
    running: int
    concurrency: int
    jobs_done: int
    rss_mb: float
    loop_lag_ms: float
    queues: tuple[str, ...] = ()  # every queue the worker serves (QUEUES), this one among them


async def list_workers(redis: RedisClient, queue: str) -> list[WorkerInfo]:
    """Every worker whose report has not lapsed, oldest first; a report that is not ours is skipped."""
    keys = QueueKeys.of(queue)
    ids = [m.decode(errors="replace") for m in await redis.zrange(keys.workers, 0, -1)]
    if not ids:
        return []
    now = time.time()
    found = []
    for raw in await redis.mget([keys.worker(i) for i in ids]):
        try:
            info = orjson.loads(raw) if raw is not None else {}
            found.append(WorkerInfo(
                worker_id=str(info["worker_id"]), host=str(info["host"]), pid=int(info["pid"]),
                state=str(info["state"]), started_at=float(info["started_at"]),
                heartbeat_age_s=round(now - float(info["heartbeat_at"]), 2), running=int(info["running"]),
                concurrency=int(info["concurrency"]), jobs_done=int(info["jobs_done"]),
                rss_mb=float(info["rss_mb"]), loop_lag_ms=float(info["loop_lag_ms"]),
                queues=tuple(str(q) for q in info.get("queues") or (queue,)),
            ))  # fmt: skip
        except (TypeError, KeyError, ValueError, orjson.JSONDecodeError):
            continue  # lapsed since the list was read, or written by something else
    return sorted(found, key=lambda w: w.started_at)
