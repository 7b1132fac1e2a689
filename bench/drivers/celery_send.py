# mypy: ignore-errors
# (runs in bench/.venv-celery, where Celery is installed; this project's venv has no Celery)
"""Sends `bench.stamp` tasks as an unchanged Celery producer would (run in bench/.venv-celery, configured
like the old backend): `python celery_send.py <redis url> <queue> <count> <per second>`."""

from __future__ import annotations

import sys
import time

from celery import Celery


def main() -> None:
    url, queue, count, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    app = Celery("storymimi", broker=url, backend=url)
    app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json",
                    task_default_queue=queue, task_default_exchange=queue, task_default_routing_key=queue,
                    task_compression="gzip", task_track_started=True, task_acks_late=True)  # fmt: skip
    app.send_task("bench.stamp", args=["warm-up", time.time()])  # connects and declares: not the runner's time
    time.sleep(0.5)
    start = time.monotonic()
    for n in range(count):
        time.sleep(max(start + n / rate - time.monotonic(), 0))
        app.send_task("bench.stamp", args=["celery", time.time()])


if __name__ == "__main__":
    main()
