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
