"""A real Celery 5.7 producer, configured like the old backend's app/core/celery_app.py, run by the tests in
bench/.venv-celery (Celery needs redis-py 6+, this project's arq below 6). It never runs a worker.

    python celery_client.py <redis url> <queue> send '<json list of calls>'   -> JSON list of task ids
    python celery_client.py <redis url> <queue> get <task id> <timeout s>     -> JSON: states seen, result or error

A call is {"how": "delay" | "send_task" | "apply_async", "name", "args", "kwargs"?, "countdown"?, "priority"?,
"serializer"?, "expires"? and "eta"? (ISO times)}.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from celery import Celery


def app_for(url: str, queue: str, serializer: str = "json") -> Celery:
    app = Celery("storymimi", broker=url, backend=url)
    app.conf.update(
        task_serializer=serializer,
        accept_content=["json"] if serializer == "json" else ["json", serializer],
        result_serializer="json",
        timezone="UTC",
        enable_utc=True,
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_reject_on_worker_lost=True,
        task_track_started=True,
        task_time_limit=3600,
        task_soft_time_limit=3300,
        broker_connection_retry_on_startup=True,
        task_routes={"app.tasks.*": {"queue": queue}},
        task_default_queue=queue,
        task_default_exchange=queue,
        task_default_exchange_type="direct",
        task_default_routing_key=queue,
        task_compression="gzip",
        result_compression="gzip",
        result_expires=3600,
        task_ignore_result=False,
    )
    return app


def _body_runs_elsewhere(self: Any, *args: Any, **kwargs: Any) -> None:
    """The task's body: never run here (the runner's workers run the job of the same name)."""


def send(url: str, queue: str, calls: list[dict[str, Any]]) -> list[str]:
    ids = []
    for call in calls:
        app = app_for(url, queue, call.get("serializer", "json"))
        name, args, kwargs = call["name"], call.get("args", []), call.get("kwargs", {})
        options = {k: call[k] for k in ("countdown", "priority", "expires", "eta") if k in call}
        if call["how"] == "send_task":
            result = app.send_task(name, args=args, kwargs=kwargs, **options)
        else:
            task = app.task(name=name, bind=True)(_body_runs_elsewhere)
            delay = call["how"] == "delay"
            result = task.delay(*args, **kwargs) if delay else task.apply_async(args, kwargs, **options)
        ids.append(result.id)
    return ids


def get(url: str, queue: str, task_id: str, timeout: float) -> dict[str, Any]:
    """Follow the task's state as a sender does, then `.get()` it."""
    result = app_for(url, queue).AsyncResult(task_id)
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and result.state not in ("SUCCESS", "FAILURE", "REVOKED"):
        if not seen or seen[-1] != result.state:
            seen.append(result.state)
        time.sleep(0.01)
    try:
        value = result.get(timeout=max(deadline - time.monotonic(), 0.1))
        outcome: dict[str, Any] = {"result": value}
    except Exception as exc:
        outcome = {
            "error_type": type(exc).__name__,
            "error": str(exc),
            "error_module": type(exc).__module__,
            "traceback": result.traceback,
        }
    if not seen or seen[-1] != result.state:
        seen.append(result.state)
    return {"states": seen, **outcome}


if __name__ == "__main__":
    url, queue, command = sys.argv[1:4]
    if command == "send":
        print(json.dumps(send(url, queue, json.loads(sys.argv[4]))))
    else:
        print(json.dumps(get(url, queue, sys.argv[4], float(sys.argv[5]))))
