"""The longest loop lag stays visible for a whole window after a block, then is forgotten."""

from __future__ import annotations

from runner.fleet.metrics import LOOP_LAG_MAX, LagObserver


def test_a_block_shows_for_a_window_then_ages_out():
    now = [0.0]
    observe = LagObserver("unit-test", window_s=60, clock=lambda: now[0])
    gauge = LOOP_LAG_MAX.labels("unit-test")
    observe(0.002)
    observe(3.0)  # a blocked loop
    now[0] = 30.0
    observe(0.001)
    assert gauge._value.get() == 3.0
    now[0] = 70.0  # next window: the block is still the longest of the last two
    observe(0.004)
    assert gauge._value.get() == 3.0
    now[0] = 130.0  # two windows on: forgotten
    observe(0.004)
    assert gauge._value.get() == 0.004
    now[0] = 500.0  # after a long silence, nothing old survives
    observe(0.001)
    assert gauge._value.get() == 0.001
