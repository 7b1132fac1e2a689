"""The StoryMimi job runner: asyncio jobs over Redis (arq's JSON envelope), status rows in Postgres.

It knows nothing of stories: `jobs` registers coroutines with it, `api` enqueues them through it.
`Worker` and `JobClient` are imported on first use, so `python -m runner run` can set up Prometheus's
multiprocess folder before anything imports prometheus-client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import runner.lean_imports  # noqa: F401  # first: see its docstring
from runner.context import JobActions, JobContext
from runner.errors import PermanentError, SoftTimeLimitExceeded, TransientError
from runner.registry import JobSpec, Registry, job
from runner.resources import Resources, open_resources
from runner.retry import RetryPolicy
from runner.settings import Settings
from runner.status import JobStatus
from runner.unique import Unique

if TYPE_CHECKING:
    from runner.broker.slots import SlotHolder, SlotPool
    from runner.client import EnqueueResult, JobClient
    from runner.worker.worker import Worker

__all__ = [
    "EnqueueResult",
    "JobActions",
    "JobClient",
    "JobContext",
    "JobSpec",
    "JobStatus",
    "PermanentError",
    "Registry",
    "Resources",
    "RetryPolicy",
    "Settings",
    "SlotHolder",
    "SlotPool",
    "SoftTimeLimitExceeded",
    "TransientError",
    "Unique",
    "Worker",
    "job",
    "open_resources",
]

_LAZY = {
    "EnqueueResult": "runner.client",
    "JobClient": "runner.client",
    "SlotHolder": "runner.broker.slots",
    "SlotPool": "runner.broker.slots",
    "Worker": "runner.worker.worker",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'runner' has no attribute {name!r}")
