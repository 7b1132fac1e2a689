"""A batch of transitions becomes one attempt record per run: a start opens it, an end closes it."""

from __future__ import annotations

from runner.status import JobStatus
from runner.store.jobs import Transition, attempt_records


def test_start_and_end_in_one_batch_make_one_closed_record():
    start = Transition("a", JobStatus.PROCESSING, attempt=1, worker="w", run_started=10.0)
    end = Transition("a", JobStatus.COMPLETED, attempt=1, worker="w", run_started=10.0, outcome="completed")
    batch = [start, end]
    assert attempt_records(batch) == [("a", 1, 10.0, "w", "completed", None, None)]


def test_two_runs_of_one_job_stay_two_records():
    """A retry that starts within the same batch window must not swallow the run before it."""
    batch = [Transition("a", JobStatus.RETRYING, attempt=1, run_started=10.0, outcome="retrying", error="boom",
                        traceback="tb"),
             Transition("a", JobStatus.PROCESSING, attempt=2, run_started=11.0)]  # fmt: skip
    assert attempt_records(batch) == [
        ("a", 1, 10.0, None, "retrying", "boom", "tb"),
        ("a", 2, 11.0, None, None, None, None),
    ]


def test_an_end_is_never_reopened_and_moves_without_a_run_make_none():
    batch = [Transition("a", JobStatus.FAILED, attempt=1, run_started=10.0, outcome="failed"),
             Transition("a", JobStatus.PROCESSING, attempt=1, run_started=10.0),
             Transition("b", JobStatus.RETRYING, attempt=1, error="re-enqueued by the sweeper")]  # fmt: skip
    assert attempt_records(batch) == [("a", 1, 10.0, None, "failed", None, None)]
