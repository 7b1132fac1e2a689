"""Job statuses and the transitions allowed between them, written once and guarded in SQL."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ACTIVE", "TERMINAL", "JobStatus", "allowed_sources"]


class JobStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL: frozenset[JobStatus] = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
ACTIVE: frozenset[JobStatus] = frozenset({JobStatus.PENDING, JobStatus.PROCESSING, JobStatus.RETRYING})

# target -> statuses it may be entered from. Terminal statuses are never left, so a late or repeated
# write (a re-run after a lease expired, a retry racing a cancel) cannot move a job backwards.
_SOURCES: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PENDING: frozenset(),
    JobStatus.PROCESSING: ACTIVE,
    JobStatus.RETRYING: ACTIVE,
    JobStatus.COMPLETED: ACTIVE,
    JobStatus.FAILED: ACTIVE,
    JobStatus.CANCELLED: ACTIVE,
}


def allowed_sources(target: JobStatus) -> list[str]:
    """The statuses a row may be in for a move to `target` (for `WHERE status = ANY($n)`)."""
    return sorted(_SOURCES[target])
