"""The start-up heap is frozen, so full collections skip it (see runner/heap.py)."""

from __future__ import annotations

import subprocess
import sys


def test_freezing_moves_the_start_up_heap_out_of_the_collectors_generations():
    code = (
        "import gc, runner.worker.worker\n"
        "from runner.fleet.heap import freeze_startup_heap\n"
        "freeze_startup_heap()\n"
        "print(gc.get_freeze_count(), len(gc.get_objects()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    frozen, still_tracked = map(int, out.split())
    assert frozen > 50_000, "the imported modules' objects should be frozen"
    assert still_tracked < frozen / 10, "only what was made after the freeze should be left to the collector"
