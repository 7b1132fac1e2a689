"""The StoryMimi job runner: asyncio jobs on arq's Redis layout, status rows in Postgres.

It knows nothing of stories: `jobs` registers coroutines with it, `api` enqueues them through it.
"""

from __future__ import annotations

from runner.client import EnqueueResult, JobClient
from runner.context import JobContext
from runner.errors import PermanentError, SoftTimeLimitExceeded, TransientError
from runner.registry import JobSpec, Registry, job
from runner.resources import Resources, open_resources
from runner.retry import RetryPolicy
from runner.settings import Settings
from runner.status import JobStatus
from runner.worker import Worker

__all__ = [
    "EnqueueResult",
    "JobClient",
    "JobContext",
    "JobSpec",
    "JobStatus",
    "PermanentError",
    "Registry",
    "Resources",
    "RetryPolicy",
    "Settings",
    "SoftTimeLimitExceeded",
    "TransientError",
    "Worker",
    "job",
    "open_resources",
]
