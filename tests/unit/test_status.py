"""Status transitions only move forwards."""

from __future__ import annotations

from runner.status import ACTIVE, TERMINAL, JobStatus, allowed_sources


def test_terminal_statuses_are_never_left():
    """No status may be entered from a terminal one."""
    for target in JobStatus:
        assert not set(allowed_sources(target)) & {s.value for s in TERMINAL}


def test_every_active_status_can_end():
    """From each active status a job can complete, fail or be cancelled."""
    for end in TERMINAL:
        assert {s.value for s in ACTIVE} <= set(allowed_sources(end))


def test_pending_is_only_ever_the_first_status():
    """Nothing moves a job back to pending."""
    assert allowed_sources(JobStatus.PENDING) == []


def test_every_transition_has_the_same_sources():
    """The batched status write uses one guard for all rows: every target must share its sources."""
    for target in JobStatus:
        if target is not JobStatus.PENDING:
            assert allowed_sources(target) == sorted(ACTIVE)


def test_collapse_keeps_the_effect_of_applying_in_order():
    """Processing then completed in one batch becomes one completed row that remembers the start;
    nothing after a terminal status survives, as the guard would refuse it."""
    from runner.store.jobs import Transition, collapse

    started = Transition("a", JobStatus.PROCESSING, attempt=1, args={"x": 1})
    done = Transition("a", JobStatus.COMPLETED, attempt=1, result=5)
    late = Transition("a", JobStatus.RETRYING, attempt=2, error="late")
    other = Transition("b", JobStatus.FAILED, attempt=3, error="boom")
    rows = {t.job_id: t for t in collapse([started, done, other, late])}
    assert (rows["a"].status, rows["a"].started, rows["a"].result, rows["a"].args) == (
        JobStatus.COMPLETED, True, 5, {"x": 1},
    )  # fmt: skip
    assert (rows["b"].status, rows["b"].error, rows["b"].started) == (JobStatus.FAILED, "boom", False)


def test_collapse_carries_every_field_of_the_later_transition():
    """A merge is built field by field (not by dataclasses.replace): a field added to Transition must be merged
    too, so every field of the later transition that the merge rules do not combine comes through as it is."""
    import dataclasses

    from runner.store.jobs import Transition, collapse

    first = Transition("a", JobStatus.PROCESSING, attempt=1, worker="w", run_started=1.0)
    later_values = {
        "name": "n", "queue": "q", "attempt": 2, "max_tries": 7, "worker": "w2", "error": "e", "result": {"r": 1},
        "args": {"k": 1}, "started": True, "run_started": 2.0, "outcome": "retrying", "traceback": "tb",
        "parent_id": "p",
    }  # fmt: skip
    names = {f.name for f in dataclasses.fields(Transition)} - {"job_id", "status"}
    assert names == set(later_values), "a new Transition field: give it a value here and a rule in collapse()"
    later = Transition("a", JobStatus.RETRYING, **later_values)
    (merged,) = collapse([first, later])
    assert {name: getattr(merged, name) for name in names} == later_values
