"""Keeping a process's start-up heap out of the garbage collector's way.

A full collection walks every tracked object, and once a process has started most of them belong to
the imported modules (functions, classes, pydantic schemas) and live as long as it does. Under load those
walks paused the API for tens of milliseconds: the p99 of `POST /stories/` at 64 clients fell from 57-62 ms
to 38-40 ms once the start-up heap was frozen. Objects made later are collected as before.
"""

from __future__ import annotations

import gc

__all__ = ["freeze_startup_heap"]


def freeze_startup_heap() -> None:
    """Collect once, then exempt everything alive now from future collections (`gc.freeze()`).
    Call it after the imports and app construction, before serving."""
    gc.collect()
    gc.freeze()
